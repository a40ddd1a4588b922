"""The record: one image and every annotation omnivis knows about it, typed.

A record holds what the paper's FLD-5B holds per image (section 4.3): text annotations (captions at three
levels of detail), region-text pairs (a box with its category, a short phrase and a region description, and
the object's polygons), text-phrase-region triplets (phrases of a caption grounded to boxes), plus the
referring expressions, text lines (OCR with quadrilaterals) and question-answer pairs the tasks need. Every
annotation says where it came from (`Provenance`), so the data engine can mix sources and refinement rounds.

Geometry is in pixels of the record's image, as floats, x before y:
- a box is (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1, inside the image;
- a quadrilateral is (x0, y0, ..., x3, y3), corners clockwise on screen from the top-left corner of the text's
  reading direction;
- a polygon is (x0, y0, x1, y1, ...), at least three vertices, clockwise on screen; an object may have
  several (the visible parts of an occluded object).

Records are frozen dataclasses of tuples: comparable with `==`, hashable, and safe to share across workers.
`Record.validate` checks every invariant above and names the record and the annotation that breaks one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from omnivis.errors import DatasetError

CaptionLevel = Literal["brief", "detailed", "more_detailed"]
CAPTION_LEVELS: tuple[CaptionLevel, ...] = ("brief", "detailed", "more_detailed")

Box = tuple[float, float, float, float]
Quad = tuple[float, float, float, float, float, float, float, float]
Polygon = tuple[float, ...]


@dataclass(frozen=True)
class Provenance:
    """Who made an annotation.

    Attributes:
        source: "world" (the procedural generator's exact truth), "coco", "refcoco", "human", or
            "specialist:<name>" for a data-engine model.
        round: The data engine's refinement round that produced it; 0 for original annotations.
    """

    source: str
    round: int = 0


@dataclass(frozen=True)
class Caption:
    """A caption of the whole image at one level of detail (brief, detailed, more_detailed)."""

    level: CaptionLevel
    text: str
    provenance: Provenance


@dataclass(frozen=True)
class Region:
    """One object: its box, category, phrase, description and polygons.

    Attributes:
        box: (x0, y0, x1, y1) in pixels: the bounds of the object's visible part.
        category: Its class name, e.g. "star" (detection label).
        phrase: A short noun phrase naming it, e.g. "small blue star" (dense region caption).
        description: A sentence describing it (region to description).
        polygons: The outline of its visible part, one or more polygons; empty when unknown.
        score: Confidence of a predicted or specialist-made region; None for truth.
        is_crowd: COCO's crowd flag: one region covering many instances.
        provenance: Who made it.
    """

    box: Box
    category: str
    provenance: Provenance
    phrase: str = ""
    description: str = ""
    polygons: tuple[Polygon, ...] = ()
    score: float | None = None
    is_crowd: bool = False


@dataclass(frozen=True)
class TextLine:
    """A line of text in the image and the quadrilateral around it (OCR)."""

    text: str
    quad: Quad
    provenance: Provenance
    score: float | None = None


@dataclass(frozen=True)
class GroundedPhrase:
    """A phrase of a caption and the boxes of what it names.

    Attributes:
        phrase: The phrase, equal to `caption[start:end]`.
        start: Character offset of the phrase in the caption.
        end: Character offset just past the phrase.
        boxes: One box per object the phrase names, (x0, y0, x1, y1) in pixels.
    """

    phrase: str
    start: int
    end: int
    boxes: tuple[Box, ...]


@dataclass(frozen=True)
class Grounding:
    """A text-phrase-region triplet set: a caption with its phrases grounded to boxes."""

    caption: str
    phrases: tuple[GroundedPhrase, ...]
    provenance: Provenance


@dataclass(frozen=True)
class ReferringExpression:
    """An expression that names exactly one region of the record, e.g. "the small blue star left of the red
    square"; `region` is that region's index in `Record.regions`."""

    expression: str
    region: int
    provenance: Provenance


@dataclass(frozen=True)
class QuestionAnswer:
    """A question about the image and its answer; `kind` groups questions ("count", "colour", "position",
    "reading", or "other")."""

    question: str
    answer: str
    kind: str
    provenance: Provenance


@dataclass(frozen=True)
class Record:
    """One image and its annotations.

    Attributes:
        image_id: Unique within a dataset; COCO ids become strings.
        image: The encoded image file (PNG or JPEG bytes), exactly as stored.
        width: Image width in pixels.
        height: Image height in pixels.
        source: Where the image came from, e.g. "world", "coco", "skimage".
    """

    image_id: str
    image: bytes
    width: int
    height: int
    source: str
    captions: tuple[Caption, ...] = ()
    regions: tuple[Region, ...] = ()
    text_lines: tuple[TextLine, ...] = ()
    groundings: tuple[Grounding, ...] = ()
    referring: tuple[ReferringExpression, ...] = ()
    questions: tuple[QuestionAnswer, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict, compare=True, hash=False)

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height), the form tasks and location quantization take."""
        return self.width, self.height

    def caption(self, level: CaptionLevel) -> str | None:
        """The text of the first caption at `level`, or None when the record has none."""
        return next((caption.text for caption in self.captions if caption.level == level), None)

    def ocr_text(self) -> str:
        """All text lines, in reading order, one per line: the answer of the OCR task."""
        return "\n".join(line.text for line in self.text_lines)

    def texts(self) -> Iterator[str]:
        """Every piece of text the record holds (what a model reads in prompts or writes in targets), in
        field order; a tokenizer for from-scratch models is learned from these."""
        yield from (caption.text for caption in self.captions)
        for region in self.regions:
            yield from (region.category, region.phrase, region.description)
        yield from (line.text for line in self.text_lines)
        yield from (grounding.caption for grounding in self.groundings)
        yield from (referring.expression for referring in self.referring)
        for question in self.questions:
            yield from (question.question, question.answer)

    def validate(self) -> Record:
        """Check every invariant of the record; return it unchanged.

        Raises:
            DatasetError: Naming the record and the first annotation that breaks an invariant.
        """
        where = f"record {self.image_id!r}"
        if not isinstance(self.image_id, str) or not self.image_id:
            raise DatasetError(f"{where}: image_id must be a non-empty string")
        if not isinstance(self.image, bytes | bytearray) or not self.image:
            raise DatasetError(f"{where}: image bytes are empty")
        if not (_is_int(self.width) and _is_int(self.height) and self.width > 0 and self.height > 0):
            raise DatasetError(f"{where}: image size must be positive integers, got {self.width}x{self.height}")
        if not isinstance(self.source, str):
            raise DatasetError(f"{where}: source must be a string, got {self.source!r}")
        for index, caption in enumerate(self.captions):
            if caption.level not in CAPTION_LEVELS:
                raise DatasetError(f"{where}: unknown caption level {caption.level!r}; known: {CAPTION_LEVELS}")
            _check_annotation(caption, (caption.text,), f"{where}, caption {index}")
        for index, question in enumerate(self.questions):
            texts = (question.question, question.answer, question.kind)
            _check_annotation(question, texts, f"{where}, question {index}")
        for index, region in enumerate(self.regions):
            texts = (region.category, region.phrase, region.description)
            _check_annotation(region, texts, f"{where}, region {index}")
            _check_region(region, self.image_size, f"{where}, region {index}")
        for index, line in enumerate(self.text_lines):
            _check_annotation(line, (line.text,), f"{where}, text line {index}")
            check_points(line.quad, self.image_size, f"{where}, text line {index} quad", exact_count=8)
        for index, grounding in enumerate(self.groundings):
            _check_annotation(grounding, (grounding.caption,), f"{where}, grounding {index}")
            _check_grounding(grounding, self.image_size, f"{where}, grounding {index}")
        for index, referring in enumerate(self.referring):
            _check_annotation(referring, (referring.expression,), f"{where}, referring expression {index}")
            if not _is_int(referring.region) or not 0 <= referring.region < len(self.regions):
                raise DatasetError(
                    f"{where}, referring expression {index}: region {referring.region} does not exist "
                    f"(the record has {len(self.regions)} regions)"
                )
        return self


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_annotation(annotation: object, texts: Sequence[object], where: str) -> None:
    """Text fields must be strings and the provenance a source string with a round >= 0."""
    if not all(isinstance(text, str) for text in texts):
        raise DatasetError(f"{where}: text fields must be strings, got {[type(t).__name__ for t in texts]}")
    provenance = getattr(annotation, "provenance", None)
    if not isinstance(provenance, Provenance) or not isinstance(provenance.source, str):
        raise DatasetError(f"{where}: provenance must be a Provenance with a source string, got {provenance!r}")
    if not _is_int(provenance.round) or provenance.round < 0:
        raise DatasetError(f"{where}: provenance round must be an integer >= 0, got {provenance.round!r}")


def check_box(box: Sequence[float], image_size: tuple[int, int], where: str) -> None:
    """A box must be four finite numbers, not inverted, inside the image.

    Raises:
        DatasetError: Naming `where` and the box.
    """
    if len(box) != 4 or not all(isinstance(value, int | float) for value in box):
        raise DatasetError(f"{where}: a box needs four numbers (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = box
    if not all(math.isfinite(value) for value in box):
        raise DatasetError(f"{where}: box {box!r} holds a non-finite number")
    if x1 < x0 or y1 < y0:
        raise DatasetError(f"{where}: box {box!r} is inverted (need x0 <= x1, y0 <= y1)")
    width, height = image_size
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise DatasetError(f"{where}: box {box!r} reaches outside the {width}x{height} image")


def check_points(
    points: Sequence[float], image_size: tuple[int, int], where: str, *, exact_count: int | None = None
) -> None:
    """A flat x, y, ... list must hold finite numbers inside the image: `exact_count` of them (a quad's 8),
    or, without it, a polygon's even number of at least 6.

    Raises:
        DatasetError: Naming `where` and the problem.
    """
    count = len(points)
    if exact_count is not None and count != exact_count:
        raise DatasetError(f"{where}: needs {exact_count} coordinates, got {count}")
    if exact_count is None and (count < 6 or count % 2):
        raise DatasetError(f"{where}: a polygon needs an even number (at least 6) of coordinates, got {count}")
    if not all(isinstance(value, int | float) and math.isfinite(value) for value in points):
        raise DatasetError(f"{where}: coordinates must be finite numbers")
    width, height = image_size
    xs, ys = points[0::2], points[1::2]
    if min(xs) < 0 or min(ys) < 0 or max(xs) > width or max(ys) > height:
        raise DatasetError(f"{where}: reaches outside the {width}x{height} image")


def _check_region(region: Region, image_size: tuple[int, int], where: str) -> None:
    check_box(region.box, image_size, f"{where} box")
    if not region.category:
        raise DatasetError(f"{where}: empty category")
    for index, polygon in enumerate(region.polygons):
        check_points(polygon, image_size, f"{where} polygon {index}")
    if region.score is not None and not math.isfinite(region.score):
        raise DatasetError(f"{where}: score {region.score!r} is not finite")


def _check_grounding(grounding: Grounding, image_size: tuple[int, int], where: str) -> None:
    for index, phrase in enumerate(grounding.phrases):
        if not (_is_int(phrase.start) and _is_int(phrase.end) and isinstance(phrase.phrase, str)):
            raise DatasetError(f"{where}, phrase {index}: start and end must be integers and the phrase a string")
        if grounding.caption[phrase.start : phrase.end] != phrase.phrase:
            raise DatasetError(
                f"{where}, phrase {index}: {phrase.phrase!r} is not caption[{phrase.start}:{phrase.end}]"
            )
        for box_index, box in enumerate(phrase.boxes):
            check_box(box, image_size, f"{where}, phrase {index} box {box_index}")
