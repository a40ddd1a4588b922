"""COCO import: hand-checked fields, RefCOCO refs and captions, and every kind of bad input named by file and
id (or listed under skip_bad)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from coco_files import jpeg_image, png_image
from pycocotools import mask as mask_utils

from omnivis.data.coco import SkippedItem, clockwise_on_screen, export_coco, import_coco
from omnivis.data.records import Caption, Provenance, ReferringExpression, Region
from omnivis.errors import DatasetError

COCO_SOURCE = Provenance("coco", 0)


def _write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _crowd_rle(width: int, height: int) -> dict[str, Any]:
    mask = np.zeros((height, width), dtype=np.uint8, order="F")
    mask[0:8, 0:8] = 1
    rle = mask_utils.encode(mask)
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _instances() -> dict[str, Any]:
    """Two images, two categories, a counter-clockwise polygon, two polygons of one object, a crowd RLE."""
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
            {"id": 2, "file_name": "sub/b.jpg", "width": 40, "height": 30},
        ],
        "categories": [{"id": 3, "name": "dog"}, {"id": 7, "name": "cat"}],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 3,
                "bbox": [2, 4, 10, 6],
                "iscrowd": 0,
                # Down the left side, along the bottom, up the right: counter-clockwise on screen.
                "segmentation": [[2, 4, 2, 10, 12, 10, 12, 4]],
            },
            {
                "id": 11,
                "image_id": 1,
                "category_id": 7,
                "bbox": [20.5, 8.25, 5, 5],
                "iscrowd": 0,
                "segmentation": [[20.5, 8.25, 25.5, 8.25, 25.5, 13.25], [20.5, 10, 22, 13, 20.5, 13]],
            },
            {
                "id": 12,
                "image_id": 2,
                "category_id": 3,
                "bbox": [0, 0, 8, 8],
                "iscrowd": 1,
                "segmentation": _crowd_rle(40, 30),
            },
        ],
    }


def _captions() -> dict[str, Any]:
    return {
        "annotations": [
            {"id": 100, "image_id": 1, "caption": "A dog and a cat. "},
            {"id": 101, "image_id": 2, "caption": "A crowd."},
        ]
    }


def _refs() -> list[dict[str, Any]]:
    sentences = [{"sent": "the cat", "raw": "The cat"}, {"sent": "cat on the right"}]
    return [
        {"ref_id": 5, "image_id": 1, "ann_id": 11, "category_id": 7, "sentences": sentences, "split": "val"}
    ]


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    """A COCO dataset on disk: images/, instances.json, captions.json, refs.json."""
    (tmp_path / "images" / "sub").mkdir(parents=True)
    (tmp_path / "images" / "a.png").write_bytes(png_image(64, 48))
    (tmp_path / "images" / "sub" / "b.jpg").write_bytes(jpeg_image(40, 30))
    _write_json(tmp_path / "instances.json", _instances())
    _write_json(tmp_path / "captions.json", _captions())
    _write_json(tmp_path / "refs.json", _refs())
    return tmp_path


def _import(directory: Path, **options: Any) -> Any:
    return import_coco(
        directory / "instances.json",
        directory / "images",
        captions_json=directory / "captions.json",
        refs_json=directory / "refs.json",
        **options,
    )


def test_import_reads_every_field(coco_dir: Path) -> None:
    imported = _import(coco_dir)
    assert imported.skipped == []
    first, second = imported.records
    assert (first.image_id, first.width, first.height, first.source) == ("1", 64, 48, "coco")
    assert first.image == (coco_dir / "images" / "a.png").read_bytes()
    assert first.regions == (
        # Reversed to clockwise on screen, from the same first vertex.
        Region((2.0, 4.0, 12.0, 10.0), "dog", COCO_SOURCE, polygons=((2, 4, 12, 4, 12, 10, 2, 10),)),
        # Already clockwise: kept as written.
        Region(
            (20.5, 8.25, 25.5, 13.25),
            "cat",
            COCO_SOURCE,
            polygons=((20.5, 8.25, 25.5, 8.25, 25.5, 13.25), (20.5, 10, 22, 13, 20.5, 13)),
        ),
    )
    assert first.captions == (Caption("brief", "A dog and a cat.", COCO_SOURCE),)
    assert first.referring == (
        ReferringExpression("the cat", 1, COCO_SOURCE),
        ReferringExpression("cat on the right", 1, COCO_SOURCE),
    )
    assert first.metadata == {"file_name": "a.png", "split": "val"}
    assert second.image_id == "2" and second.image == (coco_dir / "images" / "sub" / "b.jpg").read_bytes()
    assert second.regions == (Region((0.0, 0.0, 8.0, 8.0), "dog", COCO_SOURCE, is_crowd=True),)
    assert second.captions == (Caption("brief", "A crowd.", COCO_SOURCE),)
    assert second.metadata == {"file_name": "sub/b.jpg"}


def test_source_names_the_records_and_every_annotation(coco_dir: Path) -> None:
    record = _import(coco_dir, source="refcoco").records[0]
    assert record.source == "refcoco"
    assert {region.provenance for region in record.regions} == {Provenance("refcoco", 0)}
    assert {referring.provenance for referring in record.referring} == {Provenance("refcoco", 0)}


def test_clockwise_on_screen_by_hand() -> None:
    clockwise = (0.0, 0.0, 4.0, 0.0, 4.0, 3.0)  # right, then down: clockwise with y pointing down
    assert clockwise_on_screen(clockwise) == clockwise
    assert clockwise_on_screen((0, 0, 4, 3, 4, 0)) == (0.0, 0.0, 4.0, 0.0, 4.0, 3.0)
    assert clockwise_on_screen((1, 1, 2, 2, 3, 3)) == (1.0, 1.0, 2.0, 2.0, 3.0, 3.0)  # no area: as it is


def test_imported_coco_survives_export_and_import(coco_dir: Path, tmp_path: Path) -> None:
    original = _import(coco_dir).records
    out = export_coco(original, tmp_path / "again" / "set.json", images_dir=tmp_path / "again" / "pictures")
    assert import_coco(out, tmp_path / "again" / "pictures").records == original


def _add_annotation(instances: dict[str, Any], **fields: Any) -> None:
    annotation = {
        "id": 13,
        "image_id": 1,
        "category_id": 3,
        "bbox": [1, 1, 2, 2],
        "iscrowd": 0,
        "segmentation": [],
    }
    instances["annotations"].append({**annotation, **fields})


@dataclass
class _Dataset:
    """The good dataset's three files, parsed, ready to be broken in one place."""

    directory: Path
    instances: dict[str, Any]
    captions: dict[str, Any]
    refs: list[dict[str, Any]]


