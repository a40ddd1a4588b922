"""Reading datasets: the consumer split, resume, random access, and every kind of bad input named."""

import dataclasses
import hashlib
import json
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from record_builders import full_record, png_bytes

from omnivis.data.dataset import SkippedRecord, open_dataset
from omnivis.data.parquet import write_dataset
from omnivis.data.records import Record, Region
from omnivis.data.schema import records_to_table
from omnivis.errors import DatasetError, InputError

# Ten records in shards of 4, 4 and 2, two records per row group.
COUNT = 10


def _records() -> list[Record]:
    return [full_record(index) for index in range(COUNT)]


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    write_dataset(_records(), tmp_path / "dataset", records_per_shard=4, rows_per_row_group=2)
    return tmp_path / "dataset"


def _shard(directory: Path, number: int) -> Path:
    return directory / f"shard-{number:05d}.parquet"


def _match_manifest_to(directory: Path, number: int, records: int | None = None) -> None:
    """Make the manifest agree with shard `number`'s current size and digest (and record count)."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    data = _shard(directory, number).read_bytes()
    entry = manifest["shards"][number]
    entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    if records is not None:
        entry["records"] = records
    path.write_text(json.dumps(manifest), encoding="utf-8")


def _rewrite_shard(directory: Path, number: int, table: pa.Table) -> None:
    """Replace a shard by a file written by hand, with a manifest that agrees on size and digest."""
    pq.write_table(table, _shard(directory, number))
    _match_manifest_to(directory, number)


def _flip_byte_in_images(path: Path, row_group: int) -> None:
    """Flip a byte in the middle of a row group's image data: same size, different content."""
    metadata = pq.read_metadata(path).row_group(row_group)
    columns = [metadata.column(i) for i in range(metadata.num_columns)]
    column = next(column for column in columns if column.path_in_schema == "image")
    data = bytearray(path.read_bytes())
    data[column.data_page_offset + column.total_compressed_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("world_size", "num_workers"), [(1, 1), (2, 1), (1, 3), (2, 3), (3, 2), (4, 4)])
def test_consumers_partition_the_records_by_index(directory: Path, world_size: int, num_workers: int) -> None:
    dataset = open_dataset(directory)
    ids = [record.image_id for record in _records()]
    stride = world_size * num_workers
    for start in (0, 3, 4, 9, 10, 12):
        seen = []
        for rank in range(world_size):
            for worker in range(num_workers):
                consumer = rank * num_workers + worker
                split = {"rank": rank, "world_size": world_size, "worker": worker, "num_workers": num_workers}
                got = [record.image_id for record in dataset.records(start, **split)]
                assert got == [ids[i] for i in range(start, COUNT) if i % stride == consumer]
                seen += got
        assert sorted(seen) == ids[start:]


def test_resume_skips_whole_shards_without_opening_them(directory: Path) -> None:
    path = _shard(directory, 0)
    path.write_bytes(path.read_bytes()[:100])  # not Parquet any more, yet the manifest agrees on size
    _match_manifest_to(directory, 0)
    dataset = open_dataset(directory, verify=True)
    assert list(dataset.records(4)) == _records()[4:]
    with pytest.raises(DatasetError, match=r"shard-00000\.parquet: not a readable Parquet file"):
        list(dataset.records(3))


def test_a_consumer_reads_only_row_groups_holding_its_records(directory: Path) -> None:
    _flip_byte_in_images(_shard(directory, 0), 1)  # rows 2-3 of shard 0: global indices 2 and 3
    dataset = open_dataset(directory)
    owned = [record.image_id for record in dataset.records(rank=0, world_size=4)]
    assert owned == ["image-000", "image-004", "image-008"]
    with pytest.raises(DatasetError, match=r"shard-00000\.parquet: row group 1 \(rows 2-3\) is unreadable"):
        list(dataset.records(rank=2, world_size=4))


def test_random_access_reads_any_record(directory: Path) -> None:
    dataset = open_dataset(directory)
    assert [dataset[i] for i in range(COUNT)] == _records()
    # Loader workers started by "spawn" receive the dataset pickled.
    assert pickle.loads(pickle.dumps(dataset))[7] == _records()[7]
    assert dataset[-1] == _records()[-1]
    for index in (COUNT, -COUNT - 1):
        with pytest.raises(IndexError, match=f"record index {index} out of range for a dataset of 10"):
            dataset[index]


def test_random_access_reads_only_the_row_group_it_needs(directory: Path) -> None:
    _flip_byte_in_images(_shard(directory, 0), 0)
    dataset = open_dataset(directory)
    assert dataset[2] == _records()[2]  # row group 1 of the damaged shard
    with pytest.raises(DatasetError, match=r"shard-00000\.parquet: row group 0 \(rows 0-1\) is unreadable"):
        dataset[1]


def test_a_flipped_byte_is_caught_by_page_checksums_and_by_verify(directory: Path) -> None:
    _flip_byte_in_images(_shard(directory, 1), 1)
    with pytest.raises(DatasetError, match=r"shard-00001\.parquet: row group 1 \(rows 2-3\) is unreadable"):
        list(open_dataset(directory))
    with pytest.raises(DatasetError, match=r"shard-00001\.parquet: SHA-256 [0-9a-f]{64} differs from the"):
        open_dataset(directory, verify=True)


