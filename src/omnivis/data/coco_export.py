"""COCO export: records become one COCO instances file and a directory of their images.

The file loads in any COCO reader (pycocotools' `COCO`, `COCOeval`): "images", "annotations" and
"categories" as COCO defines them (https://cocodataset.org/#format-data), plus a top-level "captions" list
of {"id", "image_id", "caption"} that readers which do not know it ignore. Choices a reader should know:

- Image ids: `int(image_id)` when the record's id is all ASCII digits (and that int is still free), else
  the next free integer from 1. Category ids: 1..K in the order of the sorted category names.
- "bbox" is [x0, y0, x1 - x0, y1 - y0]. Coordinates on a 1/16-pixel grid (as the procedural world writes
  them) survive the subtraction and the importer's addition exactly; others may move by one float ulp.
- "segmentation" holds the region's polygons. pycocotools needs a mask for every annotation (`annToMask`,
  segm evaluation), so a region without polygons gets its box as an RLE mask, which the importer reads
  back as "no polygons" (COCO's crowd regions are RLE for the same reason).
- "area" is pycocotools' area of the rasterized polygons (what `COCOeval` computes for segmentation
  results); for a region without polygons, its box's width * height (what it computes for boxes).
- Each image and annotation carries an "omnivis" object with everything COCO cannot express
  (see `omnivis.data.coco_extras`), so that `import_coco` gives back records equal to the exported ones.

The images are written byte for byte as the records hold them, named after their image ids.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from omnivis.data.coco_extras import EXTRA_KEY, encode_record_extras, encode_region_extras
from omnivis.data.records import Record, Region
from omnivis.errors import DatasetError, InputError
from omnivis.images import ALLOWED_FORMATS
from omnivis.io import atomic_directory, atomic_write_text

# Written as the file's "info", so a reader can tell where it came from.
_INFO = {"description": "exported by omnivis"}
# Longest file name stem written: image ids can be any length, file systems cap names at 255 bytes.
_MAX_STEM_LENGTH = 100
# Largest image id written as the record's own number: COCO tools hold ids in int64 numpy arrays.
_MAX_COCO_ID = 2**63 - 1
# File name extension of each image format a record may hold (Pillow reports camera JPEGs as MPO).
_EXTENSIONS = {
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "GIF": ".gif",
    "TIFF": ".tif",
}
# EXIF orientations that turn the picture a quarter turn, swapping its width and height.
_QUARTER_TURN_ORIENTATIONS = frozenset({5, 6, 7, 8})
# Characters kept in image file names; every run of others becomes one "_".
_UNSAFE_FILE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


def export_coco(
    records: Iterable[Record], out_json: str | Path, *, images_dir: str | Path | None = None
) -> Path:
    """Write records as a COCO instances file plus a directory of their images.

    Both are written atomically: the images directory is built beside its final place and renamed into
    it (replacing, as a whole, any directory already there), then the JSON file is. A failure leaves the
    previous versions of both untouched.

    Example:
        export_coco(records, "out/world_val.json")  # images go to out/world_val_images/

    Args:
        records: The records; each is validated, and read once (a generator is fine).
        out_json: The instances file to write.
        images_dir: Where the images go; `<out_json stem>_images` beside the file by default. The
            "file_name" of each image entry is relative to it.

    Returns:
        The path of the instances file.

    Raises:
        DatasetError: A record is invalid, repeats an earlier image_id, or holds image bytes that are not
            an image; the record's id is named.
        InputError: `out_json` lies inside `images_dir`, which is replaced as a whole.
    """
    out_path = Path(out_json)
    images_path = (
        Path(images_dir) if images_dir is not None else out_path.with_name(f"{out_path.stem}_images")
    )
    if out_path.resolve().is_relative_to(images_path.resolve()):
        raise InputError(f"{out_path} lies inside the images directory {images_path}, which export replaces")
    document = _DocumentBuilder()
    with atomic_directory(images_path) as staging:
        for record in records:
            document.add(record, staging)
        # Serialised before the directory is moved into place, so that a value JSON cannot hold leaves
        # neither the directory nor the file changed.
        text = document.json_text(out_path)
    atomic_write_text(out_path, text)
    return out_path


class _DocumentBuilder:
    """Collects the JSON entries record by record; ids that depend on all records are set at the end."""

    def __init__(self) -> None:
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.captions: list[dict[str, Any]] = []
        self.annotation_images: list[int] = []  # index into `images` of each annotation
        self.caption_images: list[int] = []  # index into `images` of each caption
        self.image_ids: set[str] = set()
        self.file_names: set[str] = set()  # lower-cased: names must differ on case-insensitive disks too

    def add(self, record: Record, images_dir: Path) -> None:
        """Validate one record, write its image into `images_dir` and collect its entries."""
        record.validate()
        if record.image_id in self.image_ids:
            raise DatasetError(f"record {record.image_id!r}: another record already has this image_id")
        self.image_ids.add(record.image_id)
        file_name = self._file_name(record)
        # A plain write: the directory as a whole is what becomes visible atomically.
        (images_dir / file_name).write_bytes(record.image)
        image_index = len(self.images)
        annotation_ids = list(
            range(len(self.annotations) + 1, len(self.annotations) + 1 + len(record.regions))
        )
        for annotation_id, region in zip(annotation_ids, record.regions, strict=True):
            self.annotations.append(_annotation_entry(annotation_id, region, record.width, record.height))
            self.annotation_images.append(image_index)
        for caption in record.captions:
            self.captions.append({"id": len(self.captions) + 1, "caption": caption.text})
            self.caption_images.append(image_index)
        self.images.append(
            {
                "file_name": file_name,
                "width": record.width,
                "height": record.height,
                EXTRA_KEY: encode_record_extras(record, annotation_ids),
            }
        )

    def _file_name(self, record: Record) -> str:
        """The image id made safe as a file name, unique, with the extension of the bytes' format."""
        extension = _EXTENSIONS[_checked_image_format(record)]
        stem = (
            _UNSAFE_FILE_NAME_CHARACTERS.sub("_", record.image_id).lstrip(".")[:_MAX_STEM_LENGTH] or "image"
        )
        file_name, number = f"{stem}{extension}", 1
        while file_name.lower() in self.file_names:
            number += 1
            file_name = f"{stem}-{number}{extension}"
        self.file_names.add(file_name.lower())
        return file_name

    def json_text(self, out_path: Path) -> str:
        """The finished instances document, as JSON text."""
        image_ids = _coco_image_ids([image[EXTRA_KEY]["image_id"] for image in self.images])
        categories = sorted({annotation["category_name"] for annotation in self.annotations})
        category_ids = {name: index for index, name in enumerate(categories, start=1)}
        # Rebuilt so that the ids lead each entry, as in COCO's own files.
        images = [{"id": image_id, **image} for image, image_id in zip(self.images, image_ids, strict=True)]
        annotations = [
            {
                "id": annotation["id"],
                "image_id": image_ids[image_index],
                "category_id": category_ids[annotation["category_name"]],
                **{key: value for key, value in annotation.items() if key not in ("id", "category_name")},
            }
            for annotation, image_index in zip(self.annotations, self.annotation_images, strict=True)
        ]
        captions = [
            {"id": caption["id"], "image_id": image_ids[image_index], "caption": caption["caption"]}
            for caption, image_index in zip(self.captions, self.caption_images, strict=True)
        ]
        document = {
            "info": _INFO,
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [{"id": category_ids[name], "name": name} for name in categories],
            "captions": captions,
        }
        try:
            return json.dumps(document, ensure_ascii=False, allow_nan=False) + "\n"
        except (TypeError, ValueError) as error:
            raise DatasetError(
                f"{out_path}: the records hold a value JSON cannot represent ({error})"
            ) from error


