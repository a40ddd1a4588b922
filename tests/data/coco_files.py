"""Tiny real images for the COCO tests, made with Pillow."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_image(width: int, height: int, seed: int = 0) -> bytes:
    """A PNG of random pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_image(width: int, height: int, exif: Image.Exif | None = None) -> bytes:
    """A JPEG of one colour, optionally with EXIF data."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(
        buffer, format="JPEG", quality=90, exif=exif or Image.Exif()
    )
    return buffer.getvalue()
