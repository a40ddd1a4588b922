"""Scene graphs: deterministic, and every placement rule holds, checked with shapely on the raw outlines."""

import itertools

import numpy as np
import pytest
import shapely

from omnivis.errors import InputError
from omnivis.world import VARIANTS, sample_scene
from omnivis.world.geometry import signed_area
from omnivis.world.scene import ShapeObject
from omnivis.world.text import TEXT_CLEARANCE, TextObject

SCENES_PER_VARIANT = 60


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def scenes(request: pytest.FixtureRequest) -> list:
    return [sample_scene(index, 7, VARIANTS[request.param]) for index in range(SCENES_PER_VARIANT)]


def _points(flat: tuple[float, ...]) -> np.ndarray:
    return np.asarray(flat, dtype=np.float64).reshape(-1, 2)


def test_same_arguments_give_the_same_scene() -> None:
    assert sample_scene(3, 11) == sample_scene(3, 11)
    assert sample_scene(3, 11, VARIANTS["hard"]) == sample_scene(3, 11, VARIANTS["hard"])


def test_seed_index_and_variant_each_change_the_scene() -> None:
    base = sample_scene(3, 11)
    others = [sample_scene(3, 12), sample_scene(4, 11), sample_scene(3, 11, VARIANTS["hard"])]
    for other in others:
        assert other.objects != base.objects and other.image_id != base.image_id


def test_image_id_names_variant_seed_and_index() -> None:
    assert sample_scene(42, 5, VARIANTS["hard"]).image_id == "world-hard-5-0000042"


@pytest.mark.parametrize(("index", "seed"), [(-1, 0), (0, -3), (1.5, 0), (0, True)])
def test_bad_index_or_seed_is_refused(index: object, seed: object) -> None:
    with pytest.raises(InputError, match="non-negative integer"):
        sample_scene(index, seed)  # type: ignore[arg-type]


def test_coordinates_are_on_the_grid_and_inside_the_image(scenes: list) -> None:
    for scene in scenes:
        width, height = scene.config.width, scene.config.height
        for item in scene.objects:
            numbers = [*item.box, *(value for polygon in item.visible for value in polygon)]
            assert all(value * 16 == round(value * 16) for value in numbers)
            x0, y0, x1, y1 = item.box
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height


def test_visible_parts_are_clockwise_simple_and_bounded_by_the_box(scenes: list) -> None:
    for scene in scenes:
        for item in scene.objects:
            stacked = np.concatenate([_points(polygon) for polygon in item.visible])
            assert tuple(stacked.min(axis=0)) + tuple(stacked.max(axis=0)) == item.box
            for polygon in item.visible:
                points = _points(polygon)
                assert len({tuple(point) for point in points.tolist()}) == len(points) >= 3
                assert signed_area(points) > 0 and shapely.Polygon(points).is_valid


def test_visible_parts_are_the_outline_minus_everything_drawn_later(scenes: list) -> None:
    """Recomputed independently: outline minus the union of later outlines, in full precision."""
    for scene in scenes:
        shapes = scene.shapes
        for index, item in enumerate(shapes):
            outline = shapely.Polygon(_points(item.outline))
            later = shapely.union_all(
                [shapely.Polygon(_points(other.outline)) for other in shapes[index + 1 :]]
            )
            expected = outline.difference(later)
            visible = shapely.union_all([shapely.Polygon(_points(polygon)) for polygon in item.visible])
            # Snapping to the 1/16 grid moves a vertex by at most sqrt(2) / 32 < 0.05 pixels, so the snapped
            # parts differ from the exact difference by at most a band that wide along the outline.
            assert visible.symmetric_difference(expected).area <= 0.05 * expected.length
            assert visible.area >= scene.config.min_visible_fraction * outline.area - 1.0
            # An occluder hides part of what the shapes drawn between the two left visible.
            outlines = [shapely.Polygon(_points(other.outline)) for other in shapes]
            hidden_by = set()
            for other in range(index + 1, len(shapes)):
                still_visible = outline.difference(shapely.union_all(outlines[index + 1 : other]))
                if still_visible.intersection(outlines[other]).area > 1.0:
                    hidden_by.add(other)
            assert set(item.occluders) == hidden_by


def test_shapes_that_touch_differ_in_colour(scenes: list) -> None:
    for scene in scenes:
        shapes = scene.shapes
        for first in range(len(shapes)):
            for second in range(first + 1, len(shapes)):
                a, b = (shapely.Polygon(_points(shapes[k].outline)) for k in (first, second))
                if a.distance(b) < 2.0:
                    assert shapes[first].colour != shapes[second].colour


def test_text_keeps_clear_of_everything_and_inside_the_image(scenes: list) -> None:
    for scene in scenes:
        texts = scene.texts
        assert len({item.text for item in texts}) == len(texts)
        for item in texts:
            quad = shapely.Polygon(_points(item.quad))
            assert signed_area(_points(item.quad)) > 0
            for other in scene.objects:
                if other is not item:
                    outline = other.quad if isinstance(other, TextObject) else other.outline
                    assert quad.distance(shapely.Polygon(_points(outline))) >= TEXT_CLEARANCE - 1e-9


def test_text_is_in_reading_order(scenes: list) -> None:
    for scene in scenes:
        texts = scene.texts
        for before, after in itertools.pairwise(texts):
            same_row = before.box[1] <= (after.box[1] + after.box[3]) / 2 <= before.box[3]
            assert (before.box[0] < after.box[0]) if same_row else (before.box[1] <= after.box[1])


def test_objects_list_shapes_then_text(scenes: list) -> None:
    for scene in scenes:
        kinds = [isinstance(item, ShapeObject) for item in scene.objects]
        assert kinds == sorted(kinds, reverse=True)
        assert scene.shapes + scene.texts == scene.objects
