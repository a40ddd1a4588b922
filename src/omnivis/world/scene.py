"""The scene graph: sampling what a world image holds, where, and what of it stays visible.

A scene is a pure function of (config, seed, index): its random stream is seeded from the three alone, so any
shard of a dataset can be generated in any process and comes out the same. Objects are placed one by one and a
placement is tried again elsewhere when it breaks a rule:

- everything lies inside the image; text keeps clear of every other object (OCR truth stays exact);
- shapes of different colours may overlap (the later one in front); shapes of the same colour keep apart, so
  two of them never merge into one blob;
- an occluded shape keeps `min_visible_fraction` of its area, loses either nothing or a noticeable part, and
  its visible part stays a set of solid polygons without holes (nothing is drawn inside another shape).

Shapes come first in `Scene.objects`, in drawing order; text objects follow, in reading order.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from dataclasses import dataclass

import numpy as np
import shapely

from omnivis.errors import InputError
from omnivis.world import geometry
from omnivis.world.background import Background, sample_background
from omnivis.world.config import RGB, VARIANTS, WorldConfig
from omnivis.world.geometry import Points
from omnivis.world.text import TEXT_CLEARANCE, TextObject, place_texts

Box = tuple[float, float, float, float]
Polygon = tuple[float, ...]

MIN_PART_AREA = 24.0  # square pixels: a visible part smaller than this would be an unreadable speck
MIN_PART_THICKNESS = 1.2  # area / perimeter of a visible part (a strip ~2.4 px wide): no slivers
MIN_HIDDEN_FRACTION = 0.05  # an occlusion hides nothing or at least this share, never an invisible nick
SAME_COLOUR_CLEARANCE = 3.0  # pixels between shapes of the same colour, which would merge if they touched
EDGE_MARGIN = 1.0  # pixels between a shape and the image border
PATTERN_TINT = 0.6  # a pattern's second colour: the shape's colour mixed this much with white
# Pixels between pattern stripes, dots or checks: a third of the radius, within these bounds.
MIN_PATTERN_PERIOD = 4.0
MAX_PATTERN_PERIOD = 8.0


@dataclass(frozen=True)
class ShapeObject:
    """A shape in the scene.

    Attributes:
        shape: Its kind, e.g. "star"; also its category.
        colour: Colour name, e.g. "red"; `rgb` is how it is drawn.
        size: Size class name, e.g. "small".
        pattern: "stripes", "dots", "checker", or None for flat colour.
        pattern_rgb: The pattern's second colour.
        pattern_period: Pixels between pattern stripes, dots or checks.
        rotation: Degrees counter-clockwise on screen (patterns turn with the shape).
        outline: The whole outline, flat x, y, ..., clockwise on screen, 1/16-pixel grid.
        visible: The parts left visible by the shapes drawn after it, largest first.
        box: (x0, y0, x1, y1) around the visible parts.
        occluders: Indices (in `Scene.objects`) of the shapes that hide part of it.
    """

    shape: str
    colour: str
    rgb: RGB
    size: str
    pattern: str | None
    pattern_rgb: RGB
    pattern_period: float
    rotation: float
    outline: Polygon
    visible: tuple[Polygon, ...]
    box: Box
    occluders: tuple[int, ...] = ()

    @property
    def category(self) -> str:
        """The detection label: the shape's name."""
        return self.shape


SceneObject = ShapeObject | TextObject


@dataclass(frozen=True)
class Scene:
    """One world image, as a graph of objects with exact geometry.

    Attributes:
        image_id: f"world-{config.name}-{seed}-{index:07d}".
        config: The world it was sampled from.
        background: How the background and its unannotated clutter are drawn.
        objects: Shapes in drawing order, then text objects in reading order.
        language_seed: Seeds the wording choices of captions and questions.
    """

    image_id: str
    config: WorldConfig
    background: Background
    objects: tuple[SceneObject, ...]
    language_seed: int

    @functools.cached_property
    def shapes(self) -> tuple[ShapeObject, ...]:
        """The shape objects, in drawing order."""
        return tuple(item for item in self.objects if isinstance(item, ShapeObject))

    @functools.cached_property
    def texts(self) -> tuple[TextObject, ...]:
        """The text objects, in reading order."""
        return tuple(item for item in self.objects if isinstance(item, TextObject))


