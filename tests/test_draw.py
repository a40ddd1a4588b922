"""`draw_result` renders every Florence-2 answer shape, tolerates empty and degenerate answers."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnivis import draw
from omnivis.draw import PALETTE, draw_result
from omnivis.errors import InputError
from omnivis.images import load_image

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "omnivis" / "assets" / "sample.png"
GREY = (128, 128, 128)


def _grey(width: int = 320, height: int = 240) -> Image.Image:
    return Image.new("RGB", (width, height), GREY)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def _is_palette_colour(pixel: np.ndarray) -> bool:
    return any(np.array_equal(pixel, colour) for colour in PALETTE)


EVERY_KIND = {
    "<OD>": {"bboxes": [[20.0, 40.0, 120.0, 140.0], [150.0, 60.0, 300.0, 200.0]], "labels": ["cat", "dog"]},
    "<DENSE_REGION_CAPTION>": {
        "bboxes": [[20.0, 40.0, 120.0, 140.0]],
        "labels": ["a grey cat sleeping"],
        "scores": [0.87],
    },
    "<REGION_PROPOSAL>": {
        "bboxes": [[20.0, 40.0, 120.0, 140.0], [30.0, 50.0, 90.0, 90.0]],
        "labels": ["", ""],
    },
    "<OCR_WITH_REGION>": {
        "quad_boxes": [[20.0, 40.0, 120.0, 40.0, 120.0, 140.0, 20.0, 140.0]],
        "labels": ["</s>HELLO"],
    },
    "<REFERRING_EXPRESSION_SEGMENTATION>": {
        "polygons": [[[20.0, 40.0, 120.0, 40.0, 120.0, 140.0, 20.0, 140.0]]],
        "labels": [""],
    },
    "<OPEN_VOCABULARY_DETECTION>": {
        "bboxes": [[150.0, 60.0, 300.0, 200.0]],
        "bboxes_labels": ["dog"],
        "polygons": [[[20.0, 40.0, 120.0, 40.0, 120.0, 140.0, 20.0, 140.0]]],
        "polygons_labels": ["cat"],
    },
}


@pytest.mark.parametrize("task", sorted(EVERY_KIND))
def test_every_shape_kind_marks_its_outline_and_leaves_far_pixels(task: str) -> None:
    image = _grey()
    drawn = draw_result(image, task, {task: EVERY_KIND[task]})
    assert drawn.mode == "RGB" and drawn.size == image.size
    assert image.getpixel((0, 0)) == GREY  # the input is not drawn on
    pixels = _pixels(drawn)
    assert _is_palette_colour(pixels[90, 20])  # on the left edge of the shape at x=20, y 40..140
    assert _is_palette_colour(pixels[140, 70])  # on its bottom edge
    assert pixels[230, 10].tolist() == list(GREY)  # far from every shape and label


def test_polygon_interior_is_tinted_not_hidden() -> None:
    task = "<REFERRING_EXPRESSION_SEGMENTATION>"
    pixels = _pixels(draw_result(_grey(), task, {task: EVERY_KIND[task]}))
    inside = pixels[90, 70]
    colour = np.array(PALETTE[0])
    assert not np.array_equal(inside, GREY) and not np.array_equal(inside, colour)
    mix = (inside - np.array(GREY)) / (colour - np.array(GREY) + 1e-9)  # the blend weight per channel
    assert np.all((mix > 0.2) & (mix < 0.7))
    assert pixels[90, 200].tolist() == list(GREY)  # outside the polygon stays untouched


def test_each_label_gets_its_own_colour_and_repeats_share_one() -> None:
    answer = {
        "bboxes": [[10, 10, 60, 60], [100, 10, 150, 60], [200, 10, 250, 60]],
        "labels": ["cat", "dog", "cat"],
    }
    pixels = _pixels(draw_result(_grey(), "<OD>", {"<OD>": answer}))
    cat, dog, cat_again = pixels[40, 10], pixels[40, 100], pixels[40, 200]
    assert np.array_equal(cat, cat_again) and not np.array_equal(cat, dog)


def test_unlabelled_proposals_get_distinct_colours() -> None:
    answer = {"bboxes": [[10, 10, 60, 60], [100, 10, 150, 60]], "labels": ["", ""]}
    pixels = _pixels(draw_result(_grey(), "<REGION_PROPOSAL>", {"<REGION_PROPOSAL>": answer}))
    assert not np.array_equal(pixels[40, 10], pixels[40, 100])


def test_label_tag_stays_inside_the_image_at_the_top_edge() -> None:
    image = Image.new("RGB", (200, 200), (0, 0, 0))
    pixels = _pixels(draw_result(image, "<OD>", {"<OD>": {"bboxes": [[0, 0, 80, 80]], "labels": ["cat"]}}))
    # No room above the box: the filled tag hangs inside it, just below the outline.
    tag_region = pixels[3:8, 3:15]
    assert (tag_region == np.array(PALETTE[0])).all(axis=-1).sum() > 10


def test_long_label_at_the_right_edge_is_shortened_and_kept_inside() -> None:
    image = Image.new("RGB", (160, 120), (0, 0, 0))
    answer = {"bboxes": [[150, 60, 159, 100]], "labels": ["an extremely long description " * 5]}
    pixels = _pixels(draw_result(image, "<DENSE_REGION_CAPTION>", {"<DENSE_REGION_CAPTION>": answer}))
    tag_rows = np.where((pixels == np.array(PALETTE[0])).all(axis=-1).sum(axis=1) > 100)[0]
    assert len(tag_rows) > 0  # a tag nearly as wide as the image exists, so it was moved left to fit


def test_sequence_markers_are_not_drawn() -> None:
    task = "<OCR_WITH_REGION>"
    quad = [20.0, 40.0, 120.0, 40.0, 120.0, 140.0, 20.0, 140.0]
    with_marker = draw_result(_grey(), task, {task: {"quad_boxes": [quad], "labels": ["</s>HELLO"]}})
    without = draw_result(_grey(), task, {task: {"quad_boxes": [quad], "labels": ["HELLO"]}})
    assert np.array_equal(_pixels(with_marker), _pixels(without))


def test_scores_are_added_to_the_label() -> None:
    box = {"bboxes": [[20, 40, 120, 140]], "labels": ["cat"]}
    plain = draw_result(_grey(), "<OD>", {"<OD>": box})
    scored = draw_result(_grey(), "<OD>", {"<OD>": {**box, "scores": [0.5]}})
    assert not np.array_equal(_pixels(plain), _pixels(scored))


def test_caption_banner_is_added_below_and_wraps() -> None:
    image = load_image(SAMPLE)
    short = draw_result(image, "<CAPTION>", {"<CAPTION>": "A house."})
    long = draw_result(image, "<MORE_DETAILED_CAPTION>", {"<MORE_DETAILED_CAPTION>": "a red house " * 40})
    assert short.width == long.width == image.width
    assert image.height < short.height < long.height
    assert long.height - image.height > 3 * (short.height - image.height)  # several wrapped lines
    assert np.array_equal(_pixels(long)[: image.height], _pixels(image))  # the picture itself is untouched
    banner = _pixels(short)[image.height :]
    assert (banner.max(axis=-1) > 200).sum() > 20  # light text on the dark banner


def test_unbreakable_word_wraps_instead_of_overflowing() -> None:
    image = _grey(120, 90)
    drawn = draw_result(image, "<OCR>", {"<OCR>": "x" * 200})
    assert drawn.width == 120 and drawn.height > image.height + 40


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   ",
        {"bboxes": [], "labels": []},
        {"quad_boxes": [], "labels": []},
        {"polygons": [], "labels": []},
        {"bboxes": [], "bboxes_labels": [], "polygons": [], "polygons_labels": []},
    ],
)
def test_empty_answers_give_an_unchanged_copy(answer: object) -> None:
    image = _grey()
    drawn = draw_result(image, "<TASK>", {"<TASK>": answer})
    assert drawn is not image and np.array_equal(_pixels(drawn), _pixels(image))


@pytest.mark.parametrize(
    "answer",
    [
        {"bboxes": [[120, 140, 20, 40]], "labels": ["reversed corners"]},
        {"bboxes": [[50, 50, 50, 50]], "labels": ["a point"]},
        {"bboxes": [[50, 50, 50, 90]], "labels": ["a line"]},
        {"bboxes": [[-500, -500, 10_000, 10_000]], "labels": ["larger than the image"]},
        {"bboxes": [[1000, 1000, 1100, 1100]], "labels": ["outside"]},
        {"bboxes": [[1e300, 0, 2e300, 5]], "labels": ["astronomical"]},
        {"bboxes": [[float("nan"), 0, 5, 5], [10, 10, 20, 20]], "labels": ["nan"]},
        {"bboxes": [[0, 0, float("inf"), 5], [1, 2, 3]], "labels": []},
        {"bboxes": [[10, 10, 40, 40]], "labels": [None], "scores": [float("nan")]},
        {"polygons": [[[10, 10]], [[10, 10, 40, 40]], [[10, 10, 40, 40, 70]], [[]], []], "labels": ["a"]},
        {"quad_boxes": [[10, 10, 40, 10, 40, 40], [float("nan")] * 8], "labels": ["three corners"]},
    ],
)
def test_degenerate_shapes_do_not_crash(answer: dict) -> None:
    drawn = draw_result(_grey(), "<OD>", {"<OD>": answer})
    assert drawn.size == (320, 240) and drawn.mode == "RGB"


def test_reversed_box_is_drawn_like_the_ordered_one() -> None:
    reversed_box = draw_result(_grey(), "<OD>", {"<OD>": {"bboxes": [[120, 140, 20, 40]], "labels": ["x"]}})
    ordered_box = draw_result(_grey(), "<OD>", {"<OD>": {"bboxes": [[20, 40, 120, 140]], "labels": ["x"]}})
    assert np.array_equal(_pixels(reversed_box), _pixels(ordered_box))


def test_line_width_grows_with_the_image() -> None:
    def edge_thickness(size: int) -> int:
        scale = size / 200
        answer = {"bboxes": [[20 * scale, 20 * scale, 180 * scale, 180 * scale]], "labels": [""]}
        task = "<REGION_PROPOSAL>"
        drawn = draw_result(Image.new("RGB", (size, size)), task, {task: answer})
        pixels = _pixels(drawn)
        row = pixels[size // 2]
        return int((row.max(axis=-1) > 0).sum() // 2)  # two vertical edges cross the middle row

    assert edge_thickness(2000) > 2 * edge_thickness(200)


def test_non_rgb_input_is_accepted() -> None:
    answer = {"bboxes": [[5, 5, 50, 50]], "labels": ["a"]}
    drawn = draw_result(Image.new("L", (100, 80), 50), "<OD>", {"<OD>": answer})
    assert drawn.mode == "RGB"


def test_missing_task_or_unknown_shape_raise_input_error() -> None:
    with pytest.raises(InputError, match="no answer for task '<OD>'"):
        draw_result(_grey(), "<OD>", {"<CAPTION>": "text"})
    with pytest.raises(InputError, match="cannot draw an answer of type list"):
        draw_result(_grey(), "<OD>", {"<OD>": [1, 2, 3]})
    with pytest.raises(InputError, match="cannot draw an answer with keys"):
        draw_result(_grey(), "<OD>", {"<OD>": {"boxes": []}})


@pytest.fixture
def no_truetype_fonts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pretend no TrueType font is installed, as on a minimal system."""
    monkeypatch.setattr(draw, "FONT_CANDIDATES", ("/nonexistent/NoSuchFont.ttf",))
    draw._load_font.cache_clear()
    yield
    draw._load_font.cache_clear()


def test_falls_back_to_pillows_default_font(no_truetype_fonts: None) -> None:
    drawn = draw_result(_grey(), "<OD>", {"<OD>": EVERY_KIND["<OD>"]})
    captioned = draw_result(_grey(), "<CAPTION>", {"<CAPTION>": "still readable " * 10})
    assert drawn.size == (320, 240) and captioned.height > 240


def test_numpy_scalar_coordinates_are_drawn() -> None:
    box = [np.float32(20), np.float32(40), np.float32(120), np.float32(140)]
    pixels = _pixels(draw_result(_grey(), "<OD>", {"<OD>": {"bboxes": [box], "labels": ["cat"]}}))
    assert _is_palette_colour(pixels[90, 20])
