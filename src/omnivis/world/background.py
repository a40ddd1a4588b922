"""Backgrounds: flat, gradient, noise and texture fields in light colours, plus faint unannotated clutter.

A background never competes with the objects: its colours are light and barely saturated, noise and texture
move the grey level by at most `WorldConfig.background_amplitude`, and clutter marks (thin lines, rings and
specks) stray only `WorldConfig.clutter_contrast` grey levels from the colour under them. Clutter is part of
the background, so no annotation mentions it.

Everything drawn here is computed with numpy over the whole image at once and is a pure function of the
`Background` value (noise has its own seed), so rendering a scene twice gives the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from omnivis.world.config import RGB, WorldConfig

TEXTURES: tuple[str, ...] = ("lines", "grid", "waves")
TEXTURE_PERIOD = (6.0, 16.0)  # pixels between the ridges of a texture
NOISE_CELLS = (6, 24)  # a noise field is random values on a grid this coarse, smoothly interpolated
CLUTTER_KINDS: tuple[str, ...] = ("line", "ring", "dot")
CLUTTER_LINE_LENGTH = (8.0, 40.0)  # pixels
CLUTTER_RING_RADIUS = (3.0, 10.0)  # pixels
CLUTTER_DOT_RADIUS = (1.0, 2.5)  # pixels, well under the smallest object


@dataclass(frozen=True)
class ClutterMark:
    """One faint mark drawn into the background.

    Attributes:
        kind: "line" (from (x0, y0) to (x1, y1)), "ring" or "dot" (an ellipse in the box (x0, y0, x1, y1)).
        points: The line's ends or the ellipse's box.
        width: Stroke width in pixels.
        rgb: Its colour, close to the background's.
    """

    kind: str
    points: tuple[float, float, float, float]
    width: int
    rgb: RGB


@dataclass(frozen=True)
class Background:
    """How a scene's background is drawn.

    Attributes:
        kind: "flat", "gradient", "noise" or "texture".
        colour: Name of the main colour; `rgb` its value.
        second_colour: A gradient's far colour (`colour` for the other kinds); `second_rgb` its value.
        angle: Direction of the gradient or of the texture's ridges, degrees.
        texture: "lines", "grid" or "waves" (texture backgrounds only).
        period: Pixels between texture ridges.
        amplitude: Grey levels the noise or texture moves the colour by.
        noise_seed: Seeds the noise field.
        clutter: The faint marks drawn on top.
    """

    kind: str
    colour: str
    rgb: RGB
    second_colour: str
    second_rgb: RGB
    angle: float
    texture: str
    period: float
    amplitude: int
    noise_seed: int
    clutter: tuple[ClutterMark, ...]


def sample_background(rng: np.random.Generator, config: WorldConfig) -> Background:
    """Sample a background kind, its colours and parameters, and its clutter."""
    kind = config.backgrounds[int(rng.integers(len(config.backgrounds)))]
    palette = config.background_colours
    first = int(rng.integers(len(palette)))
    # A gradient runs between two different colours; other kinds use one.
    second = (first + 1 + int(rng.integers(len(palette) - 1))) % len(palette)
    colour, rgb = palette[first]
    second_colour, second_rgb = palette[second] if kind == "gradient" else (colour, rgb)
    return Background(
        kind=kind,
        colour=colour,
        rgb=rgb,
        second_colour=second_colour,
        second_rgb=second_rgb,
        angle=float(rng.uniform(0.0, 360.0)),
        texture=TEXTURES[int(rng.integers(len(TEXTURES)))],
        period=float(rng.uniform(*TEXTURE_PERIOD)),
        amplitude=config.background_amplitude,
        noise_seed=int(rng.integers(2**32)),
        clutter=_sample_clutter(rng, config, rgb),
    )


def _sample_clutter(rng: np.random.Generator, config: WorldConfig, rgb: RGB) -> tuple[ClutterMark, ...]:
    """The background's faint marks, every random number drawn in one batch per parameter."""
    count = int(rng.integers(config.clutter[0], config.clutter[1] + 1))
    kinds = rng.integers(len(CLUTTER_KINDS), size=count)
    starts = rng.uniform((0.0, 0.0), (config.width, config.height), size=(count, 2))
    lengths = rng.uniform(*CLUTTER_LINE_LENGTH, size=count)
    directions = rng.uniform(0.0, 2 * math.pi, size=count)
    ring_radii = rng.uniform(*CLUTTER_RING_RADIUS, size=count)
    dot_radii = rng.uniform(*CLUTTER_DOT_RADIUS, size=count)
    # A grey shift, lighter or darker: the mark keeps the background's hue.
    shifts = rng.choice((-1, 1), size=count) * rng.integers(
        config.clutter_contrast // 2, config.clutter_contrast + 1, size=count
    )
    widths = rng.integers(1, 3, size=count)
    marks = []
    for index in range(count):
        kind = CLUTTER_KINDS[int(kinds[index])]
        x, y = starts[index].tolist()
        if kind == "line":
            length, direction = float(lengths[index]), float(directions[index])
            points = (x, y, x + length * math.cos(direction), y + length * math.sin(direction))
        else:
            radius = float(ring_radii[index] if kind == "ring" else dot_radii[index])
            points = (x - radius, y - radius, x + radius, y + radius)
        shift = int(shifts[index])
        mark_rgb = (_channel(rgb[0] + shift), _channel(rgb[1] + shift), _channel(rgb[2] + shift))
        marks.append(
            ClutterMark(kind, (points[0], points[1], points[2], points[3]), int(widths[index]), mark_rgb)
        )
    return tuple(marks)


