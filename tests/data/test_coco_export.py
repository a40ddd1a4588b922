"""COCO export: pycocotools reads it (masks, areas, COCOeval), import gives the records back exactly, and
failures leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from coco_files import jpeg_image, png_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from omnivis.data.coco import export_coco, import_coco
from omnivis.data.records import (
    CAPTION_LEVELS,
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
from omnivis.errors import DatasetError, InputError

COCO_SOURCE = Provenance("coco", 0)


def _rich_records() -> list[Record]:
    """Records using every field; coordinates on the 1/16-pixel grid, as the world writes them."""
    engine = Provenance("specialist:detector", 2)
    world = Provenance("world", 0)
    star = Region(
        (2.0625, 4.5, 12.25, 10.0),
        "star",
        world,
        phrase="small red star",
        description="A small red star near the top left.",
        polygons=((2.0625, 4.5, 12.25, 4.5, 12.25, 10.0), (3.0, 8.0, 5.5, 9.0, 3.0, 10.0)),
    )
    disc = Region((30.0, 20.0, 41.5, 33.1875), "disc", engine, phrase="blue disc", score=0.1)
    crowd = Region((0.0, 40.0, 64.0, 48.0), "star", world, is_crowd=True)
    crowd_outlined = Region(
        (50.0, 2.0, 60.0, 12.0), "disc", world, polygons=((50, 2, 60, 2, 55, 12),), is_crowd=True
    )
    caption = "a red star and a blue disc"
    scene = Record(
        image_id="scene-001",
        image=png_image(64, 48, seed=1),
        width=64,
        height=48,
        source="world",
        captions=(
            Caption("brief", caption, world),
            Caption("detailed", "A small red star sits above a blue disc.", world),
            Caption("more_detailed", "Two shapes on grey.", Provenance("human", 1)),
        ),
        regions=(star, disc, crowd, crowd_outlined),
        text_lines=(TextLine("HELLO", (4.0, 30.0, 20.0, 30.0, 20.0, 36.5, 4.0, 36.5), world, score=0.875),),
        groundings=(
            Grounding(caption, (GroundedPhrase("a red star", 0, 10, ((2.0625, 4.5, 12.25, 10.0),)),), world),
        ),
        referring=(
            ReferringExpression("the blue disc", 1, world),
            ReferringExpression("the red star", 0, engine),
        ),
        questions=(QuestionAnswer("How many stars?", "1", "count", world),),
        metadata={"split": "train", "seed": "7"},
    )
    photo = Record(
        "42", jpeg_image(40, 30), 40, 30, "coco", regions=(Region((1.0, 2.0, 3.0, 4.0), "cat", COCO_SOURCE),)
    )
    empty = Record("0042", png_image(16, 16), 16, 16, "skimage")
    return [scene, photo, empty]


def test_export_loads_in_pycocotools(tmp_path: Path) -> None:
    records = _rich_records()
    out = export_coco(records, tmp_path / "set.json")
    coco = COCO(str(out))
    images = {image["file_name"]: image for image in coco.dataset["images"]}
    # "42" keeps its number; the others take the free integers from 1 ("0042" would repeat 42).
    assert {name: image["id"] for name, image in images.items()} == {
        "scene-001.png": 1,
        "42.jpg": 42,
        "0042.png": 2,
    }
    for record, name in zip(records, ["scene-001.png", "42.jpg", "0042.png"], strict=True):
        assert (tmp_path / "set_images" / name).read_bytes() == record.image
    assert coco.dataset["categories"] == [
        {"id": 1, "name": "cat"},
        {"id": 2, "name": "disc"},
        {"id": 3, "name": "star"},
    ]
    star, disc, crowd, crowd_outlined = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert (star["category_id"], star["iscrowd"], crowd["iscrowd"]) == (3, 0, 1)
    assert star["bbox"] == [2.0625, 4.5, 10.1875, 5.5]
    assert disc["area"] == 11.5 * 13.1875  # no polygon: the box's area
    for annotation in (star, crowd_outlined):
        # Polygon areas are pycocotools' own area of the rasterized polygons.
        assert annotation["area"] == mask_utils.area(coco.annToRLE(annotation))
        assert coco.annToMask(annotation).sum() == annotation["area"]
    for annotation in coco.loadAnns(coco.getAnnIds()):
        assert coco.annToMask(annotation).shape == (
            coco.imgs[annotation["image_id"]]["height"],
            coco.imgs[annotation["image_id"]]["width"],
        )
    # A region without polygons is masked by its box (30, 20, 41.5, 33.1875): every pixel wholly inside it is
    # set, none outside the box rounded outwards.
    box_mask = coco.annToMask(disc)
    assert box_mask[20:33, 30:41].all()
    assert box_mask.sum() == box_mask[20:34, 30:42].sum()
    assert [(c["image_id"], c["caption"]) for c in coco.dataset["captions"]][:2] == [
        (1, "a red star and a blue disc"),
        (1, "A small red star sits above a blue disc."),
    ]


def test_export_then_import_gives_equal_records(tmp_path: Path) -> None:
    records = _rich_records()
    out = export_coco(records, tmp_path / "set.json")
    imported = import_coco(out, tmp_path / "set_images")
    assert imported.skipped == []
    assert imported.records == records


def test_exported_truth_scores_perfect_ap_against_itself(tmp_path: Path) -> None:
    coco = COCO(str(export_coco(_rich_records(), tmp_path / "set.json")))
    truth = [annotation for annotation in coco.loadAnns(coco.getAnnIds()) if not annotation["iscrowd"]]
    for iou_type in ("bbox", "segm"):
        geometry = "bbox" if iou_type == "bbox" else "segmentation"
        detections = [
            {
                "image_id": annotation["image_id"],
                "category_id": annotation["category_id"],
                geometry: annotation["bbox"] if iou_type == "bbox" else coco.annToRLE(annotation),
                "score": 1.0,
            }
            for annotation in truth
        ]
        evaluation = COCOeval(coco, coco.loadRes(detections), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        assert evaluation.stats[0] == pytest.approx(1.0)  # AP over IoU 0.5:0.95


def test_failed_export_leaves_nothing_behind(tmp_path: Path) -> None:
    records = _rich_records()
    bad = Region((0.0, 0.0, 99.0, 1.0), "star", COCO_SOURCE)  # wider than its 40-pixel image
    broken = Record("bad", records[1].image, 40, 30, "coco", regions=(bad,))
    with pytest.raises(DatasetError, match="record 'bad'"):
        export_coco([*records, broken], tmp_path / "set.json")
    with pytest.raises(DatasetError, match="record '42': another record already has this image_id"):
        export_coco([*records, records[1]], tmp_path / "set.json")
    with pytest.raises(
        DatasetError, match="record 'small': its JPEG image is 40x30, but the record says 40x31"
    ):
        export_coco([*records, Record("small", records[1].image, 40, 31, "coco")], tmp_path / "set.json")
    assert list(tmp_path.iterdir()) == []


def test_export_replaces_an_earlier_export_whole(tmp_path: Path) -> None:
    records = _rich_records()
    export_coco(records, tmp_path / "set.json")
    export_coco(records[1:2], tmp_path / "set.json")
    assert sorted(path.name for path in (tmp_path / "set_images").iterdir()) == ["42.jpg"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["set.json", "set_images"]


def test_export_refuses_a_json_inside_its_images_dir(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="inside the images directory"):
        export_coco(_rich_records(), tmp_path / "set.json", images_dir=tmp_path)


def test_image_file_names_are_sanitized_and_unique(tmp_path: Path) -> None:
    image = png_image(8, 8)
    records = [Record(image_id, image, 8, 8, "world") for image_id in ("a/b", "a_b", "../x", "A_B")]
    out = export_coco(records, tmp_path / "set.json")
    names = [entry["file_name"] for entry in json.loads(out.read_text())["images"]]
    assert names == ["a_b.png", "a_b-2.png", "_x.png", "A_B-3.png"]
    assert import_coco(out, tmp_path / "set_images").records == records


def test_exif_rotated_photo_keeps_its_upright_size(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x30, shown turned a quarter: 30 wide, 40 high
    record = Record(
        "turned",
        jpeg_image(40, 30, exif),
        30,
        40,
        "coco",
        regions=(Region((0.0, 0.0, 30.0, 40.0), "x", COCO_SOURCE),),
    )
    out = export_coco([record], tmp_path / "set.json")
    assert import_coco(out, tmp_path / "set_images").records == [record]
    with pytest.raises(DatasetError, match="image is 30x40, but the record says 40x30"):
        export_coco([Record("turned", record.image, 40, 30, "coco")], tmp_path / "other.json")


_IMAGE = png_image(16, 12)
_TEXT = st.text(max_size=12)
_PROVENANCES = st.builds(Provenance, _TEXT, st.integers(0, 2**31 - 1))
_SCORES = st.none() | st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def _grid_box(draw: st.DrawFn) -> tuple[float, float, float, float]:
    """A box in the 16x12 image with corners on the 1/16-pixel grid."""
    x0, x1 = sorted(draw(st.lists(st.integers(0, 16 * 16), min_size=2, max_size=2)))
    y0, y1 = sorted(draw(st.lists(st.integers(0, 12 * 16), min_size=2, max_size=2)))
    return (x0 / 16, y0 / 16, x1 / 16, y1 / 16)


@st.composite
def _region(draw: st.DrawFn) -> Region:
    x0, y0, x1, y1 = box = draw(_grid_box())
    outlined = draw(st.booleans())
    return Region(
        box,
        draw(st.text(min_size=1, max_size=8)),
        draw(_PROVENANCES),
        phrase=draw(_TEXT),
        description=draw(_TEXT),
        polygons=((x0, y0, x1, y0, x1, y1, x0, y1),) if outlined else (),  # clockwise on screen
        score=draw(_SCORES),
        is_crowd=draw(st.booleans()),
    )


@st.composite
def _grounding(draw: st.DrawFn) -> Grounding:
    caption = draw(st.text(min_size=1, max_size=12))
    start = draw(st.integers(0, len(caption)))
    end = draw(st.integers(start, len(caption)))
    boxes = tuple(draw(st.lists(_grid_box(), max_size=2)))
    return Grounding(caption, (GroundedPhrase(caption[start:end], start, end, boxes),), draw(_PROVENANCES))


@st.composite
def _record(draw: st.DrawFn, image_id: str) -> Record:
    regions = tuple(draw(st.lists(_region(), max_size=3)))
    quad = draw(_grid_box())
    text_line = TextLine(
        draw(_TEXT),
        (quad[0], quad[1], quad[2], quad[1], quad[2], quad[3], quad[0], quad[3]),
        draw(_PROVENANCES),
        draw(_SCORES),
    )
    referring = [ReferringExpression(draw(_TEXT), index, draw(_PROVENANCES)) for index in range(len(regions))]
    return Record(
        image_id=image_id,
        image=_IMAGE,
        width=16,
        height=12,
        source=draw(_TEXT),
        captions=tuple(
            draw(
                st.lists(st.builds(Caption, st.sampled_from(CAPTION_LEVELS), _TEXT, _PROVENANCES), max_size=3)
            )
        ),
        regions=regions,
        text_lines=(text_line,) if draw(st.booleans()) else (),
        groundings=tuple(draw(st.lists(_grounding(), max_size=2))),
        referring=tuple(draw(st.permutations(referring))),
        questions=tuple(
            draw(st.lists(st.builds(QuestionAnswer, _TEXT, _TEXT, _TEXT, _PROVENANCES), max_size=2))
        ),
        metadata=draw(st.dictionaries(_TEXT, _TEXT, max_size=3)),
    )


@st.composite
def _records(draw: st.DrawFn) -> list[Record]:
    # Any ids: digits (kept as COCO ids), non-ASCII digits, path separators and dots (sanitized file names).
    image_ids = draw(st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=3, unique=True))
    return [draw(_record(image_id)) for image_id in image_ids]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=_records())
def test_any_records_on_the_pixel_grid_round_trip(tmp_path: Path, records: list[Record]) -> None:
    out = export_coco(records, tmp_path / "set.json")
    assert import_coco(out, tmp_path / "set_images").records == records
    COCO(str(out))  # and it stays a COCO file pycocotools reads
