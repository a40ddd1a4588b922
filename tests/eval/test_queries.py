"""The queries a record's annotations judge, on a record built by hand whose every query is written out.

The image is 500 x 250 pixels so that a location bin is exactly 0.5 pixel wide and 0.25 pixel high (both
exact in float32): a box's `<loc_..>` tokens are then x / 0.5 and y / 0.25, worked out by hand below.
"""

from __future__ import annotations

import dataclasses

import pytest

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
from omnivis.eval.predictions import check_answer
from omnivis.eval.queries import GroundTruthBox, Query, input_key, queries
from omnivis.tasks import TASKS
from omnivis.tasks.locations import format_box

WORLD = Provenance("world")
SIZE = (500, 250)
STAR_BOX = (10.0, 10.0, 30.0, 30.0)  # <loc_20><loc_40><loc_60><loc_120>
SQUARE_BOX = (50.0, 20.0, 70.0, 40.0)  # <loc_100><loc_80><loc_140><loc_160>
CROWD_BOX = (0.0, 150.0, 100.0, 180.0)
GREEN_BOX = (80.0, 5.0, 95.0, 20.0)  # <loc_160><loc_20><loc_190><loc_80>
STAR_POLYGON = (10.0, 10.0, 30.0, 10.0, 20.0, 30.0)
SQUARE_POLYGON = (50.0, 20.0, 70.0, 20.0, 70.0, 40.0, 50.0, 40.0)  # 20 x 20 = 400 pixels
CROWD_POLYGON = (0.0, 150.0, 100.0, 150.0, 100.0, 180.0, 0.0, 180.0)  # 100 x 30 = 3000 pixels
HELLO_QUAD = (40.0, 60.0, 60.0, 58.0, 62.0, 70.0, 42.0, 72.0)  # bounds (40, 58, 62, 72)
WORLD_QUAD = (10.0, 40.0, 30.0, 40.0, 30.0, 48.0, 10.0, 48.0)  # bounds (10, 40, 30, 48)
GROUNDED_CAPTION = "a red star beside it and a blue square"


def _record() -> Record:
    """A record with every annotation kind, and the cases queries leave out: a crowd region, a region
    without polygons or description, banned and box-less phrases, a repeated question."""
    regions = (
        Region(STAR_BOX, "star", WORLD, "red star", "A red star.", (STAR_POLYGON,)),
        Region(SQUARE_BOX, "square", WORLD, "blue square", "A blue square.", (SQUARE_POLYGON,)),
        Region(CROWD_BOX, "star", WORLD, "many stars", "Many stars.", (CROWD_POLYGON,), is_crowd=True),
        Region(GREEN_BOX, "star", WORLD, "green star"),
    )
    groundings = (
        Grounding(
            GROUNDED_CAPTION,
            (  # out of caption order on purpose
                GroundedPhrase("a blue square", 25, 38, (SQUARE_BOX,)),
                GroundedPhrase("a red star", 0, 10, (STAR_BOX,)),
                GroundedPhrase("beside", 11, 17, ()),
                GroundedPhrase("it", 18, 20, (STAR_BOX,)),
            ),
            WORLD,
        ),
        Grounding("it is here", (GroundedPhrase("it", 0, 2, (STAR_BOX,)),), WORLD),  # only a banned phrase
        Grounding("the shapes", (GroundedPhrase("the shapes", 0, 10, ()),), WORLD),  # no boxes
    )
    record = Record(
        image_id="hand-1",
        image=b"not decoded by queries",
        width=SIZE[0],
        height=SIZE[1],
        source="world",
        captions=(
            Caption("brief", "a red star and a blue square", WORLD),
            Caption("detailed", "A red star sits left of a blue square.", WORLD),
            Caption("brief", "two shapes", WORLD),
            Caption("more_detailed", "A paragraph about two shapes.", WORLD),
        ),
        regions=regions,
        text_lines=(TextLine("HELLO", HELLO_QUAD, WORLD), TextLine("WORLD", WORLD_QUAD, WORLD)),
        groundings=groundings,
        referring=(
            ReferringExpression("the red star", 0, WORLD),
            ReferringExpression("the green star", 3, WORLD),
        ),
        questions=(
            QuestionAnswer("How many stars?", "2", "count", WORLD),
            QuestionAnswer("What colour is the square?", "blue", "colour", WORLD),
            QuestionAnswer("How many stars?", "3", "count", WORLD),
            QuestionAnswer(" How many stars? ", "two", "count", WORLD),
            QuestionAnswer("星はいくつ？", "二", "count", WORLD),
        ),
    )
    return record.validate()


