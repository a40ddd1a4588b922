"""The "omnivis" object `export_coco` adds to COCO image and annotation entries, written and read back.

COCO has no place for text lines, grounded phrases, questions, caption levels or who made an annotation.
The exporter stores them in an extra object under the key "omnivis", which plain COCO readers (pycocotools
included) ignore, and the importer restores them from it, so that an export imports to equal records.

On an image entry:
    {"image_id": "...", "source": "...", "metadata": {"key": "value", ...},
     "captions":   [{"level", "text", "source", "round"}, ...],
     "text_lines": [{"text", "quad": [x0, y0, ..., x3, y3], "score": number or null, "source", "round"}, ...],
     "groundings": [{"caption", "phrases": [{"phrase", "start", "end", "boxes": [[x0, y0, x1, y1], ...]}],
                     "source", "round"}, ...],
     "referring":  [{"expression", "ann_id", "source", "round"}, ...],
     "questions":  [{"question", "answer", "kind", "source", "round"}, ...]}
On an annotation entry:
    {"phrase", "description", "score": number or null, "source", "round"}

Referring expressions name their region by annotation id, as RefCOCO does, rather than by position, so
that they stay attached to the right object if annotations are reordered or removed. On reading, every
key of the two objects may be missing (a missing list is empty, a missing provenance is the import's
source at round 0), but every entry of a list needs its text fields, and all values are type-checked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from omnivis.data.coco_json import field_of, numbers_of
from omnivis.data.records import (
    CAPTION_LEVELS,
    Box,
    Caption,
    CaptionLevel,
    GroundedPhrase,
    Grounding,
    Provenance,
    Quad,
    QuestionAnswer,
    Record,
    Region,
    TextLine,
)
from omnivis.errors import DatasetError

# The key of the extra object on image and annotation entries.
EXTRA_KEY = "omnivis"


@dataclass(frozen=True)
class RegionExtras:
    """What an annotation's extra object restores of a `Region`."""

    phrase: str
    description: str
    score: float | None
    provenance: Provenance


@dataclass(frozen=True)
class ExtraReferring:
    """A referring expression as stored: it names its region by COCO annotation id."""

    annotation_id: int
    expression: str
    provenance: Provenance


@dataclass(frozen=True)
class RecordExtras:
    """What an image's extra object restores of a `Record`; None where the object does not say."""

    image_id: str | None = None
    source: str | None = None
    metadata: dict[str, str] | None = None
    captions: tuple[Caption, ...] = ()
    text_lines: tuple[TextLine, ...] = ()
    groundings: tuple[Grounding, ...] = ()
    referring: tuple[ExtraReferring, ...] = ()
    questions: tuple[QuestionAnswer, ...] = ()


def encode_region_extras(region: Region) -> dict[str, Any]:
    """The extra object of one region's annotation."""
    return {
        "phrase": region.phrase,
        "description": region.description,
        "score": region.score,
        **_encode_provenance(region.provenance),
    }


def encode_record_extras(record: Record, annotation_ids: Sequence[int]) -> dict[str, Any]:
    """The extra object of one record's image entry.

    Args:
        record: A validated record.
        annotation_ids: The COCO annotation id given to each of the record's regions, in order.
    """
    return {
        "image_id": record.image_id,
        "source": record.source,
        "metadata": dict(record.metadata),
        "captions": [
            {"level": caption.level, "text": caption.text, **_encode_provenance(caption.provenance)}
            for caption in record.captions
        ],
        "text_lines": [
            {
                "text": line.text,
                "quad": list(line.quad),
                "score": line.score,
                **_encode_provenance(line.provenance),
            }
            for line in record.text_lines
        ],
        "groundings": [_encode_grounding(grounding) for grounding in record.groundings],
        "referring": [
            {
                "expression": referring.expression,
                "ann_id": annotation_ids[referring.region],
                **_encode_provenance(referring.provenance),
            }
            for referring in record.referring
        ],
        "questions": [
            {
                "question": question.question,
                "answer": question.answer,
                "kind": question.kind,
                **_encode_provenance(question.provenance),
            }
            for question in record.questions
        ],
    }


def _encode_provenance(provenance: Provenance) -> dict[str, Any]:
    return {"source": provenance.source, "round": provenance.round}


def _encode_grounding(grounding: Grounding) -> dict[str, Any]:
    phrases = [
        {
            "phrase": phrase.phrase,
            "start": phrase.start,
            "end": phrase.end,
            "boxes": [list(box) for box in phrase.boxes],
        }
        for phrase in grounding.phrases
    ]
    return {"caption": grounding.caption, "phrases": phrases, **_encode_provenance(grounding.provenance)}


