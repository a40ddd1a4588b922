"""The task registry and prompts, against the reference processor's tables and prompt construction."""

import dataclasses
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle_tokenizer import make_florence_tokenizer, make_reference_processor

from omnivis.errors import InputError
from omnivis.tasks import TASKS, Task, build_prompt

pytestmark = pytest.mark.oracle

REGION = "<loc_52><loc_332><loc_932><loc_774>"
EXAMPLE_INPUTS = {"none": "", "text": "a red car", "region": REGION}


@pytest.fixture(scope="module")
def processor(tmp_path_factory: pytest.TempPathFactory):
    directory: Path = tmp_path_factory.mktemp("registry-tokenizer")
    return make_reference_processor(make_florence_tokenizer(directory, layout="native"))


def reference_prompt(processor, prompt: str) -> str:
    return processor._construct_prompts(prompt)[0]


def test_registry_matches_reference_tables(processor) -> None:
    reference_tasks = dict(processor.tasks_answer_post_processing_type)
    assert set(TASKS) == set(reference_tasks) | {"<VQA>"}
    for token, parse_type in reference_tasks.items():
        task = TASKS[token]
        assert task.token == token
        assert task.parse_type == parse_type
        if task.input == "none":
            assert processor.task_prompts_without_inputs[token] == task.prompt
        else:
            assert processor.task_prompts_with_input[token] == task.prompt
    assert {t for t, task in TASKS.items() if task.input == "none"} == set(
        processor.task_prompts_without_inputs
    )
    assert {t for t, task in TASKS.items() if task.input == "region"} == {
        "<REGION_TO_SEGMENTATION>",
        "<REGION_TO_CATEGORY>",
        "<REGION_TO_DESCRIPTION>",
        "<REGION_TO_OCR>",
    }
    assert all(task.description and "\n" not in task.description for task in TASKS.values())


def test_task_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TASKS["<OD>"].prompt = "changed"  # type: ignore[misc]
    assert isinstance(TASKS["<OD>"], Task)


@pytest.mark.parametrize("token", [token for token in TASKS if token != "<VQA>"])
def test_every_prompt_equals_the_reference(processor, token: str) -> None:
    task = TASKS[token]
    text = EXAMPLE_INPUTS[task.input]
    expected = reference_prompt(processor, token + text)
    assert build_prompt(token, text or None) == expected
    if task.input != "none":
        # The reference's examples join task and input with nothing; a space in between is stripped.
        assert (
            build_prompt(token, f"  {text}  ")
            == reference_prompt(processor, f"{token}  {text}  ")
            == expected
        )


def test_hand_written_prompts() -> None:
    assert build_prompt("<OD>") == "Locate the objects with category name in the image."
    assert (
        build_prompt("<CAPTION_TO_PHRASE_GROUNDING>", "a red car")
        == "Locate the phrases in the caption: a red car"
    )
    assert build_prompt("<REGION_TO_OCR>", REGION) == f"What text is in the region {REGION}?"
    assert build_prompt("<VQA>", " How many cars? ") == "Answer the question: How many cars?"


def test_pixel_box_is_quantized(processor) -> None:
    prompt = build_prompt("<REGION_TO_CATEGORY>", (0, 0, 640, 480), image_size=(640, 480))
    assert prompt == "What is the region <loc_0><loc_0><loc_999><loc_999>?"
    prompt = build_prompt("<REGION_TO_SEGMENTATION>", [64.0, 48.0, 320.5, 240.2], image_size=(640, 480))
    expected = reference_prompt(processor, "<REGION_TO_SEGMENTATION><loc_100><loc_100><loc_500><loc_500>")
    assert prompt == expected


@pytest.mark.parametrize(
    "prompt", ["What is in this picture?", "", "  spaced  ", "<od>", "<CAPTION", "<FOO> and more"]
)
def test_free_text_passes_through(processor, prompt: str) -> None:
    assert build_prompt(prompt) == reference_prompt(processor, prompt) == prompt


@pytest.mark.parametrize("prompt", ["<FOO>", "<CAPTION_2>", " <DETECT> "])
def test_a_mistyped_task_token_is_refused_not_passed_through(prompt: str) -> None:
    # The reference would silently send "<FOO>" to the model as text; a typo deserves an error.
    with pytest.raises(InputError, match="unknown task"):
        build_prompt(prompt)


