"""The task registry: every prompt omnivis answers, and how a task and its input become the model's prompt.

One model serves every task; the task is chosen by the prompt (Florence-2 paper, section 3). A task token such
as `<OD>` is never shown to the model: it is replaced by a fixed English instruction, or by an instruction
template filled with the task's input. The 15 tasks, their instructions and their answer types are those of
the reference `Florence2Processor`; `<VQA>` is omnivis's own addition.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from omnivis.errors import InputError
from omnivis.tasks import serializers
from omnivis.tasks.locations import format_box, parse_region
from omnivis.tasks.targets import Serializer

InputKind = Literal["none", "text", "region"]
ParseType = Literal[
    "pure_text",
    "ocr",
    "description_with_bboxes",
    "phrase_grounding",
    "polygons",
    "description_with_bboxes_or_polygons",
    "bboxes",
]
TaskInput = str | Sequence[float] | None


@dataclass(frozen=True)
class Task:
    """One task prompt and what it expects and answers.

    Attributes:
        token: The task token the user writes, e.g. "<OD>".
        prompt: The instruction the model reads; for tasks with input, a template with an `{input}` field.
        input: What the task takes: "none", a free "text", or a "region" (a box).
        parse_type: How its answer is parsed: the reference's `tasks_answer_post_processing_type` value.
        description: One line for listings.
        serializer: Writes a record's annotations as the task's training examples, the inverse of parsing
            (see `omnivis.tasks.targets`).
    """

    token: str
    prompt: str
    input: InputKind
    parse_type: ParseType
    description: str
    serializer: Serializer


# In the reference's order: when a prompt holds several task tokens, the first one listed wins.
_TASK_LIST = [
    Task(
        "<OCR>",
        "What is the text in the image?",
        "none",
        "pure_text",
        "read all the text in the image",
        serializers.ocr,
    ),
    Task(
        "<OCR_WITH_REGION>",
        "What is the text in the image, with regions?",
        "none",
        "ocr",
        "read the text in the image, with a quadrilateral around each line",
        serializers.ocr_with_region,
    ),
    Task(
        "<CAPTION>",
        "What does the image describe?",
        "none",
        "pure_text",
        "a short caption",
        serializers.caption,
    ),
    Task(
        "<DETAILED_CAPTION>",
        "Describe in detail what is shown in the image.",
        "none",
        "pure_text",
        "a detailed caption",
        serializers.detailed_caption,
    ),
    Task(
        "<MORE_DETAILED_CAPTION>",
        "Describe with a paragraph what is shown in the image.",
        "none",
        "pure_text",
        "a paragraph-long caption",
        serializers.more_detailed_caption,
    ),
    Task(
        "<OD>",
        "Locate the objects with category name in the image.",
        "none",
        "description_with_bboxes",
        "object detection: boxes with category names",
        serializers.object_detection,
    ),
    Task(
        "<DENSE_REGION_CAPTION>",
        "Locate the objects in the image, with their descriptions.",
        "none",
        "description_with_bboxes",
        "boxes with a short description each",
        serializers.dense_region_caption,
    ),
    Task(
        "<REGION_PROPOSAL>",
        "Locate the region proposals in the image.",
        "none",
        "bboxes",
        "boxes around object-like regions, without labels",
        serializers.region_proposal,
    ),
    Task(
        "<CAPTION_TO_PHRASE_GROUNDING>",
        "Locate the phrases in the caption: {input}",
        "text",
        "phrase_grounding",
        "boxes for the phrases of a caption",
        serializers.phrase_grounding,
    ),
    Task(
        "<REFERRING_EXPRESSION_SEGMENTATION>",
        "Locate {input} in the image with mask",
        "text",
        "polygons",
        "polygon mask of the object a phrase refers to",
        serializers.referring_expression_segmentation,
    ),
    Task(
        "<REGION_TO_SEGMENTATION>",
        "What is the polygon mask of region {input}",
        "region",
        "polygons",
        "polygon mask of the object in a box",
        serializers.region_to_segmentation,
    ),
    Task(
        "<OPEN_VOCABULARY_DETECTION>",
        "Locate {input} in the image.",
        "text",
        "description_with_bboxes_or_polygons",
        "boxes (or polygons) of the objects a phrase names",
        serializers.open_vocabulary_detection,
    ),
    Task(
        "<REGION_TO_CATEGORY>",
        "What is the region {input}?",
        "region",
        "pure_text",
        "category of a box",
        serializers.region_to_category,
    ),
    Task(
        "<REGION_TO_DESCRIPTION>",
        "What does the region {input} describe?",
        "region",
        "pure_text",
        "description of a box",
        serializers.region_to_description,
    ),
    Task(
        "<REGION_TO_OCR>",
        "What text is in the region {input}?",
        "region",
        "pure_text",
        "read the text in a box",
        serializers.region_to_ocr,
    ),
    # omnivis's own task: visual question answering. Its question is its input; the answer is plain text.
    Task(
        "<VQA>",
        "Answer the question: {input}",
        "text",
        "pure_text",
        "answer a question about the image",
        serializers.visual_question_answering,
    ),
]

TASKS: dict[str, Task] = {task.token: task for task in _TASK_LIST}

# Tasks the reference processor does not know: their prompts are built directly, never by its algorithm.
_OMNIVIS_TASKS = frozenset({"<VQA>"})


def build_prompt(
    task_token_or_free_text: str,
    text: TaskInput = None,
    *,
    image_size: tuple[float, float] | None = None,
) -> str:
    """The prompt the model reads for a task and its input.

    For a task token this equals what the reference `Florence2Processor._construct_prompts` gives for the
    string `task_token + text` (how the reference is called): the input is stripped of surrounding
    whitespace and put into the task's template. A prompt that is not a task token is free text and passes
    through unchanged. `<VQA>` (omnivis's own) uses the template "Answer the question: {input}".

    Args:
        task_token_or_free_text: A key of `TASKS`, e.g. "<OD>", or any free-text prompt.
        text: The task's input: a phrase or question for "text" tasks; for "region" tasks either a pixel box
            (x0, y0, x1, y1), which needs `image_size`, or a string of four `<loc_k>` tokens.
        image_size: (width, height) of the image, used to quantize a pixel box.

    Returns:
        The instruction text, without `<s>`/`</s>`.

    Raises:
        InputError: The task needs an input and got none, got one it does not take, or the input is invalid
            (a region outside the image, inverted, or not finite; another task token inside the prompt).
    """
    task = TASKS.get(task_token_or_free_text)
    if task is None and _TASK_TOKEN.fullmatch(task_token_or_free_text.strip()):
        known = ", ".join(TASKS)
        raise InputError(f"unknown task {task_token_or_free_text!r}; known tasks: {known}")
    if task is None:
        if text is not None:
            raise InputError(
                f"free-text prompt {task_token_or_free_text!r} takes no separate input, got {text!r}"
            )
        return _construct_prompt(task_token_or_free_text)
    if task.input == "none":
        if text is not None and text != "":
            raise InputError(f"task {task.token} takes no input, got {text!r}")
        return _construct_prompt(task.token)
    if task.input == "region":
        return _construct_prompt(task.token + _region_text(task, text, image_size))
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"task {task.token} needs input text, got {text!r}")
    if task.token in _OMNIVIS_TASKS:
        return task.prompt.format(input=text.strip())
    return _construct_prompt(task.token + text)


# A prompt that is nothing but something shaped like a task token is a mistyped task, not free text.
_TASK_TOKEN = re.compile(r"<[A-Z][A-Z0-9_]*>")


def _region_text(task: Task, region: TaskInput, image_size: tuple[float, float] | None) -> str:
    """A region input as `<loc_k>` text: quantized from a pixel box, or a validated `<loc_k>` string."""
    if region is None or (isinstance(region, str) and not region.strip()):
        raise InputError(f"task {task.token} needs a region: a pixel box (x0, y0, x1, y1) or '<loc_..>' text")
    if isinstance(region, str):
        # Validate, but keep the text exactly as given: the reference reads it verbatim.
        parse_region(region)
        return region
    if image_size is None:
        raise InputError(f"task {task.token} got a pixel box {region!r} but no image_size to quantize it")
    return format_box(region, image_size)


def _construct_prompt(prompt: str) -> str:
    """The reference's prompt construction, applied to one `task_token + input` string.

    A task without input must be the whole prompt; the first task with input found anywhere in the prompt
    has every copy of its token removed, and what remains, stripped, fills its template.
    """
    reference_tasks = [task for task in TASKS.values() if task.token not in _OMNIVIS_TASKS]
    for task in reference_tasks:
        if task.input == "none" and task.token in prompt:
            if prompt != task.token:
                raise InputError(f"task token {task.token} must be the whole prompt, got {prompt!r}")
            prompt = task.prompt
            break
    for task in reference_tasks:
        if task.input != "none" and task.token in prompt:
            return task.prompt.format(input=prompt.replace(task.token, "").strip())
    return prompt
