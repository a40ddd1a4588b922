"""Reading a dataset directory: records shard by shard and row group by row group, split among consumers.

Records are split deterministically among consumers (distributed ranks times loader workers): global
record index i goes to consumer c = rank * num_workers + worker iff i % (world_size * num_workers) == c.
A reader can resume from any global index, skipping whole shards by the manifest without opening them,
and `Dataset[i]` reads only the row group holding record i.

Every problem raises `DatasetError` naming the file, and the row and image_id where there is one: a
manifest that is missing or disagrees with the shards, a shard that is truncated or corrupt (Parquet page
checksums catch a flipped byte in any data page; `verify` compares whole-file SHA-256 digests), a missing
or mistyped column, a record that fails `Record.validate`, an image that does not decode (with
`check_images`). With `skip_bad`, bad records and unreadable shards are skipped instead, each skipped
record listed in `Dataset.skipped`, never silently.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from omnivis.data.manifest import ShardEntry, file_sha256, read_manifest
from omnivis.data.records import Record
from omnivis.data.schema import SCHEMA, check_shard_schema, row_to_record
from omnivis.errors import DatasetError, ImageError, InputError
from omnivis.images import load_image

# Errors pyarrow raises on unreadable files: ArrowException, OSError (thrift and I/O failures) and
# ValueError (which includes ArrowInvalid and UnicodeDecodeError for mangled metadata).
_READ_ERRORS: tuple[type[Exception], ...] = (pa.ArrowException, OSError, ValueError)


@dataclass(frozen=True)
class SkippedRecord:
    """A record a `skip_bad` reader left out, and why.

    Attributes:
        file: The shard's path.
        row: The record's row in the shard.
        image_id: The record's image_id, or None when its row could not be read at all.
        reason: What was wrong.
    """

    file: str
    row: int
    image_id: str | None
    reason: str


def open_dataset(
    directory: str | Path, *, verify: bool = False, skip_bad: bool = False, check_images: bool = False
) -> Dataset:
    """Open a dataset directory written by `write_dataset`.

    Opening reads the manifest and checks that every shard exists with the size the manifest gives;
    shards themselves are read only when their records are.

    Args:
        directory: The dataset directory.
        verify: Also check every shard's SHA-256 against the manifest now (reads every byte).
        skip_bad: Skip, and list in `Dataset.skipped`, records that cannot be read or are invalid, and
            shards that are unreadable or disagree with the manifest, instead of raising.
        check_images: Decode every record's image while reading and check its size against the
            record's. Off by default: decoding costs as much as the training loader's own decode, which
            catches a bad image anyway; turn it on to audit a dataset (e.g. after an import).

    Raises:
        DatasetError: The manifest is missing, unreadable or inconsistent; a shard is missing or has
            the wrong size or digest (unless `skip_bad`).
    """
    dataset = Dataset(directory, skip_bad=skip_bad, check_images=check_images)
    if verify:
        dataset.verify()
    return dataset


class Dataset:
    """A dataset directory, read lazily, shard by shard and row group by row group.

    Attributes:
        directory: The dataset directory.
        manifest: Its manifest.
        skip_bad: Whether bad records and shards are skipped (and listed in `skipped`) rather than raised.
        check_images: Whether each image is decoded and its size checked while reading.
        skipped: One entry per record skipped so far (in this process: a loader worker keeps its own).
    """

    def __init__(self, directory: str | Path, *, skip_bad: bool = False, check_images: bool = False) -> None:
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self.skip_bad = skip_bad
        self.check_images = check_images
        self.skipped: list[SkippedRecord] = []
        self._skipped_rows: set[tuple[str, int]] = set()
        self._bad_shards: dict[int, str] = {}  # shard number -> why it is skipped
        self._first_indices = [shard.first_index for shard in self.manifest.shards]
        for number, shard in enumerate(self.manifest.shards):
            path = self.directory / shard.file
            size = path.stat().st_size if path.is_file() else None
            if size != shard.bytes:
                found = "the file is missing" if size is None else f"the file has {size} bytes"
                self._reject_shard(number, f"{path}: the manifest says {shard.bytes} bytes but {found}")

    def __len__(self) -> int:
        return self.manifest.total_records

    def __iter__(self) -> Iterator[Record]:
        return self.records()

    def verify(self) -> None:
        """Check every shard's size and SHA-256 against the manifest.

        Raises:
            DatasetError: Naming the first shard that differs (with `skip_bad`, the shard is skipped).
        """
        for number, shard in enumerate(self.manifest.shards):
            path = self.directory / shard.file
            if number in self._bad_shards:
                continue
            digest = file_sha256(path)
            if digest != shard.sha256:
                reason = f"{path}: SHA-256 {digest} differs from the manifest's {shard.sha256}"
                self._reject_shard(number, reason)

    def records(
        self, start: int = 0, *, rank: int = 0, world_size: int = 1, worker: int = 0, num_workers: int = 1
    ) -> Iterator[Record]:
        """The records of one consumer, in global-index order, from global index `start` on.

        Consumer c = rank * num_workers + worker gets the records whose global index i has
        i % (world_size * num_workers) == c. Shards wholly before `start` are skipped unread.

        Args:
            start: Global index to resume from; records before it are skipped.
            rank: This process's rank among `world_size` distributed processes.
            world_size: Number of distributed processes.
            worker: This loader worker's id among `num_workers`.
            num_workers: Number of loader workers per process.

        Raises:
            InputError: An argument out of range (checked at once, not when iteration starts).
            DatasetError: While iterating, a bad shard or record (unless `skip_bad`).
        """
        minimums = (("start", start, 0), ("world_size", world_size, 1), ("num_workers", num_workers, 1))
        for name, value, low in minimums:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, value, count in (("rank", rank, world_size), ("worker", worker, num_workers)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
                raise InputError(f"{name} must be an integer in 0..{count - 1}, got {value!r}")
        stride = world_size * num_workers
        consumer = rank * num_workers + worker
        first = start + (consumer - start) % stride  # the first index >= start this consumer owns
        return self._records_from(first, stride)

    def __getitem__(self, index: int) -> Record:
        """The record at global `index` (negative counts from the end); reads only its row group.

        Raises:
            IndexError: `index` is out of range.
            DatasetError: The record or its shard is bad; raised even with `skip_bad`, since random
                access has nothing to skip to.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"record index {index} out of range for a dataset of {len(self)} records")
        index %= len(self)
        number = bisect.bisect_right(self._first_indices, index) - 1
        shard = self.manifest.shards[number]
        path = self.directory / shard.file
        if number in self._bad_shards:
            raise DatasetError(self._bad_shards[number])
        row = index - shard.first_index
        with _open_shard(path, shard) as parquet_file:
            group, group_start = _row_group_of(parquet_file.metadata, row)
            table = _read_rows(parquet_file, path, group, group_start, range(row, row + 1))
        record = self._to_record(table.to_pylist()[0], path, row, strict=True)
        assert record is not None  # strict conversion raises rather than skipping
        return record

    def _records_from(self, first: int, stride: int) -> Iterator[Record]:
        for number, shard in enumerate(self.manifest.shards):
            # Global indices first, first + stride, ... that fall in this shard, as shard rows; a shard
            # wholly before the resume point gets an empty range and is not even opened.
            owned = _aligned_range(first, stride, shard.first_index, shard.first_index + shard.records)
            rows = range(owned.start - shard.first_index, owned.stop - shard.first_index, stride)
            if rows:
                yield from self._shard_records(number, rows)

    def _shard_records(self, number: int, rows: range) -> Iterator[Record]:
        """The valid records of `rows`, rows of shard `number` in ascending order."""
        shard = self.manifest.shards[number]
        path = self.directory / shard.file
        try:
            if number in self._bad_shards:
                raise DatasetError(self._bad_shards[number])
            parquet_file = _open_shard(path, shard)
        except DatasetError as error:
            if not self.skip_bad:
                raise
            self._bad_shards.setdefault(number, str(error))
            for row in rows:
                self._skip(path, row, None, str(error))
            return
        with parquet_file:
            metadata = parquet_file.metadata
            group_start = 0
            for group in range(metadata.num_row_groups):
                group_end = group_start + metadata.row_group(group).num_rows
                wanted = _aligned_range(rows.start, rows.step, group_start, min(group_end, rows.stop))
                if wanted:
                    yield from self._group_records(parquet_file, path, group, group_start, wanted)
                group_start = group_end

    def _group_records(
        self, parquet_file: pq.ParquetFile, path: Path, group: int, group_start: int, rows: range
    ) -> Iterator[Record]:
        try:
            table = _read_rows(parquet_file, path, group, group_start, rows)
        except DatasetError as error:
            if not self.skip_bad:
                raise
            for row in rows:
                self._skip(path, row, None, str(error))
            return
        for row, values in zip(rows, table.to_pylist(), strict=True):
            record = self._to_record(values, path, row, strict=not self.skip_bad)
            if record is not None:
                yield record

    def _to_record(self, values: dict[str, Any], path: Path, row: int, *, strict: bool) -> Record | None:
        """The checked record of one row; on a problem, raise (strict) or skip it and return None."""
        image_id = values.get("image_id")
        try:
            record = row_to_record(values).validate()
            if self.check_images:
                _check_image(record)
        except (DatasetError, ImageError) as error:
            reason = str(error)
        else:
            return record
        if strict:
            raise DatasetError(f"{path}: row {row} (image_id {image_id!r}): {reason}")
        self._skip(path, row, image_id, reason)
        return None

    def _skip(self, path: Path, row: int, image_id: str | None, reason: str) -> None:
        if (str(path), row) not in self._skipped_rows:
            self._skipped_rows.add((str(path), row))
            self.skipped.append(SkippedRecord(str(path), row, image_id, reason))

    def _reject_shard(self, number: int, reason: str) -> None:
        if not self.skip_bad:
            raise DatasetError(reason)
        self._bad_shards.setdefault(number, reason)


