"""The Arrow schema of a dataset shard, and exact conversion between `Record`s and its rows.

A dataset is a directory of Parquet shards plus `manifest.json` (see `omnivis.data.parquet` and
`omnivis.data.manifest`). Every shard
has the columns of `SCHEMA`, one row per `Record`, each annotation kind a list of typed structs with its
provenance flattened into `source` and `round` fields. Every field is required (not nullable) except the
scores, so a null where the record has a value cannot even be stored; the reader checks a shard's
columns against `SCHEMA` and its schema version (kept in the Parquet key-value metadata) before reading.

Conversion is exact: `row_to_record(record_to_row(record)) == record` for every record that passes
`Record.validate` (coordinates are stored as float64, so an int coordinate comes back as the equal float).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from omnivis.data.records import (
    Caption,
    GroundedPhrase,
    Grounding,
    Provenance,
    QuestionAnswer,
    Record,
    ReferringExpression,
    Region,
    TextLine,
)
from omnivis.errors import DatasetError

# Version of `SCHEMA`; bumped whenever a column is added, removed or retyped.
SCHEMA_VERSION = 1
# Key of the schema version in each shard's Parquet key-value metadata.
SCHEMA_VERSION_KEY = b"omnivis.schema_version"


def _required(name: str, arrow_type: pa.DataType) -> pa.Field:
    return pa.field(name, arrow_type, nullable=False)


def _list_of(arrow_type: pa.DataType, size: int = -1) -> pa.DataType:
    """A list (of fixed `size` when given) whose items are never null."""
    return pa.list_(_required("item", arrow_type), size)


_PROVENANCE_FIELDS = [_required("source", pa.string()), _required("round", pa.int32())]
_BOX = _list_of(pa.float64(), 4)
_CAPTION = pa.struct([_required("level", pa.string()), _required("text", pa.string()), *_PROVENANCE_FIELDS])
_REGION = pa.struct(
    [
        _required("box", _BOX),
        _required("category", pa.string()),
        _required("phrase", pa.string()),
        _required("description", pa.string()),
        _required("polygons", _list_of(_list_of(pa.float64()))),
        pa.field("score", pa.float64(), nullable=True),  # None for truth, a confidence for predictions
        _required("is_crowd", pa.bool_()),
        *_PROVENANCE_FIELDS,
    ]
)
_TEXT_LINE = pa.struct(
    [
        _required("text", pa.string()),
        _required("quad", _list_of(pa.float64(), 8)),
        pa.field("score", pa.float64(), nullable=True),
        *_PROVENANCE_FIELDS,
    ]
)
_GROUNDED_PHRASE = pa.struct(
    [
        _required("phrase", pa.string()),
        _required("start", pa.int32()),
        _required("end", pa.int32()),
        _required("boxes", _list_of(_BOX)),
    ]
)
_GROUNDING = pa.struct(
    [_required("caption", pa.string()), _required("phrases", _list_of(_GROUNDED_PHRASE)), *_PROVENANCE_FIELDS]
)
_REFERRING = pa.struct(
    [_required("expression", pa.string()), _required("region", pa.int32()), *_PROVENANCE_FIELDS]
)
_QUESTION = pa.struct(
    [
        _required("question", pa.string()),
        _required("answer", pa.string()),
        _required("kind", pa.string()),
        *_PROVENANCE_FIELDS,
    ]
)

# The columns of every shard, one row per record.
SCHEMA = pa.schema(
    [
        _required("image_id", pa.string()),
        _required("image", pa.binary()),
        _required("width", pa.int32()),
        _required("height", pa.int32()),
        _required("source", pa.string()),
        _required("captions", _list_of(_CAPTION)),
        _required("regions", _list_of(_REGION)),
        _required("text_lines", _list_of(_TEXT_LINE)),
        _required("groundings", _list_of(_GROUNDING)),
        _required("referring", _list_of(_REFERRING)),
        _required("questions", _list_of(_QUESTION)),
        _required("metadata", pa.map_(pa.string(), _required("value", pa.string()))),
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()},
)


def record_to_row(record: Record) -> dict[str, Any]:
    """The Python form of `record`'s row in `SCHEMA`, as `pyarrow.Table.from_pylist` takes it."""
    return {
        "image_id": record.image_id,
        "image": bytes(record.image),
        "width": _integer(record.width, "width"),
        "height": _integer(record.height, "height"),
        "source": record.source,
        "captions": [
            {"level": c.level, "text": c.text, **_provenance_row(c.provenance)} for c in record.captions
        ],
        "regions": [_region_row(region) for region in record.regions],
        "text_lines": [
            {"text": t.text, "quad": list(t.quad), "score": t.score, **_provenance_row(t.provenance)}
            for t in record.text_lines
        ],
        "groundings": [_grounding_row(grounding) for grounding in record.groundings],
        "referring": [
            {
                "expression": r.expression,
                "region": _integer(r.region, "region"),
                **_provenance_row(r.provenance),
            }
            for r in record.referring
        ],
        "questions": [
            {"question": q.question, "answer": q.answer, "kind": q.kind, **_provenance_row(q.provenance)}
            for q in record.questions
        ],
        "metadata": list(record.metadata.items()),
    }


