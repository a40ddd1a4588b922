"""COCO import: instance, caption and RefCOCO files become omnivis `Record`s, every item checked.

COCO's instances file (https://cocodataset.org/#format-data) lists "images", "annotations" and
"categories". Each image becomes one `Record` (its id as a string, its file's bytes exactly as stored) and
each of its instance annotations one `Region`, in file order:

- `bbox` [x, y, width, height] becomes the box (x, y, x + width, y + height);
- `segmentation` polygons become the region's polygons, each turned clockwise on screen (image y axis
  down) as records require; a record cannot hold an RLE mask, so a region given one keeps no polygons;
- `iscrowd` becomes `is_crowd`, and `category_id` the category's name.

A captions file (captions_*.json) adds "brief" captions; a RefCOCO refs file adds one referring expression
per sentence (see `omnivis.data.refcoco`). Files written by `export_coco` also carry an "omnivis" object on
each image and annotation holding what COCO cannot express; importing such a file restores the exported
records exactly.

Checks: the image file must decode (`omnivis.images.load_image`, so EXIF orientation applies) to the size
the JSON states; ids must be unique and must resolve; boxes and polygons must be finite, not inverted and
inside the image. A bad item raises `DatasetError` naming the file and the item's id, or, with
`skip_bad=True`, is left out and listed in `CocoImport.skipped`: a bad image takes its annotations,
captions and referring expressions with it, a bad annotation only itself. A broken file as a whole (not
JSON, a missing or mistyped top-level list, a broken category table) always raises.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from omnivis.data.coco_export import export_coco
from omnivis.data.coco_extras import EXTRA_KEY, decode_record_extras, decode_region_extras
from omnivis.data.coco_json import (
    SkippedItem,
    Triage,
    field_of,
    is_int,
    load_json,
    numbers_of,
    top_level_list,
)
from omnivis.data.records import Caption, Polygon, Provenance, Record, ReferringExpression, Region, check_box
from omnivis.data.refcoco import AnnotationPlace, read_refs
from omnivis.errors import DatasetError, ImageError
from omnivis.images import load_image

# `export_coco` and `SkippedItem` live beside this module; they are part of its API.
__all__ = ["CocoImport", "SkippedItem", "clockwise_on_screen", "export_coco", "import_coco"]

# The fewest coordinates of a polygon: three vertices.
_MIN_POLYGON_COORDINATES = 6


@dataclass
class CocoImport:
    """The result of `import_coco`.

    Attributes:
        records: One validated record per good image, in the order of the file's "images" list.
        skipped: Every item left out under `skip_bad=True`, in the order met; empty otherwise.
    """

    records: list[Record]
    skipped: list[SkippedItem]


@dataclass
class _Image:
    """An image entry that passed its own checks, and the annotations gathered for it so far."""

    coco_id: int
    file_name: str
    width: int
    height: int
    extras: dict[str, Any] | None
    regions: list[Region] = field(default_factory=list)
    region_of_annotation: dict[int, int] = field(default_factory=dict)
    captions: list[Caption] = field(default_factory=list)
    referring: list[ReferringExpression] = field(default_factory=list)
    splits: set[str] = field(default_factory=set)


@dataclass
class _Catalog:
    """The images of an import, plus the ids of images and annotations already dropped as bad."""

    images: dict[int, _Image]
    dropped_images: set[int] = field(default_factory=set)
    dropped_annotations: set[int] = field(default_factory=set)
    annotations: dict[int, AnnotationPlace] = field(default_factory=dict)


def import_coco(
    instances_json: str | Path,
    images_dir: str | Path,
    *,
    captions_json: str | Path | None = None,
    refs_json: str | Path | None = None,
    skip_bad: bool = False,
    source: str = "coco",
) -> CocoImport:
    """Read a COCO instances file, and optionally captions and RefCOCO refs, into records.

    Example:
        imported = import_coco("annotations/instances_val2017.json", "val2017",
                               captions_json="annotations/captions_val2017.json")

    Args:
        instances_json: The instances file ("images", "annotations", "categories").
        images_dir: The directory that each image's "file_name" is relative to.
        captions_json: A COCO captions file; each caption becomes a "brief" caption of its image.
        refs_json: RefCOCO refs as JSON: a list of {"ref_id", "image_id", "ann_id", "category_id",
            "sentences": [{"sent": ...}, ...], "split"}; each sentence becomes a referring expression.
            The split goes to the record's metadata["split"] (several splits are joined with ",").
        skip_bad: Leave bad items out and list them in `skipped` instead of raising.
        source: The records' source and the source of every annotation's provenance (round 0), unless an
            exported file's "omnivis" object says otherwise.

    Returns:
        The records and the skipped items.

    Raises:
        DatasetError: Naming the file and the item (image, annotation, caption or ref id) that is bad.
    """
    instances_path = Path(instances_json)
    triage = Triage(skip_bad)
    document = load_json(instances_path)
    categories = _category_names(document, instances_path)
    catalog = _read_image_entries(top_level_list(document, "images", instances_path), instances_path, triage)
    for index, entry in enumerate(top_level_list(document, "annotations", instances_path)):
        _add_annotation(entry, index, catalog, categories, source, instances_path, triage)
    if captions_json is not None:
        _add_captions(Path(captions_json), catalog, source, triage)
    if refs_json is not None:
        _add_refs(Path(refs_json), catalog, source, triage)
    records: list[Record] = []
    image_ids: set[str] = set()
    for image in catalog.images.values():
        record = _build_record(image, Path(images_dir), source, instances_path, triage)
        if record is not None and record.image_id in image_ids:
            # Record ids must be unique in a dataset; an exported file's "omnivis" ids could repeat.
            triage.reject(
                instances_path, f"image {image.coco_id}", f"image_id {record.image_id!r} is used twice"
            )
        elif record is not None:
            image_ids.add(record.image_id)
            records.append(record)
    return CocoImport(records, triage.skipped)


def _category_names(document: Any, path: Path) -> dict[int, str]:
    """Category id to name; optional as in pycocotools, but a broken table fails the whole file."""
    names: dict[int, str] = {}
    for index, category in enumerate(top_level_list(document, "categories", path, required=False)):
        if not isinstance(category, dict) or not is_int(category.get("id")):
            raise DatasetError(f"{path}: category #{index} needs an integer 'id', got {category!r:.80}")
        name = category.get("name")
        if not isinstance(name, str) or not name:
            raise DatasetError(f"{path}: category {category['id']} needs a non-empty string 'name'")
        if category["id"] in names:
            raise DatasetError(f"{path}: category {category['id']}: duplicate category id")
        names[category["id"]] = name
    return names


def _item_name(kind: str, entry: Any, index: int) -> str:
    """'image 42' when the entry has an integer id, else 'image #3' (its position in the list)."""
    if isinstance(entry, dict) and is_int(entry.get("id")):
        return f"{kind} {entry['id']}"
    return f"{kind} #{index}"


def _read_image_entries(entries: list[Any], path: Path, triage: Triage) -> _Catalog:
    """Check each image entry's fields; an id used twice makes every entry with it bad (ambiguous)."""
    counts = Counter(entry["id"] for entry in entries if isinstance(entry, dict) and is_int(entry.get("id")))
    catalog = _Catalog(images={})
    for index, entry in enumerate(entries):
        what = _item_name("image", entry, index)
        try:
            image = _parse_image_entry(entry)
            if counts[image.coco_id] > 1:
                raise DatasetError(
                    f"duplicate image id: {counts[image.coco_id]} images have id {image.coco_id}"
                )
        except DatasetError as error:
            triage.reject(path, what, str(error))
            if isinstance(entry, dict) and is_int(entry.get("id")):
                catalog.dropped_images.add(entry["id"])
            continue
        catalog.images[image.coco_id] = image
    return catalog


