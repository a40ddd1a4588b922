"""Linear probes of a vision tower: what its features, pooled or per cell, still say about an image.

A sequence-to-sequence model can only name what its vision tower keeps. The loss of the whole model does not
show what the tower has lost: a tower that locates objects well but has forgotten their colours still lowers
the loss a lot (through the location tokens). A linear probe shows it in a minute: the tower's last feature
map, averaged over positions, is fitted by logistic regression (scikit-learn's, as CLIP's linear-probe
evaluation does) to a label every world record carries, on one part of the records, and scored on the rest.

`PROBE_TARGETS` holds the labels: the background colour, and the category and colour of the image's largest
shape. Chance is the majority class's share of the held-out part, given beside each accuracy. For orientation,
on the first 2,000 records of `data/world-train` at 128 px (fitted on 1,600, scored on 400; majority shares
0.16, 0.17, 0.11), measured 2026-12-04:

| features | background | largest shape's category | its colour |
|---|---|---|---|
| the `tiny` tower at random initialisation | 0.51 | 0.14 | 0.20 |
| pixels averaged to 4x4 (48 numbers) | 0.78 | 0.13 | 0.21 |
| the CPU-only checkpoint committed until 2026-12-04 | 0.16 | 0.19 | 0.07 |
| the committed `models/omnivis-tiny-world` tower, at its 256 px | 0.86 | 0.25 | 0.22 |

The earlier checkpoint's tower kept where things were (its model proposed regions at AP50 0.53) but had lost
what they are: colours below chance, where even random features carry some.

`CELL_PROBE_TARGETS` probe one cell of the last feature map at a time, for the category and the colour of the
largest shape centred in it (same records; 4x4 cells at 128 px, ~4,500 cells; majority 0.14 and 0.10): the
earlier checkpoint's tower 0.21 and 0.10; the tower of `omnivis pretrain tagging --steps 800` (per-cell softmax
targets) 0.15 and 0.69. Colours were kept where they are; shapes not told apart, pooled or per cell. The
stage-4 tower (tagging, then trained inside the model on 2 CPU cores at 128 px and on a GPU at 256 px; 8x8
cells, majority 0.14 and 0.10) gives 0.34 and 0.57: it has begun to tell shapes apart.

`TEXT_PROBE_TARGET` probes each text line's cells for which of the world's texts it shows. On the text lines of
the same 2,000 records at 256 px (82 texts, majority share 0.036), the tower of stage 5i (2026-12-05)
gives 0.056 and the one before it (5g) 0.052, while its cells name shapes at 0.80 and colours at 0.92: it
keeps where text is, hardly what it says. `WORD_PROBE_TARGET` asks each word's cell alone (105 words, majority
0.026): 0.069 for that tower, 0.511 after the tagging pre-training also named words for 130 minutes
(`omnivis.pretrain.tagging`), which lifts the line probe to 0.41; 0.21 and 0.13 after stage 5j trained that
tower inside the model at a tenth of the rate (the language loss does not keep the letters).

    results = probe_checkpoint("models/omnivis-tiny-world", "data/world-train", records=2000)
    print(format_probe_table(results))      # or: omnivis pretrain probe --model ... --data ...
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from omnivis.data.dataset import open_dataset
from omnivis.data.records import Record, Region
from omnivis.data.transforms import preprocess
from omnivis.errors import InputError
from omnivis.images import load_image
from omnivis.loading import load
from omnivis.model.davit import DaViT

# "... on a pale green to pale pink gradient background ..." -> "pale green" (a gradient's first colour).
_BACKGROUND = re.compile(r"\bon an? (?:mottled )?(.+?)(?: to .+?)? background\b")
# Records whose features are computed together (memory, not results: the tower runs in eval mode).
FEATURE_BATCH = 64
# Share of the records the probe is fitted on; the rest score it.
TRAIN_SHARE = 0.8
# Inverse L2 strength of the logistic regression (scikit-learn's `C`), on standardised features.
PROBE_REGULARIZATION = 1.0


def background_colour(record: Record) -> str | None:
    """The background's (first) colour, read from the brief caption; None when it names none."""
    caption = record.caption("brief")
    match = _BACKGROUND.search(caption) if caption else None
    return match.group(1) if match else None


