"""Target serializers on hand-written records: exact target strings, answers, orders, and every refusal.

Most records use a 1000 x 500 image, where the bin of x is floor(x) and the bin of y is floor(2 * y), so the
expected location tokens below are worked out by hand; one case checks a 640 x 480 image the same way.
"""

import dataclasses
import io
import pickle

import pytest
from PIL import Image

from omnivis.data.records import (
    Caption,
    GroundedPhrase,
    Grounding,
    Provenance,
    QuestionAnswer,
    Record,
    ReferringExpression,
    Region,
    TextLine,
)
from omnivis.errors import DatasetError, InputError
from omnivis.loading import bundled_tokenizer
from omnivis.tasks import TASKS, Example, TargetError, Unrepresentable, all_examples, examples
from omnivis.tasks.serializers import canonical_polygon
from omnivis.world import generate_record

HUMAN = Provenance("human")


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def loc(*bins: int) -> str:
    return "".join(f"<loc_{b}>" for b in bins)


STAR_TOP = (300.0, 20.0, 400.0, 80.0)  # bins 300 40 400 160
SQUARE = (10.0, 100.0, 90.5, 150.25)  # bins 10 200 90 300
STAR_RIGHT = (600.4, 100.2, 700.9, 200.7)  # bins 600 200 700 401
SQUARE_POLYGONS = (
    (10.0, 100.0, 90.5, 100.0, 90.5, 150.25, 10.0, 150.25),
    (20.0, 110.0, 30.0, 110.0, 25.0, 120.0),
)
STAR_POLYGON = (600.4, 100.2, 700.9, 100.2, 650.0, 200.7)

SCENE = Record(
    image_id="scene-1",
    image=png(1000, 500),
    width=1000,
    height=500,
    source="human",
    captions=(
        Caption("brief", "Two stars and a square.", HUMAN),
        Caption("detailed", "A small star at the top,\na blue square and a red star.", HUMAN),
        Caption("brief", "Stars and a square.", HUMAN),
    ),
    # Not in raster order, on purpose; the last is a crowd region, which no target holds.
    regions=(
        Region(STAR_RIGHT, "star", HUMAN, "red star", "a red star on the right", (STAR_POLYGON,)),
        Region(SQUARE, "square", HUMAN, "blue square", "", SQUARE_POLYGONS),
        Region(STAR_TOP, "star", HUMAN, "small star", "a small star at the top"),
        Region((0.0, 0.0, 1000.0, 500.0), "people", HUMAN, "a crowd", "many people", is_crowd=True),
    ),
    text_lines=(
        TextLine("OPEN", (100.0, 10.0, 200.0, 10.0, 200.0, 30.5, 100.0, 30.5), HUMAN),
        TextLine("Mon-Fri 9-5", (100.2, 40.0, 260.8, 42.0, 260.0, 60.0, 100.0, 58.0), HUMAN),
    ),
    groundings=(
        Grounding(
            "A red star and a blue square.",
            # Listed out of caption order: the target follows the caption.
            (
                GroundedPhrase("a blue square", 15, 28, (SQUARE,)),
                GroundedPhrase("A red star", 0, 10, (STAR_RIGHT,)),
            ),
            HUMAN,
        ),
        Grounding(
            "Two stars above a blue square.",
            (
                GroundedPhrase("Two stars", 0, 9, (STAR_RIGHT, STAR_TOP)),
                GroundedPhrase("above", 10, 15, ()),
                GroundedPhrase("a blue square", 16, 29, (SQUARE,)),
            ),
            HUMAN,
        ),
    ),
    referring=(
        ReferringExpression("the red star on the right", 0, HUMAN),
        ReferringExpression(
            "the small star", 2, HUMAN
        ),  # its region has no polygons: no segmentation example
    ),
    questions=(
        QuestionAnswer("How many stars are there?", "two", "count", HUMAN),
        QuestionAnswer("What colour is the square?", "blue", "colour", HUMAN),
    ),
).validate()

