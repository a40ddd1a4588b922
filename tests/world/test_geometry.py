"""Outlines on the 1/16-pixel grid, their orientation, and the visible parts left by occlusion."""

import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from omnivis.world import geometry
from omnivis.world.geometry import UNIT_OUTLINES, shape_outline, signed_area, snap

VERTEX_COUNTS = {
    "circle": 32,
    "ellipse": 32,
    "square": 4,
    "rectangle": 4,
    "triangle": 3,
    "star": 10,
    "hexagon": 6,
    "cross": 12,
}


def test_signed_area_is_positive_for_clockwise_on_screen() -> None:
    # Right along the top, then down: clockwise when y points down.
    clockwise = np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 3.0], [0.0, 3.0]])
    assert signed_area(clockwise) == 6.0
    assert signed_area(clockwise[::-1]) == -6.0


def test_rotation_turns_counter_clockwise_on_screen() -> None:
    # A quarter turn counter-clockwise on screen takes "right" to "up", which is -y.
    turned = np.array([[1.0, 0.0]]) @ geometry.rotation_matrix(90.0)
    np.testing.assert_allclose(turned, [[0.0, -1.0]], atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.sampled_from(sorted(UNIT_OUTLINES)),
    x=st.floats(40, 200),
    y=st.floats(40, 200),
    radius=st.floats(8, 35),
    rotation=st.floats(-180, 180),
    aspect=st.floats(0.4, 0.8),
)
def test_outlines_are_clockwise_simple_and_snapped(
    shape: str, x: float, y: float, radius: float, rotation: float, aspect: float
) -> None:
    outline = shape_outline(shape, (x, y), radius, rotation, aspect)
    assert outline.shape == (VERTEX_COUNTS[shape], 2)
    assert np.all(outline * 16 == np.round(outline * 16))  # multiples of 1/16
    assert signed_area(outline) > 0
    polygon = shapely.Polygon(outline)
    assert polygon.is_valid
    assert math.isclose(polygon.area, signed_area(outline))
    assert len({tuple(point) for point in outline.tolist()}) == len(outline)


def test_snapped_coordinates_make_exact_box_arithmetic() -> None:
    rng = np.random.default_rng(0)
    for x0, width in snap(rng.uniform(0, 200, size=(1000, 2))).tolist():
        x1 = float(snap(np.array(x0 + width)))
        assert x0 + (x1 - x0) == x1  # COCO's x, width round trip is exact


def test_circle_radius_and_square_size_match_the_definition() -> None:
    circle = shape_outline("circle", (100, 100), 20, 0, 1)
    assert np.allclose(np.hypot(*(circle - 100).T), 20, atol=1 / 32)
    square = shape_outline("square", (100, 100), 20, 0, 1)
    assert geometry.bounds([square]) == pytest.approx(
        (100 - 16.4, 100 - 16.4, 100 + 16.4, 100 + 16.4), abs=1 / 32
    )


def test_subtracting_an_occluder_leaves_the_hand_computed_part() -> None:
    back = shapely.Polygon([(0, 0), (10, 0), (10, 10), (0, 10)])
    front = shapely.Polygon([(5, -1), (12, -1), (12, 11), (5, 11)])
    remaining = geometry.subtract(back, front)
    assert remaining.area == 50.0
    (part,) = geometry.polygon_parts(remaining)
    points = geometry.exterior_points(part)
    assert signed_area(points) > 0 and sorted(map(tuple, points.tolist())) == [
        (0, 0),
        (0, 10),
        (5, 0),
        (5, 10),
    ]


def test_is_solid_refuses_holes_and_slivers() -> None:
    square = shapely.Polygon([(0, 0), (20, 0), (20, 20), (0, 20)])
    holed = geometry.subtract(square, shapely.Polygon([(8, 8), (12, 8), (12, 12), (8, 12)]))
    assert geometry.is_solid(square, 24.0, 1.2)
    assert not geometry.is_solid(holed, 24.0, 1.2)
    sliver = geometry.subtract(square, shapely.Polygon([(1, -1), (21, -1), (21, 21), (1, 21)]))  # 1 px wide
    assert not geometry.is_solid(sliver, 10.0, 1.2)
    assert not geometry.is_solid(shapely.Polygon(), 1.0, 0.0)
