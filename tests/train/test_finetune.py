"""Fine-tuning at tiny scale: an official Florence-2 checkpoint (random weights, both official layouts)
trained with `omnivis train --preset base-finetune` on a COCO import (detection + captions).

Each test checks one thing the popular Florence-2 fine-tuning scripts get wrong: padding that counts in the
loss, freezing that does not set requires_grad, boxes at the image edge quantized to a `<loc_1000>` that does
not exist, targets longer than the decoder's position table that crash the run, and no way to keep the other
tasks in the mixture. Expected values are worked out by hand in the comments, or come from transformers.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from oracle_florence import SMALL_TEXT, SMALL_VISION, Reference, build_reference, write_remote_code_layout
from PIL import Image

import omnivis
from omnivis.cli import main
from omnivis.data.dataset import open_dataset
from omnivis.errors import DatasetError
from omnivis.tasks import examples
from omnivis.train import resolve_config, train
from omnivis.train.config import ModelSettings
from omnivis.train.data import Batch, ImageSample, TrainingStream, collate
from omnivis.train.loss import LossSettings, summed_token_loss
from omnivis.train.model_setup import build_predictor

pytestmark = pytest.mark.oracle

IMAGE_SIZE = 64  # a 2x2 grid: 5 visual tokens
POSITIONS = 32  # the text model's position table, small enough for the captions below to overflow it
TINY_VISION = dict(SMALL_VISION, projection_dim=32, max_position_embeddings=8)
TINY_TEXT = dict(
    SMALL_TEXT, d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64,
    max_position_embeddings=POSITIONS,
)  # fmt: skip
IGNORED = -100  # the label value cross-entropy skips (PyTorch's ignore_index default)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (width, height) of the COCO images. Each holds a "cat" box near the top-left corner and a "dog" box
# touching the right and bottom edges.
IMAGE_SIZES = [(80, 60), (64, 48), (50, 70), (96, 48)]
CAPTION = (
    "a brown dog with long ears sits beside a small grey cat on a striped woollen blanket near the "
    "open window of a quiet room in the soft afternoon light, picture {index}"
)
# What <OD> must say for the 64x48 image, by hand with floor(coordinate / size * 1000): cat [2, 3, 12, 15]
# gives 31.25, 62.5, 187.5, 312.5, floored to 31, 62, 187, 312 (rounding would give 31, 63, 188, 313);
# dog [44, 33, 64, 48] gives 687.5, 687.5, then 1000 for both edges: past the last bin, so 999.
# Boxes come in raster order (top-left first), as in the paper.
OD_TARGET_64X48 = "cat<loc_31><loc_62><loc_187><loc_312>dog<loc_687><loc_687><loc_999><loc_999>"
# Every CLI run: 2 steps of 2 images on the CPU, logged and checkpointed at each step.
SMALL_RUN = [
    "steps=2", "batch_size=2", "checkpoint_every=1", "log_every=1", "device=cpu", "precision=float32",
    "eval_every=0", "data.eval=",
]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """A random-init Florence-2 in the transformers-native layout, as florence-community ships it."""
    directory = tmp_path_factory.mktemp("official") / "Florence-2-tiny"
    return build_reference(directory, TINY_VISION, TINY_TEXT, image_size=IMAGE_SIZE, seed=0)


@pytest.fixture(scope="module")
def official(reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same weights in both official layouts: native, and microsoft's remote-code one (fp16 .bin)."""
    remote = tmp_path_factory.mktemp("official") / "Florence-2-tiny-remote"
    return {"native": reference.directory, "remote": write_remote_code_layout(reference, remote)}


def _png(width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_coco(root: Path) -> None:
    """instances.json, captions.json and images/ of a 4-image COCO dataset."""
    (root / "images").mkdir(parents=True)
    images, boxes, captions = [], [], []
    for index, (width, height) in enumerate(IMAGE_SIZES, start=1):
        (root / "images" / f"{index:03d}.png").write_bytes(_png(width, height, seed=index))
        images.append({"id": index, "file_name": f"{index:03d}.png", "width": width, "height": height})
        corner = [2, 3, 10, 12]
        edge = [width - 20, height - 15, 20, 15]  # x + w == width, y + h == height
        for number, (category, box) in enumerate([(2, corner), (1, edge)]):
            x, y, w, h = box
            polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
            boxes.append({"id": 10 * index + number, "image_id": index, "category_id": category, "bbox": box,
                          "area": w * h, "iscrowd": 0, "segmentation": [polygon]})  # fmt: skip
        captions.append({"id": 100 + index, "image_id": index, "caption": CAPTION.format(index=index)})
    categories = [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}]
    instances = {"images": images, "annotations": boxes, "categories": categories}
    (root / "instances.json").write_text(json.dumps(instances))
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": captions}))