TOP, LEFT, RIGHT = loc(300, 40, 400, 160), loc(10, 200, 90, 300), loc(600, 200, 700, 401)
SQUARE_SEGMENTS = loc(10, 200, 90, 200, 90, 300, 10, 300) + "<sep>" + loc(20, 220, 30, 220, 25, 240)
STAR_SEGMENT = loc(600, 200, 700, 200, 650, 401)

# (task, [(input, target), ...]) for SCENE, written by hand.
EXPECTED_TARGETS = {
    "<OCR>": [(None, "OPEN\nMon-Fri 9-5")],
    "<OCR_WITH_REGION>": [
        (
            None,
            "OPEN"
            + loc(100, 20, 200, 20, 200, 61, 100, 61)
            + "Mon-Fri 9-5"
            + loc(100, 80, 260, 84, 260, 120, 100, 116),
        )
    ],
    "<CAPTION>": [(None, "Two stars and a square."), (None, "Stars and a square.")],
    "<DETAILED_CAPTION>": [(None, "A small star at the top,\na blue square and a red star.")],
    "<MORE_DETAILED_CAPTION>": [],
    "<OD>": [(None, f"star{TOP}square{LEFT}star{RIGHT}")],
    "<DENSE_REGION_CAPTION>": [(None, f"small star{TOP}blue square{LEFT}red star{RIGHT}")],
    "<REGION_PROPOSAL>": [(None, TOP + LEFT + RIGHT)],
    "<CAPTION_TO_PHRASE_GROUNDING>": [
        ("A red star and a blue square.", f"A red star{RIGHT}a blue square{LEFT}"),
        ("Two stars above a blue square.", f"Two stars{TOP}{RIGHT}a blue square{LEFT}"),
    ],
    "<REFERRING_EXPRESSION_SEGMENTATION>": [("the red star on the right", STAR_SEGMENT)],
    "<REGION_TO_SEGMENTATION>": [(SQUARE, SQUARE_SEGMENTS), (STAR_RIGHT, STAR_SEGMENT)],
    "<OPEN_VOCABULARY_DETECTION>": [
        ("square", f"square{LEFT}"),
        ("star", f"star{TOP}{RIGHT}"),
        ("the red star on the right", f"the red star on the right{RIGHT}"),
        ("the small star", f"the small star{TOP}"),
    ],
    "<REGION_TO_CATEGORY>": [
        (STAR_TOP, f"star{TOP}"),
        (SQUARE, f"square{LEFT}"),
        (STAR_RIGHT, f"star{RIGHT}"),
    ],
    "<REGION_TO_DESCRIPTION>": [
        (STAR_TOP, f"a small star at the top{TOP}"),
        (STAR_RIGHT, f"a red star on the right{RIGHT}"),
    ],
    "<REGION_TO_OCR>": [
        ((100.0, 10.0, 200.0, 30.5), "OPEN" + loc(100, 20, 200, 61)),
        ((100.0, 40.0, 260.8, 60.0), "Mon-Fri 9-5" + loc(100, 80, 260, 120)),
    ],
    "<VQA>": [("How many stars are there?", "two"), ("What colour is the square?", "blue")],
}


def test_every_registered_task_has_hand_written_targets() -> None:
    assert set(EXPECTED_TARGETS) == set(TASKS)


@pytest.mark.parametrize("task", list(EXPECTED_TARGETS))
def test_exact_targets(task: str) -> None:
    made = examples(task, SCENE)
    assert [(example.input, example.target) for example in made] == EXPECTED_TARGETS[task]
    assert all(example.task == task for example in made)
    # The registry's serializer is what `examples` runs.
    assert TASKS[task].serializer(SCENE) == made


