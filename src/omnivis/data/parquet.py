"""Datasets on disk: a directory of Parquet shards of `Record`s and a `manifest.json` describing them.

    manifest = write_dataset(records, "data/world-train", records_per_shard=1000)
    dataset = open_dataset("data/world-train", verify=True)
    for record in dataset.records(start=0, rank=rank, world_size=world_size):
        ...
    loader = DataLoader(RecordStream(dataset), batch_size=None, num_workers=4)

This module is the format's front door: it writes datasets and re-exports the reading side
(`open_dataset`, `Dataset`, `SkippedRecord` from `omnivis.data.dataset`); the columns are
`omnivis.data.schema.SCHEMA` and the manifest is `omnivis.data.manifest.Manifest`.

Writing streams: records are converted and written one row group at a time, so memory holds one row group,
not the dataset. The whole directory is built beside the target and renamed into place only when complete
(`omnivis.io.atomic_directory`), so a crash, or an exception from the records' iterator, leaves nothing
behind. The same records give byte-identical shards and manifest (fixed codec, level and row-group size,
no timestamps) with the same pyarrow version, which the shards name in their `created_by` field.

`RecordStream` serves a dataset to a torch `DataLoader`, split among distributed ranks and loader workers
as `Dataset.records` describes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from omnivis.data.dataset import Dataset, SkippedRecord, open_dataset
from omnivis.data.manifest import MANIFEST_NAME, DatasetCounts, Manifest, ShardEntry, file_sha256
from omnivis.data.records import Record
from omnivis.data.schema import SCHEMA, records_to_table
from omnivis.errors import DatasetError, InputError
from omnivis.io import atomic_directory, atomic_write_json

__all__ = ["Dataset", "Manifest", "RecordStream", "SkippedRecord", "open_dataset", "write_dataset"]

# Shard file names; five digits keep listings sorted up to 100,000 shards (more still work, unsorted).
SHARD_NAME = "shard-{index:05d}.parquet"
# Records per row group, the unit of reading: random access reads one row group, so it stays small
# enough that a lookup reads little beyond the record asked for.
ROWS_PER_ROW_GROUP = 32
# zstd at a fixed level compresses the annotation columns well; images are already compressed.
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3


def write_dataset(
    records: Iterable[Record],
    directory: str | Path,
    *,
    records_per_shard: int = 1000,
    rows_per_row_group: int = ROWS_PER_ROW_GROUP,
    overwrite: bool = False,
    description: str = "",
) -> Manifest:
    """Write records as a dataset directory of Parquet shards and a manifest, atomically.

    Args:
        records: The records, consumed once, in order; each is validated (`Record.validate`).
        directory: The dataset directory to create.
        records_per_shard: Records per shard file (the last shard may hold fewer).
        rows_per_row_group: Records per Parquet row group, the unit random access reads.
        overwrite: Replace an existing non-empty `directory` (only once the new dataset is complete).
        description: Free text stored in the manifest.

    Returns:
        The manifest written to `directory / "manifest.json"`.

    Raises:
        InputError: A bad argument, or an item of `records` that is not a `Record`.
        DatasetError: `directory` exists (non-empty, without `overwrite`) or is a file; a record fails
            validation or cannot be stored (naming its position); two records share an image_id
            (naming both positions). Nothing is written.
    """
    for name, value in (("records_per_shard", records_per_shard), ("rows_per_row_group", rows_per_row_group)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(description, str):
        raise InputError(f"description must be a string, got {type(description).__name__}")
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise DatasetError(f"{target}: exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise DatasetError(f"{target}: directory exists and is not empty; pass overwrite=True to replace it")
    with atomic_directory(target) as staging:
        writer = _ShardWriter(staging, records_per_shard, rows_per_row_group)
        try:
            counts = _write_records(records, writer)
            shards = writer.finish()
        finally:
            writer.close()
        total = sum(shard.records for shard in shards)
        tables = counts.as_manifest_fields()
        manifest = Manifest(
            description, total, shards, sources=tables["sources"], annotations=tables["annotations"],
            categories=tables["categories"], tasks=tables["tasks"],
        )  # fmt: skip
        atomic_write_json(staging / MANIFEST_NAME, manifest.to_dict())
    return manifest


def _write_records(records: Iterable[Record], writer: _ShardWriter) -> DatasetCounts:
    """Validate, count and hand each record to `writer`; refuse duplicate image_ids."""
    counts = DatasetCounts()
    positions_by_id: dict[str, int] = {}
    for position, record in enumerate(records):
        if not isinstance(record, Record):
            raise InputError(f"item {position} of the records is a {type(record).__name__}, not a Record")
        try:
            record.validate()
        # A field of the wrong kind (a float phrase offset, say) can make validation itself fail.
        except (DatasetError, TypeError, AttributeError) as error:
            raise DatasetError(f"record {position} of the stream: {error}") from error
        earlier = positions_by_id.setdefault(record.image_id, position)
        if earlier != position:
            raise DatasetError(
                f"record {position} of the stream has image_id {record.image_id!r}, "
                f"already used by record {earlier}"
            )
        counts.add(record)
        writer.add(record, position)
    return counts


class _ShardWriter:
    """Buffers records into row groups and row groups into shard files, closing each shard when full."""

    def __init__(self, directory: Path, records_per_shard: int, rows_per_row_group: int) -> None:
        self.directory = directory
        self.records_per_shard = records_per_shard
        self.rows_per_row_group = rows_per_row_group
        self.shards: list[ShardEntry] = []
        self._buffer: list[Record] = []
        self._buffer_position = 0  # stream position of the buffer's first record
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_shard = 0
        self._first_index = 0  # global index of the open shard's first record

    def add(self, record: Record, position: int) -> None:
        """Buffer one record; write a row group when the buffer or the shard is full."""
        if not self._buffer:
            self._buffer_position = position
        self._buffer.append(record)
        shard_full = self._rows_in_shard + len(self._buffer) == self.records_per_shard
        if len(self._buffer) == self.rows_per_row_group or shard_full:
            self._flush()
        if shard_full:
            self._finish_shard()

    def finish(self) -> tuple[ShardEntry, ...]:
        """Write what is buffered, close the last shard, and return every shard's entry."""
        if self._buffer:
            self._flush()
        if self._writer is not None:
            self._finish_shard()
        return tuple(self.shards)

    def close(self) -> None:
        """Release an open shard file, e.g. after an error (the staging directory is deleted anyway)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _path(self) -> Path:
        return self.directory / SHARD_NAME.format(index=len(self.shards))

    def _flush(self) -> None:
        table = records_to_table(self._buffer, self._buffer_position)
        if self._writer is None:
            # Page checksums let the reader detect a flipped byte in any data page without hashing
            # the whole file. No dictionaries (images are unique; zstd already squeezes repeated
            # strings) and no statistics (nothing prunes by them): smaller files, nothing lost.
            self._writer = pq.ParquetWriter(
                self._path(),
                SCHEMA,
                compression=COMPRESSION,
                compression_level=COMPRESSION_LEVEL,
                use_dictionary=False,
                write_statistics=False,
                write_page_checksum=True,
            )
        self._writer.write_table(table, row_group_size=len(self._buffer))
        self._rows_in_shard += len(self._buffer)
        self._buffer = []

    def _finish_shard(self) -> None:
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        path = self._path()
        entry = ShardEntry(
            path.name, self._rows_in_shard, path.stat().st_size, file_sha256(path), self._first_index
        )
        self.shards.append(entry)
        self._first_index += self._rows_in_shard
        self._rows_in_shard = 0


class RecordStream(IterableDataset[Record]):
    """A `Dataset` as a torch `IterableDataset`, split among distributed ranks and loader workers.

    Rank and world size come from `torch.distributed` when it is initialized (else 0 of 1), the worker id
    and count from `torch.utils.data.get_worker_info()` (else 0 of 1), when iteration starts. Records are
    yielded as they are; collation is the trainer's business.

    Attributes:
        dataset: The dataset read.
        start: Global index to resume from, read when an iteration starts: set it before the loader's
            iterator is made (with persistent workers, before the first). To resume a run, use the
            number of records all consumers together had consumed.
    """

    def __init__(self, dataset: Dataset, start: int = 0) -> None:
        self.dataset = dataset
        self.start = start

    def __iter__(self) -> Iterator[Record]:
        distributed = dist.is_available() and dist.is_initialized()
        rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.dataset.records(
            self.start, rank=rank, world_size=world_size, worker=worker, num_workers=num_workers
        )
