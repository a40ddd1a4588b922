"""The target serializer of each task: a record's annotations as the text official Florence-2 checkpoints
answer with, and the answer `post_process` gives back for it (see `targets` for the contract).

Formats (the official checkpoints' outputs, e.g. transformers.js's Florence-2 post-processing fixtures):
- boxes are the four location tokens x0 y0 x1 y1, each after its label: detection writes the category before
  every box (`car<loc..>x4wheel<loc..>x4`), dense region captions the region's phrase, region proposals no
  label, phrase grounding each phrase in caption order followed by all its boxes, open-vocabulary detection
  the query (a category, or a referring expression) followed by every box it names;
- OCR with regions writes each line's text then the eight location tokens of its quadrilateral (corners
  clockwise from the top-left), the lines back to back in reading order; `<OCR>` joins the lines with "\n"
  (official checkpoints join them with nothing, which loses the line breaks; `Record.ocr_text` keeps them);
- segmentation writes the vertices of each polygon clockwise on screen from its leftmost vertex (the topmost
  of tied ones; `canonical_polygon`), `<sep>` between the polygons of one object, without a label; vertices
  that fall into the same bins are all kept, so parsing gives back as many vertices as the polygon has;
- region-to-text answers (category, description, text) are followed by the four location tokens of the region
  they were asked about, as official checkpoints echo it (`car<loc_52><loc_332><loc_932><loc_774>`);
- captions and VQA answers are the text itself.

Orders are deterministic: regions in raster order of their quantized box (`raster_key`), examples of one
record in the order of its annotations (referring expressions, groundings, questions, captions, text lines),
open-vocabulary queries by category alphabetically, then by expression. Crowd regions are left out of the
region tasks (`_place_regions`), except as the region a referring expression names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omnivis.data.records import Box, CaptionLevel, Record, Region, check_box, check_points
from omnivis.errors import DatasetError
from omnivis.tasks.locations import format_locations, quantize
from omnivis.tasks.targets import Example, Item, TaskInput, Unrepresentable

# `<OCR>` answers with all lines, one per line.
OCR_LINE_SEPARATOR = "\n"
# Between the polygons of one object (the visible parts of an occluded one).
POLYGON_SEPARATOR = "<sep>"


class _Refusal(Exception):
    """Why one item cannot be written; `_attempt` makes it an `Unrepresentable` naming record and task."""


def _attempt(record: Record, task: str, build: Callable[[], Example]) -> Item:
    """The example `build` makes, or the `Unrepresentable` it refuses with."""
    try:
        return build()
    except _Refusal as refusal:
        return Unrepresentable(record.image_id, task, str(refusal))


# --- checks: what parsing would not give back unchanged is refused ----------------------------------------


def _check_text(text: str, what: str, *, single_line: bool = False, ascii_only: bool = False) -> None:
    """Every parser strips what it returns and stops at "<", so a text must be non-empty, without "<" and
    without surrounding whitespace; a label before locations is cut at a newline (`single_line`); detection
    labels lose their non-ASCII characters (`ascii_only`)."""
    if not isinstance(text, str) or not text.strip():
        raise _Refusal(f"{what} is empty")
    if "<" in text:
        raise _Refusal(f"{what} {text!r} holds '<', which parsing reads as the start of a token")
    if text != text.strip():
        raise _Refusal(f"{what} {text!r} has surrounding whitespace, which parsing strips")
    if single_line and "\n" in text:
        raise _Refusal(f"{what} {text!r} holds a newline, where parsing cuts it")
    if ascii_only and not text.isascii():
        raise _Refusal(f"{what} {text!r} holds non-ASCII characters, which parsing removes from labels")


def _check_input(text: str, what: str) -> None:
    """A text input must be non-empty, and "<" would put a special or task token into the prompt."""
    if not isinstance(text, str) or not text.strip():
        raise _Refusal(f"{what} is empty")
    if "<" in text:
        raise _Refusal(f"{what} {text!r} holds '<', which would read as a special or task token")


def _check_box(box: Sequence[float], image_size: tuple[int, int], what: str) -> None:
    try:
        check_box(box, image_size, what)
    except DatasetError as error:
        raise _Refusal(str(error)) from None


def _quantize_all(groups: Sequence[Sequence[float]], image_size: tuple[int, int]) -> list[list[int]]:
    """The bins of checked coordinate lists (boxes, quads, polygons: x, y, x, y, ...), quantized in one
    call, since a call costs far more than a coordinate; every list has an even length, so x and y keep
    alternating."""
    flat = quantize([value for group in groups for value in group], image_size) if groups else []
    bins, start = [], 0
    for group in groups:
        bins.append(flat[start : start + len(group)])
        start += len(group)
    return bins


def _check_points(points: Sequence[float], image_size: tuple[int, int], what: str, count: int | None) -> None:
    """Quantization clamps a point outside the image, which then never parses back."""
    try:
        check_points(points, image_size, what, exact_count=count)
    except DatasetError as error:
        raise _Refusal(str(error)) from None


# --- regions in their written order ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Placed:
    """A region (its index in `Record.regions`, to name it) with the location bins of its box."""

    index: int
    region: Region
    bins: tuple[int, ...]

    @property
    def tokens(self) -> str:
        return format_locations(self.bins)


def raster_key(bins: Sequence[int], label: str, box: Sequence[float]) -> tuple[Any, ...]:
    """The order boxes are written in: raster order of the quantized box (top edge, left edge, right edge,
    bottom edge), then the label, then the exact box (for boxes in the same bins).

    Sorting on bins makes the order a function of the tokens the model reads and writes, so it can learn it.
    """
    x0, y0, x1, y1 = bins
    return (y0, x0, x1, y1, label, tuple(box))


def _place_regions(record: Record, task: str) -> tuple[list[_Placed], list[Unrepresentable]]:
    """The record's regions in raster order, and a refusal for each region whose box cannot be written.

    Crowd regions (COCO's is_crowd: one box around many objects) are no single object: like most detection
    training, targets leave them out.
    """
    kept: list[tuple[int, Region]] = []
    refused: list[Unrepresentable] = []
    for index, region in enumerate(record.regions):
        if region.is_crowd:
            continue
        try:
            _check_box(region.box, record.image_size, f"region {index}")
            kept.append((index, region))
        except _Refusal as refusal:
            refused.append(Unrepresentable(record.image_id, task, str(refusal)))
    bins = _quantize_all([region.box for _, region in kept], record.image_size)
    placed = [_Placed(index, region, tuple(box)) for (index, region), box in zip(kept, bins, strict=True)]
    placed.sort(key=lambda item: (raster_key(item.bins, item.region.category, item.region.box), item.index))
    return placed, refused


# --- text -------------------------------------------------------------------------------------------------


def ocr(record: Record) -> list[Item]:
    """`<OCR>`: all text lines in reading order, joined by "\\n"."""
    if not record.text_lines:
        return []

    def build() -> Example:
        for index, line in enumerate(record.text_lines):
            _check_text(line.text, f"text line {index}", single_line=True)
        text = OCR_LINE_SEPARATOR.join(line.text for line in record.text_lines)
        return Example("<OCR>", None, text, text)

    return [_attempt(record, "<OCR>", build)]


def ocr_with_region(record: Record) -> list[Item]:
    """`<OCR_WITH_REGION>`: each line's text, then its quadrilateral's eight location tokens."""
    if not record.text_lines:
        return []

    def build() -> Example:
        for index, line in enumerate(record.text_lines):
            _check_text(line.text, f"text line {index}", single_line=True)
            _check_points(line.quad, record.image_size, f"text line {index} quad", count=8)
        bins = _quantize_all([line.quad for line in record.text_lines], record.image_size)
        target = "".join(
            line.text + format_locations(quad) for line, quad in zip(record.text_lines, bins, strict=True)
        )
        answer = {
            "quad_boxes": [list(line.quad) for line in record.text_lines],
            "labels": [line.text for line in record.text_lines],
        }
        return Example("<OCR_WITH_REGION>", None, target, answer)

    return [_attempt(record, "<OCR_WITH_REGION>", build)]


def _captions(record: Record, task: str, level: CaptionLevel) -> list[Item]:
    def build(index: int, text: str) -> Example:
        _check_text(text, f"caption {index} ({level})")
        return Example(task, None, text, text)

    return [
        _attempt(record, task, functools.partial(build, index, caption.text))
        for index, caption in enumerate(record.captions)
        if caption.level == level
    ]


def caption(record: Record) -> list[Item]:
    """`<CAPTION>`: one example per brief caption."""
    return _captions(record, "<CAPTION>", "brief")


def detailed_caption(record: Record) -> list[Item]:
    """`<DETAILED_CAPTION>`: one example per detailed caption."""
    return _captions(record, "<DETAILED_CAPTION>", "detailed")


def more_detailed_caption(record: Record) -> list[Item]:
    """`<MORE_DETAILED_CAPTION>`: one example per paragraph-long caption."""
    return _captions(record, "<MORE_DETAILED_CAPTION>", "more_detailed")


def visual_question_answering(record: Record) -> list[Item]:
    """`<VQA>`: one example per question, the question as input and the answer as target."""

    def build(index: int, question: str, answer: str) -> Example:
        _check_input(question, f"question {index}")
        _check_text(answer, f"answer {index}")
        return Example("<VQA>", question, answer, answer)

    return [
        _attempt(record, "<VQA>", functools.partial(build, index, pair.question, pair.answer))
        for index, pair in enumerate(record.questions)
    ]


# --- whole-image box lists --------------------------------------------------------------------------------


def _labelled_boxes(record: Record, task: str, field: str | None) -> list[Item]:
    """One example listing every region's box, each after its `field` text as label (or none when None): OD,
    dense region captions, region proposals.

    A region that cannot be written fails the whole example: a target missing an object would teach the
    model to miss it.
    """
    placed, refused = _place_regions(record, task)
    if refused or not placed:
        return list(refused)

    def build() -> Example:
        parts, bboxes, labels = [], [], []
        for item in placed:
            text = "" if field is None else getattr(item.region, field)
            if field is not None:
                _check_text(text, f"region {item.index} {field}", single_line=True, ascii_only=True)
            parts.append(text + item.tokens)
            bboxes.append(list(item.region.box))
            labels.append(text)
        return Example(task, None, "".join(parts), {"bboxes": bboxes, "labels": labels})

    return [_attempt(record, task, build)]


def object_detection(record: Record) -> list[Item]:
    """`<OD>`: every region's category, then its box."""
    return _labelled_boxes(record, "<OD>", "category")


def dense_region_caption(record: Record) -> list[Item]:
    """`<DENSE_REGION_CAPTION>`: every region's phrase, then its box; none when no region has a phrase (one
    region without a phrase among others that have one is refused)."""
    if not any(region.phrase for region in record.regions if not region.is_crowd):
        return []
    return _labelled_boxes(record, "<DENSE_REGION_CAPTION>", "phrase")


def region_proposal(record: Record) -> list[Item]:
    """`<REGION_PROPOSAL>`: every region's box, without labels."""
    return _labelled_boxes(record, "<REGION_PROPOSAL>", None)


def open_vocabulary_detection(record: Record) -> list[Item]:
    """`<OPEN_VOCABULARY_DETECTION>`: one example per distinct category (alphabetically), the category as
    query and target label, followed by the boxes of all its regions; then one per referring expression, in
    order, the expression as query and label, followed by its region's box (referring expression
    comprehension, which the paper asks of this task and `omnivis eval` scores)."""
    task = "<OPEN_VOCABULARY_DETECTION>"
    placed, refused = _place_regions(record, task)
    if refused:
        return list(refused)

    def build(category: str) -> Example:
        _check_text(category, f"category {category!r}", single_line=True, ascii_only=True)
        boxes = [item for item in placed if item.region.category == category]
        answer = open_vocabulary_answer([item.region.box for item in boxes], category)
        return Example(task, category, category + "".join(item.tokens for item in boxes), answer)

    def build_referring(index: int) -> Example:
        referring = record.referring[index]
        what = f"referring expression {index}"
        _check_text(referring.expression, what, single_line=True, ascii_only=True)
        if not 0 <= referring.region < len(record.regions):
            raise _Refusal(f"{what} names region {referring.region}, which does not exist")
        box = record.regions[referring.region].box
        if referring.region in placed_by_index:
            tokens = placed_by_index[referring.region].tokens
        else:  # a crowd region, left out of the region list but named here: its own box is the answer
            _check_box(box, record.image_size, f"region {referring.region}")
            tokens = format_locations(_quantize_all([box], record.image_size)[0])
        answer = open_vocabulary_answer([box], referring.expression)
        return Example(task, referring.expression, referring.expression + tokens, answer)

    placed_by_index = {item.index: item for item in placed}
    categories = sorted({item.region.category for item in placed})
    by_category = [_attempt(record, task, functools.partial(build, category)) for category in categories]
    expressions = range(len(record.referring))
    by_expression = [
        _attempt(record, task, functools.partial(build_referring, index)) for index in expressions
    ]
    return by_category + by_expression


def open_vocabulary_answer(boxes: Sequence[Sequence[float]], label: str) -> dict[str, Any]:
    """The answer `post_process` gives back for an open-vocabulary query `label` whose objects are `boxes`."""
    return {"bboxes": [list(box) for box in boxes], "bboxes_labels": [label] * len(boxes), "polygons": [],
            "polygons_labels": []}  # fmt: skip


def phrase_grounding(record: Record) -> list[Item]:
    """`<CAPTION_TO_PHRASE_GROUNDING>`: one example per grounding, the caption as input; each phrase that has
    boxes, in caption order, followed by its boxes in raster order. A phrase without boxes has no place in
    the answer and is not written; a grounding where no phrase has a box is refused."""
    task = "<CAPTION_TO_PHRASE_GROUNDING>"
    return [
        _attempt(record, task, functools.partial(_grounding_example, record, index))
        for index in range(len(record.groundings))
    ]


def _grounding_example(record: Record, index: int) -> Example:
    # Imported here: the parser imports the registry, which imports this module.
    from omnivis.tasks.parsing import BANNED_GROUNDING_PHRASES

    grounding = record.groundings[index]
    _check_input(grounding.caption, f"grounding {index} caption")
    parts: list[str] = []
    bboxes: list[list[float]] = []
    labels: list[str] = []
    for phrase in sorted(grounding.phrases, key=lambda phrase: (phrase.start, phrase.end)):
        if not phrase.boxes:
            continue
        what = f"grounding {index} phrase {phrase.phrase!r}"
        _check_text(phrase.phrase, what, single_line=True, ascii_only=True)
        if phrase.phrase in BANNED_GROUNDING_PHRASES:
            raise _Refusal(f"{what} is one that phrase grounding drops (a pronoun or the like)")
        for box in phrase.boxes:
            _check_box(box, record.image_size, f"{what} box")
        boxes = list(zip(_quantize_all(phrase.boxes, record.image_size), phrase.boxes, strict=True))
        boxes.sort(key=lambda pair: raster_key(pair[0], "", pair[1]))
        parts.append(phrase.phrase + "".join(format_locations(bins) for bins, _ in boxes))
        bboxes.extend(list(box) for _, box in boxes)
        labels.extend([phrase.phrase] * len(boxes))
    if not parts:
        raise _Refusal(f"grounding {index} has no phrase with a box")
    answer = {"bboxes": bboxes, "labels": labels}
    return Example("<CAPTION_TO_PHRASE_GROUNDING>", grounding.caption, "".join(parts), answer)


# --- segmentation -----------------------------------------------------------------------------------------


def canonical_polygon(polygon: Sequence[float]) -> tuple[float, ...]:
    """A flat polygon (x0, y0, x1, y1, ...) written clockwise on screen from its leftmost vertex, the topmost
    of tied ones.

    Where a polygon starts is otherwise arbitrary (the world's shapes start where their rotation put their
    first vertex: a circle on its right, a square at whichever corner was top left before turning; COCO's at
    the annotator's first click), and a target whose first vertex the image cannot tell is one the model can
    only guess. From the leftmost vertex, the first location token is the object's left edge, the very token a
    box starts with, so segmentation's first step is the one detection and referring expressions learn too.
    Image y points down, so a positive shoelace sum turns clockwise on screen; a polygon without area keeps its
    order.
    """
    xs, ys = polygon[0::2], polygon[1::2]
    count = len(xs)
    twice_area = sum(xs[i] * ys[(i + 1) % count] - xs[(i + 1) % count] * ys[i] for i in range(count))
    order = list(range(count)) if twice_area >= 0 else list(range(count - 1, -1, -1))
    first = min(range(count), key=lambda position: (xs[order[position]], ys[order[position]]))
    return tuple(
        value for position in order[first:] + order[:first] for value in (xs[position], ys[position])
    )


def _polygons_example(record: Record, task: str, task_input: TaskInput, region: Region, what: str) -> Example:
    """A region's polygons as segmentation writes them: one object, no label, each `canonical_polygon`."""
    for index, polygon in enumerate(region.polygons):
        _check_points(polygon, record.image_size, f"{what} polygon {index}", count=None)
    polygons = [canonical_polygon(polygon) for polygon in region.polygons]
    bins = _quantize_all(polygons, record.image_size)
    answer = {"polygons": [[list(polygon) for polygon in polygons]], "labels": [""]}
    return Example(task, task_input, POLYGON_SEPARATOR.join(map(format_locations, bins)), answer)


def referring_expression_segmentation(record: Record) -> list[Item]:
    """`<REFERRING_EXPRESSION_SEGMENTATION>`: one example per referring expression whose region has polygons,
    the expression as input and the region's polygons as target."""
    task = "<REFERRING_EXPRESSION_SEGMENTATION>"
    items: list[Item] = []
    for index, referring in enumerate(record.referring):
        if not 0 <= referring.region < len(record.regions):
            reason = f"referring expression {index} names region {referring.region}, which does not exist"
            items.append(Unrepresentable(record.image_id, task, reason))
        elif record.regions[referring.region].polygons:
            build = functools.partial(_referring_example, record, index)
            items.append(_attempt(record, task, build))
    return items


def _referring_example(record: Record, index: int) -> Example:
    task, referring = "<REFERRING_EXPRESSION_SEGMENTATION>", record.referring[index]
    _check_input(referring.expression, f"referring expression {index}")
    region = record.regions[referring.region]
    return _polygons_example(record, task, referring.expression, region, f"region {referring.region}")


def region_to_segmentation(record: Record) -> list[Item]:
    """`<REGION_TO_SEGMENTATION>`: one example per region with polygons, in raster order, its box as input."""
    task = "<REGION_TO_SEGMENTATION>"
    placed, refused = _place_regions(record, task)
    items: list[Item] = [*refused]
    for item in placed:
        if item.region.polygons:
            build = functools.partial(
                _polygons_example, record, task, item.region.box, item.region, f"region {item.index}"
            )
            items.append(_attempt(record, task, build))
    return items


# --- region to text ---------------------------------------------------------------------------------------


def _region_text(task: str, box: Box, bins: Sequence[int], text: str, what: str) -> Example:
    """A region-to-text example: the text, then the region's location tokens, as official checkpoints echo
    them (post-processing keeps them in its plain-text answer)."""
    _check_text(text, what)
    target = text + format_locations(bins)
    return Example(task, box, target, target)


def _region_texts(record: Record, task: str, field: str, *, optional: bool) -> list[Item]:
    """One example per region, in raster order, its box as input and its `field` text as answer; an
    `optional` field left empty means the region has none (no example), a required one is refused."""
    placed, refused = _place_regions(record, task)
    items: list[Item] = [*refused]
    for item in placed:
        text = getattr(item.region, field)
        if text or not optional:
            build = functools.partial(
                _region_text, task, item.region.box, item.bins, text, f"region {item.index} {field}"
            )
            items.append(_attempt(record, task, build))
    return items


def region_to_category(record: Record) -> list[Item]:
    """`<REGION_TO_CATEGORY>`: one example per region: its category, then its location tokens."""
    return _region_texts(record, "<REGION_TO_CATEGORY>", "category", optional=False)


def region_to_description(record: Record) -> list[Item]:
    """`<REGION_TO_DESCRIPTION>`: one example per region with a description: it, then its location tokens."""
    return _region_texts(record, "<REGION_TO_DESCRIPTION>", "description", optional=True)


def region_to_ocr(record: Record) -> list[Item]:
    """`<REGION_TO_OCR>`: one example per text line, in reading order: the input is the bounding box of its
    quadrilateral, the target its text, then that box's location tokens."""
    task = "<REGION_TO_OCR>"
    return [
        _attempt(record, task, functools.partial(_line_region_text, record, index))
        for index in range(len(record.text_lines))
    ]


def _line_region_text(record: Record, index: int) -> Example:
    line = record.text_lines[index]
    what = f"text line {index}"
    _check_points(line.quad, record.image_size, f"{what} quad", count=8)
    xs, ys = line.quad[0::2], line.quad[1::2]
    box = (min(xs), min(ys), max(xs), max(ys))
    _check_box(box, record.image_size, what)
    (bins,) = _quantize_all([box], record.image_size)
    return _region_text("<REGION_TO_OCR>", box, bins, line.text, what)
