"""The manifest of a dataset directory: its shards, with sizes and digests, and counts of what it holds.

`manifest.json` lists the shards in global-index order (so a reader resuming at record i skips whole
shards without opening them, and `verify` can check each file's size and SHA-256), and counts records per
source, annotations per kind, regions per category, and records per task prompt (`supported_tasks`), so a
training mix can be planned without reading a shard. It never holds a timestamp: the same records give
the same manifest, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath
from typing import Any

from omnivis.data.records import CAPTION_LEVELS, Record
from omnivis.data.schema import SCHEMA_VERSION
from omnivis.errors import DatasetError

# Name and version of the directory layout (manifest + shards); the version is bumped when an older
# reader could misread a newer directory.
FORMAT_NAME = "omnivis-records"
FORMAT_VERSION = 1
# The manifest's file name inside a dataset directory.
MANIFEST_NAME = "manifest.json"

# What a record must hold for each task prompt to have a target: the task's answer must be derivable from
# the record alone. A task needing some regions to carry a field (a phrase, a polygon) asks for at least one.
_TASK_REQUIREMENTS: dict[str, Callable[[Record], bool]] = {
    "<CAPTION>": lambda record: record.caption("brief") is not None,
    "<DETAILED_CAPTION>": lambda record: record.caption("detailed") is not None,
    "<MORE_DETAILED_CAPTION>": lambda record: record.caption("more_detailed") is not None,
    "<OD>": lambda record: bool(record.regions),
    "<REGION_PROPOSAL>": lambda record: bool(record.regions),
    "<REGION_TO_CATEGORY>": lambda record: bool(record.regions),
    "<OPEN_VOCABULARY_DETECTION>": lambda record: bool(record.regions),
    "<DENSE_REGION_CAPTION>": lambda record: any(region.phrase for region in record.regions),
    "<REGION_TO_DESCRIPTION>": lambda record: any(region.description for region in record.regions),
    "<REGION_TO_SEGMENTATION>": lambda record: any(region.polygons for region in record.regions),
    "<REFERRING_EXPRESSION_SEGMENTATION>": lambda record: any(
        record.regions[expression.region].polygons for expression in record.referring
    ),
    "<OCR>": lambda record: bool(record.text_lines),
    "<OCR_WITH_REGION>": lambda record: bool(record.text_lines),
    "<REGION_TO_OCR>": lambda record: bool(record.text_lines),
    "<CAPTION_TO_PHRASE_GROUNDING>": lambda record: any(grounding.phrases for grounding in record.groundings),
    "<VQA>": lambda record: bool(record.questions),
}
# Every task prompt the manifest counts records for.
DATASET_TASKS: tuple[str, ...] = tuple(sorted(_TASK_REQUIREMENTS))
# The annotation kinds the manifest counts, captions per level.
ANNOTATION_KINDS: tuple[str, ...] = (
    *(f"{level}_captions" for level in CAPTION_LEVELS),
    "regions",
    "polygons",
    "text_lines",
    "groundings",
    "grounded_phrases",
    "referring",
    "questions",
)


def supported_tasks(record: Record) -> frozenset[str]:
    """The task prompts `record` can supply a target for.

    Captions need a caption of their level; `<OD>`, `<REGION_PROPOSAL>`, `<REGION_TO_CATEGORY>` and
    `<OPEN_VOCABULARY_DETECTION>` need regions; `<DENSE_REGION_CAPTION>` a region with a phrase;
    `<REGION_TO_DESCRIPTION>` one with a description; `<REGION_TO_SEGMENTATION>` one with polygons;
    `<REFERRING_EXPRESSION_SEGMENTATION>` a referring expression whose region has polygons; the three OCR
    tasks need text lines; `<CAPTION_TO_PHRASE_GROUNDING>` a grounding with phrases; `<VQA>` a question.

    Args:
        record: A record that passed `Record.validate` (referring expressions point at real regions).
    """
    return frozenset(task for task, requirement in _TASK_REQUIREMENTS.items() if requirement(record))


def _annotation_counts(record: Record) -> Counter[str]:
    counts = Counter(f"{caption.level}_captions" for caption in record.captions)
    counts.update(
        regions=len(record.regions),
        polygons=sum(len(region.polygons) for region in record.regions),
        text_lines=len(record.text_lines),
        groundings=len(record.groundings),
        grounded_phrases=sum(len(grounding.phrases) for grounding in record.groundings),
        referring=len(record.referring),
        questions=len(record.questions),
    )
    return counts


@dataclass
class DatasetCounts:
    """Running counts of what a stream of records holds, for the manifest.

    Attributes:
        sources: Records per `Record.source`.
        annotations: Annotations per kind (`ANNOTATION_KINDS`).
        categories: Regions per category.
        tasks: Records per task prompt they support (`supported_tasks`).
    """

    sources: Counter[str] = field(default_factory=Counter)
    annotations: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    tasks: Counter[str] = field(default_factory=Counter)

    def add(self, record: Record) -> None:
        """Count one validated record."""
        self.sources[record.source] += 1
        self.annotations.update(_annotation_counts(record))
        self.categories.update(region.category for region in record.regions)
        self.tasks.update(supported_tasks(record))

    def as_manifest_fields(self) -> dict[str, dict[str, int]]:
        """The four count tables, keys sorted; every annotation kind and task appears, zero or not."""
        return {
            "sources": dict(sorted(self.sources.items())),
            "annotations": {kind: self.annotations[kind] for kind in ANNOTATION_KINDS},
            "categories": dict(sorted(self.categories.items())),
            "tasks": {task: self.tasks[task] for task in DATASET_TASKS},
        }


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest describes it.

    Attributes:
        file: The shard's file name inside the dataset directory, e.g. "shard-00000.parquet".
        records: Rows in the shard (at least one).
        bytes: The file's size.
        sha256: Hex SHA-256 digest of the file.
        first_index: Global index (across the dataset) of the shard's first record.
    """

    file: str
    records: int
    bytes: int
    sha256: str
    first_index: int