def test_skip_bad_lists_the_records_of_an_unreadable_row_group(directory: Path) -> None:
    _flip_byte_in_images(_shard(directory, 1), 1)
    dataset = open_dataset(directory, skip_bad=True)
    assert list(dataset) == [r for i, r in enumerate(_records()) if i not in (6, 7)]
    path = str(_shard(directory, 1))
    assert [(s.file, s.row, s.image_id) for s in dataset.skipped] == [(path, 2, None), (path, 3, None)]
    assert "row group 1 (rows 2-3) is unreadable" in dataset.skipped[0].reason
    list(dataset)  # a second pass lists nothing twice
    assert len(dataset.skipped) == 2


def test_a_truncated_shard_is_named(directory: Path) -> None:
    path = _shard(directory, 1)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"shard-00001\.parquet: .* but the file has \d+ bytes"):
        open_dataset(directory)
    skipping = open_dataset(directory, skip_bad=True)
    assert list(skipping) == _records()[:4] + _records()[8:]
    assert [(s.file, s.row, s.image_id) for s in skipping.skipped] == [(str(path), r, None) for r in range(4)]
    # With a manifest that agrees on the truncated file's size and digest, Parquet itself refuses it.
    _match_manifest_to(directory, 1)
    with pytest.raises(DatasetError, match=r"shard-00001\.parquet: not a readable Parquet file"):
        list(open_dataset(directory, verify=True))


def test_a_missing_shard_is_named(directory: Path) -> None:
    _shard(directory, 2).unlink()
    with pytest.raises(DatasetError, match=r"shard-00002\.parquet: .* but the file is missing"):
        open_dataset(directory)


def test_a_missing_manifest_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"empty/manifest\.json: no manifest"):
        open_dataset(tmp_path / "empty")


def test_a_shard_without_a_column_is_named(directory: Path) -> None:
    _rewrite_shard(directory, 0, records_to_table(_records()[:4]).drop_columns(["regions"]))
    with pytest.raises(DatasetError, match=r"shard-00000\.parquet: missing column\(s\) regions"):
        list(open_dataset(directory))


def test_a_shard_with_a_wrongly_typed_column_is_named(directory: Path) -> None:
    table = records_to_table(_records()[:4])
    width = pa.array([str(value) for value in table.column("width").to_pylist()], pa.string())
    position = table.schema.get_field_index("width")
    table = table.set_column(position, pa.field("width", pa.string(), nullable=False), width)
    _rewrite_shard(directory, 0, table)
    message = r"shard-00000\.parquet: column 'width' has type string not null, expected int32"
    with pytest.raises(DatasetError, match=message):
        list(open_dataset(directory))
    skipping = open_dataset(directory, skip_bad=True)
    assert list(skipping) == _records()[4:]
    assert [s.row for s in skipping.skipped] == [0, 1, 2, 3]


def test_a_manifest_that_disagrees_on_record_count_is_named(directory: Path) -> None:
    _rewrite_shard(directory, 0, records_to_table(_records()[:3]))
    with pytest.raises(DatasetError, match=r"shard-00000\.parquet: holds 3 records, but the manifest says 4"):
        list(open_dataset(directory))


def test_an_invalid_record_in_a_shard_is_named_or_skipped(directory: Path) -> None:
    records = _records()[4:8]
    outside = Region((0, 0, 99, 5), "star", records[2].regions[0].provenance)
    records[2] = dataclasses.replace(records[2], regions=(outside,), referring=())
    _rewrite_shard(directory, 1, records_to_table(records))  # records_to_table does not validate
    message = r"shard-00001\.parquet: row 2 \(image_id 'image-006'\): record 'image-006', region 0 box"
    with pytest.raises(DatasetError, match=message):
        list(open_dataset(directory))
    skipping = open_dataset(directory, skip_bad=True)
    assert [r.image_id for r in skipping] == [f"image-{i:03d}" for i in range(COUNT) if i != 6]
    assert len(skipping.skipped) == 1
    skipped = skipping.skipped[0]
    assert (skipped.file, skipped.row, skipped.image_id) == (str(_shard(directory, 1)), 2, "image-006")
    assert "reaches outside the 16x12 image" in skipped.reason


def test_check_images_decodes_each_image_and_compares_its_size(tmp_path: Path) -> None:
    records = _records()[:4]
    records[1] = dataclasses.replace(records[1], image=b"not an image at all")
    records[3] = dataclasses.replace(records[3], image=png_bytes(15, 12))
    write_dataset(records, tmp_path / "dataset")
    assert list(open_dataset(tmp_path / "dataset")) == records  # not decoded unless asked
    with pytest.raises(DatasetError, match=r"shard-00000\.parquet: row 1 \(image_id 'image-001'\): image "):
        list(open_dataset(tmp_path / "dataset", check_images=True))
    with pytest.raises(DatasetError, match="row 3 .*decodes to 15x12, but the record says 16x12"):
        open_dataset(tmp_path / "dataset", check_images=True)[3]
    skipping = open_dataset(tmp_path / "dataset", check_images=True, skip_bad=True)
    assert list(skipping) == [records[0], records[2]]
    assert [(s.row, s.image_id) for s in skipping.skipped] == [(1, "image-001"), (3, "image-003")]
    assert isinstance(skipping.skipped[0], SkippedRecord)
    assert "not a readable image" in skipping.skipped[0].reason


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"start": -1}, "start must be an integer >= 0, got -1"),
        ({"world_size": 0}, "world_size must be an integer >= 1"),
        ({"rank": 2, "world_size": 2}, r"rank must be an integer in 0\.\.1, got 2"),
        ({"worker": -1, "num_workers": 3}, r"worker must be an integer in 0\.\.2, got -1"),
    ],
)
def test_records_arguments_are_checked_at_once(directory: Path, arguments: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        open_dataset(directory).records(**arguments)
