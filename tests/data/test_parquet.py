"""Writing datasets: shard layout, exact round trips, determinism, atomicity, streaming, and RecordStream."""

import dataclasses
import hashlib
import json
import os
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch.distributed as dist
import torch.multiprocessing
from hypothesis import given, settings
from hypothesis import strategies as st
from record_builders import full_record, valid_records
from torch.utils.data import DataLoader

from omnivis.data.parquet import RecordStream, open_dataset, write_dataset
from omnivis.data.records import Record, Region
from omnivis.errors import DatasetError, InputError


def _records(count: int) -> list[Record]:
    return [full_record(index) for index in range(count)]


def test_shards_hold_what_the_manifest_says(tmp_path: Path) -> None:
    records = _records(10)
    directory = tmp_path / "dataset"
    manifest = write_dataset(records, directory, records_per_shard=4, rows_per_row_group=3, description="ten")
    names = ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    assert sorted(os.listdir(directory)) == ["manifest.json", *names]
    assert [(s.file, s.records, s.first_index) for s in manifest.shards] == list(
        zip(names, [4, 4, 2], [0, 4, 8], strict=True)
    )
    for shard, row_groups in zip(manifest.shards, [[3, 1], [3, 1], [2]], strict=True):
        data = (directory / shard.file).read_bytes()
        assert (shard.bytes, shard.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        metadata = pq.read_metadata(directory / shard.file)
        assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == row_groups
        assert metadata.row_group(0).column(0).compression == "ZSTD"
        assert metadata.metadata[b"omnivis.schema_version"] == b"1"
    assert manifest.total_records == 10 and manifest.description == "ten"
    assert json.loads((directory / "manifest.json").read_text(encoding="utf-8")) == manifest.to_dict()
    dataset = open_dataset(directory, verify=True, check_images=True)
    assert dataset.manifest == manifest
    assert list(dataset) == records


@settings(max_examples=15, deadline=None)
@given(st.lists(valid_records(), max_size=7), st.integers(1, 4))
def test_any_valid_records_round_trip_through_a_dataset(records: list[Record], per_shard: int) -> None:
    records = [dataclasses.replace(record, image_id=f"id-{i}") for i, record in enumerate(records)]
    with tempfile.TemporaryDirectory() as parent:
        directory = Path(parent) / "dataset"
        write_dataset(records, directory, records_per_shard=per_shard, rows_per_row_group=2)
        assert list(open_dataset(directory)) == records
        assert [open_dataset(directory)[i] for i in range(len(records))] == records


def test_same_records_give_byte_identical_files(tmp_path: Path) -> None:
    for name in ("first", "second"):
        write_dataset(_records(7), tmp_path / name, records_per_shard=3, description="same")
    files = sorted(os.listdir(tmp_path / "first"))
    assert files == sorted(os.listdir(tmp_path / "second")) and len(files) == 4
    for name in files:
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()


def test_writing_streams_holding_one_row_group_at_most(tmp_path: Path) -> None:
    peak = 0

    def generate() -> Iterator[Record]:
        nonlocal peak
        alive: list[weakref.ref[Record]] = []
        for index in range(40):
            record = full_record(index)
            alive.append(weakref.ref(record))
            yield record
            del record
            peak = max(peak, sum(ref() is not None for ref in alive))

    write_dataset(generate(), tmp_path / "dataset", records_per_shard=16, rows_per_row_group=4)
    # At most one row group's records are alive at once (holding them all would make it 40); the lower
    # bound shows the count does see records the writer still buffers.
    assert 2 <= peak <= 4


def _failing_after(count: int) -> Iterator[Record]:
    yield from _records(count)
    raise RuntimeError("the generator broke")


def test_an_iterator_that_fails_half_way_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="the generator broke"):
        write_dataset(_failing_after(5), tmp_path / "dataset", records_per_shard=2)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_overwrite_keeps_the_old_dataset(tmp_path: Path) -> None:
    directory = tmp_path / "dataset"
    old = write_dataset(_records(3), directory)
    with pytest.raises(RuntimeError, match="the generator broke"):
        write_dataset(_failing_after(5), directory, overwrite=True)
    assert os.listdir(tmp_path) == ["dataset"]
    assert open_dataset(directory, verify=True).manifest == old
    assert list(open_dataset(directory)) == _records(3)


