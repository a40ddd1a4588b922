"""Text with real fonts: the DejaVu faces matplotlib ships, rasterized once per (text, font, size).

The fonts come from matplotlib's own data folder, so every machine renders the same glyphs without a download.
Pillow's basic layout engine is used (not raqm, which may or may not be installed) so glyph placement does not
depend on optional system libraries. Fonts and rendered text masks are cached: a scene's text is measured when
it is placed and drawn again when the scene is rendered.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from PIL import Image, ImageDraw, ImageFont

from omnivis.errors import InputError

FONT_DIRECTORY = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
MASK_MARGIN = 2  # empty pixels around the ink in a text mask, so nothing is clipped
TEXT_MASK_CACHE_SIZE = 8192  # distinct (text, font, size) masks kept in memory


@functools.cache
def load_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    """A DejaVu font from matplotlib's font folder at a pixel size.

    Raises:
        InputError: No such font file.
    """
    path = FONT_DIRECTORY / name
    if not path.is_file():
        known = sorted(file.name for file in FONT_DIRECTORY.glob("*.ttf"))
        raise InputError(f"font {name!r} is not in {FONT_DIRECTORY}; known fonts: {known}")
    return ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.BASIC)


@dataclass(frozen=True)
class TextMask:
    """One line of text rendered upright as coverage (0-255) in an "L" image.

    Attributes:
        mask: The coverage image; never modify it, it is shared through the cache.
        ink: (x0, y0, x1, y1): the pixel edges around every non-zero pixel of `mask`.
    """

    mask: Image.Image
    ink: tuple[int, int, int, int]


@functools.lru_cache(maxsize=TEXT_MASK_CACHE_SIZE)
def text_mask(text: str, font: str, size: int) -> TextMask:
    """Render `text` in `font` at `size` pixels, upright, and find its ink.

    Raises:
        InputError: The text draws no ink (blank), or the font does not exist.
    """
    face = load_font(font, size)
    left, top, right, bottom = (int(value) for value in face.getbbox(text))  # whole pixels for text layout
    width = right - left + 2 * MASK_MARGIN
    height = bottom - top + 2 * MASK_MARGIN
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).text((MASK_MARGIN - left, MASK_MARGIN - top), text, fill=255, font=face)
    ink = mask.getbbox()
    if ink is None:
        raise InputError(f"text {text!r} draws no ink in font {font} at size {size}")
    return TextMask(mask, ink)
