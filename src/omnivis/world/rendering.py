"""Drawing a scene: background, then shapes in order (later ones in front), then text; and the instance map.

Shapes are drawn from their very outline polygons, so a polygon annotation and the pixels agree:

- colour: each polygon is filled with Pillow on a grid `SUPERSAMPLING` times finer than the image, and the
  block average is the pixel's coverage, so edges are anti-aliased;
- ownership: a pixel belongs to the object whose polygon holds the pixel's centre, the last one drawn winning.
  That is the rule COCO's polygon rasterizer approximates, so masks decoded from the annotations match the
  instance map up to that rasterizer's own rounding (it snaps vertices to 1/5 pixel).

The instance map holds, per pixel, 0 for background and k + 1 for `scene.objects[k]`: a shape's pixels, a
plate's pixels, and the pixels where a text's ink covers at least half the pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path
from PIL import Image, ImageDraw

from omnivis.world import geometry
from omnivis.world.background import render_background
from omnivis.world.config import RGB
from omnivis.world.scene import Scene, ShapeObject
from omnivis.world.text import TextObject, ink_layer

SUPERSAMPLING = 4  # polygons are filled on a grid this many times finer, per axis, for anti-aliased colour
INK_THRESHOLD = 128  # coverage (0-255) from which a text pixel belongs to the text in the instance map
DOT_RADIUS = 0.3  # radius of pattern dots, as a share of the pattern period
_INKED = [255 if level >= INK_THRESHOLD else 0 for level in range(256)]  # ink coverage -> 0/255 claim mask


@dataclass(frozen=True)
class RenderedScene:
    """A drawn scene.

    Attributes:
        image: The RGB image.
        instance_map: (H, W) int32: 0 for background, k + 1 where `scene.objects[k]` is drawn on top.
    """

    image: Image.Image
    instance_map: np.ndarray


def render(scene: Scene) -> RenderedScene:
    """Draw a scene and its instance map."""
    # Pillow's 32-bit integer mode: pasting a label through a 0/255 mask writes exactly the masked pixels.
    instances = Image.new("I", (scene.config.width, scene.config.height), 0)
    image = _paint(scene, instances)
    return RenderedScene(image, np.asarray(instances, dtype=np.int32))


def draw(scene: Scene) -> Image.Image:
    """Draw a scene: the same pixels as `render(scene).image`, without the cost of the instance map."""
    return _paint(scene, None)


def _paint(scene: Scene, instances: Image.Image | None) -> Image.Image:
    """Draw the background and every object in order, labelling `instances` (when given) as it goes."""
    image = render_background(scene.background, scene.config.width, scene.config.height)
    for index, item in enumerate(scene.objects):
        label = index + 1
        if isinstance(item, ShapeObject):
            points = np.asarray(item.outline).reshape(-1, 2)
            _fill_polygon(image, instances, points, label, item.rgb, item if item.pattern else None)
        else:
            _draw_text(image, instances, item, label)
    return image


def _fill_polygon(
    image: Image.Image,
    instances: Image.Image | None,
    points: np.ndarray,
    label: int,
    rgb: RGB,
    patterned: ShapeObject | None,
) -> None:
    """Fill one polygon, anti-aliased, and claim the pixels whose centres it covers."""
    left, top = (math.floor(value) for value in points.min(axis=0))
    right, bottom = (math.ceil(value) for value in points.max(axis=0))
    fine = Image.new("L", ((right - left) * SUPERSAMPLING, (bottom - top) * SUPERSAMPLING), 0)
    # Pillow fills fine pixel u when the point u lies inside (vertices cut to integers first): shifting by
    # half a fine pixel and rounding makes fine pixel u stand for its centre, (u + 0.5) / SUPERSAMPLING.
    vertices = np.rint((points - (left, top)) * SUPERSAMPLING - 0.5)
    ImageDraw.Draw(fine).polygon([(x, y) for x, y in vertices.tolist()], fill=255)
    coverage = fine.reduce(SUPERSAMPLING)  # block mean: the share of each pixel inside, 0-255
    window = (left, top, right, bottom)
    if patterned is None:
        image.paste(rgb, window, coverage)
    else:
        image.paste(Image.fromarray(_pattern_pixels(patterned, window)), window, coverage)
    if instances is not None:
        instances.paste(label, window, _centres_inside(points, window))


def _centres_inside(points: np.ndarray, window: tuple[int, int, int, int]) -> Image.Image:
    """A 0/255 "L" mask over the window: 255 where the pixel's centre lies inside the polygon.

    Computed exactly (a point-in-polygon test at every centre), not read off Pillow's fill, which also paints
    every fine pixel an edge passes through and so grows shapes by part of a fine pixel.
    """
    left, top, right, bottom = window
    x = np.arange(left, right, dtype=np.float64) + 0.5
    y = np.arange(top, bottom, dtype=np.float64) + 0.5
    centres = np.stack(np.broadcast_arrays(x[None, :], y[:, None]), axis=-1).reshape(-1, 2)
    inside = Path(points).contains_points(centres).reshape(bottom - top, right - left)
    return Image.fromarray(inside.astype(np.uint8) * np.uint8(255))


def _pattern_pixels(item: ShapeObject, window: tuple[int, int, int, int]) -> np.ndarray:
    """(h, w, 3) uint8: the shape's colour with its pattern (in the tint colour) over the window."""
    left, top, right, bottom = window
    x = np.arange(left, right, dtype=np.float64)[None, :] + 0.5
    y = np.arange(top, bottom, dtype=np.float64)[:, None] + 0.5
    rotation = geometry.rotation_matrix(item.rotation)
    # Pattern coordinates turn with the shape, in units of the pattern period.
    along = (x * rotation[0, 0] + y * rotation[0, 1]) / item.pattern_period
    across = (x * rotation[1, 0] + y * rotation[1, 1]) / item.pattern_period
    if item.pattern == "stripes":
        marked = (along % 1.0) < 0.5
    elif item.pattern == "checker":
        marked = (np.floor(along) + np.floor(across)) % 2 == 0
    else:
        marked = (along % 1.0 - 0.5) ** 2 + (across % 1.0 - 0.5) ** 2 < DOT_RADIUS**2
    pixels = np.empty((bottom - top, right - left, 3), dtype=np.uint8)
    pixels[...] = item.rgb
    pixels[marked] = item.pattern_rgb
    return pixels


def _draw_text(image: Image.Image, instances: Image.Image | None, item: TextObject, label: int) -> None:
    """Draw a text's plate (if any) and ink, and claim the plate's and the ink's pixels."""
    if item.plate_rgb is not None:
        _fill_polygon(image, instances, np.asarray(item.quad).reshape(4, 2), label, item.plate_rgb, None)
    (left, top), layer = ink_layer(item, image.width, image.height)
    window = (left, top, left + layer.width, top + layer.height)
    image.paste(item.rgb, window, layer)
    if instances is not None:
        instances.paste(label, window, layer.point(_INKED))
