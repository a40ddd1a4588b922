"""Text objects: words and short lines in real fonts, upright or turned, on the background or on a plate.

A text object's quadrilateral is the rectangle around its ink, padded by a few pixels, turned with the text:
corners clockwise on screen from the top-left corner in reading direction. The same rectangle is its region
polygon and, when it has one, its plate. Text never overlaps anything else and lies wholly inside the image,
so OCR truth is exact. Upright text is pasted at whole-pixel offsets (crisp glyphs); turned text is resampled
with the exact affine map that produced its quadrilateral.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import shapely
from PIL import Image

from omnivis.world import geometry
from omnivis.world.background import Background
from omnivis.world.config import RGB, NamedColour, WorldConfig
from omnivis.world.fonts import TextMask, text_mask

Box = tuple[float, float, float, float]
Quad = tuple[float, float, float, float, float, float, float, float]

TEXT_CLEARANCE = 3.0  # pixels between a text's quadrilateral and any other object
TEXT_EDGE_MARGIN = 1.0  # pixels between a quadrilateral and the image border
TEXT_PADDING_RATIO = 0.15  # padding between ink and quadrilateral, as a share of the font size
MIN_TEXT_PADDING = 2  # pixels; at least the spread of resampled ink, so turned ink stays inside
MIN_TEXT_CONTRAST = 100  # luminance levels between ink and what is behind it
UPRIGHT = 0.5  # degrees: text turned less than this is drawn upright


@dataclass(frozen=True)
class TextObject:
    """A word or short line written in the scene.

    Attributes:
        text: What is written.
        font: The font file's name; `font_size` its size in pixels.
        colour: Ink colour name; `rgb` its value.
        plate: The plate's colour name, or None for text on the background; `plate_rgb` its value.
        rotation: Degrees counter-clockwise on screen.
        center: (x, y) of the quadrilateral's centre.
        quad: The padded rectangle around the ink, corners clockwise from the reading direction's top left.
        box: (x0, y0, x1, y1) around `quad`.
    """

    text: str
    font: str
    font_size: int
    colour: str
    rgb: RGB
    plate: str | None
    plate_rgb: RGB | None
    rotation: float
    center: tuple[float, float]
    quad: Quad
    box: Box

    category: ClassVar[str] = "text"  # the detection label of every text object

    @property
    def occluders(self) -> tuple[int, ...]:
        """Nothing: text never overlaps another object."""
        return ()

    @property
    def visible(self) -> tuple[tuple[float, ...], ...]:
        """The region polygon: the quadrilateral, whole (text is never covered)."""
        return (self.quad,)

    @property
    def is_word(self) -> bool:
        """Whether it is a single word (no spaces) rather than a line."""
        return " " not in self.text


def luminance(rgb: RGB) -> float:
    """Perceived brightness (ITU-R BT.601 weights), 0-255."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _padding(size: int) -> int:
    return max(MIN_TEXT_PADDING, round(TEXT_PADDING_RATIO * size))


def _local_rectangle(mask: TextMask, size: int) -> np.ndarray:
    """The padded ink rectangle in mask pixel coordinates: top left, top right, bottom right, bottom left."""
    pad = _padding(size)
    x0, y0, x1, y1 = mask.ink
    return np.array(
        [[x0 - pad, y0 - pad], [x1 + pad, y0 - pad], [x1 + pad, y1 + pad], [x0 - pad, y1 + pad]],
        dtype=np.float64,
    )


def place_texts(rng: np.random.Generator, config: WorldConfig, background: Background) -> list[TextObject]:
    """Sample the scene's text objects (distinct texts, none overlapping), in reading order."""
    if rng.random() >= config.text_probability:
        return []
    placed: list[TextObject] = []
    used: set[str] = set()
    for _ in range(int(rng.integers(config.text_count[0], config.text_count[1] + 1))):
        pool = config.lines if config.lines and rng.random() < config.line_probability else config.words
        text = pool[int(rng.integers(len(pool)))]
        if text in used:
            continue
        candidate = _sample_text(rng, config, background, text, placed)
        if candidate is not None:
            placed.append(candidate)
            used.add(text)
    return reading_order(placed)