@pytest.fixture(scope="module")
def coco_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The COCO files imported with `omnivis data import-coco`, as a user would."""
    root = tmp_path_factory.mktemp("coco")
    _write_coco(root)
    out = root / "my_coco_dataset"
    code = main(["data", "import-coco", str(root / "instances.json"), "--images", str(root / "images"),
                 "--captions", str(root / "captions.json"), "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


def _train_cli(init: Path, data: Path, run: Path, *overrides: str) -> int:
    """`omnivis train --preset base-finetune --init INIT --data DATA`, shrunk to 2 steps; the exit code."""
    # Options first: argparse takes the key=value overrides as one run of positionals.
    options = ["--init", str(init), "--data", str(data), "--out", str(run), "--no-progress"]
    return main(["train", "--preset", "base-finetune", *options, *SMALL_RUN, *overrides])


def _train_events(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["kind"] == "train"]


# The whole story, from both official layouts.


@pytest.mark.parametrize("layout", ["native", "remote"])
def test_base_finetune_from_an_official_checkpoint_on_a_coco_import(
    layout: str, official: dict[str, Path], coco_dataset: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert _train_cli(official[layout], coco_dataset, run) == 0

    events = _train_events(run)
    assert [event["step"] for event in events] == [1, 2]
    initial = omnivis.load(official[layout])
    dataset_tasks = {task for task, count in open_dataset(coco_dataset).manifest.tasks.items() if count}
    for event in events:
        # A random model spreads its bets evenly: its mean token loss is about ln(vocabulary). A loss summed
        # over tokens rather than averaged, or one counting padding, would land far from it.
        assert math.isfinite(event["loss"])
        assert abs(event["loss"] - math.log(initial.tokenizer.vocab_size)) < 0.3
        assert set(event["examples_by_task"]) <= dataset_tasks
    assert (run / "curve.png").read_bytes().startswith(PNG_MAGIC)
    assert "Steps: 2 of 2" in (run / "summary.md").read_text()

    # keep_last=2 keeps both checkpoints; each is an ordinary omnivis checkpoint with the official tokenizer.
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"]
    tuned = omnivis.load(run / "checkpoints" / "step-00000002")
    assert tuned.model.config.text.d_model == 32
    assert tuned.model.config.image_size == (IMAGE_SIZE, IMAGE_SIZE)
    assert tuned.tokenizer.vocab_size == initial.tokenizer.vocab_size
    assert tuned.tokenizer.location_token_id(999) == initial.tokenizer.location_token_id(999)
    answer = tuned.run(_png(64, 48, seed=9), task="<OD>", num_beams=1, max_new_tokens=8)
    assert set(answer) == {"<OD>"}


# Floor quantization: an edge-touching box is <loc_999>, never <loc_1000>.


def test_a_box_touching_the_right_and_bottom_edges_quantizes_to_bin_999(
    coco_dataset: Path, official: dict[str, Path]
) -> None:
    records = {(record.width, record.height): record for record in open_dataset(coco_dataset)}
    assert [example.target for example in examples("<OD>", records[(64, 48)])] == [OD_TARGET_64X48]
    for record in records.values():
        (target,) = [example.target for example in examples("<OD>", record)]
        assert target.endswith("<loc_999><loc_999>") and "<loc_1000>" not in target

    # The same through the training stream: the labels hold the id of <loc_999> for both far edges.
    tokenizer = omnivis.load(official["native"]).tokenizer
    stream = TrainingStream(str(coco_dataset), tokenizer, (IMAGE_SIZE, IMAGE_SIZE), {"<OD>": 1.0},
                            max_target_tokens=POSITIONS, shuffle=False)  # fmt: skip
    for position in range(len(IMAGE_SIZES)):
        (example,) = stream[position].examples
        assert example.labels.count(tokenizer.location_token_id(999)) == 2
        assert "<loc_1000>" not in tokenizer.decode(example.labels)


# Padding is masked out of the loss.


def test_padding_adds_nothing_to_the_loss(official: dict[str, Path], coco_dataset: Path) -> None:
    predictor = build_predictor(ModelSettings(init=str(official["native"])), seed=0)
    model = predictor.model.eval()  # no dropout: a row must give the same logits alone and batched
    pad, start = predictor.tokenizer.pad_token_id, predictor.generation.decoder_start_token_id
    mixture = {"<OD>": 1.0, "<CAPTION>": 1.0}
    stream = TrainingStream(str(coco_dataset), predictor.tokenizer, (IMAGE_SIZE, IMAGE_SIZE), mixture,
                            examples_per_image=2, max_target_tokens=POSITIONS, shuffle=False)  # fmt: skip
    samples = [stream[0], stream[1]]

    def logits_of(batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            outputs = model(batch.pixel_values, batch.input_ids, batch.decoder_input_ids,
                            attention_mask=batch.attention_mask, image_index=batch.image_index)  # fmt: skip
        return outputs["logits"]

    batch = collate(samples, pad, start)
    # <OD> and <CAPTION> rows differ in prompt and target length, so both sides hold padding.
    assert (batch.labels == IGNORED).any() and (batch.attention_mask == 0).any()
    batch_logits = logits_of(batch)
    batch_loss = summed_token_loss(batch_logits, batch.labels, LossSettings())

    alone_losses = []
    rows = [(sample, example) for sample in samples for example in sample.examples]
    for row, (sample, example) in enumerate(rows):
        alone = collate([ImageSample(sample.position, sample.image_id, sample.pixels, [example])], pad, start)
        assert alone.labels[0].tolist() == list(example.labels)  # a single row: no padding at all
        alone_logits = logits_of(alone)[0]
        # The padded prompt positions are masked out of attention: the real positions' logits are the same
        # (an unmasked pad moves them by ~1e-3 here).
        real = batch_logits[row, : len(example.labels)]
        torch.testing.assert_close(real, alone_logits, rtol=1e-5, atol=1e-5)
        expected = F.cross_entropy(alone_logits, alone.labels[0], reduction="sum")
        alone_losses.append(expected)
        row_loss = summed_token_loss(batch_logits[row : row + 1], batch.labels[row : row + 1], LossSettings())
        torch.testing.assert_close(row_loss, expected, rtol=0, atol=2e-4)
    torch.testing.assert_close(batch_loss, torch.stack(alone_losses).sum(), rtol=0, atol=5e-4)

    # What the popular scripts do (pad tokens left as targets) gives another number: the test can tell.
    unmasked = batch.labels.where(batch.labels != IGNORED, pad)
    naive = F.cross_entropy(batch_logits.flatten(0, 1), unmasked.flatten(), reduction="sum")
    assert float(naive) > float(batch_loss) + 1.0


# Freezing really sets requires_grad.


def test_freezing_the_vision_tower_sets_requires_grad_false(official: dict[str, Path]) -> None:
    model = build_predictor(ModelSettings(init=str(official["native"]), freeze=("vision",)), seed=0).model
    trains = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    vision = [name for name in trains if name.startswith("vision_tower.")]
    assert len(vision) > 20
    assert not any(trains[name] for name in vision)
    assert all(trainable for name, trainable in trains.items() if not name.startswith("vision_tower."))


@pytest.mark.parametrize("freeze", [True, False])
def test_a_frozen_vision_tower_leaves_the_checkpoint_bit_for_bit(
    freeze: bool, official: dict[str, Path], coco_dataset: Path, tmp_path: Path
) -> None:
    # Both towers at a rate that moves every weight visibly, so that only freezing can keep one.
    overrides = ["optim.learning_rate=1e-3", "optim.vision_learning_rate=1e-3", "optim.warmup_steps=0"]
    overrides += ["model.freeze=vision"] if freeze else []
    run = tmp_path / "run"
    assert _train_cli(official["native"], coco_dataset, run, *overrides) == 0
    before = omnivis.load(official["native"]).model.state_dict()
    after = omnivis.load(run / "checkpoints" / "step-00000002").model.state_dict()
    assert before.keys() == after.keys()
    vision = [name for name in before if name.startswith("vision_tower.")]
    unchanged = [name for name in vision if torch.equal(before[name], after[name])]
    assert unchanged == (vision if freeze else [])
    trained = ("language_model.encoder.layers.0.fc1.weight", "multi_modal_projector.image_projection.weight")
    for name in trained:
        assert not torch.equal(before[name], after[name]), name


# Targets longer than the position table are cut and counted, not a crash.


def test_targets_longer_than_the_position_table_are_cut_and_counted(
    reference: Reference, official: dict[str, Path], coco_dataset: Path, tmp_path: Path
) -> None:
    # Every caption is longer than the 32 positions (counted by transformers' tokenizer, <s> and </s>
    # included), while base-finetune allows targets of up to 1024 tokens.
    tokenize = reference.processor.tokenizer
    assert min(len(tokenize(CAPTION.format(index=i))["input_ids"]) for i in range(1, 5)) > POSITIONS
    run = tmp_path / "run"
    assert _train_cli(official["native"], coco_dataset, run, 'data.mixture={"<CAPTION>": 1}') == 0
    events = _train_events(run)
    # The count is the run's total so far: 2 captions at step 1, 2 more at step 2.
    assert [event["truncated_targets"] for event in events] == [2, 4]
    assert all(math.isfinite(event["loss"]) for event in events)
    assert "4 targets cut to the token budget" in (run / "summary.md").read_text()


def test_a_target_budget_cuts_every_longer_target(
    official: dict[str, Path], coco_dataset: Path, tmp_path: Path
) -> None:
    # Every <OD> target here is at least <s>, 2 labels, 8 location tokens and </s>: 12 > 8 tokens.
    run = tmp_path / "run"
    overrides = ["data.max_target_tokens=8", 'data.mixture={"<OD>": 1}']
    assert _train_cli(official["native"], coco_dataset, run, *overrides) == 0
    events = _train_events(run)
    assert [event["truncated_targets"] for event in events] == [2, 4]
    assert all(math.isfinite(event["loss"]) for event in events)


# Keeping a share of the original tasks.


def test_a_mixture_of_the_datasets_tasks_trains_only_those(
    official: dict[str, Path], coco_dataset: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    mixture = 'data.mixture={"<OD>": 1, "<CAPTION>": 0.3}'
    # 2 examples per image: every image supports both tasks, so each gives one of each.
    assert _train_cli(official["native"], coco_dataset, run, mixture, "data.examples_per_image=2") == 0
    events = _train_events(run)
    assert [event["examples_by_task"] for event in events] == [{"<OD>": 2, "<CAPTION>": 2}] * 2


def test_a_mixture_asking_for_tasks_the_dataset_lacks_names_them(
    official: dict[str, Path], coco_dataset: Path, tmp_path: Path
) -> None:
    overrides = [*SMALL_RUN, 'data.mixture={"<OD>": 1, "<OCR>": 0.5, "<VQA>": 0.2}']
    config = resolve_config("base-finetune", None, overrides, init=str(official["native"]),
                            data=str(coco_dataset), out=str(tmp_path / "run"))  # fmt: skip
    with pytest.raises(DatasetError, match="<OCR>, <VQA>") as raised:
        train(config, progress=False)
    assert "<OD>" in str(raised.value).split("supports", 1)[1]  # and it says what the dataset does offer
    assert not (tmp_path / "run" / "checkpoints").exists()


# A checkpoint that does not fit.


def test_a_checkpoint_whose_shapes_do_not_fit_is_refused_in_one_line(
    official: dict[str, Path], coco_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(official["native"], edited)
    config = json.loads((edited / "config.json").read_text())
    config["text_config"]["d_model"] = 64  # the weights stay 32 wide
    config["vision_config"]["projection_dim"] = 64
    (edited / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert _train_cli(edited, coco_dataset, tmp_path / "run") == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert error.startswith("omnivis: error: ")
    # The first mis-shaped tensors by name, then a count of the rest: one readable line.
    assert re.search(
        r"language_model\.\S+ has shape \(\d+(, \d+)?\), the model expects \(\d+(, \d+)?\)", error
    )
    assert "more mis-shaped tensors" in error and len(error) < 2000
    assert not (tmp_path / "run" / "checkpoints").exists()
