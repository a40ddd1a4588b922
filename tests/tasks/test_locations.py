"""Location quantization: by hand, against the reference post-processor, and its error bound."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from omnivis.errors import InputError, ParseError
from omnivis.tasks.locations import (
    NUM_BINS,
    check_image_size,
    check_pixel_box,
    dequantize,
    format_box,
    format_polygon,
    format_quad,
    location_token,
    parse_locations,
    parse_region,
    quantize,
)

SIZES = st.one_of(st.integers(1, 5000), st.floats(0.5, 5000, allow_nan=False))


@pytest.fixture(scope="module")
def reference_post_processor():
    from transformers.models.florence2.processing_florence2 import Florence2PostProcessor

    class NoTokens:
        all_special_tokens: list[str] = []

    return Florence2PostProcessor(config={}, tokenizer=NoTokens())


def test_by_hand() -> None:
    # 1000 px: one pixel per bin, the centre truncates back to the bin.
    assert quantize([0, 5.9, 999.99, 1000], (1000, 1000)) == [0, 5, 999, 999]
    assert dequantize([0, 5, 999, 999], (1000, 1000)) == [0, 5, 999, 999]
    # 640 x 480: x bins are 0.64 px, y bins 0.48 px; bin 500's centre is 320.32 px and 240.24 px.
    assert dequantize([500, 500], (640, 480)) == [320, 240]
    assert quantize([320, 240], (640, 480)) == [500, 500]
    assert dequantize([999, 999], (640, 480)) == [639, 479]  # int(999.5 * 0.64) = int(639.68)


def test_far_edge_and_beyond_clamp_to_999_never_1000() -> None:
    assert quantize([640, 480, 1e9, -5], (640, 480)) == [999, 999, 999, 0]


def test_bins_past_999_dequantize_outside_the_image() -> None:
    # A model can spell "<loc_1500>" with ordinary text tokens; the reference dequantizes it anyway.
    assert dequantize([1500, 1500], (1000, 1000)) == [1500, 1500]


def test_too_large_bin_raises_parse_error() -> None:
    with pytest.raises(ParseError, match="digits"):
        dequantize([2**63], (1000, 1000))


@pytest.mark.oracle
@settings(max_examples=400, deadline=None)
@given(
    width=SIZES,
    height=SIZES,
    fractions=st.lists(st.floats(-0.05, 1.05, allow_nan=False), min_size=4, max_size=4),
)
def test_quantize_matches_reference(reference_post_processor, width, height, fractions) -> None:
    coordinates = [
        fraction * (width if index % 2 == 0 else height) for index, fraction in enumerate(fractions)
    ]
    expected = reference_post_processor.quantize(torch.tensor([coordinates]), (width, height))[0].tolist()
    assert quantize(coordinates, (width, height)) == expected


@pytest.mark.oracle
@settings(max_examples=400, deadline=None)
@given(width=SIZES, height=SIZES, bins=st.lists(st.integers(0, 2000), min_size=4, max_size=4))
def test_dequantize_matches_reference(reference_post_processor, width, height, bins) -> None:
    expected = reference_post_processor.dequantize(torch.tensor([bins]), (width, height))[0].tolist()
    assert dequantize(bins, (width, height)) == expected
    # Points (N, 2) go through the same arithmetic.
    points = reference_post_processor.dequantize(torch.tensor(bins).reshape(-1, 2), (width, height))
    assert dequantize(bins, (width, height)) == points.flatten().tolist()


@pytest.mark.oracle
def test_bin_boundaries_match_reference(reference_post_processor) -> None:
    """Coordinates exactly on bin edges, where float32 rounding decides the bin."""
    for width in (640, 333, 1000, 1001, 7, 4096):
        edges = [index * width / NUM_BINS for index in range(NUM_BINS + 2)]
        expected = reference_post_processor.quantize(torch.tensor(edges).reshape(-1, 2), (width, width))
        assert quantize(edges, (width, width)) == expected.flatten().tolist()


@settings(max_examples=300, deadline=None)
@given(size=SIZES, fraction=st.floats(0, 1, exclude_max=True))
def test_round_trip_error_is_at_most_half_a_bin(size, fraction) -> None:
    coordinate = fraction * size
    bin_width = size / NUM_BINS
    (bin_index,) = quantize([coordinate, 0], (size, size))[:1]
    assert 0 <= bin_index < NUM_BINS
    centre = (bin_index + 0.5) * bin_width
    # float32 arithmetic may put a coordinate right on an edge into the neighbouring bin: allow for it.
    assert abs(centre - coordinate) <= bin_width / 2 + 1e-4 * size
    # The returned pixel is the centre truncated to an integer: at most one more pixel off.
    (pixel,) = dequantize([bin_index, 0], (size, size))[:1]
    assert abs(pixel - coordinate) <= bin_width / 2 + 1 + 1e-4 * size


def test_format_and_parse_regions() -> None:
    assert location_token(0) == "<loc_0>" and location_token(999) == "<loc_999>"
    assert format_box((0, 0, 640, 480), (640, 480)) == "<loc_0><loc_0><loc_999><loc_999>"
    assert format_box((320, 240, 320.5, 240.5), (640, 480)) == "<loc_500><loc_500><loc_500><loc_501>"
    assert parse_region(" <loc_1><loc_2><loc_3><loc_4> ") == [1, 2, 3, 4]
    assert parse_locations("<loc_7><loc_8>") == [7, 8]
    assert format_quad([0, 0, 10, 0, 10, 10, 0, 10], (100, 100)) == "".join(
        location_token(bin_index) for bin_index in [0, 0, 100, 0, 100, 100, 0, 100]
    )
    assert (
        format_polygon([0, 0, 50, 0, 50, 50], (100, 100))
        == "<loc_0><loc_0><loc_500><loc_0><loc_500><loc_500>"
    )


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ((math.nan, 0, 1, 1), "finite"),
        ((0, 0, math.inf, 1), "finite"),
        ((5, 0, 4, 1), "inverted"),
        ((0, 5, 1, 4), "inverted"),
        ((-1, 0, 1, 1), "outside"),
        ((0, 0, 641, 1), "outside"),
        ((0, 0, 1, 481), "outside"),
        ((0, 0, 1), "four numbers"),
        ("0 0 1 1", "four numbers"),
        ((0, 0, "1", 1), "numbers"),
        ((True, 0, 1, 1), "numbers"),
    ],
)
def test_bad_pixel_boxes_raise_input_error(box, message) -> None:
    with pytest.raises(InputError, match=message):
        check_pixel_box(box, (640, 480))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "only <loc_k>"),
        ("<loc_1><loc_2><loc_3>", "exactly 4"),
        ("<loc_1> <loc_2><loc_3><loc_4>", "only <loc_k>"),
        ("<loc_1><loc_2><loc_3><loc_1000>", "outside"),
        ("<loc_5><loc_2><loc_3><loc_4>", "inverted"),
        ("box <loc_1><loc_2><loc_3><loc_4>", "only <loc_k>"),
    ],
)
def test_bad_region_strings_raise_input_error(text, message) -> None:
    with pytest.raises(InputError, match=message):
        parse_region(text)


@pytest.mark.parametrize("size", [(0, 10), (10, -1), (math.nan, 10), (10, math.inf), (10,), ("10", 10)])
def test_bad_image_sizes_raise_input_error(size) -> None:
    with pytest.raises(InputError, match="image"):
        check_image_size(size)


def test_bad_lengths_and_bins_raise_input_error() -> None:
    with pytest.raises(InputError, match="8 coordinates"):
        format_quad([0, 0, 1, 1], (10, 10))
    with pytest.raises(InputError, match="even number"):
        format_polygon([0, 0, 1, 1, 2], (10, 10))
    with pytest.raises(InputError, match="outside"):
        location_token(NUM_BINS)