def _channel(value: int) -> int:
    return min(255, max(0, value))


def render_background(background: Background, width: int, height: int) -> Image.Image:
    """Draw the background, clutter included, as an RGB image of `width` x `height`.

    Every kind is one scalar field (an "L" image) coloured through a per-channel lookup table, so the
    per-pixel work happens in Pillow's C loops.
    """
    if background.kind == "flat":
        image = Image.new("RGB", (width, height), background.rgb)
    else:
        levels = np.arange(256, dtype=np.float64)
        if background.kind == "gradient":
            field = _ramp(background.angle, width, height)
            start, end = np.asarray(background.rgb, np.float64), np.asarray(background.second_rgb, np.float64)
            table = start[:, None] + (levels / 255.0)[None, :] * (end - start)[:, None]  # (3, 256)
        else:
            field = (
                _noise(background, width, height)
                if background.kind == "noise"
                else _texture(background, width, height)
            )
            # A grey shift, the same on every channel: level 0 is -amplitude, level 255 is +amplitude.
            shift = background.amplitude * (levels / 127.5 - 1.0)
            table = np.asarray(background.rgb, np.float64)[:, None] + shift[None, :]
        lookup = np.clip(np.rint(table), 0, 255).astype(np.uint8).reshape(-1).tolist()
        image = field.convert("RGB").point(lookup)
    draw = ImageDraw.Draw(image)
    for mark in background.clutter:
        if mark.kind == "line":
            draw.line(mark.points, fill=mark.rgb, width=mark.width)
        elif mark.kind == "ring":
            draw.ellipse(mark.points, outline=mark.rgb, width=mark.width)
        else:
            draw.ellipse(mark.points, fill=mark.rgb)
    return image


def _levels(values: np.ndarray) -> Image.Image:
    """An "L" image from values in [0, 1], rounded (the scale keeps 1 plus rounding error under 256)."""
    return Image.fromarray((values * np.float32(255.0 - 1e-3) + np.float32(0.5)).astype(np.uint8))


def _axis(count: int) -> np.ndarray:
    return np.arange(count, dtype=np.float32) + 0.5  # pixel centres


def _ramp(angle: float, width: int, height: int) -> Image.Image:
    """Position along direction `angle`, from 0 on one side of the image to 255 on the other."""
    radians = math.radians(angle)
    along = _axis(width)[None, :] * math.cos(radians) + _axis(height)[:, None] * math.sin(radians)
    low, high = float(along.min()), float(along.max())
    return _levels((along - low) / max(high - low, 1e-6))


def _noise(background: Background, width: int, height: int) -> Image.Image:
    """Smooth noise: a coarse grid of random levels, bicubically interpolated to the image size."""
    rng = np.random.Generator(np.random.PCG64(background.noise_seed))
    cells = int(rng.integers(NOISE_CELLS[0], NOISE_CELLS[1] + 1))
    grid = rng.integers(0, 256, size=(cells, cells), dtype=np.uint8)
    return Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)


def _texture(background: Background, width: int, height: int) -> Image.Image:
    """A periodic texture: parallel lines, a grid, or wavy lines, at levels around the middle (127.5)."""
    radians = math.radians(background.angle)
    frequency = 2 * math.pi / background.period
    x, y = frequency * _axis(width), frequency * _axis(height)
    cosine, sine = math.cos(radians), math.sin(radians)
    if background.texture == "waves":
        along = x[None, :] * cosine + y[:, None] * sine
        across = -x[None, :] * sine + y[:, None] * cosine
        values = np.sin(along + 0.25 * background.period * frequency * np.sin(0.25 * across))
    else:
        # sin(a + b) = sin a cos b + cos a sin b: outer products instead of a sine per pixel.
        values = _separable_sine(x * cosine, y * sine)
        if background.texture == "grid":
            values = 0.5 * (values + _separable_sine(-x * sine, y * cosine))
    return _levels(0.5 * (values + 1.0))


def _separable_sine(x_phase: np.ndarray, y_phase: np.ndarray) -> np.ndarray:
    """(H, W) sin(x_phase[col] + y_phase[row])."""
    return (
        np.sin(y_phase)[:, None] * np.cos(x_phase)[None, :]
        + np.cos(y_phase)[:, None] * np.sin(x_phase)[None, :]
    )