def test_answers_hold_the_records_exact_coordinates() -> None:
    (detection,) = examples("<OD>", SCENE)
    assert detection.answer == {
        "bboxes": [list(STAR_TOP), list(SQUARE), list(STAR_RIGHT)],
        "labels": ["star", "square", "star"],
    }
    (proposals,) = examples("<REGION_PROPOSAL>", SCENE)
    assert proposals.answer == {
        "bboxes": [list(STAR_TOP), list(SQUARE), list(STAR_RIGHT)],
        "labels": ["", "", ""],
    }
    grounding = examples("<CAPTION_TO_PHRASE_GROUNDING>", SCENE)[1]
    assert grounding.answer == {
        "bboxes": [list(STAR_TOP), list(STAR_RIGHT), list(SQUARE)],
        "labels": ["Two stars", "Two stars", "a blue square"],
    }
    _, stars, red_star, _ = examples("<OPEN_VOCABULARY_DETECTION>", SCENE)
    assert stars.answer == {
        "bboxes": [list(STAR_TOP), list(STAR_RIGHT)],
        "bboxes_labels": ["star", "star"],
        "polygons": [],
        "polygons_labels": [],
    }
    expression = "the red star on the right"
    assert red_star.answer == {"bboxes": [list(STAR_RIGHT)], "bboxes_labels": [expression], "polygons": [],
                               "polygons_labels": []}  # fmt: skip
    square = examples("<REGION_TO_SEGMENTATION>", SCENE)[0]
    assert square.answer == {"polygons": [[list(polygon) for polygon in SQUARE_POLYGONS]], "labels": [""]}
    (lines,) = examples("<OCR_WITH_REGION>", SCENE)
    assert lines.answer == {
        "quad_boxes": [list(line.quad) for line in SCENE.text_lines],
        "labels": ["OPEN", "Mon-Fri 9-5"],
    }
    # Plain-text answers are the target itself, location tokens included for region-to-text tasks.
    assert all(example.answer == example.target for example in examples("<REGION_TO_CATEGORY>", SCENE))
    assert examples("<OCR>", SCENE)[0].answer == SCENE.ocr_text()


def test_a_referring_expression_may_name_a_crowd_region() -> None:
    # Detection leaves crowd regions out, but an expression that names one is answered with its box, as
    # `omnivis eval` scores it.
    crowd = dataclasses.replace(SCENE, referring=(ReferringExpression("the people", 3, HUMAN),))
    people = examples("<OPEN_VOCABULARY_DETECTION>", crowd)[-1]
    assert (people.input, people.target) == ("the people", "the people" + loc(0, 0, 999, 999))
    assert people.answer["bboxes"] == [[0.0, 0.0, 1000.0, 500.0]]


def test_quantization_of_a_640_by_480_image_by_hand() -> None:
    # x bins: floor(100.5 / 0.64) = 157, floor(300 / 0.64) = 468; y bins: floor(200.2 / 0.48) = 417,
    # floor(400 / 0.48) = 833; the far edges land in bin 999, never 1000.
    record = Record(
        "small",
        png(640, 480),
        640,
        480,
        "human",
        regions=(
            Region((100.5, 200.2, 300.0, 400.0), "car", HUMAN),
            Region((0.0, 0.0, 640.0, 480.0), "road", HUMAN),
        ),
    ).validate()
    (detection,) = examples("<OD>", record)
    assert detection.target == "road" + loc(0, 0, 999, 999) + "car" + loc(157, 417, 468, 833)


def test_raster_order_breaks_ties_by_right_edge_bottom_edge_then_label() -> None:
    boxes = [
        ((5.0, 10.0, 50.0, 40.0), "b"),
        ((5.0, 10.2, 50.0, 30.0), "c"),  # same top bin (20) and left bin: the bottom edge decides
        ((5.0, 10.0, 20.0, 40.0), "d"),  # narrower: the right edge decides first
        ((5.0, 10.0, 50.0, 40.0), "a"),  # the same box as "b": the label decides
        ((1.0, 10.4, 2.0, 11.0), "e"),  # further left
    ]
    record = Record(
        "ties",
        png(1000, 500),
        1000,
        500,
        "human",
        regions=tuple(Region(box, label, HUMAN) for box, label in boxes),
    ).validate()
    (detection,) = examples("<OD>", record)
    assert detection.target == (
        "e" + loc(1, 20, 2, 22) + "d" + loc(5, 20, 20, 80) + "c" + loc(5, 20, 50, 60)
        + "a" + loc(5, 20, 50, 80) + "b" + loc(5, 20, 50, 80)
    )  # fmt: skip


