"""Trivial baselines: what a model that learned nothing from the images would answer, for every task.

A metric means little alone: CIDEr 0.4 on captions whose scenes all look alike may be what one memorized
sentence earns. `fit_baseline(training_records)` learns a few constants from the training records (the most
frequent caption of each level, the mean box, the most frequent category, phrase and description, the
majority answer of each question), and `Baseline.predict(queries)` answers held-out queries with them in
exactly the structure `Predictor.run` gives, so the same scoring (`evaluation.score_predictions`) puts the
baseline's metrics beside the model's. `BASELINE_RULES` says, per task, what the baseline answers.

    baseline = fit_baseline(training_records)
    collected = collect_queries(held_out_records, tasks=None)
    evaluation = score_baseline(baseline, collected)

Choices a reader should know (also written out in `BASELINE_RULES`):

- Phrase grounding needs phrases, and a baseline has no phrase splitter. It memorizes the phrases grounded in
  the training captions (case-insensitively) and gives every one that occurs in a held-out caption, on word
  boundaries, the mean box; a caption without any is answered as one phrase (the whole caption) with the
  mean box. The test truth's own phrase split is never read: that would hand the baseline half the task.
- Region to segmentation answers the rectangle of its input box. The box is the prompt every model is given,
  not leaked truth; a mean box that ignores the prompt would set a floor no model could fail to clear, while
  "the box itself" is what a model must beat to have learned any shape.
- `largest_object=True` answers referring expressions (open-vocabulary detection's referring queries and
  referring segmentation) with the image's largest true object instead of the mean box: the classic
  "largest object" baseline. A referring query holds only its referent, so the image's objects are read
  from the image's detection queries (`<OD>`, `<REGION_PROPOSAL>`, `<DENSE_REGION_CAPTION>`, or
  open-vocabulary detection's category queries), which must be among the queries given.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from omnivis.data.records import CAPTION_LEVELS, Box, GroundedPhrase, Record
from omnivis.errors import InputError
from omnivis.eval.evaluation import Evaluation, TaskQueries, score_predictions
from omnivis.eval.predictions import Prediction
from omnivis.eval.queries import GroundTruthBox, Query
from omnivis.tasks.locations import dequantize, format_box, parse_region
from omnivis.tasks.parsing import BANNED_GROUNDING_PHRASES

# A word of a caption: phrases are matched only on these boundaries ("a star" is not found in "a starling").
# Quotes belong to their word, so `the word "mango"` is found whole; sentence punctuation does not.
_WORD = re.compile(r"[^\s.,;:!?]+")
# The box a baseline falls back to when its training records hold no region: the whole image.
_WHOLE_IMAGE: Box = (0.0, 0.0, 1.0, 1.0)
# Tasks whose queries hold every true box of an image (open-vocabulary detection: its category queries).
_DETECTION_TASKS = frozenset({"<OD>", "<REGION_PROPOSAL>", "<DENSE_REGION_CAPTION>"})
_REFERRING_TASKS = frozenset({"<OPEN_VOCABULARY_DETECTION>", "<REFERRING_EXPRESSION_SEGMENTATION>"})
_LEVEL_OF_TASK = {
    "<CAPTION>": "brief", "<DETAILED_CAPTION>": "detailed", "<MORE_DETAILED_CAPTION>": "more_detailed",
}  # fmt: skip

BASELINE_RULES: dict[str, str] = {
    "<OCR>": "empty text",
    "<OCR_WITH_REGION>": "no text lines",
    "<CAPTION>": "the most frequent brief caption of the training set",
    "<DETAILED_CAPTION>": "the most frequent detailed caption of the training set",
    "<MORE_DETAILED_CAPTION>": "the most frequent paragraph caption of the training set",
    "<OD>": "one mean training box (image-relative), labelled with the most frequent category",
    "<DENSE_REGION_CAPTION>": "one mean training box, labelled with the most frequent region phrase",
    "<REGION_PROPOSAL>": "one mean training box",
    "<CAPTION_TO_PHRASE_GROUNDING>": "the mean box for every training phrase found in the caption "
    "(the whole caption when none is)",
    "<REFERRING_EXPRESSION_SEGMENTATION>": "the mean box as a rectangle (with largest_object: the image's "
    "largest true object's box)",
    "<REGION_TO_SEGMENTATION>": "the input box as a rectangle",
    "<OPEN_VOCABULARY_DETECTION>": "one mean box labelled with the query (with largest_object: the image's "
    "largest true object's box for referring expressions)",
    "<REGION_TO_CATEGORY>": "the most frequent category",
    "<REGION_TO_DESCRIPTION>": "the most frequent region description",
    "<REGION_TO_OCR>": "empty text",
    "<VQA>": "the majority training answer to the same question (normalized text), else the overall "
    "majority answer",
}  # fmt: skip


def text_key(text: str) -> str:
    """A question or phrase as the baseline looks it up: lower-cased, white space runs as one space, ends
    stripped."""
    return " ".join(text.lower().split())


def _most_frequent(counts: Counter[str]) -> str:
    """The most frequent text; ties go to the lexicographically smallest, so a fit is deterministic. "" when
    nothing was counted."""
    if not counts:
        return ""
    return min(counts.items(), key=lambda item: (-item[1], item[0]))[0]


def _memorable(phrase: GroundedPhrase) -> bool:
    """Whether a grounded phrase is worth memorizing: it has boxes and is one parsing keeps."""
    text = phrase.phrase.strip()
    return bool(phrase.boxes and text and text not in BANNED_GROUNDING_PHRASES)


def _rectangle(box: Sequence[float]) -> list[float]:
    """A box as a polygon, corners clockwise on screen from the top left."""
    x0, y0, x1, y1 = box
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _region_echo(query: Query) -> str:
    """A region input as the location tokens region answers echo (official checkpoints write them)."""
    if isinstance(query.input, str):
        return query.input.strip()
    return format_box(query.input, query.image_size) if query.input is not None else ""


def _input_box(query: Query) -> Box:
    """A region query's input as a pixel box; `<loc_..>` text is dequantized on the image's size."""
    if query.input is None:
        raise InputError(f"a {query.task} query of image {query.image_id!r} has no region")
    corners: Sequence[float] = (
        dequantize(parse_region(query.input), query.image_size)
        if isinstance(query.input, str)
        else query.input
    )
    x0, y0, x1, y1 = (float(value) for value in corners)
    return x0, y0, x1, y1


@dataclass(frozen=True)
class Baseline:
    """What a trivial baseline learned from training records.

    Attributes:
        captions: Caption level ("brief", "detailed", "more_detailed") -> its most frequent caption ("" when
            the training records have none at that level).
        mean_box: The mean of every training region's (x0 / width, y0 / height, x1 / width, y1 / height);
            the whole image (0, 0, 1, 1) when the records hold no region.
        category: The most frequent region category.
        phrase: The most frequent non-empty region phrase.
        description: The most frequent non-empty region description.
        grounded_phrases: Every phrase grounded to a box in a training caption, as `text_key` writes it.
        phrase_words: The most words any of `grounded_phrases` has (how far the caption search looks).
        answers: Normalized question (see `text_key`) -> its majority training answer.
        majority_answer: The majority answer over every training question.
    """

    captions: dict[str, str]
    mean_box: Box
    category: str
    phrase: str
    description: str
    grounded_phrases: frozenset[str]
    phrase_words: int
    answers: dict[str, str]
    majority_answer: str

    def predict(self, queries: Sequence[Query], *, largest_object: bool = False) -> list[Prediction]:
        """One prediction per query, in order, each in the structure the task's metric reads.

        Args:
            queries: Queries of any tasks of the registry (see `omnivis.eval.queries`).
            largest_object: Answer referring expressions with the image's largest true object (see the module
                docstring); each such image then needs a detection query among `queries`.

        Returns:
            The predictions, aligned with `queries`.

        Raises:
            InputError: A query of an unknown task, or, with `largest_object`, a referring query whose image
                has no detection query to take its objects from.
        """
        unknown = sorted({query.task for query in queries if query.task not in _ANSWERS})
        if unknown:
            raise InputError(f"no baseline for unknown task(s) {', '.join(map(repr, unknown))}")
        largest = _largest_objects(queries) if largest_object else {}
        predictions = []
        for query in queries:
            box = self.box_for(query.image_size)
            if largest_object and query.task in _REFERRING_TASKS and query.kind == "referring":
                if query.image_id not in largest:
                    raise InputError(
                        f"largest_object needs the objects of image {query.image_id!r}: include its <OD> "
                        "(or another detection task's) queries"
                    )
                box = largest[query.image_id]
            answer = _ANSWERS[query.task](self, query, box)
            predictions.append(Prediction(query.image_id, query.task, query.input, answer))
        return predictions

    def box_for(self, image_size: tuple[int, int]) -> Box:
        """The mean box in pixels of an image of `image_size` (width, height)."""
        width, height = image_size
        x0, y0, x1, y1 = self.mean_box
        return x0 * width, y0 * height, x1 * width, y1 * height

    def answer_question(self, question: str) -> str:
        """The majority training answer to this question, or the overall majority for an unseen one."""
        return self.answers.get(text_key(question), self.majority_answer)

    def ground(self, caption: str, box: Box) -> dict[str, Any]:
        """A phrase grounding answer: `box` for every memorized phrase found in the caption on word
        boundaries (written as the caption writes it), in caption order; the whole caption when none is."""
        words = list(_WORD.finditer(caption))
        phrases = []
        for first, start in enumerate(words):
            for end in words[first : first + self.phrase_words]:
                span = caption[start.start() : end.end()]
                if text_key(span) in self.grounded_phrases:
                    phrases.append(span)
        if not phrases:
            phrases = [caption.strip()]
        return {"bboxes": [list(box) for _ in phrases], "labels": phrases}


def fit_baseline(records: Iterable[Record]) -> Baseline:
    """Learn a trivial baseline's constants from training records, in one pass.

    Never fit on the records it is scored on: the majority answers and captions would then be read off the
    truth they are judged by.

    Args:
        records: The training records (a `Dataset`, a `RecordStream` or any iterable of records).

    Returns:
        The fitted baseline. Region statistics cover every region, crowd ones included; phrases and
        descriptions count only where non-empty; VQA answers are counted as written, stripped.

    Raises:
        InputError: No records.
    """
    captions: dict[str, Counter[str]] = {level: Counter() for level in CAPTION_LEVELS}
    categories: Counter[str] = Counter()
    phrases: Counter[str] = Counter()
    descriptions: Counter[str] = Counter()
    answers: dict[str, Counter[str]] = {}
    all_answers: Counter[str] = Counter()
    grounded: set[str] = set()
    box_sums, box_count, record_count = [0.0, 0.0, 0.0, 0.0], 0, 0
    for record in records:
        record_count += 1
        for caption in record.captions:
            captions[caption.level][caption.text] += 1
        width, height = record.image_size
        for region in record.regions:
            for index, scale in enumerate((width, height, width, height)):
                box_sums[index] += region.box[index] / scale
            box_count += 1
            categories[region.category] += 1
            phrases.update([region.phrase] if region.phrase else [])
            descriptions.update([region.description] if region.description else [])
        for grounding in record.groundings:
            grounded.update(text_key(phrase.phrase) for phrase in grounding.phrases if _memorable(phrase))
        for pair in record.questions:
            answers.setdefault(text_key(pair.question), Counter())[pair.answer.strip()] += 1
            all_answers[pair.answer.strip()] += 1
    if record_count == 0:
        raise InputError("cannot fit a baseline on no records: give it the training records")
    mean_box = _WHOLE_IMAGE
    if box_count:
        # Clamped: a mean of values in [0, 1] can round a hair past 1.
        x0, y0, x1, y1 = (min(1.0, max(0.0, total / box_count)) for total in box_sums)
        mean_box = (x0, y0, x1, y1)
    return Baseline(
        captions={level: _most_frequent(counts) for level, counts in captions.items()},
        mean_box=mean_box,
        category=_most_frequent(categories),
        phrase=_most_frequent(phrases),
        description=_most_frequent(descriptions),
        grounded_phrases=frozenset(grounded),
        phrase_words=max((len(_WORD.findall(phrase)) for phrase in grounded), default=0),
        answers={question: _most_frequent(counts) for question, counts in answers.items()},
        majority_answer=_most_frequent(all_answers),
    )


def score_baseline(baseline: Baseline, collected: TaskQueries, *, largest_object: bool = False) -> Evaluation:
    """The baseline's metrics on collected queries (see `evaluation.collect_queries`), scored as a model's.

    Queries that share a key (image, task, input) are answered once: a second answer would be counted as a
    skipped duplicate, though the first already answers every query of that key.
    """
    all_queries = [query for task_queries in collected.queries.values() for query in task_queries]
    answered = baseline.predict(all_queries, largest_object=largest_object)
    predictions, seen = [], set()
    for query, prediction in zip(all_queries, answered, strict=True):
        if query.key not in seen:
            seen.add(query.key)
            predictions.append(prediction)
    return score_predictions(predictions, collected)


def _largest_objects(queries: Sequence[Query]) -> dict[str, Box]:
    """Image id -> the box of its largest non-crowd true object (by area: the mask's where known), read from
    the detection queries among `queries`; the first one found wins a tie."""
    largest: dict[str, GroundTruthBox] = {}
    for query in queries:
        holds_objects = query.task in _DETECTION_TASKS or (
            query.task == "<OPEN_VOCABULARY_DETECTION>" and query.kind == "category"
        )
        if not holds_objects:
            continue
        for item in query.truth:
            best = largest.get(query.image_id)
            if not item.is_crowd and (best is None or item.area > best.area):
                largest[query.image_id] = item
    return {image_id: item.box for image_id, item in largest.items()}


def _caption(baseline: Baseline, query: Query, box: Box) -> str:
    return baseline.captions[_LEVEL_OF_TASK[query.task]]


def _detection(baseline: Baseline, query: Query, box: Box) -> dict[str, Any]:
    label = {"<OD>": baseline.category, "<DENSE_REGION_CAPTION>": baseline.phrase}.get(query.task, "")
    return {"bboxes": [list(box)], "labels": [label]}


def _grounding(baseline: Baseline, query: Query, box: Box) -> dict[str, Any]:
    return baseline.ground(query.input if isinstance(query.input, str) else "", box)


def _region_text(baseline: Baseline, query: Query, box: Box) -> str:
    # Region answers echo their input's location tokens, as official checkpoints write them; reading a
    # region's text answers nothing, the OCR baseline.
    text = {"<REGION_TO_CATEGORY>": baseline.category, "<REGION_TO_DESCRIPTION>": baseline.description}
    return text.get(query.task, "") + _region_echo(query)


def _question(baseline: Baseline, query: Query, box: Box) -> str:
    return baseline.answer_question(query.input if isinstance(query.input, str) else "")


def _open_vocabulary(baseline: Baseline, query: Query, box: Box) -> dict[str, Any]:
    label = query.input if isinstance(query.input, str) else ""
    return {"bboxes": [list(box)], "bboxes_labels": [label], "polygons": [], "polygons_labels": []}


def _segmentation(baseline: Baseline, query: Query, box: Box) -> dict[str, Any]:
    shape = _input_box(query) if query.task == "<REGION_TO_SEGMENTATION>" else box
    return {"polygons": [[_rectangle(shape)]], "labels": [""]}


# Task -> (baseline, query, located box: the mean box or, for referring queries with largest_object, the
# largest object) -> the answer under the task's key of `run()`'s result.
_ANSWERS: dict[str, Callable[[Baseline, Query, Box], Any]] = {
    "<OCR>": lambda baseline, query, box: "",
    "<OCR_WITH_REGION>": lambda baseline, query, box: {"quad_boxes": [], "labels": []},
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
