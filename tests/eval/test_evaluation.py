"""Evaluation end to end: truth fed back scores the maximum, a random model scores near zero, the model's own
parsed answers score as they should, files round-trip, and bad input is an error or a counted skip."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from omnivis.data.records import Record
from omnivis.errors import DatasetError, InputError
from omnivis.eval import (
    LOWER_IS_BETTER,
    DecodingSettings,
    Prediction,
    evaluate,
    read_predictions,
    run_evaluation,
    score,
    score_evaluation,
)
from omnivis.eval.evaluation import OTHER, collect_queries
from omnivis.loading import bundled_tokenizer
from omnivis.tasks import TASKS, examples, post_process
from omnivis.world import generate
from omnivis.world.config import VARIANTS

# CIDEr-D of a caption equal to its only reference, when every n-gram order has weight: 10 * 4 / 4.
CIDER_OF_AN_EXACT_CAPTION = 10.0


@pytest.fixture(scope="module")
def world() -> list[Record]:
    return [*generate(14, 2026, VARIANTS["default"]), *generate(6, 2026, VARIANTS["hard"])]


def _truth_predictions(records: list[Record]) -> list[Prediction]:
    collected = collect_queries(records, None)
    return [
        Prediction(q.image_id, q.task, q.input, q.answer)
        for task_queries in collected.queries.values()
        for q in task_queries
    ]


def _assert_best(metrics: dict[str, dict[str, float | None]]) -> None:
    for task, values in metrics.items():
        for name, value in values.items():
            if value is None:  # a size range without truth (e.g. no large objects)
                assert name in {"APs", "APm", "APl"}, (task, name)
            elif name in LOWER_IS_BETTER:
                assert value == 0.0, (task, name, value)
            elif name == "CIDEr":
                assert value == pytest.approx(CIDER_OF_AN_EXACT_CAPTION, abs=1e-9), (task, value)
            else:
                assert value == pytest.approx(1.0, abs=1e-9), (task, name, value)


def test_every_task_is_evaluated_and_truth_scores_the_maximum(world: list[Record], tmp_path: Path) -> None:
    evaluation = score_evaluation(_truth_predictions(world), world, out_dir=tmp_path / "out")
    assert set(evaluation.metrics) == set(TASKS)
    _assert_best(evaluation.metrics)
    for task, details in evaluation.details.items():
        assert details["answered"] == details["queries"] > 0, task
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written == evaluation.metrics
    assert {"details.json", "predictions.jsonl", "report.html", "gallery"} <= {
        p.name for p in (tmp_path / "out").iterdir()
    }


def test_the_written_predictions_score_the_same_again(world: list[Record], tmp_path: Path) -> None:
    first = score(_truth_predictions(world), world, out_dir=tmp_path / "first")
    again = score(tmp_path / "first" / "predictions.jsonl", world)
    assert again == first


def test_parsed_targets_score_at_the_top(world: list[Record]) -> None:
    """The serializers' targets, tokenized and parsed back (integer pixels, one location bin of error), score
    as a perfect model's answers do under every threshold that allows a bin of error."""
    tokenizer = bundled_tokenizer()
    tasks = ["<OD>", "<REGION_PROPOSAL>", "<CAPTION_TO_PHRASE_GROUNDING>", "<REGION_TO_SEGMENTATION>",
             "<OCR_WITH_REGION>", "<CAPTION>", "<REGION_TO_CATEGORY>", "<VQA>"]  # fmt: skip
    predictions = []
    for record in world:
        for task in tasks:
            for example in examples(task, record):
                ids = [tokenizer.bos_token_id, *tokenizer.encode(example.target), tokenizer.eos_token_id]
                answer = post_process(task, ids, tokenizer, record.image_size)[task]
                predictions.append(Prediction(record.image_id, task, example.input, answer))
    metrics = score(predictions, world, tasks)
    assert metrics["<OD>"]["AP50"] == pytest.approx(1.0) and metrics["<OD>"]["AP"] > 0.8
    assert metrics["<REGION_PROPOSAL>"]["AP50"] == pytest.approx(1.0)
    assert metrics["<CAPTION_TO_PHRASE_GROUNDING>"]["Recall@1"] == 1.0
    assert metrics["<REGION_TO_SEGMENTATION>"]["mIoU"] > 0.85
    assert metrics["<OCR_WITH_REGION>"]["F1"] == 1.0
    assert metrics["<CAPTION>"]["CIDEr"] == pytest.approx(CIDER_OF_AN_EXACT_CAPTION)
    assert metrics["<REGION_TO_CATEGORY>"]["accuracy"] == 1.0
    assert metrics["<VQA>"]["accuracy"] == 1.0