RECORD = _record()


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_has_queries_whose_answers_fit_the_task(task: str) -> None:
    found = queries(RECORD, task)
    assert found, f"the hand-made record should give {task} queries"
    for query in found:
        assert (query.image_id, query.task, query.image_size) == ("hand-1", task, SIZE)
        assert check_answer(task, query.answer) is None
        assert query.key == ("hand-1", task, input_key(query.input, SIZE))
    # A pure function of the record.
    assert queries(RECORD, task) == found


def _inputs(task: str) -> list:
    return [query.input for query in queries(RECORD, task)]


def test_detection_flags_crowd_truth_and_leaves_it_out_of_the_answer() -> None:
    (query,) = queries(RECORD, "<OD>")
    assert (query.input, query.kind) == (None, "image")
    assert [(item.box, item.label, item.is_crowd) for item in query.truth] == [
        (STAR_BOX, "star", False),
        (SQUARE_BOX, "square", False),
        (CROWD_BOX, "star", True),
        (GREEN_BOX, "star", False),
    ]
    # Areas: a polygon's pixels when the region has polygons, else the box's 15 x 15.
    assert [item.area for item in query.truth[1:]] == [400.0, 3000.0, 225.0]
    assert query.answer == {
        "bboxes": [list(STAR_BOX), list(SQUARE_BOX), list(GREEN_BOX)],
        "labels": ["star", "square", "star"],
    }


def test_dense_captions_and_proposals_label_what_the_task_writes() -> None:
    (dense,) = queries(RECORD, "<DENSE_REGION_CAPTION>")
    assert [item.label for item in dense.truth] == ["red star", "blue square", "many stars", "green star"]
    assert dense.answer["labels"] == ["red star", "blue square", "green star"]
    (proposals,) = queries(RECORD, "<REGION_PROPOSAL>")
    assert [(item.label, item.is_crowd) for item in proposals.truth] == [
        ("", False), ("", False), ("", True), ("", False),
    ]  # fmt: skip
    assert proposals.answer == {
        "bboxes": [list(STAR_BOX), list(SQUARE_BOX), list(GREEN_BOX)],
        "labels": ["", "", ""],
    }


def test_open_vocabulary_queries_per_category_then_per_expression() -> None:
    found = queries(RECORD, "<OPEN_VOCABULARY_DETECTION>")
    # Categories in sorted order, then the referring expressions in record order.
    assert [(query.input, query.kind) for query in found] == [
        ("square", "category"),
        ("star", "category"),
        ("the red star", "referring"),
        ("the green star", "referring"),
    ]
    square, star, red, green = found
    assert square.truth == [GroundTruthBox(SQUARE_BOX, "square", 400.0)]
    assert [(item.box, item.is_crowd) for item in star.truth] == [
        (STAR_BOX, False), (CROWD_BOX, True), (GREEN_BOX, False),
    ]  # fmt: skip
    # The crowd region stays in the truth (flagged) but out of the answer.
    assert star.answer["bboxes"] == [list(STAR_BOX), list(GREEN_BOX)]
    assert star.answer["bboxes_labels"] == ["star", "star"]
    assert (red.truth, green.truth) == (STAR_BOX, GREEN_BOX)
    assert red.answer == {"bboxes": [list(STAR_BOX)], "bboxes_labels": ["the red star"], "polygons": [],
                          "polygons_labels": []}  # fmt: skip


