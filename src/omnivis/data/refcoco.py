"""RefCOCO referring expressions: the refer toolkit's refs, as JSON, resolved to imported annotations.

RefCOCO, RefCOCO+ and RefCOCOg describe single COCO objects with expressions such as "man in the red
shirt on the left". The refer toolkit (github.com/lichengunc/refer) ships each as an instances.json, a
COCO file that `omnivis.data.coco.import_coco` reads, plus refs(<split by>).p, a Python pickle. Loading a
pickle can run arbitrary code, so omnivis never reads one; convert it once, in a Python you trust with it:

    import json, pickle
    with open("refs(unc).p", "rb") as stream:
        refs = pickle.load(stream)
    with open("refs_unc.json", "w") as stream:
        json.dump(refs, stream)

Each ref, {"ref_id", "image_id", "ann_id", "category_id", "sentences": [{"sent": ...}, ...], "split"},
gives one expression per sentence for the object of annotation `ann_id`. Only the fields named are read.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnivis.data.coco_json import Triage, field_of, is_int, load_json
from omnivis.errors import DatasetError


@dataclass(frozen=True)
class AnnotationPlace:
    """An annotation the import kept: the COCO image it belongs to and its category id."""

    image_id: int
    category_id: int


@dataclass(frozen=True)
class RefSentence:
    """One sentence of a ref, resolved to a kept annotation.

    Attributes:
        image_id: The COCO image id.
        annotation_id: The COCO annotation id of the object the sentence names.
        sentence: The sentence ("sent"), stripped of surrounding white space.
        split: The ref's split ("train", "val", "testA", ...), or "" when it has none.
    """

    image_id: int
    annotation_id: int
    sentence: str
    split: str


def read_refs(
    path: Path,
    annotations: Mapping[int, AnnotationPlace],
    images: Collection[int],
    dropped_images: Collection[int],
    dropped_annotations: Collection[int],
    triage: Triage,
) -> list[RefSentence]:
    """Read a refs JSON file and resolve each ref against the imported annotations.

    Args:
        path: The refs file: a JSON list of refs.
        annotations: The kept annotations, by COCO annotation id.
        images: The COCO ids of the kept images.
        dropped_images: Images already skipped as bad; their refs go with them unlisted.
        dropped_annotations: Annotations already skipped as bad; a ref to one is skipped and listed.
        triage: Where bad refs go ("ref <ref_id>").

    Returns:
        One entry per sentence of every good ref, in file order.

    Raises:
        DatasetError: The file is not a JSON list, or (without `skip_bad`) a ref is malformed, is a
            duplicate, or points to an image or annotation that does not exist or was skipped.
    """
    refs = load_json(path)
    if not isinstance(refs, list):
        raise DatasetError(f"{path}: a refs file must hold a JSON list of refs, got {type(refs).__name__}")
    sentences: list[RefSentence] = []
    seen: set[int] = set()
    for index, ref in enumerate(refs):
        is_identified = isinstance(ref, dict) and is_int(ref.get("ref_id"))
        what = f"ref {ref['ref_id']}" if is_identified else f"ref #{index}"
        try:
            if is_identified and ref["ref_id"] in seen:
                raise DatasetError(f"duplicate ref id {ref['ref_id']}")
            resolved = _resolve(ref, annotations, images, dropped_images, dropped_annotations)
        except DatasetError as error:
            triage.reject(path, what, str(error))
            continue
        finally:
            if is_identified:
                seen.add(ref["ref_id"])
        sentences.extend(resolved)
    return sentences


def _resolve(
    ref: Any,
    annotations: Mapping[int, AnnotationPlace],
    images: Collection[int],
    dropped_images: Collection[int],
    dropped_annotations: Collection[int],
) -> list[RefSentence]:
    """The sentences of one ref; raises `DatasetError` with the bare reason."""
    field_of(ref, "ref_id", "an integer")
    image_id = field_of(ref, "image_id", "an integer")
    annotation_id = field_of(ref, "ann_id", "an integer")
    category_id = field_of(ref, "category_id", "an integer")
    split = field_of(ref, "split", "a string", default="")
    texts = [
        field_of(sentence, "sent", "a string").strip() for sentence in field_of(ref, "sentences", "a list")
    ]
    if image_id in dropped_images:
        return []  # it goes with its image, which is already listed as skipped
    if image_id not in images:
        raise DatasetError(f"image_id {image_id} does not exist in the instances file")
    if annotation_id in dropped_annotations:
        raise DatasetError(f"its annotation {annotation_id} was skipped as bad")
    place = annotations.get(annotation_id)
    if place is None:
        raise DatasetError(f"ann_id {annotation_id} does not exist in the instances file")
    if place.image_id != image_id:
        raise DatasetError(f"ann_id {annotation_id} belongs to image {place.image_id}, not image {image_id}")
    if place.category_id != category_id:
        raise DatasetError(
            f"category_id {category_id} is not annotation {annotation_id}'s category ({place.category_id})"
        )
    if not all(texts):
        raise DatasetError("a sentence is empty")
    return [RefSentence(image_id, annotation_id, text, split) for text in texts]