def _integer(value: int, name: str) -> int:
    """`value`, which must be an int: Arrow would silently truncate a float stored in an integer column."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return value


def _provenance_row(provenance: Provenance) -> dict[str, Any]:
    return {"source": provenance.source, "round": _integer(provenance.round, "provenance round")}


def _region_row(region: Region) -> dict[str, Any]:
    return {
        "box": list(region.box),
        "category": region.category,
        "phrase": region.phrase,
        "description": region.description,
        "polygons": [list(polygon) for polygon in region.polygons],
        "score": region.score,
        "is_crowd": region.is_crowd,
        **_provenance_row(region.provenance),
    }


def _grounding_row(grounding: Grounding) -> dict[str, Any]:
    phrases = [
        {
            "phrase": p.phrase,
            "start": _integer(p.start, "phrase start"),
            "end": _integer(p.end, "phrase end"),
            "boxes": [list(box) for box in p.boxes],
        }
        for p in grounding.phrases
    ]
    return {"caption": grounding.caption, "phrases": phrases, **_provenance_row(grounding.provenance)}


def row_to_record(row: Mapping[str, Any]) -> Record:
    """The record of a row read from a shard (`pyarrow.Table.to_pylist` form); inverse of `record_to_row`."""
    return Record(
        image_id=row["image_id"],
        image=row["image"],
        width=row["width"],
        height=row["height"],
        source=row["source"],
        captions=tuple(Caption(c["level"], c["text"], _provenance(c)) for c in row["captions"]),
        regions=tuple(_region(r) for r in row["regions"]),
        text_lines=tuple(
            TextLine(t["text"], tuple(t["quad"]), _provenance(t), t["score"]) for t in row["text_lines"]
        ),
        groundings=tuple(_grounding(g) for g in row["groundings"]),
        referring=tuple(
            ReferringExpression(r["expression"], r["region"], _provenance(r)) for r in row["referring"]
        ),
        questions=tuple(
            QuestionAnswer(q["question"], q["answer"], q["kind"], _provenance(q)) for q in row["questions"]
        ),
        metadata=dict(row["metadata"]),
    )


def _provenance(row: Mapping[str, Any]) -> Provenance:
    return Provenance(row["source"], row["round"])


def _region(row: Mapping[str, Any]) -> Region:
    return Region(
        box=tuple(row["box"]),
        category=row["category"],
        provenance=_provenance(row),
        phrase=row["phrase"],
        description=row["description"],
        polygons=tuple(tuple(polygon) for polygon in row["polygons"]),
        score=row["score"],
        is_crowd=row["is_crowd"],
    )


def _grounding(row: Mapping[str, Any]) -> Grounding:
    phrases = tuple(
        GroundedPhrase(p["phrase"], p["start"], p["end"], tuple(tuple(box) for box in p["boxes"]))
        for p in row["phrases"]
    )
    return Grounding(row["caption"], phrases, _provenance(row))


# What converting an unstorable value raises: pyarrow's own errors, OverflowError for ints beyond 64 bits,
# TypeError and AttributeError for values of the wrong kind (e.g. a provenance that is None).
_CONVERSION_ERRORS = (pa.ArrowException, OverflowError, TypeError, AttributeError, ValueError)


def records_to_table(records: Sequence[Record], first_position: int = 0) -> pa.Table:
    """Convert records to a table of `SCHEMA`.

    Args:
        records: The records, already validated.
        first_position: Position of `records[0]` in the caller's stream, for error messages.

    Raises:
        DatasetError: Naming the position and image_id of the first record whose values do not fit the
            schema (a None where a value is required, a string where a number is, an int32 overflow).
    """
    try:
        rows = [record_to_row(record) for record in records]
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        if _first_null_where_required(table) is None:
            return table
    except _CONVERSION_ERRORS:
        pass  # fall through to find, one record at a time, which record is at fault
    for offset, record in enumerate(records):
        where = f"record {first_position + offset} (image_id {getattr(record, 'image_id', None)!r})"
        try:
            single = pa.Table.from_pylist([record_to_row(record)], schema=SCHEMA)
        except _CONVERSION_ERRORS as error:
            raise DatasetError(f"{where}: cannot be stored: {error}") from error
        null_path = _first_null_where_required(single)
        if null_path is not None:
            raise DatasetError(f"{where}: cannot be stored: {null_path} is None but a value is required")
    raise AssertionError("a batch failed to convert, yet each of its records converts")  # pragma: no cover


def _first_null_where_required(table: pa.Table) -> str | None:
    """The path (e.g. "regions.phrase") of the first required field holding a null, or None."""
    for schema_field, column in zip(table.schema, table.columns, strict=True):
        for chunk in column.chunks:
            path = _null_path(chunk, schema_field, schema_field.name)
            if path is not None:
                return path
    return None


def _null_path(array: pa.Array, array_field: pa.Field, path: str) -> str | None:
    """The path of the first null that `array_field` (or a field nested in it) forbids, or None."""
    if array.null_count and not array_field.nullable:
        return path
    arrow_type = array_field.type
    children: list[tuple[pa.Array, pa.Field, str]] = []
    if pa.types.is_struct(arrow_type):
        children = [(a, f, f"{path}.{f.name}") for a, f in zip(array.flatten(), arrow_type, strict=True)]
    elif pa.types.is_map(arrow_type):
        children = [(array.keys, arrow_type.key_field, path), (array.items, arrow_type.item_field, path)]
    elif pa.types.is_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        children = [(array.flatten(), arrow_type.value_field, path)]
    return next((found for child in children if (found := _null_path(*child)) is not None), None)


def check_shard_schema(schema: pa.Schema, where: str) -> None:
    """Check that a shard's Arrow schema holds every column of `SCHEMA`, typed alike, at a known version.

    Columns beyond `SCHEMA`'s are allowed and ignored.

    Raises:
        DatasetError: Naming `where` and the version problem, the missing columns, or the first column
            whose type differs.
    """
    version = (schema.metadata or {}).get(SCHEMA_VERSION_KEY)
    if version is None:
        raise DatasetError(f"{where}: no omnivis schema version in its Parquet metadata (not omnivis's)")
    if not version.isdigit() or int(version) != SCHEMA_VERSION:
        found = version.decode(errors="replace")
        raise DatasetError(f"{where}: schema version {found!r}; this omnivis reads {SCHEMA_VERSION}")
    missing = [name for name in SCHEMA.names if name not in schema.names]
    if missing:
        raise DatasetError(f"{where}: missing column(s) {', '.join(missing)}")
    repeated = [name for name in SCHEMA.names if schema.names.count(name) > 1]
    if repeated:
        raise DatasetError(f"{where}: column(s) {', '.join(repeated)} appear more than once")
    for expected in SCHEMA:
        actual = schema.field(expected.name)
        # Field equality covers nullability at every depth, but not the names of list items, which
        # Parquet writers spell differently ("item", "element").
        if not actual.equals(expected):
            raise DatasetError(
                f"{where}: column {expected.name!r} has type {_describe_field(actual)}, "
                f"expected {_describe_field(expected)}"
            )


def _describe_field(schema_field: pa.Field) -> str:
    return f"{schema_field.type}{'' if schema_field.nullable else ' not null'}"