def _add_image(data: _Dataset, name: str, content: bytes | None, width: int = 12) -> None:
    """Image 3, 12 pixels high, its file holding `content` (none when None)."""
    data.instances["images"].append({"id": 3, "file_name": name, "width": width, "height": 12})
    if content is not None:
        (data.directory / "images" / name).write_bytes(content)


# Each bad item: how it is made, the file it is in, and the item as `SkippedItem.what` names it. The rest of
# the dataset stays good.
BAD_ITEMS: dict[str, tuple[Any, str, str]] = {
    "dangling image_id": (
        lambda data: _add_annotation(data.instances, image_id=99),
        "instances.json",
        "annotation 13",
    ),
    "dangling category_id": (
        lambda data: _add_annotation(data.instances, category_id=99),
        "instances.json",
        "annotation 13",
    ),
    "duplicate annotation id": (
        lambda data: _add_annotation(data.instances, id=10),
        "instances.json",
        "annotation 10",
    ),
    "negative box size": (
        lambda data: _add_annotation(data.instances, bbox=[1, 1, -2, 3]),
        "instances.json",
        "annotation 13",
    ),
    "negative box corner": (
        lambda data: _add_annotation(data.instances, bbox=[-1, 0, 3, 3]),
        "instances.json",
        "annotation 13",
    ),
    "box outside image": (
        lambda data: _add_annotation(data.instances, bbox=[60, 40, 10, 10]),
        "instances.json",
        "annotation 13",
    ),
    "NaN box": (
        lambda data: _add_annotation(data.instances, bbox=[math.nan, 1, 2, 2]),
        "instances.json",
        "annotation 13",
    ),
    "odd polygon": (
        lambda data: _add_annotation(data.instances, segmentation=[[1, 1, 5, 1, 5]]),
        "instances.json",
        "annotation 13",
    ),
    "missing image file": (
        lambda data: _add_image(data, "gone.png", None),
        "instances.json",
        "image 3",
    ),
    "undecodable image": (
        lambda data: _add_image(data, "junk.png", b"not a png"),
        "instances.json",
        "image 3",
    ),
    "size mismatch": (
        lambda data: _add_image(data, "small.png", png_image(12, 12), width=10),
        "instances.json",
        "image 3",
    ),
    "ref to unknown annotation": (
        lambda data: data.refs.append({**data.refs[0], "ref_id": 6, "ann_id": 999}),
        "refs.json",
        "ref 6",
    ),
    "ref to unknown image": (
        lambda data: data.refs.append({**data.refs[0], "ref_id": 6, "image_id": 999}),
        "refs.json",
        "ref 6",
    ),
    "caption of unknown image": (
        lambda data: data.captions["annotations"].append({"id": 200, "image_id": 99, "caption": "lost"}),
        "captions.json",
        "caption annotation 200",
    ),
    "stored expression of unknown annotation": (
        lambda data: data.instances["images"][0].update(
            omnivis={"referring": [{"expression": "it", "ann_id": 999}]}
        ),
        "instances.json",
        "image 1 referring expression 0",
    ),
}


