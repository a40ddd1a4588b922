"""`omnivis demo` (what `make demo` runs): a model against the trivial baseline on a fresh world split, every
task drawn, on a random `tiny` checkpoint (64 px inputs, answers of a few tokens) so that it runs in seconds.
The comparison pieces are tested in tests/eval/test_comparison.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import omnivis
from omnivis import demo
from omnivis.cli import main
from omnivis.data.dataset import open_dataset
from omnivis.data.manifest import read_manifest
from omnivis.data.samples import sample_images
from omnivis.errors import InputError
from omnivis.eval.comparison import (
    BEATS,
    DOES_NOT_BEAT,
)
from omnivis.eval.evaluation import collect_queries
from omnivis.loading import image_processing_of
from omnivis.tasks import TASKS
from omnivis.train.config import ModelSettings
from omnivis.train.model_setup import build_predictor

# The headline metric of a few tasks, as the issue names them.
HEADLINES = {
    "<CAPTION>": "CIDEr", "<OD>": "AP50", "<VQA>": "accuracy", "<OCR>": "CER", "<OCR_WITH_REGION>": "F1",
}  # fmt: skip
# Scenes 2-6 of the demo seed carry text lines, 0-1 do not: 3 scenes give every task something to judge.
SCENES_WITH_EVERY_TASK = 3
# Small everything: answers of 4 tokens, 4 queries a task, a baseline fitted on 20 scenes.
FAST = {"max_new_tokens": 4, "queries_per_task": 4, "baseline_records": 20, "progress": False}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random `tiny` model with 64 x 64 inputs, saved as a checkpoint directory."""
    directory = tmp_path_factory.mktemp("checkpoint") / "tiny-64"
    omnivis.save(build_predictor(ModelSettings(preset="tiny", image_size=64), seed=0), directory)
    return directory


