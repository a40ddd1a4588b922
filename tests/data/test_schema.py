"""The shard schema: exact Record <-> Arrow round trips, unstorable records refused, shard schemas checked."""

import dataclasses
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from record_builders import WORLD, full_record, valid_records

from omnivis.data.records import Caption, Provenance, Region
from omnivis.data.schema import (
    SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    check_shard_schema,
    record_to_row,
    records_to_table,
    row_to_record,
)
from omnivis.errors import DatasetError


def _through_parquet(table: pa.Table) -> pa.Table:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return pq.read_table(io.BytesIO(buffer.getvalue()))


@settings(max_examples=75, deadline=None)
@given(st.lists(valid_records(), min_size=1, max_size=4))
def test_any_valid_record_round_trips_exactly_through_parquet(records: list) -> None:
    for record in records:
        record.validate()  # the strategy's records are valid, so the round trip must accept them all
    table = _through_parquet(records_to_table(records))
    assert [row_to_record(row) for row in table.to_pylist()] == records


def test_round_trip_keeps_every_field_of_a_full_record() -> None:
    record = full_record(3)
    back = row_to_record(_through_parquet(records_to_table([record])).to_pylist()[0])
    assert back == record
    # Spot checks of what == would also accept: container types are the record's own.
    assert isinstance(back.regions, tuple) and isinstance(back.regions[0].polygons[0], tuple)
    assert back.regions[1].score == 0.75 and back.regions[0].score is None
    assert back.regions[1].provenance == Provenance("specialist:detector", 1)
    assert back.metadata == {"scene": "3", "seed": "7"}
    assert back.image == record.image and isinstance(back.image, bytes)


def test_float_coordinates_keep_every_bit() -> None:
    awkward = 0.1 + 0.2  # not representable in float32: a narrower column would change it
    region = Region((awkward, 5e-324, 3.0, 2.0), "dot", WORLD)
    record = dataclasses.replace(full_record(0), regions=(region,), referring=())
    back = row_to_record(_through_parquet(records_to_table([record])).to_pylist()[0])
    assert back.regions[0].box[0].hex() == awkward.hex()
    assert back.regions[0].box[1] == 5e-324


def test_schema_columns_and_types() -> None:
    assert SCHEMA.names == [
        "image_id", "image", "width", "height", "source", "captions", "regions",
        "text_lines", "groundings", "referring", "questions", "metadata",
    ]  # fmt: skip
    assert SCHEMA.field("image").type == pa.binary()
    assert SCHEMA.field("width").type == pa.int32()
    region = SCHEMA.field("regions").type.value_type
    assert region.field("box").type == pa.list_(pa.field("item", pa.float64(), nullable=False), 4)
    assert region.field("polygons").type.value_type.value_type == pa.float64()
    assert region.field("score").nullable and not region.field("category").nullable
    assert SCHEMA.field("text_lines").type.value_type.field("quad").type.list_size == 8
    assert pa.types.is_map(SCHEMA.field("metadata").type)
    assert SCHEMA.metadata[SCHEMA_VERSION_KEY] == str(SCHEMA_VERSION).encode()
    assert not any(field.nullable for field in SCHEMA)


def test_a_none_where_a_value_is_required_names_the_record_and_field() -> None:
    records = [full_record(0), full_record(1)]
    unnamed = dataclasses.replace(records[1].regions[0], phrase=None)
    records[1] = dataclasses.replace(records[1], regions=(unnamed,))
    with pytest.raises(DatasetError, match=r"record 11 \(image_id 'image-001'\).*regions\.phrase is None"):
        records_to_table(records, first_position=10)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"captions": (Caption("brief", 5, WORLD),)}, "cannot be stored"),  # type: ignore[arg-type]
        ({"captions": (Caption("brief", "x", Provenance("world", 2**31)),)}, "cannot be stored"),
        ({"width": 2**31, "regions": (), "referring": ()}, "cannot be stored"),
        ({"width": 2**70, "regions": (), "referring": ()}, "cannot be stored"),
        # pyarrow would store round 1.5 as 1: refused instead of changed.
        (
            {"captions": (Caption("brief", "x", Provenance("world", 1.5)),)},  # type: ignore[arg-type]
            "cannot be stored: provenance round must be an integer, got 1.5",
        ),
        ({"captions": (Caption("brief", "x", None),)}, "cannot be stored"),  # type: ignore[arg-type]
        ({"metadata": {"key": 1}}, "cannot be stored"),
    ],
)
def test_values_of_the_wrong_type_or_range_name_the_record(change: dict, message: str) -> None:
    bad = dataclasses.replace(full_record(4), **change)
    with pytest.raises(DatasetError, match=rf"record 0 \(image_id 'image-004'\): {message}"):
        records_to_table([bad])


def test_row_to_record_inverts_record_to_row_on_plain_python_rows() -> None:
    record = full_record(2)
    assert row_to_record(record_to_row(record)) == record


def _schema_without(name: str) -> pa.Schema:
    return pa.schema([field for field in SCHEMA if field.name != name], metadata=SCHEMA.metadata)


def test_shard_schema_check_accepts_the_schema_and_extra_columns() -> None:
    check_shard_schema(SCHEMA, "shard.parquet")
    check_shard_schema(SCHEMA.append(pa.field("extra", pa.int8())), "shard.parquet")
    # Written through Parquet, list items come back named "element" rather than "item": still accepted.
    check_shard_schema(_through_parquet(records_to_table([full_record(0)])).schema, "shard.parquet")


def test_shard_schema_check_names_missing_columns() -> None:
    with pytest.raises(DatasetError, match=r"shard\.parquet: missing column\(s\) regions"):
        check_shard_schema(_schema_without("regions"), "shard.parquet")


def test_shard_schema_check_names_a_wrongly_typed_column() -> None:
    schema = _schema_without("width").insert(2, pa.field("width", pa.string(), nullable=False))
    expected = r"shard\.parquet: column 'width' has type string not null, expected int32"
    with pytest.raises(DatasetError, match=expected):
        check_shard_schema(schema, "shard.parquet")


def test_shard_schema_check_refuses_nullable_where_the_schema_is_not() -> None:
    schema = _schema_without("height").insert(3, pa.field("height", pa.int32()))
    with pytest.raises(DatasetError, match=r"column 'height' has type int32, expected int32 not null"):
        check_shard_schema(schema, "shard.parquet")


def test_shard_schema_check_needs_a_known_schema_version() -> None:
    with pytest.raises(DatasetError, match="no omnivis schema version"):
        check_shard_schema(SCHEMA.remove_metadata(), "shard.parquet")
    with pytest.raises(DatasetError, match="schema version '99'; this omnivis reads 1"):
        check_shard_schema(SCHEMA.with_metadata({SCHEMA_VERSION_KEY: b"99"}), "shard.parquet")