def test_a_record_without_an_annotation_gives_no_examples() -> None:
    empty = Record("empty", png(8, 8), 8, 8, "human").validate()
    made, refused = all_examples(empty)
    assert made == [] and refused == []
    assert all(examples(task, empty) == [] for task in TASKS)


def test_dense_region_captions_need_phrases() -> None:
    without_phrases = dataclasses.replace(
        SCENE, regions=tuple(dataclasses.replace(region, phrase="") for region in SCENE.regions)
    )
    assert examples("<DENSE_REGION_CAPTION>", without_phrases) == []


def test_polygon_vertices_that_share_a_bin_are_kept() -> None:
    # The three vertices collapse into one bin pair; parsing still gives back three vertices.
    tiny = (50.1, 50.1, 50.6, 50.1, 50.3, 50.4)
    region = Region((50.1, 50.1, 50.6, 50.4), "dot", HUMAN, polygons=(tiny,))
    record = Record("tiny", png(1000, 500), 1000, 500, "human", regions=(region,)).validate()
    (segmentation,) = examples("<REGION_TO_SEGMENTATION>", record)
    assert segmentation.target == loc(50, 100, 50, 100, 50, 100)


@pytest.mark.parametrize(
    ("polygon", "canonical"),
    [
        # Clockwise on screen from the bottom right: turned to start at the top left (leftmost, then topmost).
        (
            (90.0, 150.0, 10.0, 150.0, 10.0, 100.0, 90.0, 100.0),
            (10.0, 100.0, 90.0, 100.0, 90.0, 150.0, 10.0, 150.0),
        ),
        # Counter-clockwise on screen (shoelace sum < 0 with y down): reversed, then turned.
        ((20.0, 110.0, 25.0, 120.0, 30.0, 110.0), (20.0, 110.0, 30.0, 110.0, 25.0, 120.0)),
        # A diamond: the single leftmost vertex leads, whatever its height.
        ((50.0, 0.0, 100.0, 50.0, 50.0, 100.0, 0.0, 50.0), (0.0, 50.0, 50.0, 0.0, 100.0, 50.0, 50.0, 100.0)),
        # No area (collinear): the order is kept, from the leftmost vertex.
        ((30.0, 30.0, 10.0, 10.0, 20.0, 20.0), (10.0, 10.0, 20.0, 20.0, 30.0, 30.0)),
    ],
)
def test_canonical_polygon_starts_leftmost_and_turns_clockwise(
    polygon: tuple[float, ...], canonical: tuple[float, ...]
) -> None:
    assert canonical_polygon(polygon) == canonical


def test_segmentation_targets_start_at_the_left_edge_whatever_the_record_order() -> None:
    # The square of SCENE written from another corner and the other way round: the same target and answer.
    corners = SQUARE_POLYGONS[0]
    turned = corners[4:] + corners[:4]
    backwards = tuple(value for index in (3, 2, 1, 0) for value in corners[2 * index : 2 * index + 2])
    for polygon in (turned, backwards):
        region = Region(SQUARE, "square", HUMAN, polygons=(polygon,))
        record = Record("square", png(1000, 500), 1000, 500, "human", regions=(region,)).validate()
        (segmentation,) = examples("<REGION_TO_SEGMENTATION>", record)
        assert segmentation.target == loc(10, 200, 90, 200, 90, 300, 10, 300)
        assert segmentation.answer["polygons"] == [[list(corners)]]


def test_world_polygons_are_written_clockwise_from_their_leftmost_vertex() -> None:
    polygons = [
        polygon
        for index in range(3)
        for example in examples("<REGION_TO_SEGMENTATION>", generate_record(index, seed=3))
        for polygon in example.answer["polygons"][0]
    ]
    assert len(polygons) >= 6
    for polygon in polygons:
        xs, ys = polygon[0::2], polygon[1::2]
        assert (xs[0], ys[0]) == min(zip(xs, ys, strict=True))
        count = len(xs)
        # Shoelace sum with image y pointing down: positive turns clockwise on screen.
        assert sum(xs[i] * ys[(i + 1) % count] - xs[(i + 1) % count] * ys[i] for i in range(count)) > 0


