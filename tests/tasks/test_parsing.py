"""`post_process` against the reference `post_process_generation`, by hand, and through supervision."""

import math
import random
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle_tokenizer import POST_PROCESSOR_CONFIG, make_florence_tokenizer, make_reference_processor

from omnivis.errors import InputError, ParseError
from omnivis.tasks import TASKS, post_process
from omnivis.tasks.parsing import DEFAULT_PARSE_CONFIG
from omnivis.tokenizer import Tokenizer

pytestmark = pytest.mark.oracle

BOX_TASKS = ["<OD>", "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>", "<CAPTION_TO_PHRASE_GROUNDING>"]
ALL_TASKS = [*TASKS, "What is in the image?", "<UNKNOWN_TASK>"]


class Setup:
    """Our tokenizer, the reference tokenizer and processor, all on the same native-layout files."""

    def __init__(self, directory: Path) -> None:
        self.reference_tokenizer = make_florence_tokenizer(directory, layout="native")
        self.processor = make_reference_processor(self.reference_tokenizer)
        self.tokenizer = Tokenizer.from_directory(directory)

    def ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def reference(self, ids: list[int], task: str, size, config=None) -> dict:
        processor = (
            self.processor if config is None else make_reference_processor(self.reference_tokenizer, config)
        )
        text = self.reference_tokenizer.batch_decode(
            [ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        return processor.post_process_generation(text=text[0], task=task, image_size=size)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return Setup(tmp_path_factory.mktemp("parsing-tokenizer"))


def boxes(*bins: int) -> str:
    return "".join(f"<loc_{b}>" for b in bins)


# (task, generated text, image size, the answer worked out by hand)
HAND_CASES = [
    ("<CAPTION>", "</s><s>A red car parked on a street.</s>", (640, 480), "A red car parked on a street."),
    # Plain text keeps <pad> (only <s> and </s> are removed), and is stripped.
    ("<OCR>", "</s><s> HELLO WORLD </s><pad><pad>", (640, 480), "HELLO WORLD <pad><pad>"),
    # Region tasks echo the location tokens into their text.
    (
        "<REGION_TO_CATEGORY>",
        f"</s><s>car{boxes(52, 332, 932, 774)}</s>",
        (640, 480),
        f"car{boxes(52, 332, 932, 774)}",
    ),
    ("<VQA>", "</s><s>three</s>", None, "three"),
    ("What is in the image?", "</s><s>a cat</s>", None, "a cat"),
    (
        "<OD>",
        f"</s><s>car{boxes(53, 334, 933, 775)}door handle{boxes(425, 504, 474, 516)}</s>",
        (1000, 1000),
        {"bboxes": [[53, 334, 933, 775], [425, 504, 474, 516]], "labels": ["car", "door handle"]},
    ),
    # int((bin + 0.5) * 640 / 1000) for x, int((bin + 0.5) * 480 / 1000) for y.
    (
        "<OD>",
        f"</s><s>car{boxes(53, 334, 933, 775)}</s>",
        (640, 480),
        {"bboxes": [[34, 160, 597, 372]], "labels": ["car"]},
    ),
    # One label, two boxes; non-ASCII characters leave detection labels.
    (
        "<DENSE_REGION_CAPTION>",
        f"</s><s>café table{boxes(1, 2, 3, 4, 5, 6, 7, 8)}</s>",
        (1000, 1000),
        {"bboxes": [[1, 2, 3, 4], [5, 6, 7, 8]], "labels": ["caf table", "caf table"]},
    ),
    (
        "<REGION_PROPOSAL>",
        f"</s><s>{boxes(10, 20, 30, 40, 50, 60, 70, 80)}</s>",
        (1000, 1000),
        {"bboxes": [[10, 20, 30, 40], [50, 60, 70, 80]], "labels": ["", ""]},
    ),
    # "it" is a banned grounding phrase: its box is dropped.
    (
        "<CAPTION_TO_PHRASE_GROUNDING>",
        f"</s><s>A red car{boxes(1, 2, 3, 4, 5, 6, 7, 8)}it{boxes(9, 9, 9, 9)}"
        f" a tree{boxes(10, 11, 12, 13)}</s>",
        (1000, 1000),
        {
            "bboxes": [[1, 2, 3, 4], [5, 6, 7, 8], [10, 11, 12, 13]],
            "labels": ["A red car", "A red car", "a tree"],
        },
    ),
    (
        "<REFERRING_EXPRESSION_SEGMENTATION>",
        f"</s><s>{boxes(1, 2, 3, 4, 5, 6, 7)}</s>",  # an unpaired last coordinate is dropped
        (1000, 1000),
        {"polygons": [[[1, 2, 3, 4, 5, 6]]], "labels": [""]},
    ),
    (
        "<REGION_TO_SEGMENTATION>",
        f"</s><s>{boxes(1, 2, 3, 4, 5, 6)}<sep>{boxes(7, 8, 9, 10, 11, 12)}</s>",
        (1000, 1000),
        {"polygons": [[[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]]], "labels": [""]},
    ),
    (
        "<OPEN_VOCABULARY_DETECTION>",
        f"</s><s>red car{boxes(1, 2, 3, 4)}</s>",
        (1000, 1000),
        {"bboxes": [[1, 2, 3, 4]], "bboxes_labels": ["red car"], "polygons": [], "polygons_labels": []},
    ),
    # With <poly> anywhere, open-vocabulary detection answers polygons; segmentation labels keep non-ASCII.
    (
        "<OPEN_VOCABULARY_DETECTION>",
        f"</s><s>café<poly>{boxes(1, 2, 3, 4, 5, 6)}</poly><poly>{boxes(7, 8, 9, 10, 11, 12)}</poly></s>",
        (1000, 1000),
        {
            "bboxes": [],
            "bboxes_labels": [],
            "polygons": [[[1, 2, 3, 4, 5, 6]], [[7, 8, 9, 10, 11, 12]]],
            "polygons_labels": ["café", "café"],
        },
    ),  # fmt: skip
    (
        "<OCR_WITH_REGION>",
        f"</s><s>HELLO{boxes(1, 2, 3, 2, 3, 4, 1, 4)} World {boxes(5, 6, 7, 6, 7, 8, 5, 8)}</s>",
        (1000, 1000),
        {"quad_boxes": [[1, 2, 3, 2, 3, 4, 1, 4], [5, 6, 7, 6, 7, 8, 5, 8]], "labels": ["HELLO", "World"]},
    ),
]


@pytest.mark.parametrize(("task", "text", "size", "expected"), HAND_CASES)
def test_hand_made_answers(setup: Setup, task: str, text: str, size, expected) -> None:
    ids = setup.ids(text)
    assert post_process(task, ids, setup.tokenizer, size) == {task: expected}
    assert setup.reference(ids, task, size) == {task: expected}


def test_every_task_has_a_hand_case() -> None:
    assert {case[0] for case in HAND_CASES} >= set(TASKS) - {
        "<DETAILED_CAPTION>",
        "<MORE_DETAILED_CAPTION>",
        "<REGION_TO_DESCRIPTION>",
        "<REGION_TO_OCR>",
    }  # fmt: skip  (those four parse exactly like <CAPTION>)


def test_default_config_is_the_shipped_one() -> None:
    assert DEFAULT_PARSE_CONFIG.keys() == POST_PROCESSOR_CONFIG.keys()
    banned = set(DEFAULT_PARSE_CONFIG["phrase_grounding"]["banned_grounding_tokens"])
    assert banned == set(POST_PROCESSOR_CONFIG["phrase_grounding"]["banned_grounding_tokens"])
    assert DEFAULT_PARSE_CONFIG["ocr"] == POST_PROCESSOR_CONFIG["ocr"]


@pytest.fixture(scope="module")
def piece_table(setup: Setup) -> list[list[list[int]]]:
    """Token pieces by kind (location, word, marker, labelled box), which mix into good and bad answers."""
    tokenizer = setup.tokenizer
    words = [
        "car",
        " red car",
        "door handle",
        "it",
        " the image",
        "café",
        "中文",
        "😀",
        " ",
        "\n",
        "a\nb",
        "sky",
    ]
    words += ["<", "loc", "_", "12", ">", "<loc_1000>", "<loc_4294967296>", "<loc_99999999999999999999999>"]
    markers = ["<sep>", "<poly>", "</poly>", "<and>", "</s>", "<s>", "<pad>", "<od>", "<image>"]
    locations = [[tokenizer.location_token_id(k)] for k in range(1000)]
    word_ids = [tokenizer.encode(word) for word in words]
    labelled = [word_ids[k % 8] + sum(locations[k : k + 4 * (1 + k % 2)], []) for k in range(0, 992, 7)]
    marker_ids = [[tokenizer.token_to_id(marker)] for marker in markers]
    marker_ids.append([tokenizer.vocab_size + 3])  # a padded output layer's id: decodes to nothing
    return [locations, word_ids, marker_ids, labelled]


# A piece is (kind, index): kind 0 (locations) twice as likely as the others.
PIECES = st.lists(st.tuples(st.sampled_from([0, 0, 1, 2, 3]), st.integers(0, 999)), max_size=14)
SIZES = st.sampled_from([(640, 480), (1000, 1000), (333, 777), (1, 1), (4000.5, 30)])


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=PIECES, task=st.sampled_from(ALL_TASKS), size=SIZES, seed=st.integers(0, 2**32))
def test_random_sequences_equal_the_reference(setup: Setup, piece_table, pieces, task, size, seed) -> None:
    ids = [token for kind, index in pieces for token in piece_table[kind][index % len(piece_table[kind])]]
    try:
        expected = setup.reference(ids, task, size)
    except Exception as error:  # the reference fails on bins too large for int64 tensors
        with pytest.raises(ParseError, match="too many to dequantize"):
            post_process(task, ids, setup.tokenizer, size)
        assert "Overflow" in str(error) or "overflow" in str(error)
        return
    assert post_process(task, ids, setup.tokenizer, size) == expected
    generator = random.Random(seed)
    scores = [-generator.expovariate(1.0) for _ in ids]
    scored = post_process(task, ids, setup.tokenizer, size, token_scores=scores)
    answer = scored[task]
    if isinstance(answer, dict) and "bboxes" in answer:
        box_scores = answer.pop("scores")
        assert len(box_scores) == len(answer["bboxes"])
        assert all(0 <= score <= 1 for score in box_scores)
    assert scored == expected


def test_scores_are_the_mean_probability_of_each_box_s_location_tokens(setup: Setup) -> None:
    text = f"</s><s>car{boxes(1, 2, 3, 4, 5, 6, 7, 8)}dog{boxes(9, 10, 11, 12)}</s>"
    ids = setup.ids(text)
    scores = [-0.1 * index for index in range(len(ids))]
    car = len(setup.ids("</s><s>car"))  # index of the first location token
    dog = car + 8 + len(setup.ids("dog"))
    expected = [
        math.exp(sum(scores[car : car + 4]) / 4),
        math.exp(sum(scores[car + 4 : car + 8]) / 4),
        math.exp(sum(scores[dog : dog + 4]) / 4),
    ]
    for task in ("<OD>", "<DENSE_REGION_CAPTION>", "<CAPTION_TO_PHRASE_GROUNDING>"):
        answer = post_process(task, ids, setup.tokenizer, (1000, 1000), token_scores=scores)[task]
        assert answer["scores"] == pytest.approx(expected, rel=1e-12)
        assert list(answer) == ["bboxes", "labels", "scores"]
    answer = post_process(
        "<OPEN_VOCABULARY_DETECTION>", ids, setup.tokenizer, (1000, 1000), token_scores=scores
    )
    assert answer["<OPEN_VOCABULARY_DETECTION>"]["scores"] == pytest.approx(expected, rel=1e-12)


def test_scores_skip_banned_phrases_and_unscored_tasks(setup: Setup) -> None:
    ids = setup.ids(f"</s><s>it{boxes(1, 2, 3, 4)}a car{boxes(5, 6, 7, 8)}</s>")
    scores = [-float(index) for index in range(len(ids))]
    grounding = post_process(
        "<CAPTION_TO_PHRASE_GROUNDING>", ids, setup.tokenizer, (1000, 1000), token_scores=scores
    )
    start = len(setup.ids(f"</s><s>it{boxes(1, 2, 3, 4)}a car"))
    assert grounding["<CAPTION_TO_PHRASE_GROUNDING>"]["scores"] == [
        math.exp(sum(scores[start : start + 4]) / 4)
    ]
    polygons = setup.ids(f"</s><s>{boxes(1, 2, 3, 4, 5, 6)}</s>")
    result = post_process(
        "<REGION_TO_SEGMENTATION>", polygons, setup.tokenizer, (9, 9), token_scores=[0.0] * 8
    )
    assert "scores" not in result["<REGION_TO_SEGMENTATION>"]


def test_scores_with_a_character_split_over_tokens(setup: Setup) -> None:
    """An emoji label written with byte-level tokens: the boxes still map to their own tokens."""
    ids = setup.ids("</s><s>😀") + setup.ids(boxes(1, 2, 3, 4))
    assert len(setup.ids("😀")) > 1
    scores = [0.0] * (len(ids) - 4) + [-1.0, -2.0, -3.0, -4.0]
    answer = post_process("<OD>", ids, setup.tokenizer, (1000, 1000), token_scores=scores)["<OD>"]
    assert answer == {"bboxes": [[1, 2, 3, 4]], "labels": [""], "scores": [pytest.approx(math.exp(-2.5))]}


def test_score_errors(setup: Setup) -> None:
    ids = setup.ids(f"car{boxes(1, 2, 3, 4)}")
    with pytest.raises(InputError, match="token scores"):
        post_process("<OD>", ids, setup.tokenizer, (10, 10), token_scores=[0.0])
    with pytest.raises(InputError, match="NaN"):
        post_process("<OD>", ids, setup.tokenizer, (10, 10), token_scores=[math.nan] * len(ids))


def test_config_from_the_checkpoint(setup: Setup) -> None:
    config = {**POST_PROCESSOR_CONFIG, "phrase_grounding": {"banned_grounding_tokens": ["car"]}}
    ids = setup.ids(f"</s><s>car{boxes(1, 2, 3, 4)}it{boxes(5, 6, 7, 8)}</s>")
    task = "<CAPTION_TO_PHRASE_GROUNDING>"
    expected = setup.reference(ids, task, (100, 100), config)
    assert post_process(task, ids, setup.tokenizer, (100, 100), config) == expected
    assert expected[task]["labels"] == ["it"]


def test_ocr_reads_upper_case_keys_only(setup: Setup) -> None:
    """The reference reads "AREA_THRESHOLD"; the lower-case key that checkpoints store has no effect."""
    ids = setup.ids(
        f"</s><s>tiny{boxes(1, 1, 2, 1, 2, 2, 1, 2)}big{boxes(0, 0, 900, 0, 900, 900, 0, 900)}</s>"
    )
    task = "<OCR_WITH_REGION>"
    for settings_ in ({"area_threshold": 0.01}, {"AREA_THRESHOLD": 0.01}, {"AREA_THRESHOLD": 0.9}):
        config = {**POST_PROCESSOR_CONFIG, "ocr": settings_}
        expected = setup.reference(ids, task, (1000, 1000), config)
        assert post_process(task, ids, setup.tokenizer, (1000, 1000), config) == expected
    kept = post_process(
        task, ids, setup.tokenizer, (1000, 1000), {**POST_PROCESSOR_CONFIG, "ocr": {"AREA_THRESHOLD": 0.01}}
    )
    assert kept[task]["labels"] == ["big"]


def test_config_errors(setup: Setup) -> None:
    ids = setup.ids("</s><s>car</s>")
    with pytest.raises(ValueError, match="Unsupported parse task"):
        setup.reference(ids, "<CAPTION>", None, {"ocr": {}})
    with pytest.raises(InputError, match="pure_text"):
        post_process("<CAPTION>", ids, setup.tokenizer, None, {"ocr": {}})
    with pytest.raises(InputError, match="9 groups"):
        post_process("<OCR_WITH_REGION>", ids, setup.tokenizer, (9, 9), {"ocr": {"PATTERN": "(.)"}})


def test_image_size_is_needed_for_locations_only(setup: Setup) -> None:
    ids = setup.ids("</s><s>car</s>")
    assert post_process("<CAPTION>", ids, setup.tokenizer, None) == setup.reference(ids, "<CAPTION>", None)
    with pytest.raises(InputError, match="image size"):
        post_process("<OD>", ids, setup.tokenizer, None)
    with pytest.raises(InputError, match="width"):
        post_process("<OD>", ids, setup.tokenizer, (0, 10))


SUPERVISION_CASES = [
    ("<OD>", f"</s><s>car{boxes(53, 334, 933, 775)}dog{boxes(1, 2, 300, 400)}</s>"),
    ("<DENSE_REGION_CAPTION>", f"</s><s>a red car{boxes(53, 334, 933, 775)}</s>"),
    ("<REGION_PROPOSAL>", f"</s><s>{boxes(53, 334, 933, 775, 1, 2, 300, 400)}</s>"),
    (
        "<CAPTION_TO_PHRASE_GROUNDING>",
        f"</s><s>A car{boxes(53, 334, 933, 775)} a dog{boxes(1, 2, 300, 400)}</s>",
    ),
    ("<OPEN_VOCABULARY_DETECTION>", f"</s><s>car{boxes(53, 334, 933, 775, 1, 2, 300, 400)}</s>"),
    ("<OCR_WITH_REGION>", f"</s><s>HELLO{boxes(100, 100, 200, 100, 200, 200, 100, 200)}</s>"),
    ("<REFERRING_EXPRESSION_SEGMENTATION>", f"</s><s>{boxes(100, 100, 500, 100, 500, 600, 100, 600)}</s>"),
    ("<REGION_TO_SEGMENTATION>", f"</s><s>{boxes(10, 10, 90, 10, 90, 90)}<sep>{boxes(1, 1, 5, 1, 5, 5)}</s>"),
    ("<REGION_TO_CATEGORY>", f"</s><s>car{boxes(53, 334, 933, 775)}</s>"),
    ("<REGION_TO_DESCRIPTION>", f"</s><s>a red car{boxes(53, 334, 933, 775)}</s>"),
]


@pytest.mark.parametrize(("task", "text"), SUPERVISION_CASES)
def test_supervision_reads_our_answers_like_the_reference(setup: Setup, task: str, text: str) -> None:
    size = (640, 480)
    ids = setup.ids(text)
    scores = [-0.5] * len(ids)
    expected = sv.Detections.from_vlm(sv.VLM.FLORENCE_2, setup.reference(ids, task, size), resolution_wh=size)
    for answer in (
        post_process(task, ids, setup.tokenizer, size),
        post_process(task, ids, setup.tokenizer, size, token_scores=scores),
    ):
        detections = sv.Detections.from_vlm(sv.VLM.FLORENCE_2, answer, resolution_wh=size)
        assert len(detections) == len(expected) > 0
        np.testing.assert_array_equal(detections.xyxy, expected.xyxy)
        assert (detections.mask is None) == (expected.mask is None)
        if expected.mask is not None:
            np.testing.assert_array_equal(detections.mask, expected.mask)
        assert detections.data.keys() == expected.data.keys()
        for key, values in expected.data.items():
            np.testing.assert_array_equal(detections.data[key], values)
