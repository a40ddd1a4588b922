"""Fonts come from matplotlib's DejaVu files, and text masks report their ink exactly."""

import numpy as np
import pytest

from omnivis.errors import InputError
from omnivis.world.fonts import MASK_MARGIN, load_font, text_mask


def test_unknown_font_names_the_folder_and_the_choices() -> None:
    with pytest.raises(InputError, match=r"DejaVuSans\.ttf"):
        load_font("Comic.ttf", 12)


def test_fonts_and_masks_are_cached() -> None:
    assert load_font("DejaVuSans.ttf", 18) is load_font("DejaVuSans.ttf", 18)
    assert text_mask("apple", "DejaVuSerif.ttf", 18) is text_mask("apple", "DejaVuSerif.ttf", 18)


@pytest.mark.parametrize("text", ["apple", "STOP", "No. 5", "Push to open", "gate 12"])
def test_ink_box_is_the_tight_box_of_the_nonzero_pixels(text: str) -> None:
    mask = text_mask(text, "DejaVuSans-Bold.ttf", 22)
    pixels = np.asarray(mask.mask)
    rows, columns = np.nonzero(pixels)
    assert mask.ink == (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1)
    # Nothing is clipped: the margin around the ink stays empty.
    assert mask.ink[0] >= MASK_MARGIN - 1 and mask.ink[2] <= pixels.shape[1] - MASK_MARGIN + 1


def test_larger_sizes_write_wider_text() -> None:
    widths = [text_mask("harbor", "DejaVuSansMono.ttf", size).ink for size in (12, 18, 24)]
    spans = [box[2] - box[0] for box in widths]
    assert spans == sorted(spans) and spans[0] < spans[-1]


def test_blank_text_is_refused() -> None:
    with pytest.raises(InputError, match="no ink"):
        text_mask("   ", "DejaVuSans.ttf", 14)