def decode_region_extras(extras: dict[str, Any] | None, source: str) -> RegionExtras:
    """Read an annotation's extra object; without one, a plain COCO region made by `source`, round 0.

    Raises:
        DatasetError: A value has the wrong type (bare reason; the caller names file and annotation).
    """
    if extras is None:
        return RegionExtras("", "", None, Provenance(source, 0))
    score = _optional_float(field_of(extras, "score", "a number or null", default=None))
    if score is not None and not math.isfinite(score):
        raise DatasetError(f"score {score} is not finite")
    return RegionExtras(
        phrase=field_of(extras, "phrase", "a string", default=""),
        description=field_of(extras, "description", "a string", default=""),
        score=score,
        provenance=_decode_provenance(extras, source),
    )


def decode_record_extras(extras: dict[str, Any] | None, source: str) -> RecordExtras:
    """Read an image's extra object; an empty `RecordExtras` without one.

    Args:
        extras: The object, or None.
        source: The provenance source of entries that do not name one.

    Raises:
        DatasetError: A value has the wrong type (bare reason; the caller names file and image).
    """
    if extras is None:
        return RecordExtras()
    return RecordExtras(
        image_id=field_of(extras, "image_id", "a string", default=None),
        source=field_of(extras, "source", "a string", default=None),
        metadata=_decode_metadata(field_of(extras, "metadata", "an object", default=None)),
        captions=tuple(_decode_caption(entry, source) for entry in _entries(extras, "captions")),
        text_lines=tuple(_decode_text_line(entry, source) for entry in _entries(extras, "text_lines")),
        groundings=tuple(_decode_grounding(entry, source) for entry in _entries(extras, "groundings")),
        referring=tuple(
            ExtraReferring(
                annotation_id=field_of(entry, "ann_id", "an integer"),
                expression=field_of(entry, "expression", "a string"),
                provenance=_decode_provenance(entry, source),
            )
            for entry in _entries(extras, "referring")
        ),
        questions=tuple(
            QuestionAnswer(
                question=field_of(entry, "question", "a string"),
                answer=field_of(entry, "answer", "a string"),
                kind=field_of(entry, "kind", "a string"),
                provenance=_decode_provenance(entry, source),
            )
            for entry in _entries(extras, "questions")
        ),
    )


def _entries(extras: dict[str, Any], key: str) -> list[Any]:
    return cast(list[Any], field_of(extras, key, "a list", default=[]))


def _optional_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _decode_provenance(entry: Any, source: str) -> Provenance:
    return Provenance(
        source=field_of(entry, "source", "a string", default=source),
        round=field_of(entry, "round", "an integer", default=0),
    )


def _decode_metadata(metadata: dict[str, Any] | None) -> dict[str, str] | None:
    if metadata is not None and not all(isinstance(value, str) for value in metadata.values()):
        raise DatasetError(f"'metadata' must map strings to strings, got {metadata!r:.80}")
    return metadata


def _decode_caption(entry: Any, source: str) -> Caption:
    level = field_of(entry, "level", "a string")
    if level not in CAPTION_LEVELS:
        raise DatasetError(f"unknown caption level {level!r}; known: {', '.join(CAPTION_LEVELS)}")
    text = field_of(entry, "text", "a string")
    return Caption(cast(CaptionLevel, level), text, _decode_provenance(entry, source))


def _decode_text_line(entry: Any, source: str) -> TextLine:
    quad = cast(Quad, numbers_of(field_of(entry, "quad", "a list"), "text line 'quad'", count=8))
    return TextLine(
        text=field_of(entry, "text", "a string"),
        quad=quad,
        provenance=_decode_provenance(entry, source),
        score=_optional_float(field_of(entry, "score", "a number or null", default=None)),
    )


def _decode_grounding(entry: Any, source: str) -> Grounding:
    phrases = []
    for phrase in field_of(entry, "phrases", "a list"):
        boxes = tuple(
            cast(Box, numbers_of(box if isinstance(box, list) else [box], "grounded phrase box", count=4))
            for box in field_of(phrase, "boxes", "a list")
        )
        phrases.append(
            GroundedPhrase(
                phrase=field_of(phrase, "phrase", "a string"),
                start=field_of(phrase, "start", "an integer"),
                end=field_of(phrase, "end", "an integer"),
                boxes=boxes,
            )
        )
    return Grounding(
        field_of(entry, "caption", "a string"), tuple(phrases), _decode_provenance(entry, source)
    )