def test_a_random_tiny_model_scores_near_zero(world: list[Record], tmp_path: Path) -> None:
    settings = DecodingSettings(batch_size=64, num_beams=1, max_new_tokens=12)
    evaluation = run_evaluation("tiny", world[:2], settings=settings, out_dir=tmp_path / "tiny")
    assert set(evaluation.metrics) == {
        task for task in TASKS if collect_queries(world[:2], None).queries.get(task)
    }
    for task, values in evaluation.metrics.items():
        for name, value in values.items():
            if value is None:
                continue
            if name in LOWER_IS_BETTER:
                assert value >= 0.9, (task, name, value)
            else:
                assert value <= 0.05, (task, name, value)
    assert (tmp_path / "tiny" / "report.html").is_file()
    lines = list(read_predictions(tmp_path / "tiny" / "predictions.jsonl"))
    assert len(lines) == sum(len(q) for q in evaluation.collected.queries.values())


def test_skips_are_counted_by_reason_and_unanswered_queries_scored_as_empty(world: list[Record]) -> None:
    records = world[:3]
    truth = [p for p in _truth_predictions(records) if p.task == "<OD>"]
    nan_box = {"bboxes": [[math.nan, 0.0, 5.0, 5.0]], "labels": ["circle"]}
    odd = [
        replace(truth[0], answer=nan_box),  # invalid: the query stays unanswered
        replace(truth[1], image_id="no-such-image"),
        truth[2],
        truth[2],  # a second answer to one query
        replace(truth[2], input="a phrase"),  # <OD> takes no input
        Prediction(truth[0].image_id, "<NOT_A_TASK>", None, "x"),
    ]
    evaluation = score_evaluation(odd, records, ["<OD>"])
    details = evaluation.details["<OD>"]
    skipped = details["skipped predictions"]
    assert skipped["invalid answer: bboxes[0] must be 4 finite numbers"] == 1  # counted by kind, not by value
    assert skipped["image id not in the dataset (or past --limit)"] == 1
    assert skipped["second answer to one query"] == 1
    assert skipped["input is none of the image's queries"] == 1
    assert evaluation.details[OTHER]["skipped"] == {"unknown task '<NOT_A_TASK>'": 1}
    assert details["answered"] == 1 and details["missing (scored as empty answers)"] == 2
    assert evaluation.metrics["<OD>"]["AR100"] < 1.0  # the two unanswered images lose their boxes


def test_bad_requests_are_clear_errors(world: list[Record], tmp_path: Path) -> None:
    no_text = [record for record in world if not record.text_lines]
    with pytest.raises(DatasetError, match=r"<OCR> needs text lines"):
        score(_truth_predictions(world), no_text, ["<OCR>"])
    with pytest.raises(InputError, match="unknown task"):
        score([], world, ["<NOPE>"])
    with pytest.raises(InputError, match="limit"):
        score(_truth_predictions(world), world, limit=0)
    with pytest.raises(InputError, match="no predictions"):
        score([], world)
    with pytest.raises(InputError, match="batch_size"):
        evaluate("tiny", world[:1], ["<OD>"], settings=DecodingSettings(batch_size=0))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image_id": "x", "task": "<OD>", "result": {"<OD>": {}}}\nnot json\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl, line 2"):
        score(bad, world)


def test_a_dataset_directory_is_read_and_limited(world: list[Record], tmp_path: Path) -> None:
    from omnivis.data.parquet import write_dataset

    write_dataset(world[:4], tmp_path / "dataset")
    truth = _truth_predictions(world[:4])
    limited = score_evaluation(truth, tmp_path / "dataset", ["<OD>"], limit=2)
    assert limited.details["<OD>"]["queries"] == 2
    assert limited.details["<OD>"]["skipped predictions"] == {
        "image id not in the dataset (or past --limit)": 2
    }
    assert limited.metrics["<OD>"]["AP"] == pytest.approx(1.0)


def test_a_task_cap_shortens_that_tasks_answers_only(
    world: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    from omnivis.eval.inference import predict_queries
    from omnivis.loading import load

    predictor = load("tiny")
    asked_lengths: dict[str, set[int]] = {}
    real_run_batch = predictor.run_batch

    def recording_run_batch(pictures: list, task: str, texts: list, **options: object) -> list:
        length = options["max_new_tokens"]
        asked_lengths.setdefault(task, set()).add(int(length))  # type: ignore[call-overload]
        return real_run_batch(pictures, task, texts, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(predictor, "run_batch", recording_run_batch)
    collected = collect_queries(world[:1], ["<VQA>", "<CAPTION>"])
    settings = DecodingSettings(
        batch_size=64, num_beams=1, max_new_tokens=12, task_max_new_tokens={"<VQA>": 4}
    )
    answers = predict_queries(predictor, world[:1], collected, settings, progress=False)
    assert asked_lengths == {"<VQA>": {4}, "<CAPTION>": {12}}
    assert len(answers.predictions) == len(collected.queries["<VQA>"]) + 1
    # A cap above max_new_tokens does not raise it.
    assert DecodingSettings(max_new_tokens=8, task_max_new_tokens={"<OD>": 100}).answer_length("<OD>") == 8
    with pytest.raises(InputError, match=r"task_max_new_tokens\['<VQA>'\] must be a positive integer, got 0"):
        DecodingSettings(task_max_new_tokens={"<VQA>": 0}).validate()