def _checked_image_format(record: Record) -> str:
    """The format of the record's image bytes, once their header shows the record's size.

    Only the header is read, so this is cheap; the size is taken after EXIF orientation, as
    `omnivis.images.load_image` (and hence `import_coco`) sees it.
    """
    try:
        with Image.open(io.BytesIO(record.image), formats=sorted(ALLOWED_FORMATS)) as image:
            image_format, (width, height) = image.format or "", image.size
            if image.getexif().get(ExifTags.Base.Orientation) in _QUARTER_TURN_ORIENTATIONS:
                width, height = height, width
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"record {record.image_id!r}: its image bytes are not a readable image") from error
    if (width, height) != (record.width, record.height) or image_format not in _EXTENSIONS:
        raise DatasetError(
            f"record {record.image_id!r}: its {image_format} image is {width}x{height}, but the record says "
            f"{record.width}x{record.height}"
        )
    return image_format


def region_area(region: Region, width: int, height: int) -> float:
    """A region's COCO "area": pycocotools' area of its rasterized polygons, else its box's width * height.

    COCO evaluation reads it for the small/medium/large ranges (APs, APm, APl).
    """
    if not region.polygons:
        x0, y0, x1, y1 = region.box
        return (x1 - x0) * (y1 - y0)
    polygon_masks = mask_utils.frPyObjects([list(polygon) for polygon in region.polygons], height, width)
    return float(mask_utils.area(mask_utils.merge(polygon_masks)))


def _annotation_entry(annotation_id: int, region: Region, width: int, height: int) -> dict[str, Any]:
    """One region as a COCO annotation; its image and category ids are filled in at the end."""
    x0, y0, x1, y1 = region.box
    segmentation: list[list[float]] | dict[str, Any]
    if region.polygons:
        segmentation = [list(polygon) for polygon in region.polygons]
    else:
        # pycocotools reads a box (rather than a polygon) only from a numpy array.
        box_mask = mask_utils.frPyObjects(np.array([[x0, y0, x1 - x0, y1 - y0]]), height, width)[0]
        segmentation = {"size": box_mask["size"], "counts": box_mask["counts"].decode("ascii")}
    area = region_area(region, width, height)
    return {
        "id": annotation_id,
        "category_name": region.category,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": area,
        "segmentation": segmentation,
        "iscrowd": int(region.is_crowd),
        EXTRA_KEY: encode_region_extras(region),
    }


def _coco_image_ids(image_ids: list[str]) -> list[int]:
    """Integer ids: the record's own number when it is one and still free, else the next free from 1."""
    numbers: list[int | None] = []
    taken: set[int] = set()
    for image_id in image_ids:
        number = int(image_id) if image_id.isascii() and image_id.isdigit() else None
        if number is None or number > _MAX_COCO_ID or number in taken:
            numbers.append(None)
            continue
        numbers.append(number)
        taken.add(number)
    next_free = 1
    assigned: list[int] = []
    for number in numbers:
        if number is None:
            while next_free in taken:
                next_free += 1
            number = next_free
            taken.add(number)
        assigned.append(number)
    return assigned
