"""Generated token ids -> the task's structured answer, exactly as the reference builds it.

`post_process` returns what transformers' `Florence2Processor.post_process_generation(text, task, image_size)`
returns for the text of the same ids (decoded with special tokens kept): the same keys, the same integer pixel
coordinates, the same quirks. Among them, kept on purpose:

- plain-text answers lose `<s>` and `</s>` but keep `<pad>`, and are stripped;
- detection labels lose their non-ASCII characters, segmentation labels keep them;
- phrase grounding drops pronouns and the like (the config's banned phrases) with their boxes;
- OCR reads the config keys "PATTERN" and "AREA_THRESHOLD" (upper case) while checkpoints store "pattern"
  and "area_threshold", so it always uses the default pattern and keeps every line;
- open-vocabulary detection parses polygons when the text holds `<poly>` anywhere, else boxes.

With `token_scores`, box answers get a `scores` list aligned with their `bboxes` (see `scoring`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from omnivis.errors import InputError
from omnivis.tasks.answers import (
    FoundBox,
    answer_text,
    find_boxes,
    find_polygons,
    find_text_lines,
    shoelace_area,
)
from omnivis.tasks.locations import check_image_size, dequantize
from omnivis.tasks.registry import TASKS
from omnivis.tasks.scoring import box_scores

if TYPE_CHECKING:
    from omnivis.tokenizer import Tokenizer

# Phrases that phrase grounding never boxes: the list transformers' conversion script writes into every
# converted checkpoint (the original remote code's "black list"), used when no config is given.
BANNED_GROUNDING_PHRASES = (
    "it", "I", "me", "mine", "you", "your", "yours", "he", "him", "his", "she", "her", "hers", "they", "them",
    "their", "theirs", "one", "oneself", "we", "us", "our", "ours", "its", "myself", "yourself", "himself",
    "herself", "itself", "ourselves", "yourselves", "themselves", "this", "that", "these", "those", "who",
    "whom", "whose", "which", "what", "all", "another", "any", "anybody", "anyone", "anything", "each",
    "everybody", "everyone", "everything", "few", "many", "nobody", "none", "several", "some", "somebody",
    "someone", "something", "each other", "one another", "the image", "image", "images", "the", "a", "an",
    "a group", "other objects", "lots", "a set",
)  # fmt: skip

# The reference processor's post_processor_config as Florence-2 checkpoints ship it.
DEFAULT_PARSE_CONFIG: dict[str, dict[str, Any]] = {
    "ocr": {"pattern": r"(.+?)" + r"<loc_(\d+)>" * 8, "area_threshold": 0.0},
    "phrase_grounding": {"banned_grounding_tokens": list(BANNED_GROUNDING_PHRASES)},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}

# The answer types whose boxes get scores.
_SCORED_TYPES = frozenset(
    {"description_with_bboxes", "bboxes", "phrase_grounding", "description_with_bboxes_or_polygons"}
)


def post_process(
    task: str,
    token_ids: Sequence[int],
    tokenizer: Tokenizer,
    image_size: tuple[float, float] | None,
    config: dict[str, Any] | None = None,
    token_scores: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The structured answer of a task from its generated token ids.

    Args:
        task: The task token ("<OD>", ...); free text and unknown tasks give a plain-text answer.
        token_ids: The generated ids, as generation returns them (leading `</s>`, `<s>`, trailing `<pad>`).
        tokenizer: The model's tokenizer.
        image_size: (width, height) of the image, to turn location bins into pixels; may be None for
            plain-text tasks.
        config: The checkpoint's post_processor_config (e.g. its banned grounding phrases); None or empty
            uses the one official checkpoints ship.
        token_scores: Optional log-probability of each generated token, aligned with `token_ids`; adds
            per-box `scores` to box answers.

    Returns:
        `{task: answer}`: a string for plain-text tasks, else a dict such as
        `{"bboxes": [[x0, y0, x1, y1], ...], "labels": [...]}` with integer pixel coordinates.

    Raises:
        InputError: A bad image size, config or score list.
        ParseError: The text holds a location bin too large to dequantize.
    """
    if not isinstance(task, str):
        raise InputError(f"task must be a string, got {type(task).__name__}")
    text = tokenizer.decode(token_ids)
    parse_type = TASKS[task].parse_type if task in TASKS else "pure_text"
    settings = _settings(config or DEFAULT_PARSE_CONFIG, parse_type)
    if parse_type == "pure_text":
        return {task: text.replace("<s>", "").replace("</s>", "").strip()}
    if image_size is None:
        raise InputError(f"task {task} answers with locations and needs the image size (width, height)")
    size = check_image_size(image_size)
    answer, boxes = _structured_answer(parse_type, text, size, settings)
    if token_scores is not None and parse_type in _SCORED_TYPES:
        spans = [box.span for box in boxes]
        answer["scores"] = box_scores(spans, token_ids, token_scores, tokenizer, text)
    return {task: answer}


