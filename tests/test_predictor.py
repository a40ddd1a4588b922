"""The public API end to end on a random `tiny` model: answers' shapes, batching, save/load, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import omnivis
from omnivis.errors import CheckpointError, ImageError, InputError
from omnivis.tasks import TASKS

SHORT = dict(num_beams=1, max_new_tokens=12)


@pytest.fixture(scope="module")
def predictor() -> omnivis.Predictor:
    torch.manual_seed(0)
    return omnivis.load("tiny")


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8))


def _input_for(task: str, image: Image.Image):
    kind = TASKS[task].input
    return {"none": None, "text": "a red circle", "region": (10, 10, 60, 50)}[kind]


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_answers_in_its_shape(predictor: omnivis.Predictor, image: Image.Image, task: str) -> None:
    answer = predictor.run(image, task, _input_for(task, image), return_scores=True, **SHORT)
    assert list(answer) == [task]
    value = answer[task]
    parse_type = TASKS[task].parse_type
    if parse_type == "pure_text":
        assert isinstance(value, str)
    elif parse_type == "ocr":
        assert set(value) == {"quad_boxes", "labels"}
    elif parse_type == "polygons":
        assert set(value) == {"polygons", "labels"}
    elif parse_type == "description_with_bboxes_or_polygons":
        assert set(value) == {"bboxes", "bboxes_labels", "polygons", "polygons_labels", "scores"}
    else:
        assert set(value) == {"bboxes", "labels", "scores"}
        assert len(value["scores"]) == len(value["bboxes"])


def test_any_image_source_gives_the_same_answer(predictor: omnivis.Predictor, image: Image.Image, tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    image.save(path)
    expected = predictor.run(image, "<CAPTION>", **SHORT)
    assert predictor.run(path, "<CAPTION>", **SHORT) == expected
    assert predictor.run(str(path), "<CAPTION>", **SHORT) == expected
    assert predictor.run(np.asarray(image), "<CAPTION>", **SHORT) == expected


def test_a_batch_equals_single_runs(predictor: omnivis.Predictor, image: Image.Image) -> None:
    images = [image, image.rotate(90, expand=True), image.convert("L")]
    texts = ["a dog", "two red squares next to a blue circle", "sky"]
    task = "<CAPTION_TO_PHRASE_GROUNDING>"
    batched = predictor.run_batch(images, task, texts, num_beams=3, max_new_tokens=12)
    assert batched == [predictor.run(i, task, t, num_beams=3, max_new_tokens=12) for i, t in zip(images, texts)]


def test_pixel_box_and_location_string_regions_agree(predictor: omnivis.Predictor, image: Image.Image) -> None:
    width, height = image.size  # 130 x 90: (13, 9, 65, 45) is bins (100, 100, 500, 500)
    by_pixels = predictor.run(image, "<REGION_TO_CATEGORY>", (13, 9, 65, 45), **SHORT)
    by_tokens = predictor.run(image, "<REGION_TO_CATEGORY>", "<loc_100><loc_100><loc_500><loc_500>", **SHORT)
    assert by_pixels == by_tokens


def test_tasks_lists_every_prompt(predictor: omnivis.Predictor) -> None:
    listed = predictor.tasks()
    assert [entry["task"] for entry in listed] == list(TASKS)
    assert len(listed) == 16 and {entry["input"] for entry in listed} == {"none", "text", "region"}


def test_save_and_load_round_trip_without_running_checkpoint_code(
    predictor: omnivis.Predictor, image: Image.Image, tmp_path: Path
) -> None:
    directory = tmp_path / "checkpoint"
    omnivis.save(predictor, directory)
    marker = tmp_path / "imported"
    (directory / "modeling_florence2.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (directory / "processing_florence2.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    loaded = omnivis.load(directory)
    assert not marker.exists()
    for name, tensor in predictor.model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name]), name
    assert loaded.run(image, "<OD>", **SHORT) == predictor.run(image, "<OD>", **SHORT)


def test_saving_over_a_checkpoint_is_atomic(predictor: omnivis.Predictor, tmp_path: Path) -> None:
    directory = tmp_path / "checkpoint"
    omnivis.save(predictor, directory)
    before = sorted(p.name for p in directory.iterdir())
    omnivis.save(predictor, directory)
    assert sorted(p.name for p in directory.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]  # no staging directory left behind


@pytest.mark.parametrize(
    "task,text,message",
    [
        ("<FOO>", None, "unknown task"),
        ("<CAPTION_TO_PHRASE_GROUNDING>", None, "needs input text"),
        ("<OD>", "a dog", "takes no input"),
        ("<REGION_TO_CATEGORY>", None, "needs a region"),
        ("<REGION_TO_CATEGORY>", (10, 10, 500, 50), "outside"),
        ("<REGION_TO_CATEGORY>", (float("nan"), 10, 50, 50), "finite"),
    ],
)
def test_bad_task_input_is_named(predictor: omnivis.Predictor, image: Image.Image, task, text, message) -> None:
    with pytest.raises(InputError, match=message):
        predictor.run(image, task, text, **SHORT)


def test_prompt_longer_than_the_position_table_is_refused(predictor: omnivis.Predictor, image: Image.Image) -> None:
    with pytest.raises(InputError, match="position table"):
        predictor.run(image, "<CAPTION_TO_PHRASE_GROUNDING>", "word " * 600, **SHORT)


def test_bad_images_are_named(predictor: omnivis.Predictor, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg"):
        predictor.run(empty, "<CAPTION>", **SHORT)
    with pytest.raises(ImageError):
        predictor.run(tmp_path / "missing.png", "<CAPTION>", **SHORT)


def test_unknown_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="neither a checkpoint directory nor a preset"):
        omnivis.load("no-such-model")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="holds no weights"):
        omnivis.load(tmp_path)


def test_a_checkpoint_with_a_wrong_tensor_names_both_shapes(predictor: omnivis.Predictor, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    directory = tmp_path / "checkpoint"
    omnivis.save(predictor, directory)
    state = load_file(str(directory / "model.safetensors"))
    state["multi_modal_projector.image_proj_norm.bias"] = torch.zeros(3)
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"image_proj_norm.bias has shape \(3,\), the model expects \(256,\)"):
        omnivis.load(directory)
    shutil.rmtree(directory)


def test_run_tasks_equals_one_run_per_task(predictor: omnivis.Predictor, image: Image.Image) -> None:
    tasks = {task: _input_for(task, image) for task in TASKS}
    together = predictor.run_tasks(image, tasks, num_beams=3, max_new_tokens=10, return_scores=True)
    assert list(together) == list(TASKS)
    for task, text in tasks.items():
        alone = predictor.run(image, task, text, num_beams=3, max_new_tokens=10, return_scores=True)
        assert together[task] == alone[task], task


def test_presets_are_reproducible_and_leave_the_global_rng_alone(image: Image.Image) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first, second = omnivis.load("tiny"), omnivis.load("tiny")
    assert torch.equal(torch.rand(1), expected_next)
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, second.model.state_dict()[name]), name


def test_a_batch_answers_each_image_as_it_would_be_answered_alone() -> None:
    # The committed checkpoint ends its captions at different lengths: a batch pads the early finishers,
    # and that padding must not reach their answers.
    from omnivis.demo import DEFAULT_CHECKPOINT
    from omnivis.world import VARIANTS, generate_record

    trained = omnivis.load(DEFAULT_CHECKPOINT)
    images = [generate_record(index, 11, VARIANTS["default"]).image for index in range(6)]
    batch = trained.run_batch(images, "<CAPTION>", None, num_beams=1, max_new_tokens=64)
    alone = [trained.run(image, "<CAPTION>", num_beams=1, max_new_tokens=64) for image in images]
    assert batch == alone
    assert len({len(answer["<CAPTION>"]) for answer in alone}) > 1  # the lengths really differ
    assert not any("<pad>" in answer["<CAPTION>"] for answer in batch)