def shape_colour(region: Region) -> str | None:
    """A shape's colour: the word before its category in its phrase ("large striped cyan rectangle": cyan).

    A text's phrase quotes the text instead ('word "mango"'); a COCO region's phrase is its category alone:
    neither names a colour.
    """
    words = region.phrase.split()
    if region.category and region.category != "text" and len(words) >= 2 and words[-1] == region.category:
        return words[-2]
    return None


def _largest_shape(record: Record) -> Region | None:
    """The largest region that is a coloured shape ("small red star")."""
    shapes = [region for region in record.regions if shape_colour(region) is not None]
    if not shapes:
        return None
    return max(shapes, key=_area)


def largest_shape_category(record: Record) -> str | None:
    """The category of the image's largest shape; None without shapes."""
    shape = _largest_shape(record)
    return shape.category if shape else None


def largest_shape_colour(record: Record) -> str | None:
    """The colour of the image's largest shape; None without shapes."""
    shape = _largest_shape(record)
    return shape_colour(shape) if shape else None


PROBE_TARGETS: dict[str, Callable[[Record], str | None]] = {
    "background": background_colour,
    "largest_category": largest_shape_category,
    "largest_colour": largest_shape_colour,
}

# Per-cell targets: a label of the largest coloured shape whose box centre lies in a cell of the last feature
# map, probed on that cell's features alone. Pooled features cannot say whether a tower keeps *what is where*
# (three shapes of three categories average to one vector); these can, and that is what detection, grounding
# and "what colour is the star?" need.
CELL_PROBE_TARGETS: dict[str, Callable[[Region], str | None]] = {
    "cell_category": lambda region: region.category,
    "cell_colour": shape_colour,
}


# Per text line: the last feature map averaged over the cells the line's box covers, probed for which text it
# shows. The world draws every line from a short list (82 words and phrases by default), so a tower that keeps
# the strokes tells them apart where one that keeps only "some text is here" sits at the majority share.
TEXT_PROBE_TARGET = "text_line"
# Per word: the one cell of the last feature map that holds the word's centre, probed for which word it is.
# Averaging a line's cells (above) blurs its words together; a decoder reading a line attends to each in turn.
WORD_PROBE_TARGET = "cell_word"


@dataclass(frozen=True)
class PlacedWord:
    """A word of a text line, placed along the line: its centre and its extent (width, height) in pixels."""

    text: str
    centre: tuple[float, float]
    size: tuple[float, float]


def line_words(text: str, quad: Sequence[float]) -> list[PlacedWord]:
    """The words of one text line, each placed by its characters' share of the line.

    The quad runs top left, top right, bottom right, bottom left (as the world draws it); the line's axis
    runs from the middle of its left side to the middle of its right. A word spanning characters [a, b) of
    n is centred at (a + b) / 2n along it and spans (b - a) / n of it: exact for a monospace font, within a
    letter or so for a proportional one.
    """
    if len(quad) != 8:
        raise InputError(f"a text line's quad has 8 numbers, got {len(quad)}")
    xs, ys = quad[0::2], quad[1::2]
    left = ((xs[0] + xs[3]) / 2, (ys[0] + ys[3]) / 2)
    right = ((xs[1] + xs[2]) / 2, (ys[1] + ys[2]) / 2)
    length = float(np.hypot(right[0] - left[0], right[1] - left[1]))
    height = float(np.hypot(xs[3] - xs[0], ys[3] - ys[0]))
    placed = []
    for match in re.finditer(r"\S+", text):
        share = (match.start() + match.end()) / 2 / max(len(text), 1)
        centre = (left[0] + share * (right[0] - left[0]), left[1] + share * (right[1] - left[1]))
        width = (match.end() - match.start()) / max(len(text), 1) * length
        placed.append(PlacedWord(match.group(), centre, (width, height)))
    return placed


def cell_of(point: tuple[float, float], image_size: tuple[int, int], grid: tuple[int, int]) -> int:
    """The row-major index of the (rows, columns) grid cell holding a pixel point of a (width, height) image."""
    (width, height), (rows, columns) = image_size, grid
    x = min(max(point[0] / width, 0.0), 1.0 - 1e-6) * columns
    y = min(max(point[1] / height, 0.0), 1.0 - 1e-6) * rows
    return int(y) * columns + int(x)


def cell_words(record: Record, grid: tuple[int, int]) -> list[str | None]:
    """Per cell of a (rows, columns) grid laid over the image, row-major: the longest word centred in it, or
    None. The cell of a word is the one the tagging pre-training names it in."""
    chosen: list[str | None] = [None] * (grid[0] * grid[1])
    for line in record.text_lines:
        for word in line_words(line.text, line.quad):
            cell = cell_of(word.centre, (record.width, record.height), grid)
            held = chosen[cell]
            if held is None or len(word.text) > len(held):
                chosen[cell] = word.text
    return chosen