def refusal(task: str, record: Record) -> str:
    """The message of the TargetError `examples` raises, after checking it names the record and the task."""
    with pytest.raises(TargetError) as raised:
        examples(task, record)
    error = raised.value
    assert isinstance(error, DatasetError)
    assert (error.image_id, error.task) == (record.image_id, task)
    assert repr(record.image_id) in str(error) and task in str(error)
    return error.reason


def with_region(**changes: object) -> Record:
    return dataclasses.replace(
        SCENE, regions=(dataclasses.replace(SCENE.regions[0], **changes), *SCENE.regions[1:])
    )


@pytest.mark.parametrize(
    ("task", "record", "reason"),
    [
        ("<OD>", with_region(category="star<loc_5>"), "holds '<'"),
        ("<OD>", with_region(category="red\nstar"), "newline"),
        ("<OD>", with_region(category="étoile"), "non-ASCII"),
        ("<OD>", with_region(category=" star"), "surrounding whitespace"),
        ("<OD>", with_region(category=""), "category is empty"),
        ("<OPEN_VOCABULARY_DETECTION>", with_region(category="étoile"), "non-ASCII"),
        ("<DENSE_REGION_CAPTION>", with_region(phrase=""), "region 0 phrase is empty"),
        ("<DENSE_REGION_CAPTION>", with_region(phrase="red\nstar"), "newline"),
        ("<REGION_TO_DESCRIPTION>", with_region(description="a star <s>"), "holds '<'"),
        ("<REGION_TO_DESCRIPTION>", with_region(description="a star "), "surrounding whitespace"),
        ("<REGION_TO_SEGMENTATION>", with_region(polygons=((600.0, 100.0, 700.0, 100.0),)), "at least 6"),
        (
            "<REGION_TO_SEGMENTATION>",
            with_region(polygons=((600.0, 100.0, 700.0, 100.0, 1200.0, 150.0),)),
            "outside",
        ),
        ("<REGION_TO_CATEGORY>", with_region(box=(600.0, 100.0, 500.0, 200.0)), "inverted"),
        ("<OD>", with_region(box=(600.0, 100.0, 700.0, 600.0)), "outside"),
    ],
)
def test_region_annotations_that_cannot_be_written(task: str, record: Record, reason: str) -> None:
    assert reason in refusal(task, record)


def test_detection_labels_may_not_be_non_ascii_but_region_categories_may() -> None:
    record = with_region(category="étoile")
    (first, *_) = [
        example for example in examples("<REGION_TO_CATEGORY>", record) if example.input == STAR_RIGHT
    ]
    assert first.target == f"étoile{RIGHT}"


def with_lines(*texts: str) -> Record:
    lines = tuple(
        dataclasses.replace(line, text=text) for line, text in zip(SCENE.text_lines, texts, strict=True)
    )
    return dataclasses.replace(SCENE, text_lines=lines)


@pytest.mark.parametrize("task", ["<OCR>", "<OCR_WITH_REGION>", "<REGION_TO_OCR>"])
def test_text_lines_that_cannot_be_written(task: str) -> None:
    assert "text line 1 is empty" in refusal(task, with_lines("OPEN", ""))
    assert "holds '<'" in refusal(task, with_lines("a <b> c", "OPEN"))
    assert "surrounding whitespace" in refusal(task, with_lines("OPEN ", "x"))


def test_a_newline_inside_a_text_line_breaks_only_the_line_tasks() -> None:
    record = with_lines("OPEN\nNOW", "Mon-Fri 9-5")
    assert "newline" in refusal("<OCR>", record)
    assert "newline" in refusal("<OCR_WITH_REGION>", record)
    # Region to OCR answers with plain text, where a newline parses back.
    assert examples("<REGION_TO_OCR>", record)[0].target == "OPEN\nNOW" + loc(100, 20, 200, 61)