def test_an_existing_directory_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    directory = tmp_path / "dataset"
    directory.mkdir()
    write_dataset(_records(1), directory)  # an empty directory is fine
    with pytest.raises(DatasetError, match="dataset: directory exists and is not empty; pass overwrite=True"):
        write_dataset(_records(2), directory)
    assert len(open_dataset(directory)) == 1
    (directory / "notes.txt").write_text("mine", encoding="utf-8")
    write_dataset(_records(2), directory, overwrite=True)
    assert sorted(os.listdir(directory)) == ["manifest.json", "shard-00000.parquet"]
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(DatasetError, match="file: exists and is not a directory"):
        write_dataset(_records(1), tmp_path / "file", overwrite=True)


def test_duplicate_image_ids_name_both_positions(tmp_path: Path) -> None:
    records = [full_record(0), full_record(1), full_record(2), full_record(1)]
    message = "record 3 of the stream has image_id 'image-001', already used by record 1"
    with pytest.raises(DatasetError, match=message):
        write_dataset(records, tmp_path / "dataset")
    assert list(tmp_path.iterdir()) == []


def test_an_invalid_record_is_named_by_position(tmp_path: Path) -> None:
    outside = Region((0, 0, 99, 5), "star", full_record(1).regions[0].provenance)
    records = [full_record(0), dataclasses.replace(full_record(1), regions=(outside,), referring=())]
    message = r"record 1 of the stream: record 'image-001', region 0 box.*outside"
    with pytest.raises(DatasetError, match=message):
        write_dataset(records, tmp_path / "dataset")
    assert list(tmp_path.iterdir()) == []


def test_an_unstorable_record_is_named_by_position(tmp_path: Path) -> None:
    records = [full_record(0), full_record(1), dataclasses.replace(full_record(2), metadata={"k": 1})]
    with pytest.raises(DatasetError, match=r"record 2 \(image_id 'image-002'\): cannot be stored"):
        write_dataset(records, tmp_path / "dataset", rows_per_row_group=2)
    assert list(tmp_path.iterdir()) == []


def test_bad_items_and_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="item 1 of the records is a dict, not a Record"):
        write_dataset([full_record(0), {"image_id": "x"}], tmp_path / "a")  # type: ignore[list-item]
    with pytest.raises(InputError, match="records_per_shard must be a positive integer, got 0"):
        write_dataset([], tmp_path / "b", records_per_shard=0)
    with pytest.raises(InputError, match="rows_per_row_group must be a positive integer"):
        write_dataset([], tmp_path / "c", rows_per_row_group=True)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_stream_gives_an_empty_dataset(tmp_path: Path) -> None:
    manifest = write_dataset([], tmp_path / "dataset")
    assert (manifest.total_records, manifest.shards) == (0, ())
    dataset = open_dataset(tmp_path / "dataset", verify=True)
    assert (len(dataset), list(dataset)) == (0, [])


def test_record_stream_splits_among_loader_workers(tmp_path: Path) -> None:
    records = _records(9)
    write_dataset(records, tmp_path / "dataset", records_per_shard=4, rows_per_row_group=2)
    stream = RecordStream(open_dataset(tmp_path / "dataset"))
    assert list(stream) == records  # no workers, no process group: everything, in order
    # Worker w reads indices i with i % 2 == w; the loader takes from the workers in turn, so global
    # order comes back.
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    assert [record.image_id for record in loader] == [record.image_id for record in records]
    stream.start = 5  # worker 0 now starts at index 6 and worker 1 at 5, so the first two swap
    assert [record.image_id for record in loader] == [records[i].image_id for i in (6, 5, 8, 7)]


def _distributed_reader(rank: int, directory: str, rendezvous: str, world_size: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        ids = [record.image_id for record in RecordStream(open_dataset(directory), start=1)]
        Path(directory, f"rank-{rank}.json").write_text(json.dumps(ids), encoding="utf-8")
    finally:
        dist.destroy_process_group()


def test_record_stream_splits_among_distributed_ranks(tmp_path: Path) -> None:
    records = _records(7)
    directory = tmp_path / "dataset"
    write_dataset(records, directory, records_per_shard=3)
    args = (str(directory), str(tmp_path / "rendezvous"), 2)
    torch.multiprocessing.start_processes(_distributed_reader, args=args, nprocs=2, start_method="fork")
    for rank in range(2):
        ids = json.loads((directory / f"rank-{rank}.json").read_text(encoding="utf-8"))
        assert ids == [records[i].image_id for i in range(1, 7) if i % 2 == rank]
