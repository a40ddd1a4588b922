"""Trivial baselines: constants fitted on hand-built records checked against values worked out by hand, every
task's answer in the structure scoring accepts, and the baseline scored on world queries of every task.

The training records (worked out below):
  A, 100 x 50: one region (10, 5, 30, 25) -> relative (0.1, 0.1, 0.3, 0.5)
  B, 200 x 100: regions (0, 0, 100, 50) -> (0, 0, 0.5, 0.5) and (100, 50, 200, 100) -> (0.5, 0.5, 1, 1)
  C, 50 x 50: no regions
mean box = ((0.1 + 0 + 0.5) / 3, (0.1 + 0 + 0.5) / 3, (0.3 + 0.5 + 1) / 3, (0.5 + 0.5 + 1) / 3)
         = (0.2, 0.2, 0.6, 2 / 3); on a 300 x 150 image (60, 30, 180, 100).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from omnivis.data.records import (
    Caption,
    GroundedPhrase,
    Grounding,
    Provenance,
    QuestionAnswer,
    Record,
    Region,
)
from omnivis.errors import InputError
from omnivis.eval.baselines import BASELINE_RULES, Baseline, fit_baseline, score_baseline
from omnivis.eval.evaluation import collect_queries, score_predictions
from omnivis.eval.predictions import check_answer
from omnivis.eval.queries import GroundTruthBox, Query
from omnivis.tasks import TASKS
from omnivis.world import VARIANTS, generate_record

WORLD = Provenance("world")
MEAN_BOX_300_BY_150 = [60.0, 30.0, 180.0, 100.0]
# A 1000 x 1000 image: one location bin per pixel, so a box's tokens are its coordinates.
SQUARE_IMAGE = (1000, 1000)
REGION = (100.0, 200.0, 300.0, 400.0)
REGION_TOKENS = "<loc_100><loc_200><loc_300><loc_400>"


def _record(image_id: str, width: int, height: int, **annotations: object) -> Record:
    return Record(image_id, b"not decoded", width, height, "world", **annotations)  # type: ignore[arg-type]


def _questions(*pairs: tuple[str, str]) -> tuple[QuestionAnswer, ...]:
    return tuple(QuestionAnswer(question, answer, "other", WORLD) for question, answer in pairs)


def _training_records() -> list[Record]:
    grounding = Grounding(
        "a red star and it here",
        (
            GroundedPhrase("a red star", 0, 10, ((10.0, 5.0, 30.0, 25.0),)),
            GroundedPhrase("it", 15, 17, ((10.0, 5.0, 30.0, 25.0),)),  # banned: parsing drops it
            GroundedPhrase("here", 18, 22, ()),  # no box: nothing to learn
        ),
        WORLD,
    )
    first = _record(
        "A",
        100,
        50,
        captions=(Caption("brief", "b cat", WORLD), Caption("detailed", "x", WORLD)),
        regions=(Region((10.0, 5.0, 30.0, 25.0), "star", WORLD, "red star", "A red star."),),
        groundings=(grounding,),
        questions=_questions(("How many stars?", "1"), ("What colour is it?", "red")),
    )
    second = _record(
        "B",
        200,
        100,
        captions=(Caption("brief", "a dog", WORLD), Caption("brief", "b cat", WORLD)),
        regions=(
            Region((0.0, 0.0, 100.0, 50.0), "square", WORLD, "", "A square."),
            Region((100.0, 50.0, 200.0, 100.0), "star", WORLD, "blue star", "A red star."),
        ),
        questions=_questions(("how  many STARS?", "2"), ("What colour is it?", " red ")),
    )
    third = _record(
        "C",
        50,
        50,
        captions=(Caption("brief", "a dog", WORLD), Caption("brief", "c", WORLD)),
        questions=_questions(("How many stars? ", "2"), ("What colour is it?", "blue"), ("Is it big?", "no")),
    )
    return [first, second, third]


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    return fit_baseline(_training_records())


def test_fit_learns_the_hand_computed_constants(baseline: Baseline) -> None:
    assert baseline.mean_box == pytest.approx((0.2, 0.2, 0.6, 2 / 3))
    # brief: "a dog" and "b cat" twice each, "c" once: the tie goes to the lexicographically first.
    assert baseline.captions == {"brief": "a dog", "detailed": "x", "more_detailed": ""}
    assert baseline.category == "star"  # star 2, square 1
    assert baseline.phrase == "blue star"  # "red star" and "blue star" once each (the empty phrase skipped)
    assert baseline.description == "A red star."  # twice, "A square." once
    assert baseline.grounded_phrases == frozenset({"a red star"})
    # "how many stars?": 1, 2, 2; "what colour is it?": red, red (stripped), blue; "is it big?": no.
    assert baseline.answers == {"how many stars?": "2", "what colour is it?": "red", "is it big?": "no"}
    # Overall: "2" and "red" twice each, the tie to "2".
    assert baseline.majority_answer == "2"


def test_fit_reads_a_one_pass_iterator_like_a_list() -> None:
    assert fit_baseline(iter(_training_records())) == fit_baseline(_training_records())


def test_fit_without_regions_falls_back_to_the_whole_image() -> None:
    fitted = fit_baseline(_training_records()[2:])
    assert fitted.mean_box == (0.0, 0.0, 1.0, 1.0)
    assert (fitted.category, fitted.phrase, fitted.description) == ("", "", "")


@pytest.mark.parametrize("records", [[], iter([])], ids=["list", "iterator"])
def test_fit_on_no_records_is_an_error(records: list[Record]) -> None:
    with pytest.raises(InputError, match="no records"):
        fit_baseline(records)


def _query(
    task: str,
    task_input: object = None,
    *,
    kind: str = "image",
    size: tuple[int, int] = (300, 150),
    truth: object = None,
    image_id: str = "held-out",
) -> Query:
    return Query(image_id, task, task_input, kind, size, truth, None)  # type: ignore[arg-type]


def _answer(baseline: Baseline, query: Query) -> Any:
    (prediction,) = baseline.predict([query])
    assert prediction.image_id == query.image_id
    assert (prediction.task, prediction.input) == (query.task, query.input)
    assert check_answer(query.task, prediction.answer) is None
    return prediction.answer


def test_box_answers_hold_the_mean_box_scaled_to_the_image(baseline: Baseline) -> None:
    cases = {"<OD>": "star", "<DENSE_REGION_CAPTION>": "blue star", "<REGION_PROPOSAL>": ""}
    for task, label in cases.items():
        answer = _answer(baseline, _query(task))
        assert answer["bboxes"] == [pytest.approx(MEAN_BOX_300_BY_150)]
        assert answer["labels"] == [label]
    answer = _answer(baseline, _query("<OPEN_VOCABULARY_DETECTION>", "green circle", kind="category"))
    assert answer == {
        "bboxes": [pytest.approx(MEAN_BOX_300_BY_150)],
        "bboxes_labels": ["green circle"],
        "polygons": [],
        "polygons_labels": [],
    }


def test_segmentation_answers_are_rectangles(baseline: Baseline) -> None:
    answer = _answer(baseline, _query("<REFERRING_EXPRESSION_SEGMENTATION>", "the star", kind="referring"))
    x0, y0, x1, y1 = MEAN_BOX_300_BY_150
    assert answer["polygons"] == [[pytest.approx([x0, y0, x1, y0, x1, y1, x0, y1])]]
    assert answer["labels"] == [""]
    # Region to segmentation: the input box itself (given as pixels or as location tokens).
    for region in (REGION, REGION_TOKENS):
        answer = _answer(
            baseline, _query("<REGION_TO_SEGMENTATION>", region, kind="region", size=SQUARE_IMAGE)
        )
        points = answer["polygons"][0][0]
        assert points == pytest.approx([100, 200, 300, 200, 300, 400, 100, 400], abs=0.5)  # bin centres


def test_text_answers(baseline: Baseline) -> None:
    expected = {
        "<CAPTION>": "a dog",
        "<DETAILED_CAPTION>": "x",
        "<MORE_DETAILED_CAPTION>": "",
        "<OCR>": "",
    }
    for task, text in expected.items():
        assert _answer(baseline, _query(task)) == text
    assert _answer(baseline, _query("<OCR_WITH_REGION>")) == {"quad_boxes": [], "labels": []}
    # Region answers echo their input's location tokens, as official checkpoints write them.
    expected = {
        "<REGION_TO_CATEGORY>": "star",
        "<REGION_TO_DESCRIPTION>": "A red star.",
        "<REGION_TO_OCR>": "",
    }
    for task, text in expected.items():
        query = _query(task, REGION, kind="region", size=SQUARE_IMAGE)
        assert _answer(baseline, query) == text + REGION_TOKENS


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("How many stars?", "2"),
        ("  HOW MANY   stars?", "2"),  # the same question after normalization
        ("what colour is it?", "red"),
        ("Is it big?", "no"),
        ("Is it small?", "2"),  # unseen: the overall majority
    ],
)
def test_vqa_answers_the_majority_of_the_same_question(
    baseline: Baseline, question: str, answer: str
) -> None:
    assert _answer(baseline, _query("<VQA>", question, kind="question")) == answer


def test_grounding_gives_memorized_phrases_the_mean_box(baseline: Baseline) -> None:
    # "A red star" is memorized (case aside) and written as the caption writes it; "a red starling" is not
    # the phrase on word boundaries, and the banned "it" was never memorized.
    caption = "There is A red star, a red starling and it."
    answer = _answer(baseline, _query("<CAPTION_TO_PHRASE_GROUNDING>", caption, kind="caption"))
    assert answer == {"bboxes": [pytest.approx(MEAN_BOX_300_BY_150)], "labels": ["A red star"]}
    # No memorized phrase: the whole caption is the one phrase.
    answer = _answer(baseline, _query("<CAPTION_TO_PHRASE_GROUNDING>", " two cats ", kind="caption"))
    assert answer == {"bboxes": [pytest.approx(MEAN_BOX_300_BY_150)], "labels": ["two cats"]}


def test_largest_object_answers_referring_queries_with_the_largest_true_object(baseline: Baseline) -> None:
    objects = [
        GroundTruthBox((0.0, 0.0, 10.0, 10.0), "a", 100.0),
        GroundTruthBox((0.0, 0.0, 50.0, 50.0), "b", 2500.0, is_crowd=True),  # crowd: never the answer
        GroundTruthBox((20.0, 20.0, 40.0, 50.0), "c", 600.0),
    ]
    detection = _query("<OD>", truth=objects)
    referring = _query("<OPEN_VOCABULARY_DETECTION>", "the big one", kind="referring", truth=(20, 20, 40, 50))
    segmentation = _query("<REFERRING_EXPRESSION_SEGMENTATION>", "the big one", kind="referring")
    category = _query("<OPEN_VOCABULARY_DETECTION>", "c", kind="category", truth=objects[2:])
    _, boxed, masked, by_category = baseline.predict(
        [detection, referring, segmentation, category], largest_object=True
    )
    assert boxed.answer["bboxes"] == [[20.0, 20.0, 40.0, 50.0]]
    assert masked.answer["polygons"] == [[[20.0, 20.0, 40.0, 20.0, 40.0, 50.0, 20.0, 50.0]]]
    assert by_category.answer["bboxes"] == [pytest.approx(MEAN_BOX_300_BY_150)]  # category queries: mean box
    # Without the option, referring queries get the mean box too.
    (plain,) = baseline.predict([referring])
    assert plain.answer["bboxes"] == [pytest.approx(MEAN_BOX_300_BY_150)]
    # An image whose objects are not among the queries cannot be answered so.
    with pytest.raises(InputError, match="held-out"):
        baseline.predict([referring], largest_object=True)


def test_unknown_task_is_an_error(baseline: Baseline) -> None:
    with pytest.raises(InputError, match="<NOT_A_TASK>"):
        baseline.predict([_query("<OD>"), _query("<NOT_A_TASK>")])


def test_rules_cover_every_task() -> None:
    assert set(BASELINE_RULES) == set(TASKS)
    assert all(rule.strip() for rule in BASELINE_RULES.values())


@pytest.fixture(scope="module")
def world_split() -> tuple[list[Record], list[Record]]:
    config = VARIANTS["default"]
    return [generate_record(index, 5, config) for index in range(6)], [
        generate_record(i, 4, config) for i in range(3)
    ]


def _assert_finite(metrics: dict[str, dict[str, float | None]]) -> None:
    for task, values in metrics.items():
        for name, value in values.items():
            if value is None:  # a COCO size range without truth objects
                assert name in {"APs", "APm", "APl"}, (task, name)
            else:
                assert math.isfinite(value), (task, name, value)


def test_world_queries_of_every_task_are_answered_and_scored(
    world_split: tuple[list[Record], list[Record]],
) -> None:
    training, held_out = world_split
    baseline = fit_baseline(training)
    collected = collect_queries(held_out, None)
    assert set(collected.queries) == set(TASKS)
    every_query = [query for task_queries in collected.queries.values() for query in task_queries]
    predictions = baseline.predict(every_query)
    assert len(predictions) == len(every_query)
    assert [prediction.task for prediction in predictions] == [query.task for query in every_query]
    evaluation = score_predictions(predictions, collected)
    for task, details in evaluation.details.items():
        skipped = details.get("skipped predictions", {})
        assert not [reason for reason in skipped if reason.startswith("invalid")], (task, skipped)
        assert details["answered"] == details["queries"], task
    _assert_finite(evaluation.metrics)
    # The convenience gives the same numbers, answering a key shared by several queries once.
    scored = score_baseline(baseline, collected, largest_object=True)
    assert all("skipped predictions" not in details for details in scored.details.values())
    _assert_finite(scored.metrics)
    for task in TASKS:
        if task not in {"<OPEN_VOCABULARY_DETECTION>", "<REFERRING_EXPRESSION_SEGMENTATION>"}:
            assert scored.metrics[task] == evaluation.metrics[task], task
    # Nothing here is read: OCR is scored against empty answers, the worst reading there is.
    assert evaluation.metrics["<OCR>"] == {"CER": 1.0, "WER": 1.0}
    assert evaluation.metrics["<OCR_WITH_REGION>"] == {"F1": 0.0}