def _settings(config: dict[str, Any], parse_type: str) -> dict[str, Any]:
    """The config entry of an answer type; the reference refuses to parse a type its config lacks."""
    if not isinstance(config, dict) or not isinstance(config.get(parse_type), dict):
        raise InputError(f"the post-processor config has no entry for answer type {parse_type!r}")
    settings: dict[str, Any] = config[parse_type]
    return settings


def _structured_answer(
    parse_type: str, text: str, size: tuple[float, float], settings: dict[str, Any]
) -> tuple[dict[str, Any], list[FoundBox]]:
    """The answer dict of a location answer type, and the boxes it lists (for scores)."""
    answer_only = answer_text(text)
    if parse_type == "ocr":
        return _text_lines_answer(answer_only, size, settings), []
    if parse_type == "polygons":
        return _polygons_answer(answer_only, size, labelled=False), []
    if parse_type == "description_with_bboxes_or_polygons" and "<poly>" in text:
        polygons = _polygons_answer(answer_only, size, labelled=True)
        answer = {"bboxes": [], "bboxes_labels": [], "polygons": polygons["polygons"]}
        return {**answer, "polygons_labels": polygons["labels"]}, []
    banned: frozenset[str] = frozenset()
    if parse_type == "phrase_grounding":
        banned = frozenset(settings.get("banned_grounding_tokens", ()))
    # Region proposals are the one box answer without labels.
    boxes = find_boxes(answer_only, labelled=parse_type != "bboxes", banned_labels=banned)
    bboxes = [dequantize(box.bins, size) for box in boxes]
    labels = [box.label for box in boxes]
    if parse_type == "description_with_bboxes_or_polygons":
        return {"bboxes": bboxes, "bboxes_labels": labels, "polygons": [], "polygons_labels": []}, boxes
    return {"bboxes": bboxes, "labels": labels}, boxes


def _polygons_answer(text: str, size: tuple[float, float], *, labelled: bool) -> dict[str, Any]:
    found = find_polygons(text, labelled=labelled)
    polygons = [[dequantize(bins, size) for bins in item.polygons] for item in found]
    return {"polygons": polygons, "labels": [item.label for item in found]}


def _text_lines_answer(text: str, size: tuple[float, float], settings: dict[str, Any]) -> dict[str, Any]:
    """OCR lines with their quadrilaterals, without those smaller than AREA_THRESHOLD of the image."""
    pattern = settings.get("PATTERN")
    if pattern is not None and (not isinstance(pattern, str) or _group_count(pattern) != 9):
        raise InputError(f"the OCR PATTERN must be a regular expression with 9 groups, got {pattern!r}")
    threshold = settings.get("AREA_THRESHOLD", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise InputError(f"the OCR AREA_THRESHOLD must be a number, got {threshold!r}")
    width, height = size
    quad_boxes, labels = [], []
    for line in find_text_lines(text, pattern):
        quad = dequantize(line.bins, size)
        if threshold > 0 and shoelace_area(quad) < width * height * threshold:
            continue
        quad_boxes.append(quad)
        labels.append(line.text)
    return {"quad_boxes": quad_boxes, "labels": labels}


def _group_count(pattern: str) -> int:
    try:
        return re.compile(pattern).groups
    except re.error as error:
        raise InputError(f"the OCR PATTERN is not a valid regular expression: {error}") from error
