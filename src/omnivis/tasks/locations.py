"""Location quantization: the one place where pixels become `<loc_k>` tokens and back.

Florence-2 writes every coordinate as one of 1,000 location tokens: the image's width (for x) or height
(for y) is cut into 1,000 equal bins, a pixel coordinate becomes the index of its bin, and a bin becomes the
pixel at its centre (Florence-2 paper, section 3: "quantized coordinates ... 1,000 bins").

The arithmetic matches the reference's `Florence2PostProcessor.quantize` / `dequantize` bit for bit: it runs
in float32 torch arithmetic (the dtype torch gives Python numbers) and truncates with `.int()`. The error of a
round trip is therefore at most half a bin, and a coordinate on the far edge lands in bin 999, never 1000.

Flat coordinate lists alternate x and y (`x0, y0, x1, y1, ...`): a box has four, a quadrilateral eight, a
polygon any even number.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from typing import Any

import torch

from omnivis.errors import InputError, ParseError

NUM_BINS = 1000
LOCATION_TOKEN_PATTERN = re.compile(r"<loc_(\d+)>")

# torch's int64 is the widest integer the reference can turn into a tensor; larger bins make it fail.
_LARGEST_BIN = 2**63 - 1


def location_token(bin_index: int) -> str:
    """The token text of one location bin, e.g. `location_token(7) == "<loc_7>"`."""
    if not 0 <= bin_index < NUM_BINS:
        raise InputError(f"location bin {bin_index} is outside 0..{NUM_BINS - 1}")
    return f"<loc_{bin_index}>"


def _bin_sizes(coordinate_count: int, image_size: tuple[float, float]) -> torch.Tensor:
    """Pixels per bin for each coordinate of a flat x, y, x, y, ... list, as float32."""
    width, height = image_size
    per_axis = [width / NUM_BINS, height / NUM_BINS]
    # Python floats become float32 when they meet a float32 tensor, as in the reference.
    return torch.tensor([per_axis[index % 2] for index in range(coordinate_count)], dtype=torch.float32)


def quantize(coordinates: Sequence[float], image_size: tuple[float, float]) -> list[int]:
    """Pixel coordinates to bin indices: floor(coordinate / (size / 1000)), clamped to 0..999.

    Args:
        coordinates: Flat x, y, x, y, ... pixel coordinates.
        image_size: (width, height) of the image, in pixels.

    Returns:
        One bin index per coordinate.
    """
    values = torch.tensor([float(value) for value in coordinates], dtype=torch.float32)  # (coordinates,)
    bins = torch.floor(values / _bin_sizes(len(values), image_size)).clamp(0, NUM_BINS - 1)
    return bins.int().tolist()


def dequantize(bins: Sequence[int], image_size: tuple[float, float]) -> list[int]:
    """Bin indices to the integer pixel at each bin's centre: int((bin + 0.5) * size / 1000).

    Bins past 999, which a model can spell with ordinary text tokens, are dequantized the same way the
    reference does, landing outside the image.

    Args:
        bins: Flat x, y, x, y, ... bin indices.
        image_size: (width, height) of the image, in pixels.

    Returns:
        One pixel coordinate per bin.

    Raises:
        ParseError: A bin is too large for the reference's int64 tensors.
    """
    if any(bin_index > _LARGEST_BIN for bin_index in bins):
        raise ParseError(
            f"a location bin has {max(len(str(b)) for b in bins)} digits, too many to dequantize"
        )
    indices = torch.tensor(list(bins), dtype=torch.int64)  # (coordinates,)
    centres = (indices + 0.5) * _bin_sizes(len(indices), image_size)  # float32, as in the reference
    return centres.int().tolist()


def _is_number(value: Any) -> bool:
    """A real number (numpy's included) that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_tuple(values: Any, what: str) -> tuple[Any, ...]:
    if isinstance(values, str | bytes):
        raise InputError(f"{what}, got the string {values!r}")
    try:
        return tuple(values)
    except TypeError:
        raise InputError(f"{what}, got {values!r}") from None


def check_image_size(image_size: Any) -> tuple[float, float]:
    """Validate an image size given as (width, height) and return it as a tuple.

    Raises:
        InputError: It is not two finite, positive numbers.
    """
    values = _as_tuple(image_size, "image_size must be (width, height)")
    if len(values) != 2:
        raise InputError(f"image_size must be (width, height), got {values!r}")
    for name, value in zip(("width", "height"), values, strict=True):
        if not _is_number(value):
            raise InputError(f"image {name} must be a number, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"image {name} must be a positive finite number, got {value!r}")
    return values[0], values[1]


def check_pixel_box(box: Any, image_size: Any) -> tuple[float, float, float, float]:
    """Validate a pixel box (x0, y0, x1, y1) against its image and return it as floats.

    Raises:
        InputError: The box has not four finite numbers, is inverted, or reaches outside the image.
    """
    values = _as_tuple(box, "a region box must be four numbers (x0, y0, x1, y1)")
    if len(values) != 4:
        raise InputError(f"a region box must be four numbers (x0, y0, x1, y1), got {values!r}")
    if not all(_is_number(value) for value in values):
        raise InputError(f"a region box must hold numbers, got {values!r}")
    x0, y0, x1, y1 = (float(value) for value in values)
    if not all(math.isfinite(value) for value in (x0, y0, x1, y1)):
        raise InputError(f"a region box must hold finite numbers, got {values!r}")
    if x1 < x0 or y1 < y0:
        raise InputError(f"region box {values!r} is inverted: need x0 <= x1 and y0 <= y1")
    width, height = check_image_size(image_size)
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise InputError(f"region box {values!r} reaches outside the {width} x {height} image")
    return x0, y0, x1, y1


def format_locations(bins: Sequence[int]) -> str:
    """Bin indices as consecutive location tokens, e.g. `[1, 2]` -> `"<loc_1><loc_2>"`."""
    return "".join(location_token(bin_index) for bin_index in bins)


def format_box(box: Sequence[float], image_size: tuple[float, float]) -> str:
    """A pixel box (x0, y0, x1, y1) as its four location tokens, after validating it."""
    return format_locations(quantize(check_pixel_box(box, image_size), image_size))


def format_quad(quad: Sequence[float], image_size: tuple[float, float]) -> str:
    """A quadrilateral (x0, y0, ..., x3, y3) as its eight location tokens, as OCR targets write it."""
    if len(quad) != 8:
        raise InputError(f"a quadrilateral needs 8 coordinates, got {len(quad)}")
    return format_locations(quantize(quad, check_image_size(image_size)))


def format_polygon(polygon: Sequence[float], image_size: tuple[float, float]) -> str:
    """A polygon (x0, y0, x1, y1, ...) as its location tokens, as segmentation targets write it."""
    if len(polygon) < 6 or len(polygon) % 2:
        raise InputError(f"a polygon needs an even number (at least 6) of coordinates, got {len(polygon)}")
    return format_locations(quantize(polygon, check_image_size(image_size)))


def parse_locations(text: str) -> list[int]:
    """The bin indices of a string made only of location tokens, e.g. `"<loc_1><loc_2>"` -> `[1, 2]`.

    Surrounding whitespace is ignored, as the reference strips a task's input.

    Raises:
        InputError: The string holds anything besides location tokens, or a bin outside 0..999.
    """
    stripped = text.strip()
    if not stripped or LOCATION_TOKEN_PATTERN.sub("", stripped):
        raise InputError(f"expected only <loc_k> tokens, got {text!r}")
    bins = [int(match.group(1)) for match in LOCATION_TOKEN_PATTERN.finditer(stripped)]
    for bin_index in bins:
        if bin_index >= NUM_BINS:
            raise InputError(f"location token <loc_{bin_index}> is outside <loc_0>..<loc_{NUM_BINS - 1}>")
    return bins


def parse_region(text: str) -> list[int]:
    """The four bins of a region string `"<loc_x0><loc_y0><loc_x1><loc_y1>"`, validated.

    Raises:
        InputError: It is not exactly four location tokens, or the box they describe is inverted.
    """
    bins = parse_locations(text)
    if len(bins) != 4:
        raise InputError(f"a region needs exactly 4 location tokens, got {len(bins)} in {text!r}")
    x0, y0, x1, y1 = bins
    if x1 < x0 or y1 < y0:
        raise InputError(f"region {text.strip()!r} is inverted: need x0 <= x1 and y0 <= y1")
    return bins