def test_quads_outside_the_image_are_refused() -> None:
    line = dataclasses.replace(
        SCENE.text_lines[0], quad=(100.0, 10.0, 1200.0, 10.0, 1200.0, 30.0, 100.0, 30.0)
    )
    record = dataclasses.replace(SCENE, text_lines=(line,))
    assert "text line 0 quad: reaches outside the 1000x500 image" in refusal("<OCR_WITH_REGION>", record)


def with_grounding(*phrases: GroundedPhrase, caption: str = "It is a red star.") -> Record:
    return dataclasses.replace(SCENE, groundings=(Grounding(caption, phrases, HUMAN),))


def test_groundings_that_cannot_be_written() -> None:
    # The banned list is case-sensitive: "It" is kept, "it" dropped.
    capital = with_grounding(GroundedPhrase("It", 0, 2, (STAR_RIGHT,)))
    assert [example.target for example in examples("<CAPTION_TO_PHRASE_GROUNDING>", capital)] == [
        f"It{RIGHT}"
    ]
    pronoun = with_grounding(GroundedPhrase("it", 0, 2, (STAR_RIGHT,)), caption="it is a red star.")
    assert "drops" in refusal("<CAPTION_TO_PHRASE_GROUNDING>", pronoun)
    non_ascii = with_grounding(GroundedPhrase("étoile", 0, 6, (STAR_RIGHT,)), caption="étoile rouge")
    assert "non-ASCII" in refusal("<CAPTION_TO_PHRASE_GROUNDING>", non_ascii)
    unboxed = with_grounding(GroundedPhrase("a red star", 6, 16, ()))
    assert "no phrase with a box" in refusal("<CAPTION_TO_PHRASE_GROUNDING>", unboxed)
    task_token = with_grounding(GroundedPhrase("a red star", 6, 16, (STAR_RIGHT,)), caption="<OD> a red star")
    assert "caption" in refusal("<CAPTION_TO_PHRASE_GROUNDING>", task_token)


def test_texts_and_inputs_that_cannot_be_written() -> None:
    caption = dataclasses.replace(SCENE, captions=(Caption("brief", "A star.\n", HUMAN),))
    assert "caption 0 (brief)" in refusal("<CAPTION>", caption)
    empty_answer = dataclasses.replace(SCENE, questions=(QuestionAnswer("How many?", "  ", "count", HUMAN),))
    assert "answer 0 is empty" in refusal("<VQA>", empty_answer)
    question = dataclasses.replace(SCENE, questions=(QuestionAnswer("<OD>", "two", "count", HUMAN),))
    assert "question 0" in refusal("<VQA>", question)
    dangling = dataclasses.replace(SCENE, referring=(ReferringExpression("the star", 7, HUMAN),))
    assert "names region 7, which does not exist" in refusal("<REFERRING_EXPRESSION_SEGMENTATION>", dangling)
    assert "names region 7, which does not exist" in refusal("<OPEN_VOCABULARY_DETECTION>", dangling)
    expression = dataclasses.replace(SCENE, referring=(ReferringExpression("", 0, HUMAN),))
    assert "referring expression 0 is empty" in refusal("<REFERRING_EXPRESSION_SEGMENTATION>", expression)
    assert "referring expression 0 is empty" in refusal("<OPEN_VOCABULARY_DETECTION>", expression)


@pytest.fixture(scope="module")
def tokenizer():
    return bundled_tokenizer()


def test_a_target_over_budget_is_refused_never_truncated(tokenizer) -> None:
    (detection,) = examples("<OD>", SCENE)
    needed = len(tokenizer.encode(detection.target)) + 2  # with <s> and </s>
    assert examples("<OD>", SCENE, tokenizer=tokenizer, max_target_tokens=needed) == [detection]
    with pytest.raises(TargetError) as raised:
        examples("<OD>", SCENE, tokenizer=tokenizer, max_target_tokens=needed - 1)
    assert (
        f"takes {needed} tokens" in raised.value.reason and f"budget of {needed - 1}" in raised.value.reason
    )