def _broken_dataset(directory: Path, case: str) -> None:
    data = _Dataset(directory, _instances(), _captions(), _refs())
    BAD_ITEMS[case][0](data)
    _write_json(directory / "instances.json", data.instances)
    _write_json(directory / "captions.json", data.captions)
    _write_json(directory / "refs.json", data.refs)


@pytest.mark.parametrize("case", sorted(BAD_ITEMS))
def test_bad_item_is_named_or_listed(coco_dir: Path, case: str) -> None:
    good = _import(coco_dir).records
    _broken_dataset(coco_dir, case)
    _, file_name, what = BAD_ITEMS[case]
    with pytest.raises(DatasetError) as raised:
        _import(coco_dir)
    assert str(raised.value).startswith(f"{coco_dir / file_name}: {what}: ")
    imported = _import(coco_dir, skip_bad=True)
    assert [(Path(item.file).name, item.what) for item in imported.skipped] == [(file_name, what)]
    if case != "stored expression of unknown annotation":
        assert imported.records == good  # everything else comes through untouched


def test_duplicate_image_ids_drop_both_images_with_their_annotations(coco_dir: Path) -> None:
    instances = _instances()
    instances["images"].append({"id": 1, "file_name": "sub/b.jpg", "width": 40, "height": 30})
    _write_json(coco_dir / "instances.json", instances)
    with pytest.raises(DatasetError, match="instances.json: image 1: duplicate image id"):
        _import(coco_dir)
    imported = _import(coco_dir, skip_bad=True)
    assert [item.what for item in imported.skipped] == ["image 1", "image 1"]
    assert [record.image_id for record in imported.records] == ["2"]


def test_ref_to_a_skipped_annotation_is_listed_too(coco_dir: Path) -> None:
    instances = _instances()
    instances["annotations"][1]["bbox"] = [60, 40, 10, 10]  # annotation 11, which ref 5 names
    _write_json(coco_dir / "instances.json", instances)
    imported = _import(coco_dir, skip_bad=True)
    assert [(Path(item.file).name, item.what) for item in imported.skipped] == [
        ("instances.json", "annotation 11"),
        ("refs.json", "ref 5"),
    ]
    assert "annotation 11 was skipped" in imported.skipped[1].reason
    assert imported.records[0].referring == () and len(imported.records[0].regions) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"annotations": [], "categories": []}), "missing the top-level 'images' list"),
        (json.dumps({"images": [], "annotations": {}}), "top-level 'annotations' must be a list"),
        (json.dumps([1, 2]), "the top level must be a JSON object"),
        (
            json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}] * 2}),
            "category 1",
        ),
    ],
)
def test_broken_file_always_raises(coco_dir: Path, content: str, message: str) -> None:
    (coco_dir / "instances.json").write_text(content, encoding="utf-8")
    for skip_bad in (False, True):
        with pytest.raises(DatasetError, match=message) as raised:
            import_coco(coco_dir / "instances.json", coco_dir / "images", skip_bad=skip_bad)
        assert str(coco_dir / "instances.json") in str(raised.value)


def test_refs_file_must_be_a_list(coco_dir: Path) -> None:
    _write_json(coco_dir / "refs.json", {"refs": _refs()})
    with pytest.raises(DatasetError, match="refs.json: a refs file must hold a JSON list"):
        _import(coco_dir, skip_bad=True)


def test_skipped_item_fields(coco_dir: Path) -> None:
    _broken_dataset(coco_dir, "dangling image_id")
    (item,) = _import(coco_dir, skip_bad=True).skipped
    assert item == SkippedItem(str(coco_dir / "instances.json"), "annotation 13", item.reason)
    assert "image_id 99 does not exist" in item.reason


def test_malformed_stored_annotations_reject_their_image(coco_dir: Path) -> None:
    instances = _instances()
    instances["images"][0]["omnivis"] = {"captions": [{"level": "epic", "text": "a dog"}]}
    _write_json(coco_dir / "instances.json", instances)
    with pytest.raises(DatasetError, match="instances.json: image 1: unknown caption level 'epic'"):
        _import(coco_dir)
    imported = _import(coco_dir, skip_bad=True)
    assert [item.what for item in imported.skipped] == ["image 1"]
    assert [record.image_id for record in imported.records] == ["2"]
