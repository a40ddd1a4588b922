"""`image_reliance`: how much the loss rises when examples see other examples' images (0: the image is ignored)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from omnivis.demo import DEFAULT_CHECKPOINT
from omnivis.predictor import Predictor
from omnivis.train import RECIPES, apply_overrides, smoke
from omnivis.train.builders import build_loader, build_loss_settings, build_stream
from omnivis.train.config import ModelSettings
from omnivis.train.data import Batch
from omnivis.train.distributed import Runtime
from omnivis.train.image_check import image_reliance
from omnivis.train.loss import LossSettings, summed_token_loss
from omnivis.train.model_setup import build_predictor

ONE_PROCESS = Runtime(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def setup(world_train: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    # The committed checkpoint reads images (a random model's reliance is ~1e-5, within float32 noise).
    config = smoke(RECIPES["tiny-world-cpu"](), data=world_train, out=tmp_path_factory.mktemp("run"),
                   init=DEFAULT_CHECKPOINT)  # fmt: skip
    # At the checkpoint's own input size (image_size 0): the recipe's would rescale what it learnt to see.
    config = apply_overrides(config, ['model.vision_init=""', "model.image_size=0", "batch_size=4"])
    predictor = build_predictor(config.model, config.seed)
    stream = build_stream(config, predictor, ONE_PROCESS)
    batch = next(iter(build_loader(stream, 0, config, ONE_PROCESS, predictor)))
    return predictor, batch, build_loss_settings(config, predictor)


def _by_hand(predictor: Predictor, batch: Batch, settings: LossSettings, pixels: torch.Tensor) -> float:
    """The mean token loss of the batch read with `pixels`, computed directly."""
    with torch.no_grad():
        logits = predictor.model(pixels, chunks=batch.chunks)["chunk_logits"]
        total = sum(float(summed_token_loss(x, y, settings)) for x, y in zip(logits, batch.chunk_labels))
    return total / sum(int((y != -100).sum()) for y in batch.chunk_labels)


def test_it_is_the_rotated_loss_minus_the_true_loss_in_eval_mode(setup: tuple) -> None:
    predictor, batch, settings = setup
    model = predictor.model.train()
    reliance = image_reliance(model, batch, settings, contextlib.nullcontext(), ONE_PROCESS)
    assert all(module.training for module in model.modules())  # put back as it was
    model.eval()
    rotated = batch.pixel_values[torch.roll(torch.arange(batch.pixel_values.shape[0]), 1)]
    expected = _by_hand(predictor, batch, settings, rotated) - _by_hand(
        predictor, batch, settings, batch.pixel_values
    )
    assert reliance == pytest.approx(expected, rel=1e-4) and reliance > 0.01


def test_a_model_whose_image_tokens_are_constant_does_not_rely_on_the_image(setup: tuple) -> None:
    predictor, batch, settings = setup
    blind = build_predictor(
        ModelSettings(preset="tiny", image_size=predictor.model.config.image_size[0]), 0
    ).model
    blind.load_state_dict(predictor.model.state_dict())
    with torch.no_grad():
        blind.multi_modal_projector.image_projection.weight.zero_()  # every image -> the same tokens
    assert image_reliance(blind, batch, settings, contextlib.nullcontext(), ONE_PROCESS) == 0.0