def box_cells(
    box: Sequence[float], image_size: tuple[int, int], grid: tuple[int, int]
) -> tuple[slice, slice]:
    """The (rows, columns) slices of a (rows, columns) grid laid over a (width, height) image that a pixel box
    (x0, y0, x1, y1) touches; at least one cell each way."""
    (width, height), (rows, columns) = image_size, grid
    first_row = min(max(int(box[1] / height * rows), 0), rows - 1)
    first_column = min(max(int(box[0] / width * columns), 0), columns - 1)
    last_row = min(max(int(np.ceil(box[3] / height * rows)), first_row + 1), rows)
    last_column = min(max(int(np.ceil(box[2] / width * columns)), first_column + 1), columns)
    return slice(first_row, last_row), slice(first_column, last_column)


def _text_line_rows(maps: np.ndarray, records: Sequence[Record]) -> tuple[np.ndarray, list[str]]:
    """One row per text line, in record order: its box's cells of the record's map averaged, and its text."""
    grid = (int(maps.shape[2]), int(maps.shape[3]))
    features, labels = [], []
    for feature_map, record in zip(maps, records, strict=True):
        for line in record.text_lines:
            xs, ys = line.quad[0::2], line.quad[1::2]
            rows, columns = box_cells(
                (min(xs), min(ys), max(xs), max(ys)), (record.width, record.height), grid
            )
            features.append(feature_map[:, rows, columns].mean(axis=(1, 2)))  # (channels,)
            labels.append(line.text)
    empty = np.zeros((0, maps.shape[1]), dtype=maps.dtype)
    return (np.stack(features) if features else empty), labels


def cell_shapes(record: Record, grid: tuple[int, int]) -> list[Region | None]:
    """Per cell of a (rows, columns) grid laid over the image, row-major: the largest coloured shape whose box
    centre lies in the cell, or None. The cell of a centre is the one the tagging pre-training trains it in."""
    chosen: list[Region | None] = [None] * (grid[0] * grid[1])
    for region in record.regions:
        if shape_colour(region) is None:
            continue
        left, top, right, bottom = region.box
        cell = cell_of(((left + right) / 2, (top + bottom) / 2), (record.width, record.height), grid)
        held = chosen[cell]
        if held is None or _area(region) > _area(held):
            chosen[cell] = region
    return chosen


def _area(region: Region) -> float:
    left, top, right, bottom = region.box
    return (right - left) * (bottom - top)


@dataclass(frozen=True)
class ProbeResult:
    """One probe: held-out accuracy beside the majority class's share (chance), and the split's sizes (in
    records, or in cells for a per-cell target)."""

    target: str
    accuracy: float
    majority: float
    classes: int
    train_records: int
    test_records: int