def _parse_image_entry(entry: Any) -> _Image:
    if not isinstance(entry, dict):
        raise DatasetError(f"an image entry must be a JSON object, got {type(entry).__name__}")
    coco_id = field_of(entry, "id", "an integer")
    file_name = field_of(entry, "file_name", "a string")
    width, height = field_of(entry, "width", "an integer"), field_of(entry, "height", "an integer")
    if width <= 0 or height <= 0:
        raise DatasetError(f"image size must be positive, got {width}x{height}")
    if not file_name or PurePath(file_name).is_absolute() or ".." in PurePath(file_name).parts:
        # A file name must not reach outside the images directory.
        raise DatasetError(f"file_name {file_name!r} must be a relative path inside the images directory")
    extras = field_of(entry, EXTRA_KEY, "an object", default=None)
    return _Image(coco_id, file_name, width, height, extras)


def _add_annotation(
    entry: Any,
    index: int,
    catalog: _Catalog,
    categories: dict[int, str],
    source: str,
    path: Path,
    triage: Triage,
) -> None:
    """Turn one instance annotation into a region of its image, or reject it."""
    what = _item_name("annotation", entry, index)
    try:
        if not isinstance(entry, dict):
            raise DatasetError(f"an annotation must be a JSON object, got {type(entry).__name__}")
        annotation_id = field_of(entry, "id", "an integer")
        image_id = field_of(entry, "image_id", "an integer")
        if annotation_id in catalog.annotations or annotation_id in catalog.dropped_annotations:
            raise DatasetError(f"duplicate annotation id {annotation_id}")
        if image_id in catalog.dropped_images:
            return  # it goes with its image, which is already listed as skipped
        image = catalog.images.get(image_id)
        if image is None:
            raise DatasetError(f"image_id {image_id} does not exist in the file's images")
        region = _parse_region(entry, image, categories, source)
    except DatasetError as error:
        if isinstance(entry, dict) and is_int(entry.get("id")):
            catalog.dropped_annotations.add(entry["id"])
        triage.reject(path, what, str(error))
        return
    image.region_of_annotation[annotation_id] = len(image.regions)
    image.regions.append(region)
    catalog.annotations[annotation_id] = AnnotationPlace(image_id, entry["category_id"])