def _sample_text(
    rng: np.random.Generator, config: WorldConfig, background: Background, text: str, placed: list[TextObject]
) -> TextObject | None:
    """One text object clear of the `placed` ones, or None when no position fits."""
    font = config.fonts[int(rng.integers(len(config.fonts)))]
    size = int(config.text_sizes[int(rng.integers(len(config.text_sizes)))])
    rotation = float(rng.uniform(-config.text_rotation_range, config.text_rotation_range))
    rotation = 0.0 if abs(rotation) < UPRIGHT else rotation
    plate: NamedColour | None = None
    if config.plate_colours and rng.random() < config.plate_probability:
        plate = config.plate_colours[int(rng.integers(len(config.plate_colours)))]
    behind = [plate[1]] if plate else [background.rgb, background.second_rgb]
    margin = MIN_TEXT_CONTRAST + (0 if plate else background.amplitude)
    inks = [
        ink
        for ink in config.text_colours
        if all(abs(luminance(ink[1]) - luminance(rgb)) >= margin for rgb in behind)
    ]
    if not inks:
        return None
    ink_name, ink_rgb = inks[int(rng.integers(len(inks)))]
    mask = text_mask(text, font, size)
    rectangle = _local_rectangle(mask, size)
    local_center = rectangle.mean(axis=0)
    corners = (rectangle - local_center) @ geometry.rotation_matrix(rotation)  # around the quad's centre
    low = -corners.min(axis=0) + TEXT_EDGE_MARGIN
    high = np.array([config.width, config.height]) - corners.max(axis=0) - TEXT_EDGE_MARGIN
    if np.any(high < low):
        return None
    others = [shapely.Polygon(np.asarray(other.quad).reshape(4, 2)) for other in placed]
    for _ in range(config.placement_attempts):
        center = rng.uniform(low, high)
        if rotation == 0.0:
            # Upright text is pasted at a whole-pixel offset: its quad's corners land on integers.
            center = np.floor(center - local_center) + local_center
            if np.any(center < low) or np.any(center > high):
                continue
        center = geometry.snap(center)
        quad = geometry.snap(corners + center)
        polygon = shapely.Polygon(quad)
        if any(polygon.distance(other) < TEXT_CLEARANCE for other in others):
            continue
        return TextObject(
            text=text,
            font=font,
            font_size=size,
            colour=ink_name,
            rgb=ink_rgb,
            plate=plate[0] if plate else None,
            plate_rgb=plate[1] if plate else None,
            rotation=rotation,
            center=(float(center[0]), float(center[1])),
            quad=geometry.flatten(quad),  # type: ignore[arg-type]  # four corners: eight numbers
            box=geometry.bounds([quad]),
        )
    return None


def reading_order(texts: list[TextObject]) -> list[TextObject]:
    """Sort text objects as one reads: rows top to bottom, each row left to right.

    A text joins the current row when its vertical centre lies within the row's first text's vertical extent.
    """
    rows: list[list[TextObject]] = []
    for item in sorted(texts, key=lambda text: (text.box[1], text.box[0])):
        middle = (item.box[1] + item.box[3]) / 2
        if rows and rows[-1][0].box[1] <= middle <= rows[-1][0].box[3]:
            rows[-1].append(item)
        else:
            rows.append([item])
    return [item for row in rows for item in sorted(row, key=lambda text: text.box[0])]


def ink_layer(item: TextObject, width: int, height: int) -> tuple[tuple[int, int], Image.Image]:
    """The text's ink as coverage (an "L" image) and the whole-pixel position of its top-left corner.

    Upright text is the cached mask cropped to its quadrilateral; turned text is the mask resampled
    (bilinear) through the affine map from image to mask coordinates, over the quadrilateral's bounds.
    """
    mask = text_mask(item.text, item.font, item.font_size)
    rectangle = _local_rectangle(mask, item.font_size)
    local_center = rectangle.mean(axis=0)
    if item.rotation == 0.0:
        x0, y0 = (int(value) for value in rectangle[0])
        x1, y1 = (int(value) for value in rectangle[2])
        offset = np.asarray(item.center) - local_center
        return (int(offset[0]) + x0, int(offset[1]) + y0), mask.mask.crop((x0, y0, x1, y1))
    left = max(0, math.floor(item.box[0]) - 1)
    top = max(0, math.floor(item.box[1]) - 1)
    right = min(width, math.ceil(item.box[2]) + 1)
    bottom = min(height, math.ceil(item.box[3]) + 1)
    # Image to mask: local = (image - center) @ R.T + local_center, R the forward rotation (row vectors).
    inverse = geometry.rotation_matrix(item.rotation).T
    shift = (np.array([left, top], dtype=np.float64) - item.center) @ inverse + local_center
    coefficients = (inverse[0, 0], inverse[1, 0], shift[0], inverse[0, 1], inverse[1, 1], shift[1])
    layer = mask.mask.transform(
        (right - left, bottom - top), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR
    )
    return (left, top), layer