@dataclass(frozen=True)
class Manifest:
    """The content of `manifest.json`: what a dataset directory holds and how to check it.

    Attributes:
        description: Free text given by the writer.
        total_records: Records in all shards together.
        shards: The shards in global-index order.
        sources: Records per source.
        annotations: Annotations per kind (`ANNOTATION_KINDS`).
        categories: Regions per category.
        tasks: Records per task prompt they support (`supported_tasks`).
        format: Always `FORMAT_NAME`.
        format_version: The layout's version, `FORMAT_VERSION` when written by this omnivis.
        schema_version: The shards' schema version, `SCHEMA_VERSION` when written by this omnivis.
    """

    description: str
    total_records: int
    shards: tuple[ShardEntry, ...]
    sources: dict[str, int]
    annotations: dict[str, int]
    categories: dict[str, int]
    tasks: dict[str, int]
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict, identifiers first; `from_dict` reads it back."""
        identifiers = ("format", "format_version", "schema_version", "description")
        data = {name: getattr(self, name) for name in identifiers}
        data.update(total_records=self.total_records, shards=[asdict(shard) for shard in self.shards])
        data.update({name: dict(getattr(self, name)) for name in _COUNT_TABLES})
        return data

    @classmethod
    def from_dict(cls, data: object, where: str) -> Manifest:
        """Read and check a manifest's JSON content.

        Args:
            data: The parsed JSON.
            where: The manifest's path, for error messages.

        Raises:
            DatasetError: Naming `where` and the first field that is missing, mistyped, of an unknown
                format or version, or inconsistent (shard indices not contiguous, totals that disagree).
        """
        data = _mapping(data, "the manifest", where)
        if data.get("format") != FORMAT_NAME:
            raise DatasetError(f"{where}: format {data.get('format')!r} is not {FORMAT_NAME!r}")
        for key, supported in (("format_version", FORMAT_VERSION), ("schema_version", SCHEMA_VERSION)):
            if data.get(key) != supported:
                raise DatasetError(f"{where}: {key} {data.get(key)!r}; this omnivis reads {supported}")
        shards = tuple(_shard_entry(entry, where) for entry in _typed(data, "shards", list, where))
        tables = {name: _count_table(data, name, where) for name in _COUNT_TABLES}
        manifest = cls(
            description=_typed(data, "description", str, where),
            total_records=_typed(data, "total_records", int, where),
            shards=shards,
            sources=tables["sources"],
            annotations=tables["annotations"],
            categories=tables["categories"],
            tasks=tables["tasks"],
        )
        _check_shard_layout(manifest, where)
        return manifest


def _mapping(value: object, what: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: {what} must be a JSON object, got {type(value).__name__}")
    return value


def _typed(data: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = data.get(key)
    # bool is an int subclass in Python, never a count or an index here.
    if not isinstance(value, kind) or (isinstance(value, int) and (isinstance(value, bool) or value < 0)):
        expected = "a non-negative integer" if kind is int else f"a JSON {kind.__name__}"
        raise DatasetError(f"{where}: field {key!r} must be {expected}, got {value!r}")
    return value


def _count_table(data: Mapping[str, Any], key: str, where: str) -> dict[str, int]:
    table = _mapping(data.get(key), f"field {key!r}", where)
    return {str(name): _typed(table, name, int, f"{where}, {key}") for name in table}


def _shard_entry(entry: object, where: str) -> ShardEntry:
    entry = _mapping(entry, "a shard entry", where)
    shard = ShardEntry(**{name: _typed(entry, name, kind, where) for name, kind in _SHARD_FIELDS.items()})
    # The name is joined to the dataset directory: anything but a bare name could point outside it.
    if PurePath(shard.file).name != shard.file or shard.file in ("", ".", ".."):
        raise DatasetError(f"{where}: shard file {shard.file!r} must be a plain file name, without folders")
    if len(shard.sha256) != 64 or any(character not in "0123456789abcdef" for character in shard.sha256):
        raise DatasetError(f"{where}: shard {shard.file}: sha256 {shard.sha256!r} is not 64 lowercase hex")
    return shard


# The fields of a shard entry and their JSON types.
_SHARD_FIELDS: dict[str, type] = {
    "file": str, "records": int, "bytes": int, "sha256": str, "first_index": int
}
# The manifest's count tables, in the order they are written.
_COUNT_TABLES = ("sources", "annotations", "categories", "tasks")


def _check_shard_layout(manifest: Manifest, where: str) -> None:
    """Shards must be non-empty, distinct, and cover indices 0 .. total_records - 1 in order."""
    next_index = 0
    for shard in manifest.shards:
        if shard.records == 0 or shard.first_index != next_index:
            raise DatasetError(
                f"{where}: shard {shard.file} starts at index {shard.first_index} "
                f"with {shard.records} records; "
                f"expected a non-empty shard starting at {next_index}"
            )
        next_index += shard.records
    if next_index != manifest.total_records:
        raise DatasetError(
            f"{where}: the shards hold {next_index} records, total_records says {manifest.total_records}"
        )
    if len({shard.file for shard in manifest.shards}) != len(manifest.shards):
        raise DatasetError(f"{where}: a shard file is listed twice")


def read_manifest(directory: str | Path) -> Manifest:
    """Read and check the manifest of a dataset directory.

    Raises:
        DatasetError: The manifest is missing, not UTF-8 JSON, or fails `Manifest.from_dict`'s checks.
    """
    path = Path(directory) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise DatasetError(f"{path}: no manifest; is {path.parent} a dataset written by omnivis?") from error
    except (OSError, ValueError) as error:  # ValueError covers bad JSON and bad UTF-8
        raise DatasetError(f"{path}: unreadable manifest ({error})") from error
    return Manifest.from_dict(data, str(path))


def file_sha256(path: Path) -> str:
    """The hex SHA-256 digest of a file, as the manifest records it."""
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()