def test_reference_quirks(processor) -> None:
    # Every copy of the task token is removed from the input, and the input is stripped.
    quirky = "<OPEN_VOCABULARY_DETECTION> cars <OPEN_VOCABULARY_DETECTION> and bikes "
    assert build_prompt("<OPEN_VOCABULARY_DETECTION>", quirky[len("<OPEN_VOCABULARY_DETECTION>") :]) == (
        reference_prompt(processor, quirky)
    )
    assert build_prompt("<OPEN_VOCABULARY_DETECTION>", " cars <OPEN_VOCABULARY_DETECTION> and bikes ") == (
        "Locate cars  and bikes in the image."
    )
    # With two task tokens, the one listed first in the reference's table wins.
    mixed = build_prompt("<OPEN_VOCABULARY_DETECTION>", "<CAPTION_TO_PHRASE_GROUNDING>")
    assert mixed == reference_prompt(processor, "<OPEN_VOCABULARY_DETECTION><CAPTION_TO_PHRASE_GROUNDING>")
    assert mixed == "Locate the phrases in the caption: <OPEN_VOCABULARY_DETECTION>"
    # Braces in the input are text, not format fields.
    assert (
        build_prompt("<CAPTION_TO_PHRASE_GROUNDING>", "{x} {}") == "Locate the phrases in the caption: {x} {}"
    )


@pytest.mark.parametrize("token", ["<CAPTION_TO_PHRASE_GROUNDING>", "<OPEN_VOCABULARY_DETECTION>"])
@settings(max_examples=150, deadline=None)
@given(text=st.text(min_size=1, max_size=30).filter(str.strip))
def test_random_inputs_equal_the_reference_or_raise(processor, token: str, text: str) -> None:
    try:
        expected = reference_prompt(processor, token + text)
    except ValueError:
        with pytest.raises(InputError, match="whole prompt"):
            build_prompt(token, text)
    else:
        assert build_prompt(token, text) == expected


@pytest.mark.parametrize(
    ("task", "text", "kwargs", "message"),
    [
        ("<OD>", "cars", {}, "takes no input"),
        ("<CAPTION>", (1, 2, 3, 4), {}, "takes no input"),
        ("<OPEN_VOCABULARY_DETECTION>", None, {}, "needs input text"),
        ("<CAPTION_TO_PHRASE_GROUNDING>", "   ", {}, "needs input text"),
        ("<VQA>", None, {}, "needs input text"),
        ("<OPEN_VOCABULARY_DETECTION>", (1, 2, 3, 4), {}, "needs input text"),
        ("<REGION_TO_OCR>", None, {}, "needs a region"),
        ("<REGION_TO_OCR>", (0, 0, 10, 10), {}, "no image_size"),
        ("<REGION_TO_OCR>", (0, 0, math.nan, 10), {"image_size": (640, 480)}, "finite"),
        ("<REGION_TO_OCR>", (0, 0, math.inf, 10), {"image_size": (640, 480)}, "finite"),
        ("<REGION_TO_OCR>", (10, 0, 5, 10), {"image_size": (640, 480)}, "inverted"),
        ("<REGION_TO_OCR>", (0, 0, 700, 10), {"image_size": (640, 480)}, "outside"),
        ("<REGION_TO_OCR>", (0, 0, 10, 10), {"image_size": (0, 480)}, "width"),
        ("<REGION_TO_OCR>", "the car", {}, "only <loc_k>"),
        ("<REGION_TO_OCR>", "<loc_1><loc_2>", {}, "exactly 4"),
        ("<REGION_TO_OCR>", "<loc_9><loc_2><loc_1><loc_4>", {}, "inverted"),
        ("What is this?", "extra", {}, "free-text prompt"),
        ("Find the <OD> here", None, {}, "whole prompt"),
        ("<CAPTION_TO_PHRASE_GROUNDING>", "a car <OD>", {}, "whole prompt"),
    ],
)
def test_invalid_inputs_raise_input_error(task, text, kwargs, message) -> None:
    with pytest.raises(InputError, match=message) as raised:
        build_prompt(task, text, **kwargs)
    if task in TASKS and message in ("takes no input", "needs input text", "needs a region"):
        assert task in str(raised.value)  # the error names the task
