"""What is asked of a model on a record, and the truth each answer is scored against.

A `Query` is one call of `run(image, task, input)` that a record's annotations can judge: detection once per
image, open-vocabulary detection once per category present and once per referring expression, a region task
once per region, VQA once per distinct question. Besides the truth a metric reads (`truth`), every query
carries `answer`: the truth written as `run()` answers it, used to draw the truth beside a prediction and to
check the plumbing (truth fed back as predictions must score the maximum of every metric).

The queries of a record are a pure function of it, in a deterministic order, so a predictions file written by
any program can be matched to them by (image id, task, input).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from omnivis.data.records import Box, Record, Region
from omnivis.tasks.locations import format_box
from omnivis.tasks.parsing import BANNED_GROUNDING_PHRASES
from omnivis.tasks.serializers import open_vocabulary_answer

TaskInput = str | Box | None
QueryKind = Literal["image", "category", "referring", "region", "question", "caption"]

_CAPTION_LEVELS = {
    "<CAPTION>": "brief",
    "<DETAILED_CAPTION>": "detailed",
    "<MORE_DETAILED_CAPTION>": "more_detailed",
}


@dataclass(frozen=True)
class GroundTruthBox:
    """A box to be found, with what COCO evaluation needs besides its corners.

    Attributes:
        box: (x0, y0, x1, y1) in pixels.
        label: Its category (detection) or phrase.
        area: Its mask's area when it has polygons (COCO's small/medium/large ranges read it), else the box's.
        is_crowd: COCO's crowd flag: matching it neither helps nor hurts.
    """

    box: Box
    label: str
    area: float
    is_crowd: bool = False


@dataclass(frozen=True)
class Query:
    """One task asked of one image, with its truth.

    Attributes:
        image_id: The record's id.
        task: The task token.
        input: What `run` takes as `text`: None, a phrase/question/caption, or a pixel box.
        kind: Which annotation the query comes from; open-vocabulary detection has two ("category" queries are
            scored by AP, "referring" ones by accuracy@0.5).
        image_size: (width, height).
        truth: What the task's metric reads (see each task's builder below).
        answer: The truth in `run()`'s structure, for drawing and for feeding back as a prediction.
    """

    image_id: str
    task: str
    input: TaskInput
    kind: QueryKind
    image_size: tuple[int, int]
    truth: Any
    answer: Any

    @property
    def key(self) -> tuple[str, str, str]:
        """What a prediction is matched by: image id, task, and the input as text (see `input_key`)."""
        return self.image_id, self.task, input_key(self.input, self.image_size)


def input_key(task_input: TaskInput, image_size: tuple[int, int]) -> str:
    """An input as the text that identifies it: "" for none, a phrase stripped of surrounding white space,
    a pixel box as its four location tokens (so a box given in pixels and the same box as `<loc_..>` text,
    the two forms `run` accepts, are one input)."""
    if task_input is None:
        return ""
    if isinstance(task_input, str):
        return task_input.strip()
    return format_box(task_input, image_size)


def label_key(label: str) -> str:
    """A label as it can be compared with a parsed answer's: the reference parser removes non-ASCII characters
    from box labels and strips white space, so a true phrase is compared in the same form."""
    return label.encode("ascii", "ignore").decode("ascii").strip()


def queries(record: Record, task: str) -> list[Query]:
    """Every query of one task that a record's annotations can judge, in a deterministic order.

    Args:
        record: A validated record.
        task: A task token of the registry.

    Returns:
        The queries; empty when the record lacks the task's annotations.
    """
    return list(_BUILDERS[task](record, task))


def _region_area(region: Region, image_size: tuple[int, int]) -> float:
    # Imported here: pycocotools is only needed once boxes are evaluated.
    from omnivis.data.coco_export import region_area

    return region_area(region, *image_size)


def _detection(record: Record, task: str) -> Iterator[Query]:
    """`<OD>`, `<DENSE_REGION_CAPTION>`, `<REGION_PROPOSAL>`: one query per image, truth every region (crowd
    ones flagged), labelled with what the task writes: category, phrase, or nothing."""
    field = {"<OD>": "category", "<DENSE_REGION_CAPTION>": "phrase", "<REGION_PROPOSAL>": None}[task]
    truth = [
        GroundTruthBox(region.box, getattr(region, field) if field else "", _region_area(region, record.image_size),
                       region.is_crowd)
        for region in record.regions
    ]  # fmt: skip
    shown = [item for item in truth if not item.is_crowd]
    answer = {"bboxes": [list(item.box) for item in shown], "labels": [item.label for item in shown]}
    yield Query(record.image_id, task, None, "image", record.image_size, truth, answer)


def _open_vocabulary(record: Record, task: str) -> Iterator[Query]:
    """One "category" query per category present (truth: its boxes), then one "referring" query per referring
    expression (truth: its region's box) — how the paper evaluates referring expression comprehension."""
    size = record.image_size
    for category in sorted({region.category for region in record.regions if not region.is_crowd}):
        truth = [
            GroundTruthBox(region.box, category, _region_area(region, size), region.is_crowd)
            for region in record.regions
            if region.category == category
        ]
        boxes = [list(item.box) for item in truth if not item.is_crowd]
        answer = open_vocabulary_answer(boxes, category)
        yield Query(record.image_id, task, category, "category", size, truth, answer)
    for referring in record.referring:
        box = record.regions[referring.region].box
        answer = open_vocabulary_answer([list(box)], referring.expression)
        yield Query(record.image_id, task, referring.expression, "referring", size, box, answer)


def _grounding(record: Record, task: str) -> Iterator[Query]:
    """One query per grounded caption; truth: (phrase, boxes) for each phrase with boxes that parsing keeps
    (the banned phrases, pronouns and the like, are dropped by every Florence-2 parser)."""
    for grounding in record.groundings:
        phrases = sorted(grounding.phrases, key=lambda phrase: (phrase.start, phrase.end))
        truth = [
            (phrase.phrase, phrase.boxes)
            for phrase in phrases
            if phrase.boxes and phrase.phrase.strip() not in BANNED_GROUNDING_PHRASES
        ]
        if not truth:
            continue
        answer = {
            "bboxes": [list(box) for _, boxes in truth for box in boxes],
            "labels": [phrase for phrase, boxes in truth for _ in boxes],
        }
        yield Query(record.image_id, task, grounding.caption, "caption", record.image_size, truth, answer)


def _segmentation(record: Record, task: str) -> Iterator[Query]:
    """Referring expressions (or regions) whose region has polygons; truth: the polygons."""
    pairs: list[tuple[TaskInput, Region, QueryKind]]
    if task == "<REFERRING_EXPRESSION_SEGMENTATION>":
        pairs = [(item.expression, record.regions[item.region], "referring") for item in record.referring]
    else:
        pairs = [(region.box, region, "region") for region in record.regions if not region.is_crowd]
    for task_input, region, kind in pairs:
        if not region.polygons:
            continue
        truth = [list(polygon) for polygon in region.polygons]
        answer = {"polygons": [truth], "labels": [""]}
        yield Query(record.image_id, task, task_input, kind, record.image_size, truth, answer)


def _region_text(record: Record, task: str) -> Iterator[Query]:
    """One query per region (per text line for `<REGION_TO_OCR>`, its quad's bounding box as input); truth:
    the text. The answer echoes the region's location tokens, as official checkpoints write it."""
    size = record.image_size
    if task == "<REGION_TO_OCR>":
        pairs = [(_quad_bounds(line.quad), line.text) for line in record.text_lines]
    else:
        field = "category" if task == "<REGION_TO_CATEGORY>" else "description"
        pairs = [(region.box, getattr(region, field)) for region in record.regions if not region.is_crowd]
    for box, text in pairs:
        if text:
            yield Query(record.image_id, task, box, "region", size, text, text + format_box(box, size))


def _quad_bounds(quad: tuple[float, ...]) -> Box:
    xs, ys = quad[0::2], quad[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def _ocr(record: Record, task: str) -> Iterator[Query]:
    """`<OCR>`: the lines joined by "\\n"; `<OCR_WITH_REGION>`: (text, quad) per line. Only records with text:
    an empty reference has no error rate."""
    if not record.text_lines:
        return
    if task == "<OCR>":
        text = record.ocr_text()
        yield Query(record.image_id, task, None, "image", record.image_size, text, text)
        return
    truth = [(line.text, line.quad) for line in record.text_lines]
    answer = {"quad_boxes": [list(quad) for _, quad in truth], "labels": [text for text, _ in truth]}
    yield Query(record.image_id, task, None, "image", record.image_size, truth, answer)


def _caption(record: Record, task: str) -> Iterator[Query]:
    """One query per image with a caption at the task's level; truth: every caption at that level."""
    references = [caption.text for caption in record.captions if caption.level == _CAPTION_LEVELS[task]]
    if references:
        yield Query(record.image_id, task, None, "image", record.image_size, references, references[0])


def _question(record: Record, task: str) -> Iterator[Query]:
    """One query per distinct question; truth: the answers of every copy of it (VQAv2 has ten per question)."""
    answers: dict[str, list[str]] = {}
    for pair in record.questions:
        answers.setdefault(pair.question.strip(), []).append(pair.answer)
    for question, references in answers.items():
        yield Query(record.image_id, task, question, "question", record.image_size, references, references[0])


_BUILDERS: dict[str, Callable[[Record, str], Iterator[Query]]] = {
    "<OCR>": _ocr,
    "<OCR_WITH_REGION>": _ocr,
    "<CAPTION>": _caption,
    "<DETAILED_CAPTION>": _caption,
    "<MORE_DETAILED_CAPTION>": _caption,
    "<OD>": _detection,
    "<DENSE_REGION_CAPTION>": _detection,
    "<REGION_PROPOSAL>": _detection,
    "<CAPTION_TO_PHRASE_GROUNDING>": _grounding,
    "<REFERRING_EXPRESSION_SEGMENTATION>": _segmentation,
    "<REGION_TO_SEGMENTATION>": _segmentation,
    "<OPEN_VOCABULARY_DETECTION>": _open_vocabulary,
    "<REGION_TO_CATEGORY>": _region_text,
    "<REGION_TO_DESCRIPTION>": _region_text,
    "<REGION_TO_OCR>": _region_text,
    "<VQA>": _question,
}