def test_only_a_crowd_category_gets_no_category_query() -> None:
    crowd_only = dataclasses.replace(RECORD, regions=RECORD.regions[2:3], referring=()).validate()
    assert queries(crowd_only, "<OPEN_VOCABULARY_DETECTION>") == []


def test_grounding_leaves_out_banned_phrases_and_phrases_without_boxes() -> None:
    (query,) = queries(RECORD, "<CAPTION_TO_PHRASE_GROUNDING>")
    assert (query.input, query.kind) == (GROUNDED_CAPTION, "caption")
    # In caption order; "beside" has no boxes and "it" is banned; the other two captions give no query.
    assert query.truth == [("a red star", (STAR_BOX,)), ("a blue square", (SQUARE_BOX,))]
    assert query.answer == {
        "bboxes": [list(STAR_BOX), list(SQUARE_BOX)],
        "labels": ["a red star", "a blue square"],
    }


def test_grounding_answer_repeats_a_phrase_per_box() -> None:
    two = GroundedPhrase("two shapes", 0, 10, (STAR_BOX, SQUARE_BOX))
    record = dataclasses.replace(RECORD, groundings=(Grounding("two shapes", (two,), WORLD),)).validate()
    (query,) = queries(record, "<CAPTION_TO_PHRASE_GROUNDING>")
    assert query.answer == {
        "bboxes": [list(STAR_BOX), list(SQUARE_BOX)],
        "labels": ["two shapes", "two shapes"],
    }


def test_segmentation_queries_need_polygons() -> None:
    # "the green star" names a region without polygons: no query.
    (referring,) = queries(RECORD, "<REFERRING_EXPRESSION_SEGMENTATION>")
    assert (referring.input, referring.kind) == ("the red star", "referring")
    assert referring.truth == [list(STAR_POLYGON)]
    assert referring.answer == {"polygons": [[list(STAR_POLYGON)]], "labels": [""]}
    # Regions: the crowd one and the one without polygons are left out.
    regions = queries(RECORD, "<REGION_TO_SEGMENTATION>")
    assert [(query.input, query.kind) for query in regions] == [(STAR_BOX, "region"), (SQUARE_BOX, "region")]
    assert regions[1].truth == [list(SQUARE_POLYGON)]


def test_region_text_answers_echo_the_location_tokens() -> None:
    categories = queries(RECORD, "<REGION_TO_CATEGORY>")
    assert [(query.input, query.truth) for query in categories] == [
        (STAR_BOX, "star"), (SQUARE_BOX, "square"), (GREEN_BOX, "star"),
    ]  # fmt: skip
    assert [query.answer for query in categories] == [
        "star<loc_20><loc_40><loc_60><loc_120>",
        "square<loc_100><loc_80><loc_140><loc_160>",
        "star<loc_160><loc_20><loc_190><loc_80>",
    ]
    # The green star has no description: no query.
    descriptions = queries(RECORD, "<REGION_TO_DESCRIPTION>")
    assert [(query.input, query.truth) for query in descriptions] == [
        (STAR_BOX, "A red star."), (SQUARE_BOX, "A blue square."),
    ]  # fmt: skip


def test_region_to_ocr_input_is_the_quads_bounding_box() -> None:
    found = queries(RECORD, "<REGION_TO_OCR>")
    assert [(query.input, query.truth, query.kind) for query in found] == [
        ((40.0, 58.0, 62.0, 72.0), "HELLO", "region"),
        ((10.0, 40.0, 30.0, 48.0), "WORLD", "region"),
    ]
    # x / 0.5 and y / 0.25: 80, 232, 124, 288.
    assert found[0].answer == "HELLO<loc_80><loc_232><loc_124><loc_288>"


def test_ocr_queries() -> None:
    (plain,) = queries(RECORD, "<OCR>")
    assert (plain.input, plain.truth, plain.answer) == (None, "HELLO\nWORLD", "HELLO\nWORLD")
    (with_regions,) = queries(RECORD, "<OCR_WITH_REGION>")
    assert with_regions.truth == [("HELLO", HELLO_QUAD), ("WORLD", WORLD_QUAD)]
    assert with_regions.answer == {
        "quad_boxes": [list(HELLO_QUAD), list(WORLD_QUAD)],
        "labels": ["HELLO", "WORLD"],
    }


