"""Can the `tiny` DaViT learn to name the world's shapes? Two probes of learnability, from scratch, on the CPU.

    .venv/bin/python bench/shape_naming.py crops [--size 64] [--steps 400] [--batch 64] [--lr 1e-3]
    .venv/bin/python bench/shape_naming.py cells [--size 128] [--steps 300] [--batch 32] [--lr 1e-3]

`crops`: each region of the first --records scenes of data/world-train, cut out with a 15% margin and resized
to --size, is classified into the world's 9 categories (text included) by the tower's pooled features and a
linear head. `cells`: whole scenes at --size; a linear head on each cell of the last feature map names the
largest shape centred in the cell (`omnivis.eval.probe.cell_shapes`; cells without one are not scored). Both
train tower and head with AdamW and print held-out accuracy (the last 15% of crops, the last 300 scenes' cells)
beside the majority class's share. Measured 2026-12-04, 2 cores (models/README.md): crops 0.91 at step 100;
cells at 128 px at chance through step 300, at 256 px leaving chance after ~200 steps (0.35 at 300).
"""

from __future__ import annotations

import argparse
import io
import itertools
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from omnivis.data.dataset import open_dataset
from omnivis.data.records import Record
from omnivis.eval.probe import cell_shapes
from omnivis.model.davit import DaViT
from omnivis.model.presets import preset_config
from omnivis.pretrain.tagging_data import CROP_MARGIN  # the margin tagging's cut-out regions use

IGNORE = -100
MEAN, STD = 0.45, 0.25  # one normalisation for all channels; the probe needs no more
# Per mode: scenes read, input side, steps, batch (the settings of the figures quoted above).
DEFAULTS = {"crops": (1500, 64, 400, 64), "cells": (2000, 128, 300, 32)}


def _image(record: Record) -> Image.Image:
    return Image.open(io.BytesIO(record.image)).convert("RGB")


def _pixels(images: list[np.ndarray]) -> torch.Tensor:
    return (torch.tensor(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0 - MEAN) / STD  # (N, 3, S, S)


def crop_examples(records: list[Record], size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every region cut out and resized: pixels (N, 3, size, size), category indices (N,), the categories."""
    crops, names = [], []
    for record in records:
        image = _image(record)
        for region in record.regions:
            left, top, right, bottom = region.box
            margin = CROP_MARGIN * max(right - left, bottom - top)
            box = (left - margin, top - margin, right + margin, bottom + margin)
            crops.append(np.asarray(image.crop(box).resize((size, size))))
            names.append(region.category)
    classes = sorted(set(names))
    return _pixels(crops), torch.tensor([classes.index(name) for name in names]), classes


def cell_examples(records: list[Record], size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Whole scenes (N, 3, size, size) and per cell the largest centred shape's category (N, cells) or -100."""
    grid = (size // 32, size // 32)  # the tower's last map: stride 32
    images, chosen = [], []
    for record in records:
        images.append(np.asarray(_image(record).resize((size, size), Image.Resampling.BICUBIC)))
        chosen.append([None if region is None else region.category for region in cell_shapes(record, grid)])
    classes = sorted({name for row in chosen for name in row if name is not None})
    labels = [[IGNORE if name is None else classes.index(name) for name in row] for row in chosen]
    return _pixels(images), torch.tensor(labels), classes


class Namer(nn.Module):
    """The tiny tower and a linear head, on pooled features (crops) or on each cell (cells)."""

    def __init__(self, classes: int, per_cell: bool) -> None:
        super().__init__()
        config = preset_config("tiny").vision
        self.tower, self.per_cell = DaViT(config), per_cell
        self.head = nn.Linear(config.embed_dims[-1], classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.tower.forward_features(pixels)  # (B, C, h, w)
        if self.per_cell:
            return self.head(features.flatten(2).transpose(1, 2))  # (B, h*w, classes)
        return self.head(features.mean(dim=(2, 3)))  # (B, classes)


def held_out_accuracy(model: Namer, pixels: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        predicted = torch.cat([model(chunk).argmax(-1) for chunk in pixels.split(100)])
    scored = labels != IGNORE
    return float((predicted[scored] == labels[scored]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("mode", choices=sorted(DEFAULTS))
    parser.add_argument("--data", default="data/world-train")
    parser.add_argument("--records", type=int, help="scenes read (default: DEFAULTS)")
    parser.add_argument("--size", type=int, help="input side in pixels (default: DEFAULTS)")
    parser.add_argument("--steps", type=int, help="training steps (default: DEFAULTS)")
    parser.add_argument("--batch", type=int, help="examples a step (default: DEFAULTS)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    crops = args.mode == "crops"
    records_wanted, size, steps, batch = (
        given or default for given, default in zip((args.records, args.size, args.steps, args.batch),
                                                   DEFAULTS[args.mode], strict=True)
    )  # fmt: skip
    torch.manual_seed(args.seed)
    records = list(itertools.islice(open_dataset(args.data), records_wanted))
    pixels, labels, classes = (crop_examples if crops else cell_examples)(records, size)
    split = int(0.85 * len(labels)) if crops else len(labels) - 300  # held out: the last crops or scenes
    scored = labels[labels != IGNORE]
    majority = float(torch.bincount(scored).max()) / len(scored)
    print(
        f"{args.mode} at {size} px: {len(scored)} examples, {len(classes)} classes; majority {majority:.3f}"
    )
    model = Namer(len(classes), per_cell=not crops)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        chosen = torch.randint(0, split, (batch,))
        logits = model(pixels[chosen]).flatten(0, -2)  # (examples, classes): crops, or every cell
        loss = F.cross_entropy(logits, labels[chosen].flatten(), ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps:
            accuracy = held_out_accuracy(model, pixels[split:], labels[split:])
            elapsed = time.perf_counter() - started
            print(f"step {step}: loss {loss.item():.3f}, held-out accuracy {accuracy:.3f} ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