def _parse_region(entry: dict[str, Any], image: _Image, categories: dict[int, str], source: str) -> Region:
    """One annotation's region; raises `DatasetError` with the bare reason."""
    category_id = field_of(entry, "category_id", "an integer")
    if category_id not in categories:
        raise DatasetError(f"category_id {category_id} does not exist in the file's categories")
    x, y, width, height = numbers_of(field_of(entry, "bbox", "a list"), "bbox", count=4)
    if not np.isfinite([x, y, width, height]).all():
        raise DatasetError(f"bbox {[x, y, width, height]} holds a non-finite number")
    if width < 0 or height < 0:
        raise DatasetError(f"bbox {[x, y, width, height]} has a negative width or height")
    box = (x, y, x + width, y + height)
    check_box(box, (image.width, image.height), "bbox as (x0, y0, x1, y1)")
    is_crowd = field_of(entry, "iscrowd", "an integer", default=0)
    if is_crowd not in (0, 1):
        raise DatasetError(f"iscrowd must be 0 or 1, got {is_crowd}")
    polygons = _polygons(entry.get("segmentation", []), image)
    extras = decode_region_extras(field_of(entry, EXTRA_KEY, "an object", default=None), source)
    return Region(
        box=box,
        category=categories[category_id],
        provenance=extras.provenance,
        phrase=extras.phrase,
        description=extras.description,
        polygons=polygons,
        score=extras.score,
        is_crowd=bool(is_crowd),
    )


def _polygons(segmentation: Any, image: _Image) -> tuple[Polygon, ...]:
    """Polygon lists become clockwise polygons; an RLE mask (a dict) is checked and gives none."""
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        if size != [image.height, image.width] or not isinstance(segmentation.get("counts"), str | list):
            raise DatasetError(
                f"an RLE segmentation needs 'counts' and 'size' [{image.height}, {image.width}], "
                f"got size {size!r}"
            )
        return ()
    if not isinstance(segmentation, list):
        raise DatasetError(
            f"segmentation must be a list of polygons or an RLE object, got {segmentation!r:.60}"
        )
    polygons: list[Polygon] = []
    for index, raw in enumerate(segmentation):
        what = f"segmentation polygon {index}"
        if not isinstance(raw, list):
            raise DatasetError(f"{what} must be a list of coordinates, got {raw!r:.60}")
        polygon = numbers_of(raw, what)
        if len(polygon) % 2 or len(polygon) < _MIN_POLYGON_COORDINATES:
            raise DatasetError(f"{what} needs an even number, at least 6, of coordinates; got {len(polygon)}")
        xs, ys = np.asarray(polygon[0::2]), np.asarray(polygon[1::2])
        if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
            raise DatasetError(f"{what} holds a non-finite coordinate")
        if xs.min() < 0 or ys.min() < 0 or xs.max() > image.width or ys.max() > image.height:
            raise DatasetError(f"{what} reaches outside the {image.width}x{image.height} image")
        polygons.append(clockwise_on_screen(polygon))
    return tuple(polygons)