def scene_rng(config: WorldConfig, seed: int, index: int) -> np.random.Generator:
    """The random stream of one scene: seeded by (seed, index, the variant's name) and nothing else."""
    name_key = zlib.crc32(config.name.encode("ascii"))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index, name_key])))


def image_id(config: WorldConfig, seed: int, index: int) -> str:
    """The id of a world image, e.g. "world-default-0-0000042"."""
    return f"world-{config.name}-{seed}-{index:07d}"


def sample_scene(index: int, seed: int, config: WorldConfig = VARIANTS["default"]) -> Scene:
    """Sample the scene graph of world image `index` of the dataset seeded `seed`.

    Args:
        index: The image's position in the dataset, >= 0.
        seed: The dataset's seed, >= 0.
        config: The world to sample from.

    Raises:
        InputError: A negative or non-integer index or seed.
    """
    for name, value in (("index", index), ("seed", seed)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
            raise InputError(f"world scene {name} must be a non-negative integer, got {value!r}")
    rng = scene_rng(config, int(seed), int(index))
    background = sample_background(rng, config)
    texts = place_texts(rng, config, background)
    keep_out = [shapely.Polygon(np.asarray(text.quad).reshape(4, 2)) for text in texts]
    shapes = _place_shapes(rng, config, keep_out)
    return Scene(
        image_id=image_id(config, int(seed), int(index)),
        config=config,
        background=background,
        objects=(*shapes, *texts),
        language_seed=int(rng.integers(2**63)),
    )


@dataclass
class _Placed:
    """A shape during placement: its look (geometry still empty), outline, and what of it is still visible."""

    look: ShapeObject
    outline: Points
    polygon: shapely.Polygon
    bounds: tuple[float, float, float, float]  # of the outline
    visible: shapely.Geometry
    occluders: list[int]


def _place_shapes(
    rng: np.random.Generator, config: WorldConfig, keep_out: list[shapely.Polygon]
) -> list[ShapeObject]:
    """Place up to the sampled number of shapes; one that finds no legal position is left out."""
    texts = [(text, text.bounds) for text in keep_out]
    placed: list[_Placed] = []
    image_size = np.array([config.width, config.height], dtype=np.float64)
    for _ in range(int(rng.integers(config.object_count[0], config.object_count[1] + 1))):
        look, unit = _sample_look(rng, config)
        # Centres that keep the whole outline inside the image, all attempts drawn in one batch.
        low, high = unit.min(axis=0), unit.max(axis=0)
        span_low, span_high = EDGE_MARGIN - low, image_size - high - EDGE_MARGIN
        if np.any(span_high <= span_low):
            continue
        centres = geometry.snap(rng.uniform(span_low, span_high, size=(config.placement_attempts, 2)))
        for centre, (x0, y0), (x1, y1) in zip(
            centres, (low + centres).tolist(), (high + centres).tolist(), strict=True
        ):
            outline = geometry.snap(unit + centre)
            placement = _placement(outline, (x0, y0, x1, y1), look.colour, placed, texts, config)
            if placement is None:
                continue
            polygon, updates = placement
            for other, remaining in updates.items():
                placed[other].visible = remaining
                placed[other].occluders.append(len(placed))
            placed.append(_Placed(look, outline, polygon, (x0, y0, x1, y1), polygon, []))
            break
    return [_finish(item) for item in placed]


def _sample_look(rng: np.random.Generator, config: WorldConfig) -> tuple[ShapeObject, Points]:
    """A shape's attributes (its geometry left empty) and its outline around the origin, not yet snapped."""
    # One batch of uniforms per shape: cheaper than a generator call per attribute.
    draws = rng.random(8).tolist()
    shape = config.shapes[int(draws[0] * len(config.shapes))]
    colour, rgb = config.colours[int(draws[1] * len(config.colours))]
    size, smallest, largest = config.size_classes[int(draws[2] * len(config.size_classes))]
    radius = (smallest + draws[3] * (largest - smallest)) * min(config.width, config.height)
    aspect = config.aspect_range[0] + draws[4] * (config.aspect_range[1] - config.aspect_range[0])
    rotation = config.rotation_range * (2 * draws[5] - 1)
    pattern = None
    if config.patterns and draws[6] < config.pattern_probability:
        pattern = config.patterns[int(draws[7] * len(config.patterns))]
    tint = tuple(round(channel * (1 - PATTERN_TINT) + 255 * PATTERN_TINT) for channel in rgb)
    look = ShapeObject(
        shape=shape,
        colour=colour,
        rgb=rgb,
        size=size,
        pattern=pattern,
        pattern_rgb=(tint[0], tint[1], tint[2]),
        pattern_period=min(max(radius / 3, MIN_PATTERN_PERIOD), MAX_PATTERN_PERIOD),
        rotation=rotation,
        outline=(),
        visible=(),
        box=(0.0, 0.0, 0.0, 0.0),
    )
    unit = geometry.UNIT_OUTLINES[shape](aspect) @ (radius * geometry.rotation_matrix(rotation))
    return look, unit


def _placement(
    outline: Points,
    bounds: tuple[float, float, float, float],
    colour: str,
    placed: list[_Placed],
    texts: list[tuple[shapely.Polygon, tuple[float, ...]]],
    config: WorldConfig,
) -> tuple[shapely.Polygon, dict[int, shapely.Geometry]] | None:
    """The candidate's polygon and the new visible parts of the shapes it covers; None if it breaks a rule.

    Box tests come first: most candidates are near nothing, and then no shapely predicate runs.
    """
    candidate = shapely.polygons(outline)
    for text, text_bounds in texts:
        if _boxes_near(bounds, text_bounds, TEXT_CLEARANCE) and candidate.distance(text) < TEXT_CLEARANCE:
            return None
    updates: dict[int, shapely.Geometry] = {}
    for index, other in enumerate(placed):
        if not _boxes_near(bounds, other.bounds, SAME_COLOUR_CLEARANCE):
            continue
        if other.look.colour == colour or not config.allow_occlusion:
            if candidate.distance(other.polygon) < SAME_COLOUR_CLEARANCE:
                return None
            continue
        if not candidate.intersects(other.visible):
            continue
        remaining = geometry.subtract(other.visible, candidate)
        hidden = other.visible.area - remaining.area
        whole = other.polygon.area
        if hidden < MIN_HIDDEN_FRACTION * whole or remaining.area < config.min_visible_fraction * whole:
            return None
        if not geometry.is_solid(remaining, MIN_PART_AREA, MIN_PART_THICKNESS):
            return None
        updates[index] = remaining
    return candidate, updates


def _boxes_near(first: tuple[float, ...], second: tuple[float, ...], gap: float) -> bool:
    """Whether two (x0, y0, x1, y1) boxes come within `gap` of each other: a cheap test before shapely."""
    apart_x = first[2] + gap < second[0] or second[2] + gap < first[0]
    apart_y = first[3] + gap < second[1] or second[3] + gap < first[1]
    return not (apart_x or apart_y)


def _finish(item: _Placed) -> ShapeObject:
    """The placed shape with its final geometry."""
    if item.occluders:
        parts = [geometry.exterior_points(part) for part in geometry.polygon_parts(item.visible)]
    else:
        parts = [item.outline]  # wholly visible: the outline itself, already clockwise and snapped
    return dataclasses.replace(
        item.look,
        outline=geometry.flatten(item.outline),
        visible=tuple(geometry.flatten(part) for part in parts),
        box=geometry.bounds(parts),
        occluders=tuple(item.occluders),
    )