def test_records_without_text_have_no_ocr_queries() -> None:
    silent = dataclasses.replace(RECORD, text_lines=()).validate()
    for task in ("<OCR>", "<OCR_WITH_REGION>", "<REGION_TO_OCR>"):
        assert queries(silent, task) == []


def test_captions_keep_every_reference_of_their_level() -> None:
    (brief,) = queries(RECORD, "<CAPTION>")
    assert (brief.input, brief.truth, brief.answer) == (
        None, ["a red star and a blue square", "two shapes"], "a red star and a blue square",
    )  # fmt: skip
    (detailed,) = queries(RECORD, "<DETAILED_CAPTION>")
    assert detailed.truth == ["A red star sits left of a blue square."]
    without = dataclasses.replace(RECORD, captions=RECORD.captions[:3]).validate()
    assert queries(without, "<MORE_DETAILED_CAPTION>") == []


def test_repeated_questions_are_one_query_with_every_answer() -> None:
    found = queries(RECORD, "<VQA>")
    # Copies of a question (white space around it aside) are grouped, in order of first appearance.
    assert [(query.input, query.truth, query.answer) for query in found] == [
        ("How many stars?", ["2", "3", "two"], "2"),
        ("What colour is the square?", ["blue"], "blue"),
        ("星はいくつ？", ["二"], "二"),
    ]
    assert {query.kind for query in found} == {"question"}


def test_a_record_without_annotations() -> None:
    bare = Record("bare", b"x", SIZE[0], SIZE[1], "world").validate()
    for task in TASKS:
        found = queries(bare, task)
        if task in ("<OD>", "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>"):
            # Detection judges every image: boxes on an image without objects are false positives.
            assert [(query.truth, query.answer) for query in found] == [([], {"bboxes": [], "labels": []})]
        else:
            assert found == [], task


def test_input_key_of_a_pixel_box_equals_its_location_text() -> None:
    tokens = "<loc_20><loc_40><loc_60><loc_120>"
    assert format_box(STAR_BOX, SIZE) == tokens
    assert input_key(STAR_BOX, SIZE) == tokens
    assert input_key(tokens, SIZE) == tokens
    assert input_key(list(STAR_BOX), SIZE) == input_key(f"  {tokens}\n", SIZE)
    query = queries(RECORD, "<REGION_TO_CATEGORY>")[0]
    assert query.key == ("hand-1", "<REGION_TO_CATEGORY>", tokens)


def test_input_key_of_text_and_of_nothing() -> None:
    assert input_key(None, SIZE) == ""
    assert input_key("  the red star\n", SIZE) == "the red star"
    assert input_key("星はいくつ？", SIZE) == "星はいくつ？"


def test_queries_are_plain_frozen_data() -> None:
    query = queries(RECORD, "<CAPTION>")[0]
    assert isinstance(query, Query)
    with pytest.raises(dataclasses.FrozenInstanceError):
        query.task = "<OD>"  # type: ignore[misc]


@pytest.mark.parametrize("task", list(TASKS))
def test_every_text_query_the_eval_asks_is_one_training_teaches(task: str) -> None:
    # The eval and the training serializers are written apart; a query kind only the eval knows (as referring
    # expressions were for open-vocabulary detection until 2026-12-05) is scored but never taught.
    from omnivis.tasks.targets import all_examples
    from omnivis.world import VARIANTS, generate_record

    for index in range(4):
        record = generate_record(index, 3, VARIANTS["default"])
        taught = {example.input for example in all_examples(record)[0] if example.task == task}
        asked = {query.input for query in queries(record, task) if isinstance(query.input, str)}
        assert asked <= taught, f"{task}: asked but never taught: {sorted(asked - taught)[:3]}"