def clockwise_on_screen(polygon: Sequence[float]) -> Polygon:
    """The polygon with its vertices clockwise on screen (y down), starting at the same vertex.

    The shoelace sum is positive for a clockwise turn on screen (rightwards, then downwards); a negative sum
    means counter-clockwise, so the vertices after the first are reversed. A degenerate (zero-area) polygon
    is kept as it is.
    """
    xs, ys = np.asarray(polygon[0::2], dtype=np.float64), np.asarray(polygon[1::2], dtype=np.float64)
    twice_signed_area = float(np.dot(xs, np.roll(ys, -1)) - np.dot(np.roll(xs, -1), ys))
    vertices = [(float(x), float(y)) for x, y in zip(polygon[0::2], polygon[1::2], strict=True)]
    if twice_signed_area < 0:
        vertices = vertices[:1] + vertices[:0:-1]
    return tuple(coordinate for vertex in vertices for coordinate in vertex)


def _add_captions(path: Path, catalog: _Catalog, source: str, triage: Triage) -> None:
    """Each caption of a COCO captions file becomes a "brief" caption of its image."""
    for index, entry in enumerate(top_level_list(load_json(path), "annotations", path)):
        what = _item_name("caption annotation", entry, index)
        try:
            image_id = field_of(entry, "image_id", "an integer")
            text = field_of(entry, "caption", "a string").strip()  # COCO captions often end in spaces
            if image_id in catalog.dropped_images:
                continue  # it goes with its image, which is already listed as skipped
            if image_id not in catalog.images:
                raise DatasetError(f"image_id {image_id} does not exist in the instances file")
            if not text:
                raise DatasetError("the caption is empty")
        except DatasetError as error:
            triage.reject(path, what, str(error))
            continue
        catalog.images[image_id].captions.append(Caption("brief", text, Provenance(source, 0)))


def _add_refs(path: Path, catalog: _Catalog, source: str, triage: Triage) -> None:
    """Each sentence of a RefCOCO ref becomes a referring expression for its annotation's region."""
    sentences = read_refs(
        path, catalog.annotations, catalog.images, catalog.dropped_images, catalog.dropped_annotations, triage
    )
    for sentence in sentences:
        image = catalog.images[sentence.image_id]
        region = image.region_of_annotation[sentence.annotation_id]
        image.referring.append(ReferringExpression(sentence.sentence, region, Provenance(source, 0)))
        if sentence.split:
            image.splits.add(sentence.split)


def _build_record(image: _Image, images_dir: Path, source: str, path: Path, triage: Triage) -> Record | None:
    """The image's record, validated; None when the image is bad and `skip_bad` is set."""
    what = f"image {image.coco_id}"
    try:
        data = _read_image_file(images_dir / image.file_name, image)
        extras = decode_record_extras(image.extras, source)
    except DatasetError as error:
        triage.reject(path, what, str(error))
        return None
    referring = []
    for index, stored in enumerate(extras.referring):
        region = image.region_of_annotation.get(stored.annotation_id)
        if region is None:
            # It names an annotation that is missing or was skipped: the expression alone goes.
            reason = f"ann_id {stored.annotation_id} is not a kept annotation of this image"
            triage.reject(path, f"{what} referring expression {index}", reason)
            continue
        referring.append(ReferringExpression(stored.expression, region, stored.provenance))
    metadata = extras.metadata if extras.metadata is not None else {"file_name": image.file_name}
    if image.splits:
        metadata = {**metadata, "split": ",".join(sorted(image.splits))}
    record = Record(
        image_id=extras.image_id if extras.image_id is not None else str(image.coco_id),
        image=data,
        width=image.width,
        height=image.height,
        source=extras.source if extras.source is not None else source,
        captions=extras.captions + tuple(image.captions),
        regions=tuple(image.regions),
        text_lines=extras.text_lines,
        groundings=extras.groundings,
        referring=tuple(referring) + tuple(image.referring),
        questions=extras.questions,
        metadata=metadata,
    )
    try:
        return record.validate()
    except DatasetError as error:  # e.g. a stored text line outside the image
        triage.reject(path, what, str(error))
        return None


def _read_image_file(file: Path, image: _Image) -> bytes:
    """The file's bytes, once they are known to decode to the size the JSON states."""
    try:
        data = file.read_bytes()
    except OSError as error:
        raise DatasetError(f"image file {file} cannot be read ({error.strerror or error})") from error
    try:
        decoded_size = load_image(data).size
    except ImageError as error:
        raise DatasetError(f"image file {file} does not decode: {error}") from error
    if decoded_size != (image.width, image.height):
        raise DatasetError(
            f"image file {file} is {decoded_size[0]}x{decoded_size[1]} (after EXIF orientation), "
            f"but the JSON says {image.width}x{image.height}"
        )
    return data
