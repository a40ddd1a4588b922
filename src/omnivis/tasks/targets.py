"""Training targets: a record's annotations as the text each task answers with, the exact inverse of parsing.

For every task of the registry a serializer (in `serializers`, attached to each `Task`) turns a `Record` into
examples: the task's input (what `build_prompt` takes), the target text the model learns to generate, and the
answer `post_process` gives back for that text, holding the record's own coordinates before quantization.
Tokenizing a target and post-processing it gives back its answer within one location bin, for every example
made. What a parser would lose or change is never written: a "<" (it starts a special token), a newline
where a label or text line is cut, non-ASCII in a detection label (stripped), a banned grounding phrase
(dropped), surrounding whitespace (stripped), an empty text. Such an annotation raises `TargetError`, or, in
a pass over a dataset (`all_examples`), is reported as `Unrepresentable` with the record's id; it is never
dropped silently.

Target formats follow what official Florence-2 checkpoints generate (see `serializers` for each task), e.g.
`car<loc_52><loc_332><loc_932><loc_774>` for a detection, with coordinates quantized by `locations`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omnivis.data.records import Box, Record
from omnivis.errors import DatasetError, InputError

if TYPE_CHECKING:
    from omnivis.tokenizer import Tokenizer

TaskInput = str | Box | None

# The decoder generates `<s>` before a target and `</s>` after it; both count against a token budget.
FRAMING_TOKENS = 2


@dataclass(frozen=True)
class Example:
    """One training example of one task.

    Attributes:
        task: The task token, e.g. "<OD>".
        input: The task's input as `build_prompt` takes it: None, a text (caption, query, expression,
            question), or a pixel box (x0, y0, x1, y1) for region tasks.
        target: The text the model learns to generate, without `<s>` and `</s>`.
        answer: What `post_process` returns under the task key for the target (a string, or a dict such as
            {"bboxes": [...], "labels": [...]}), with the record's float coordinates instead of dequantized
            integer pixels.
    """

    task: str
    input: TaskInput
    target: str
    answer: Any


@dataclass(frozen=True)
class Unrepresentable:
    """An annotation that cannot be written as a target so that parsing gives it back.

    Attributes:
        image_id: The record it belongs to.
        task: The task token it was to be an example of.
        reason: What is wrong, naming the annotation.
    """

    image_id: str
    task: str
    reason: str


class TargetError(DatasetError):
    """A record's annotation cannot be written as a target that parses back to it (or it is over budget)."""

    def __init__(self, image_id: str, task: str, reason: str) -> None:
        # The three fields are the exception's args, so it pickles across worker processes.
        super().__init__(image_id, task, reason)
        self.image_id = image_id
        self.task = task
        self.reason = reason

    def __str__(self) -> str:
        return f"record {self.image_id!r}, task {self.task}: {self.reason}"


# What a serializer gives for a record: examples, and the annotations it could not write.
Item = Example | Unrepresentable
Serializer = Callable[[Record], list[Item]]


def examples(
    task: str,
    record: Record,
    *,
    tokenizer: Tokenizer | None = None,
    max_target_tokens: int | None = None,
) -> list[Example]:
    """Every example of one task that a record gives.

    Args:
        task: A task token of the registry, e.g. "<OD>".
        record: The record.
        tokenizer: With `max_target_tokens`, counts each target's tokens.
        max_target_tokens: The most tokens a target may take, `<s>` and `</s>` included.

    Returns:
        The examples, in the serializer's deterministic order; empty when the record lacks the annotation.

    Raises:
        InputError: An unknown task, only one of `tokenizer` and `max_target_tokens`, or a budget that is
            not a positive integer.
        TargetError: An annotation cannot be written as a target that parses back to it, or a target is
            longer than the budget (never truncated).
    """
    made, refused = _serialize(task, record, tokenizer, max_target_tokens)
    if refused:
        first = refused[0]
        raise TargetError(first.image_id, first.task, first.reason)
    return made


def all_examples(
    record: Record,
    tasks: Iterable[str] | None = None,
    *,
    tokenizer: Tokenizer | None = None,
    max_target_tokens: int | None = None,
) -> tuple[list[Example], list[Unrepresentable]]:
    """Every example of several tasks that a record gives, and what could not be written, for a dataset pass.

    Args:
        record: The record.
        tasks: Task tokens; None means every task of the registry, in its order.
        tokenizer: With `max_target_tokens`, counts each target's tokens.
        max_target_tokens: The most tokens a target may take, `<s>` and `</s>` included.

    Returns:
        The examples, task after task; and one `Unrepresentable` per annotation that cannot be written (an
        over-budget target included), each naming the record, the task and the reason.

    Raises:
        InputError: An unknown task, only one of `tokenizer` and `max_target_tokens`, or a budget that is
            not a positive integer.
    """
    # Imported here: the registry imports the serializers, which import this module.
    from omnivis.tasks.registry import TASKS

    made: list[Example] = []
    refused: list[Unrepresentable] = []
    for task in TASKS if tasks is None else tasks:
        task_made, task_refused = _serialize(task, record, tokenizer, max_target_tokens)
        made.extend(task_made)
        refused.extend(task_refused)
    return made, refused


def _serialize(
    task: str, record: Record, tokenizer: Tokenizer | None, max_target_tokens: int | None
) -> tuple[list[Example], list[Unrepresentable]]:
    """The examples of one task, split from what could not be written; over-budget targets are refused."""
    from omnivis.tasks.registry import TASKS  # see all_examples

    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    if (tokenizer is None) != (max_target_tokens is None):
        raise InputError("a target budget needs both tokenizer and max_target_tokens")
    if max_target_tokens is not None and (
        isinstance(max_target_tokens, bool) or not isinstance(max_target_tokens, int) or max_target_tokens < 1
    ):
        raise InputError(f"max_target_tokens must be a positive integer, got {max_target_tokens!r}")
    made: list[Example] = []
    refused: list[Unrepresentable] = []
    for item in TASKS[task].serializer(record):
        if isinstance(item, Example) and tokenizer is not None and max_target_tokens is not None:
            item = _within_budget(record, item, tokenizer, max_target_tokens)
        if isinstance(item, Example):
            made.append(item)
        else:
            refused.append(item)
    return made, refused


def _within_budget(record: Record, example: Example, tokenizer: Tokenizer, budget: int) -> Item:
    count = len(tokenizer.encode(example.target)) + FRAMING_TOKENS
    if count <= budget:
        return example
    reason = f"the target takes {count} tokens (with <s> and </s>), over the budget of {budget}"
    if example.input is not None:
        reason += f"; input {example.input!r}"
    return Unrepresentable(record.image_id, example.task, reason)