def _open_shard(path: Path, shard: ShardEntry) -> pq.ParquetFile:
    """Open a shard and check its schema and row count against `SCHEMA` and the manifest."""
    try:
        parquet_file = pq.ParquetFile(path, page_checksum_verification=True)
    except _READ_ERRORS as error:
        raise DatasetError(f"{path}: not a readable Parquet file ({error})") from error
    try:
        check_shard_schema(parquet_file.schema_arrow, str(path))
        if parquet_file.metadata.num_rows != shard.records:
            raise DatasetError(
                f"{path}: holds {parquet_file.metadata.num_rows} records, "
                f"but the manifest says {shard.records}"
            )
    except BaseException:
        parquet_file.close()
        raise
    return parquet_file


def _read_rows(
    parquet_file: pq.ParquetFile, path: Path, group: int, group_start: int, rows: range
) -> pa.Table:
    """`SCHEMA`'s columns of shard rows `rows`, all in row group `group`, which starts at `group_start`."""
    try:
        # One thread: parallelism comes from loader workers, and Arrow's pool does not mix well with them.
        table = parquet_file.read_row_group(group, columns=SCHEMA.names, use_threads=False)
        return table.take([row - group_start for row in rows])
    except _READ_ERRORS as error:
        group_end = group_start + parquet_file.metadata.row_group(group).num_rows
        raise DatasetError(
            f"{path}: row group {group} (rows {group_start}-{group_end - 1}) is unreadable ({error})"
        ) from error


def _row_group_of(metadata: pq.FileMetaData, row: int) -> tuple[int, int]:
    """The row group holding `row` of a shard, and the shard row its first record is."""
    group_start = 0
    for group in range(metadata.num_row_groups):
        group_end = group_start + metadata.row_group(group).num_rows
        if row < group_end:
            return group, group_start
        group_start = group_end
    raise AssertionError(f"row {row} is past the shard's {group_start} rows, which match the manifest")


def _aligned_range(first: int, step: int, low: int, high: int) -> range:
    """The integers first, first + step, ... that lie in [low, high)."""
    start = first if first >= low else first + -(-(low - first) // step) * step
    return range(start, max(start, high), step)


def _check_image(record: Record) -> None:
    """The image must decode (through `load_image`, as training will) to the record's size."""
    image = load_image(record.image)
    if image.size != record.image_size:
        raise DatasetError(
            f"the image decodes to {image.width}x{image.height}, "
            f"but the record says {record.width}x{record.height}"
        )