def test_bad_arguments(tokenizer) -> None:
    with pytest.raises(InputError, match="unknown task"):
        examples("<NOT_A_TASK>", SCENE)
    with pytest.raises(InputError, match="unknown task"):
        all_examples(SCENE, ["<OD>", "What is this?"])
    with pytest.raises(InputError, match="both"):
        examples("<OD>", SCENE, tokenizer=tokenizer)
    with pytest.raises(InputError, match="both"):
        examples("<OD>", SCENE, max_target_tokens=10)
    for budget in (0, -3, 2.5, True):
        with pytest.raises(InputError, match="positive integer"):
            examples("<OD>", SCENE, tokenizer=tokenizer, max_target_tokens=budget)


def test_all_examples_reports_each_refusal_and_keeps_the_rest(tokenizer) -> None:
    record = dataclasses.replace(
        SCENE,
        image_id="mixed",
        questions=(
            QuestionAnswer("How many?", "two", "count", HUMAN),
            QuestionAnswer("Why?", "", "other", HUMAN),
        ),
        regions=(dataclasses.replace(SCENE.regions[0], category="étoile"), *SCENE.regions[1:]),
    )
    made, refused = all_examples(record)
    by_task = {task: [example for example in made if example.task == task] for task in TASKS}
    # Detection needs every object, so the whole example goes; per-item tasks lose only the bad item.
    assert by_task["<OD>"] == []
    # The referring expressions still name region 0 by its box.
    queries = [example.input for example in by_task["<OPEN_VOCABULARY_DETECTION>"]]
    assert queries == ["square", "star", "the red star on the right", "the small star"]
    assert [example.target for example in by_task["<VQA>"]] == ["two"]
    assert len(by_task["<REGION_TO_CATEGORY>"]) == 3  # plain text keeps non-ASCII
    assert [(item.image_id, item.task) for item in refused] == [
        ("mixed", "<OD>"),
        ("mixed", "<OPEN_VOCABULARY_DETECTION>"),
        ("mixed", "<VQA>"),
    ]
    assert "region 0 category 'étoile' holds non-ASCII" in refused[0].reason
    assert "answer 1 is empty" in refused[2].reason
    # The other tasks give what the clean record gives.
    clean, _ = all_examples(SCENE)
    untouched = {
        "<OCR>",
        "<CAPTION>",
        "<DENSE_REGION_CAPTION>",
        "<CAPTION_TO_PHRASE_GROUNDING>",
        "<REGION_TO_OCR>",
    }
    assert [e for e in made if e.task in untouched] == [e for e in clean if e.task in untouched]


def test_all_examples_reports_targets_over_budget(tokenizer) -> None:
    targets = ["two", "blue", "Two stars and a square.", "Stars and a square."]
    framed = {text: len(tokenizer.encode(text)) + 2 for text in targets}  # with <s> and </s>
    longest = max(targets, key=framed.__getitem__)
    budget = framed[longest] - 1  # one token short for the longest target only
    assert sorted(framed.values()).count(framed[longest]) == 1
    made, refused = all_examples(SCENE, ["<VQA>", "<CAPTION>"], tokenizer=tokenizer, max_target_tokens=budget)
    assert [example.target for example in made] == [text for text in targets if text != longest]
    assert [(item.image_id, item.task) for item in refused] == [
        ("scene-1", "<VQA>" if longest in ("two", "blue") else "<CAPTION>")
    ]
    expected = f"the target takes {framed[longest]} tokens (with <s> and </s>), over the budget of {budget}"
    assert refused[0].reason == expected


def test_unrepresentable_and_target_error_are_plain_values() -> None:
    error = TargetError("img-7", "<OD>", "region 0 category is empty")
    assert str(error) == "record 'img-7', task <OD>: region 0 category is empty"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.image_id, copy.task, copy.reason) == ("img-7", "<OD>", "region 0 category is empty")
    assert Unrepresentable("img-7", "<OD>", "x") == Unrepresentable("img-7", "<OD>", "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Example("<OD>", None, "", {}).target = "x"  # type: ignore[misc]
