"""Shape outlines and their visible parts, on the world's 1/16-pixel grid.

Every coordinate the world writes is a multiple of 1/16 pixel. Such numbers are exact in binary floating
point, so sums, differences and COCO's (x, y, width, height) round trips never drift. Outlines are drawn
exactly as written (the renderer fills these very polygons), so polygon masks match pixels.

Orientation: image y points down, so a polygon whose shoelace sum (x_i * y_(i+1) - x_(i+1) * y_i) is positive
turns clockwise on screen; every outline here does. Occlusion is computed with shapely on the same grid
(`grid_size`), so the visible parts of a partly hidden shape are valid polygons with snapped vertices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import shapely

GRID = 16  # coordinates are multiples of 1 / GRID pixel
GRID_SIZE = 1.0 / GRID
CURVE_VERTICES = 32  # vertices sampled along circles and ellipses
STAR_POINTS = 5
STAR_INNER_RATIO = 0.5  # inner / outer radius of a star: spikes thick enough to rasterize cleanly
CROSS_ARM_HALF_WIDTH = 0.34  # half the width of a cross's arm, in units of its radius
SQUARE_HALF_SIDE = 0.82  # so a square looks as large as a circle of the same radius

Points = np.ndarray  # (vertices, 2) float64, x then y


def _angles(count: int, start_degrees: float = 0.0) -> np.ndarray:
    # Increasing angles with y pointing down walk clockwise on screen.
    return np.radians(start_degrees) + np.arange(count) * (2 * math.pi / count)


def _circle(aspect: float) -> Points:
    angles = _angles(CURVE_VERTICES)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _ellipse(aspect: float) -> Points:
    angles = _angles(CURVE_VERTICES)
    return np.stack([np.cos(angles), aspect * np.sin(angles)], axis=1)


def _box(half_width: float, half_height: float) -> Points:
    # Top left, top right, bottom right, bottom left: clockwise on screen.
    return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * (half_width, half_height)


def _regular(count: int, scale: float) -> Points:
    angles = _angles(count, -90.0)  # first vertex straight up
    return scale * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(aspect: float) -> Points:
    radii = np.tile([1.1, 1.1 * STAR_INNER_RATIO], STAR_POINTS)
    angles = _angles(2 * STAR_POINTS, -90.0)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross(aspect: float) -> Points:
    w = CROSS_ARM_HALF_WIDTH
    # A plus sign traced clockwise on screen from the top arm's left corner.
    corners = [
        (-w, -1),
        (w, -1),
        (w, -w),
        (1, -w),
        (1, w),
        (w, w),
        (w, 1),
        (-w, 1),
        (-w, w),
        (-1, w),
        (-1, -w),
    ]
    return np.array([*corners, (-w, -w)], dtype=np.float64)


# Outline of each shape with radius 1 around the origin, given the aspect (short / long side) it may use.
UNIT_OUTLINES: dict[str, Callable[[float], Points]] = {
    "circle": _circle,
    "ellipse": _ellipse,
    "square": lambda aspect: _box(SQUARE_HALF_SIDE, SQUARE_HALF_SIDE),
    "rectangle": lambda aspect: _box(1.0, aspect),
    "triangle": lambda aspect: _regular(3, 1.2),
    "star": _star,
    "hexagon": lambda aspect: _regular(6, 1.0),
    "cross": _cross,
}


def snap(values: np.ndarray) -> np.ndarray:
    """Round coordinates to the nearest multiple of 1/16 pixel."""
    return np.round(np.asarray(values, dtype=np.float64) * GRID) / GRID


def rotation_matrix(degrees: float) -> np.ndarray:
    """The 2x2 matrix turning points `degrees` counter-clockwise on screen (image y points down)."""
    angle = math.radians(degrees)
    cosine, sine = math.cos(angle), math.sin(angle)
    # Row vectors: point @ matrix. (1, 0) goes to (cos, -sin): up and to the right on screen.
    return np.array([[cosine, -sine], [sine, cosine]])


def shape_outline(
    shape: str, center: Sequence[float], radius: float, rotation: float, aspect: float
) -> Points:
    """The snapped outline of a shape, clockwise on screen.

    Args:
        shape: A key of `UNIT_OUTLINES`.
        center: (x, y) in pixels.
        radius: Scale in pixels (the circle's radius; other shapes look about as large).
        rotation: Degrees counter-clockwise on screen.
        aspect: Short side over long side, for ellipses and rectangles.

    Returns:
        (vertices, 2) coordinates, multiples of 1/16.
    """
    unit = UNIT_OUTLINES[shape](aspect)
    return snap(unit @ (radius * rotation_matrix(rotation)) + np.asarray(center, dtype=np.float64))


def signed_area(points: Points) -> float:
    """The shoelace area: positive for polygons clockwise on screen, negative for counter-clockwise ones."""
    x, y = points[:, 0], points[:, 1]
    # Sum over edges i -> i + 1 (the last edge closes the ring).
    inner = float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))
    return 0.5 * (inner + float(x[-1] * y[0] - x[0] * y[-1]))


def flatten(points: Points) -> tuple[float, ...]:
    """(vertices, 2) coordinates as the flat x0, y0, x1, y1, ... tuple records hold."""
    return tuple(points.reshape(-1).tolist())


def bounds(polygons: Sequence[Points]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) around all vertices of the polygons."""
    stacked = np.concatenate(polygons, axis=0)
    x0, y0 = stacked.min(axis=0)
    x1, y1 = stacked.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def subtract(visible: shapely.Geometry, occluder: shapely.Geometry) -> shapely.Geometry:
    """What remains of `visible` once `occluder` is drawn over it, computed on the 1/16-pixel grid.

    Snapping to the grid can leave slivers collapsed to lines or points beside the polygons; they hold no
    pixels, and GEOS refuses such mixed collections as input to the next overlay, so only polygons are kept.
    """
    remaining = shapely.difference(visible, occluder, grid_size=GRID_SIZE)
    if isinstance(remaining, shapely.Polygon | shapely.MultiPolygon):
        return remaining
    return shapely.MultiPolygon(polygon_parts(remaining))


def polygon_parts(geometry: shapely.Geometry) -> list[shapely.Polygon]:
    """The non-empty polygons of a polygonal geometry, largest first (ties: leftmost, then topmost)."""
    parts = [
        part
        for part in shapely.get_parts(geometry)
        if isinstance(part, shapely.Polygon) and not part.is_empty
    ]
    return sorted(parts, key=lambda part: (-part.area, part.bounds[0], part.bounds[1]))


def is_solid(geometry: shapely.Geometry, min_area: float, min_thickness: float) -> bool:
    """Whether every part is a simple polygon (no holes) that is large and thick enough to be drawn and seen.

    Thickness is area over perimeter: half the width of a long strip, a quarter of a square's side.
    """
    parts = polygon_parts(geometry)
    if not parts:
        return False
    return all(
        not part.interiors and part.area >= min_area and part.area >= min_thickness * part.length
        for part in parts
    )


def exterior_points(polygon: shapely.Polygon) -> Points:
    """A polygon's outer ring as (vertices, 2), without the closing repeat, clockwise on screen."""
    ring = np.asarray(polygon.exterior.coords, dtype=np.float64)
    keep = np.any(ring[1:] != ring[:-1], axis=1)  # drop repeated consecutive vertices and the closing repeat
    points = ring[1:][keep]
    return points if signed_area(points) > 0 else points[::-1]
