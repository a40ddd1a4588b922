"""The manifest: task support per record, counts, and strict JSON reading."""

import dataclasses
import json
from pathlib import Path

import pytest
from record_builders import WORLD, full_record, png_bytes

from omnivis.data.manifest import (
    ANNOTATION_KINDS,
    DATASET_TASKS,
    FORMAT_NAME,
    DatasetCounts,
    Manifest,
    ShardEntry,
    read_manifest,
    supported_tasks,
)
from omnivis.data.records import Caption, Record, ReferringExpression, Region
from omnivis.errors import DatasetError
from omnivis.tasks.registry import TASKS


def _bare(**annotations: object) -> Record:
    return Record("bare", png_bytes(10, 10), 10, 10, "test", **annotations)  # type: ignore[arg-type]


def test_every_registered_task_is_counted() -> None:
    assert set(DATASET_TASKS) == set(TASKS)


def test_a_record_with_everything_supports_every_task() -> None:
    assert supported_tasks(full_record(0)) == set(TASKS) - {"<MORE_DETAILED_CAPTION>"}


def test_a_bare_record_supports_no_task() -> None:
    assert supported_tasks(_bare()) == frozenset()


def test_region_tasks_follow_the_fields_regions_carry() -> None:
    plain = Region((0, 0, 5, 5), "star", WORLD)
    assert supported_tasks(_bare(regions=(plain,))) == {
        "<OD>", "<REGION_PROPOSAL>", "<REGION_TO_CATEGORY>", "<OPEN_VOCABULARY_DETECTION>"
    }  # fmt: skip
    phrased = dataclasses.replace(plain, phrase="a star")
    assert "<DENSE_REGION_CAPTION>" in supported_tasks(_bare(regions=(phrased,)))
    assert "<REGION_TO_DESCRIPTION>" not in supported_tasks(_bare(regions=(phrased,)))
    outlined = dataclasses.replace(plain, polygons=((0, 0, 5, 0, 5, 5),))
    refer_plain = ReferringExpression("the star", 0, WORLD)
    # Referring segmentation needs the referred region's polygons, not just any polygons.
    assert "<REFERRING_EXPRESSION_SEGMENTATION>" not in supported_tasks(
        _bare(regions=(plain, outlined), referring=(refer_plain,))
    )
    assert "<REFERRING_EXPRESSION_SEGMENTATION>" in supported_tasks(
        _bare(regions=(outlined, plain), referring=(refer_plain,))
    )


def test_caption_tasks_follow_caption_levels() -> None:
    record = _bare(captions=(Caption("more_detailed", "long", WORLD),))
    assert supported_tasks(record) == {"<MORE_DETAILED_CAPTION>"}


def test_counts_by_hand() -> None:
    counts = DatasetCounts()
    counts.add(full_record(0))
    counts.add(full_record(1))
    counts.add(dataclasses.replace(_bare(), source="coco"))
    fields = counts.as_manifest_fields()
    assert fields["sources"] == {"coco": 1, "world": 2}
    assert fields["categories"] == {"square": 2, "star": 2}
    assert fields["annotations"] == {
        "brief_captions": 2, "detailed_captions": 2, "more_detailed_captions": 0, "regions": 4, "polygons": 2,
        "text_lines": 2, "groundings": 2, "grounded_phrases": 2, "referring": 2, "questions": 2,
    }  # fmt: skip
    assert list(fields["annotations"]) == list(ANNOTATION_KINDS)
    assert fields["tasks"]["<OD>"] == 2 and fields["tasks"]["<MORE_DETAILED_CAPTION>"] == 0
    assert list(fields["tasks"]) == sorted(TASKS)


def _manifest() -> Manifest:
    shards = (
        ShardEntry("shard-00000.parquet", 3, 100, "a" * 64, 0),
        ShardEntry("shard-00001.parquet", 2, 90, "b" * 64, 3),
    )
    counts = DatasetCounts()
    counts.add(full_record(0))
    return Manifest("test set", 5, shards, **counts.as_manifest_fields())


def test_manifest_round_trips_through_json() -> None:
    manifest = _manifest()
    text = json.dumps(manifest.to_dict())
    assert Manifest.from_dict(json.loads(text), "m.json") == manifest
    assert json.loads(text)["format"] == FORMAT_NAME
    assert list(json.loads(text))[:4] == ["format", "format_version", "schema_version", "description"]


def _broken(**changes: object) -> dict:
    data = _manifest().to_dict()
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_broken(format="parquet"), "format 'parquet' is not 'omnivis-records'"),
        (_broken(format_version=2), "format_version 2; this omnivis reads 1"),
        (_broken(schema_version=None), "schema_version None"),
        (_broken(total_records=6), "the shards hold 5 records, total_records says 6"),
        (_broken(total_records=True), "field 'total_records' must be a non-negative integer"),
        (_broken(description=3), "field 'description' must be a JSON str"),
        (_broken(tasks={"<OD>": -1}), "tasks: field '<OD>' must be a non-negative integer"),
        (_broken(sources=[]), "field 'sources' must be a JSON object"),
        ([], "the manifest must be a JSON object"),
    ],
)
def test_manifest_fields_are_checked(data: object, message: str) -> None:
    with pytest.raises(DatasetError, match=message) as caught:
        Manifest.from_dict(data, "m.json")
    assert str(caught.value).startswith("m.json")


def _with_shard(index: int, **changes: object) -> dict:
    data = _manifest().to_dict()
    data["shards"][index].update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_with_shard(1, first_index=4), "shard-00001.parquet starts at index 4 with 2 records; expected"),
        (_with_shard(0, records=0, first_index=0), "starts at index 0 with 0 records"),
        (_with_shard(1, file="../elsewhere.parquet"), "must be a plain file name"),
        (_with_shard(1, file="shard-00000.parquet"), "listed twice"),
        (_with_shard(0, sha256="XYZ"), "is not 64 lowercase hex"),
        (_with_shard(0, bytes="100"), "field 'bytes' must be a non-negative integer"),
    ],
)
def test_shard_entries_are_checked(data: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message) as caught:
        Manifest.from_dict(data, "m.json")
    assert str(caught.value).startswith("m.json")


def test_read_manifest_names_a_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"manifest\.json: no manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"manifest\.json: unreadable manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest().to_dict()), encoding="utf-8")
    assert read_manifest(tmp_path) == _manifest()