@pytest.fixture(scope="module")
def demo_run(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[demo.DemoResult, str]:
    """One demo run on the random checkpoint, and what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = demo.run_demo(
            tmp_path_factory.mktemp("demo"), checkpoint, scenes=SCENES_WITH_EVERY_TASK, photos=1, **FAST
        )
    return result, printed.getvalue()


def _model_is_better(metric: str, model: float, baseline: float) -> bool:
    return model < baseline if metric == "CER" else model > baseline


# ----- the verdict, the rows and the table -----


def test_world_split_is_reused_only_when_it_is_the_same_split(tmp_path: Path) -> None:
    directory = tmp_path / "world"
    demo.world_split(directory, 2, demo.DEMO_SEED)
    shard = min(directory.glob("*.parquet"))
    written = shard.stat().st_mtime_ns
    demo.world_split(directory, 2, demo.DEMO_SEED)
    assert shard.stat().st_mtime_ns == written
    demo.world_split(directory, 3, demo.DEMO_SEED)
    assert read_manifest(directory).total_records == 3
    demo.world_split(directory, 3, 8)
    assert read_manifest(directory).description.endswith("seed 8, 3 scenes")


def test_the_demo_split_is_none_of_the_training_seeds() -> None:
    assert demo.DEMO_SEED == 7 and demo.TRAIN_SEED == 1


def test_default_checkpoint_is_the_committed_one_at_the_repository_root() -> None:
    assert demo.DEFAULT_CHECKPOINT == Path(__file__).resolve().parents[1] / "models" / "omnivis-tiny-world"


def test_without_the_committed_checkpoint_the_random_preset_is_shown_and_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "DEFAULT_CHECKPOINT", tmp_path / "models" / "omnivis-tiny-world")
    model, note = demo.resolve_model(None)
    assert model == "tiny" and note is not None
    assert "randomly initialised" in note and "omnivis demo --train" in note and "--model PATH" in note
    (tmp_path / "models" / "omnivis-tiny-world").mkdir(parents=True)
    assert demo.resolve_model(None) == (tmp_path / "models" / "omnivis-tiny-world", None)
    assert demo.resolve_model("other") == ("other", None)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"model": "tiny", "train": True}, "do not also give a model"),
        ({"scenes": 0}, "scenes must be an integer >= 1"),
        ({"photos": -1}, "photos must be an integer >= 0"),
        ({"photos": len(demo.PHOTOS) + 1}, "photos must be at most"),
        ({"train_steps": 0}, "train_steps must be an integer >= 1"),
        ({"train_minutes": 0}, "train_minutes must be a positive number"),
        ({"queries_per_task": 0}, "queries_per_task must be an integer >= 1"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        # Small settings: were an argument let through, the run would still end soon.
        demo.run_demo(tmp_path, **{"model": "tiny", "scenes": 1, "photos": 0, **FAST, **arguments})


def test_photo_inputs_give_every_task_a_fitting_input() -> None:
    sample = sample_images(["coffee"])[0]
    inputs = demo.photo_inputs(sample, (400, 200))
    assert list(inputs) == list(TASKS)
    assert inputs["<OD>"] is None
    assert inputs["<REGION_TO_CATEGORY>"] == (100.0, 50.0, 300.0, 150.0)  # the central half
    assert inputs["<VQA>"] == "What color is the cup?"
    assert inputs["<OPEN_VOCABULARY_DETECTION>"] == "the cup"
    assert inputs["<CAPTION_TO_PHRASE_GROUNDING>"] == "a cup of coffee on a saucer with a spoon"


# ----- a whole run -----


def test_every_task_is_in_the_printed_table_and_the_report(demo_run: tuple[demo.DemoResult, str]) -> None:
    result, printed = demo_run
    assert list(result.verdicts) == list(TASKS)
    assert list(result.metrics) == list(TASKS) and list(result.baseline_metrics) == list(TASKS)
    page = result.report.read_text(encoding="utf-8")
    for task in TASKS:
        escaped = task.replace("<", "&lt;").replace(">", "&gt;")
        assert f"<tr><th>{escaped}</th>" in page  # its row of the comparison
        assert f"<h2>{escaped}</h2>" in page  # its section: details and samples
        assert re.search(rf"^{re.escape(task)} ", printed, re.MULTILINE)
    for task, metric in HEADLINES.items():
        assert re.search(rf"^{re.escape(task)} +{re.escape(metric)} ", printed, re.MULTILINE)
    assert f"report written to {result.report}" in printed


def test_the_comparison_comes_first_and_the_photographs_say_they_have_no_truth(
    demo_run: tuple[demo.DemoResult, str],
) -> None:
    page = demo_run[0].report.read_text(encoding="utf-8")
    comparison = page.index("The model against the trivial baseline")
    first_section = page.index('<section class="task">')
    photographs = page.index("Photographs: no truth here")
    assert comparison < first_section < photographs
    assert "trained on the procedural world only" in page
    assert f"seed {demo.DEMO_SEED}" in page


def test_the_reports_images_exist_and_decode(demo_run: tuple[demo.DemoResult, str]) -> None:
    report = demo_run[0].report
    sources = re.findall(r'<img src="(gallery/[^"]+)"', report.read_text(encoding="utf-8"))
    assert len([source for source in sources if source.startswith("gallery/photo-astronaut-")]) == len(TASKS)
    assert any(source.endswith("-truth.png") for source in sources)
    for source in sources:
        with Image.open(report.parent / source) as image:
            image.verify()


def test_the_baseline_column_is_filled_and_every_verdict_matches_its_numbers(
    demo_run: tuple[demo.DemoResult, str],
) -> None:
    result = demo_run[0]
    saved = json.loads((result.report.parent / "comparison.json").read_text(encoding="utf-8"))
    assert [row["task"] for row in saved["rows"]] == list(TASKS)
    for row in saved["rows"]:
        assert row["baseline"] is not None and row["model"] is not None, row
        assert row["baseline_rule"]
        expected = BEATS if _model_is_better(row["metric"], row["model"], row["baseline"]) else DOES_NOT_BEAT
        assert row["verdict"] == expected == result.verdicts[row["task"]], row
    assert saved["baseline"] == result.baseline_metrics


def test_the_cli_runs_the_demo_with_its_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(demo, "run_demo", lambda *args, **kwargs: calls.append((args, kwargs)))
    assert main(["demo", "--train", "--train-minutes", "2.5", "--scenes", "4", "--out", str(tmp_path)]) == 0
    assert calls == [((tmp_path, None), {"train": True, "train_minutes": 2.5, "scenes": 4})]


def test_the_cli_refuses_a_model_with_train() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--model", "tiny", "--train"])
    assert exited.value.code == 2


def test_train_without_a_limit_fits_the_budget_and_asks_fewer_queries(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given: dict[str, Any] = {}

    def trained(out: Path, split: Path, **settings: Any) -> Path:
        given.update(settings, split=split)
        return checkpoint

    monkeypatch.setattr(demo, "train_demo_model", trained)
    with contextlib.redirect_stdout(io.StringIO()):
        result = demo.run_demo(
            tmp_path, train=True, train_scenes=4, scenes=SCENES_WITH_EVERY_TASK, photos=0,
            **{**FAST, "queries_per_task": None},
        )  # fmt: skip
    # 15 minutes, less 4 kept for evaluation, less the few seconds the splits took.
    assert 10.9 < given["minutes"] <= 11.0
    assert given["split"] == tmp_path / "data" / "world-train"
    # 8 queries a task, more for the tasks a short run must beat the baseline on: every VQA question of the
    # 3 scenes (fewer than TRAIN_HEADLINE_QUERIES' 1024), 3 brief captions.
    split = open_dataset(tmp_path / "data" / "world-demo")
    vqa = len(collect_queries(split, None).queries["<VQA>"])
    assert 8 < vqa < demo.TRAIN_HEADLINE_QUERIES["<VQA>"]
    assert f"at most {vqa} per task" in result.report.read_text(encoding="utf-8")


def test_train_evaluates_more_held_out_scenes_and_caps_vqa_answers(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "train_demo_model", lambda out, split, **settings: checkpoint)
    with contextlib.redirect_stdout(io.StringIO()):
        result = demo.run_demo(
            tmp_path, train=True, train_scenes=4, photos=0, **{**FAST, "max_new_tokens": 64}
        )
    held_out = read_manifest(tmp_path / "data" / "world-demo")
    assert held_out.total_records == demo.TRAIN_SCENES_HELD_OUT == 48
    report = result.report.read_text(encoding="utf-8")
    assert f"at most 64 new tokens ({demo.VQA_MAX_NEW_TOKENS} for VQA)" in report


def test_train_runs_the_whole_pipeline_and_a_rerun_replaces_the_run(tmp_path: Path) -> None:
    overrides = ["batch_size=2", "model.image_size=64"]  # 2 images of 64 px a step
    training = {"train_steps": 2, "train_scenes": 8, "train_overrides": overrides}
    with contextlib.redirect_stdout(io.StringIO()):
        result = demo.run_demo(
            tmp_path, train=True, scenes=SCENES_WITH_EVERY_TASK, photos=0, **training, **FAST
        )
    assert Path(result.model) == tmp_path / "train" / "checkpoints" / "step-00000002"
    assert read_manifest(tmp_path / "data" / "world-train").total_records == 8
    assert list(result.verdicts) == list(TASKS) and result.report.is_file()
    assert "no photographs were asked for" in result.report.read_text(encoding="utf-8")
    stages = {"world split", "training split", "training", "evaluation", "baseline", "photographs", "report"}
    assert set(result.seconds) == stages
    again = demo.train_demo_model(
        tmp_path, tmp_path / "data" / "world-train", minutes=1.0, steps=1, overrides=overrides, progress=False,
        processes=1,
    )  # fmt: skip
    assert again == tmp_path / "train" / "checkpoints" / "step-00000001"
    assert not (tmp_path / "train" / "checkpoints" / "step-00000002").exists()


def test_training_shares_the_committed_encoder_when_there_is_one(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched: list[tuple[Any, int]] = []

    def launch(config: Any, *, processes: int, progress: bool) -> Path:
        launched.append((config, processes))
        return checkpoint

    monkeypatch.setattr("omnivis.train.train_local", launch)
    arguments = {"minutes": 1.0, "steps": None, "overrides": (), "progress": False}
    monkeypatch.setattr(demo, "DEFAULT_CHECKPOINT", tmp_path / "not-committed")
    demo.train_demo_model(tmp_path, tmp_path / "split", processes=2, **arguments)
    monkeypatch.setattr(demo, "DEFAULT_CHECKPOINT", checkpoint)
    demo.train_demo_model(tmp_path, tmp_path / "split", processes=1, **arguments)
    (scratch, two), (shared, one) = launched
    assert (scratch.model.vision_init, scratch.model.freeze, scratch.model.image_size) == ("", (), 128)
    assert scratch.model.ordinal_locations
    assert shared.model.vision_init == str(checkpoint)
    assert shared.model.freeze == ("vision", "projector", "text_encoder")
    assert shared.model.vision_init_projector and shared.model.vision_init_text_encoder
    assert shared.model.vision_init_token_table and not shared.model.ordinal_locations
    assert shared.model.image_size == image_processing_of(checkpoint).size[0] == 64  # as it was saved
    # The global batch is the same whatever the number of processes.
    assert (two, scratch.batch_size, one, shared.batch_size) == (2, 8, 1, 16)
    with pytest.raises(InputError, match="processes must divide 16"):
        demo.train_demo_model(tmp_path, tmp_path / "split", processes=3, **arguments)