@torch.no_grad()
def feature_maps(
    tower: DaViT,
    records: Sequence[Record],
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    """The last feature map of each record's image: (records, channels, rows, columns)."""
    was_training = tower.training
    tower.eval()
    try:
        rows = []
        for start in range(0, len(records), FEATURE_BATCH):
            batch = records[start : start + FEATURE_BATCH]
            pixels = preprocess([load_image(record.image) for record in batch], size, mean, std)
            rows.append(tower.forward_features(pixels).float())  # (batch, channels, rows, columns)
        return torch.cat(rows).numpy()
    finally:
        tower.train(was_training)


def fit_probe(features: np.ndarray, labels: Sequence[str], target: str = "") -> ProbeResult:
    """Fits a logistic-regression probe on the first `TRAIN_SHARE` of the rows and scores it on the rest.

    Raises:
        InputError: Fewer than two classes among the fitting rows, or features and labels of unequal length.
    """
    if len(features) != len(labels):
        raise InputError(f"probe {target!r}: {len(features)} feature rows but {len(labels)} labels")
    split = int(len(labels) * TRAIN_SHARE)
    train_labels, test_labels = list(labels[:split]), list(labels[split:])
    if len(set(train_labels)) < 2 or not test_labels:
        raise InputError(
            f"probe {target!r}: needs two classes to fit and records left to score; got {len(labels)} "
            f"records ({len(set(train_labels))} classes among the first {split})"
        )
    scaler = StandardScaler().fit(features[:split])
    probe = LogisticRegression(C=PROBE_REGULARIZATION, max_iter=2000)
    probe.fit(scaler.transform(features[:split]), train_labels)
    accuracy = float(probe.score(scaler.transform(features[split:]), test_labels))
    majority = Counter(test_labels).most_common(1)[0][1] / len(test_labels)
    return ProbeResult(target, accuracy, majority, len(set(labels)), split, len(test_labels))


def probe_tower(
    tower: DaViT,
    records: Sequence[Record],
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    targets: Sequence[str] | None = None,
) -> list[ProbeResult]:
    """Probes `tower` for each target (default: all of `PROBE_TARGETS`, `CELL_PROBE_TARGETS`,
    `TEXT_PROBE_TARGET` and `WORD_PROBE_TARGET`) on the records (or cells, or text lines) that carry its label.

    Raises:
        InputError: An unknown target, or too few labelled records for one.
    """
    known = [*PROBE_TARGETS, *CELL_PROBE_TARGETS, TEXT_PROBE_TARGET, WORD_PROBE_TARGET]
    names = known if targets is None else list(targets)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InputError(f"unknown probe target(s) {unknown}; known: {', '.join(known)}")
    maps = feature_maps(tower, records, size, mean, std)  # (records, channels, rows, columns)
    pooled = maps.mean(axis=(2, 3))  # (records, channels)
    cells = maps.reshape(*maps.shape[:2], -1).transpose(0, 2, 1)  # (records, rows * columns, channels)
    grid = (int(maps.shape[2]), int(maps.shape[3]))
    shapes = [cell_shapes(record, grid) for record in records]
    results = []
    for name in names:
        if name in PROBE_TARGETS:
            labels = [PROBE_TARGETS[name](record) for record in records]
            kept = [row for row, label in enumerate(labels) if label is not None]
            results.append(fit_probe(pooled[kept], [labels[row] for row in kept], name))  # type: ignore[misc]
            continue
        if name == TEXT_PROBE_TARGET:
            results.append(fit_probe(*_text_line_rows(maps, records), name))
            continue
        if name == WORD_PROBE_TARGET:
            words = [(index, cell, word) for index, record in enumerate(records)
                     for cell, word in enumerate(cell_words(record, grid)) if word is not None]  # fmt: skip
            features = np.stack([cells[index, cell] for index, cell, _ in words]) if words else cells[:0, 0]
            results.append(fit_probe(features, [word for _, _, word in words], name))
            continue
        # Rows stay in record order, so the fitted and the scored cells come from (nearly) disjoint records.
        label_of = CELL_PROBE_TARGETS[name]
        pairs = [(record_index, cell, label_of(region)) for record_index, regions in enumerate(shapes)
                 for cell, region in enumerate(regions) if region is not None]  # fmt: skip
        kept_pairs = [(record_index, cell, label) for record_index, cell, label in pairs if label is not None]
        features = (
            np.stack([cells[record_index, cell] for record_index, cell, _ in kept_pairs])
            if kept_pairs
            else np.zeros((0, cells.shape[2]), dtype=cells.dtype)
        )
        results.append(fit_probe(features, [label for _, _, label in kept_pairs], name))
    return results


def probe_checkpoint(
    model: str | Path, data: str | Path, records: int = 2000, targets: Sequence[str] | None = None
) -> list[ProbeResult]:
    """Probes the vision tower of a checkpoint (or preset) on the first `records` records of a dataset.

    Raises:
        InputError: Fewer than 10 records asked for, or a bad target.
        CheckpointError, DatasetError: An unreadable checkpoint or dataset.
    """
    if records < 10:
        raise InputError(f"a probe needs at least 10 records, got {records}")
    predictor = load(str(model))
    dataset = open_dataset(data)
    chosen = [dataset[index] for index in range(min(records, len(dataset)))]
    processing = predictor.image_processing
    return probe_tower(
        predictor.model.vision_tower, chosen, processing.size, processing.mean, processing.std, targets
    )


def format_probe_table(results: Sequence[ProbeResult]) -> str:
    """A plain-text table: target, held-out accuracy, majority share, classes."""
    lines = [f"{'target':18} {'accuracy':>8} {'majority':>8} {'classes':>7}"]
    lines += [f"{r.target:18} {r.accuracy:8.3f} {r.majority:8.3f} {r.classes:7d}" for r in results]
    return "\n".join(lines)
