"""Safe image loading: every accepted source becomes one fully decoded, upright RGB Pillow image.

`load_image` is the single door through which pictures enter omnivis. It takes a path, raw bytes, a
Pillow image or a uint8 numpy array and either returns an RGB image or raises `ImageError` with a
message naming the source and the problem. Files are treated as untrusted:

* Only the formats in `ALLOWED_FORMATS` are decoded; the decoded container format decides, never the
  file name's extension.
* The pixel count is checked against a limit (`DEFAULT_MAX_PIXELS`, overridable per call) after the
  header is read and before any pixel data is decoded. Pillow's own decompression-bomb guard only warns
  between 1x and 2x `PIL.Image.MAX_IMAGE_PIXELS`; that warning is turned into an error for our call
  alone, so the effective limit is the smaller of ours and Pillow's.
* Truncated or corrupt files are refused instead of being padded with black pixels.

Colour conversion is Pillow's plain `convert("RGB")`, after applying the EXIF orientation tag: exactly
what transformers' `image_utils.load_image` does and what the Florence-2 examples do before calling
the processor. The reference processor itself cannot be relied on for this: Florence-2's
`preprocessor_config.json` sets `do_convert_rgb` to null, so transformers 5.23 passes non-RGB images
through unconverted and fails on them (with `do_convert_rgb` true it would instead composite alpha onto
white). Consequences worth knowing: an alpha channel is dropped, not blended, so fully transparent
areas show whatever colour they store (often black); 16-bit greyscale ("I;16") and 32-bit ("I", "F")
images are clipped to 0..255 rather than rescaled.
"""

import contextlib
import io
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TypeAlias

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from omnivis.errors import ImageError

ImageSource: TypeAlias = str | os.PathLike[str] | bytes | bytearray | Image.Image | np.ndarray

ALLOWED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"})

# Pillow's JPEG reader reports a JPEG that carries extra pictures (as many phone cameras write) as
# "MPO"; its first picture is an ordinary JPEG frame, so it passes as JPEG.
_DECODED_FORMATS: frozenset[str] = ALLOWED_FORMATS | {"MPO"}

# About 67 megapixels: far above anything the model benefits from (it sees 768x768), yet small enough
# that one decoded RGB image stays under 200 MB.
DEFAULT_MAX_PIXELS: int = 2**26

# Exceptions Pillow's decoders raise on malformed data, besides OSError (which covers truncation).
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    struct.error,
    zlib.error,
)

# Pillow reads LOAD_TRUNCATED_IMAGES as a module global while decoding; when some other code has set
# it to True we pin it back to False for the length of our decode, and the lock keeps two of our own
# decodes from restoring each other's value out of order.
_TRUNCATION_SETTING_LOCK = threading.Lock()


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load an image from a path, bytes, a Pillow image or a numpy array, as upright RGB.

    The EXIF orientation is applied and the mode converted with Pillow's `convert("RGB")`, as the
    reference pipeline does (transformers' `load_image`); an alpha channel is therefore dropped, not
    composited (see the module docstring). GIF and TIFF files give their first frame. Nothing is
    written anywhere.

    Args:
        source: A file path; the encoded bytes of a file; a Pillow image (any mode; it is not
            modified); or a uint8 array shaped (height, width), (height, width, 1), (height, width, 3)
            for RGB or (height, width, 4) for RGBA (alpha dropped).
        max_pixels: Largest accepted width * height, checked before pixel data is decoded. Pillow's
            own decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`) still applies on top of it.

    Returns:
        A new, fully loaded image in mode "RGB".

    Raises:
        ImageError: The source is missing, unreadable, empty, truncated, corrupt, of a format outside
            `ALLOWED_FORMATS`, over the pixel limit, or an array of the wrong dtype or shape.
    """
    if isinstance(source, Image.Image):
        image = _checked_pillow_image(source, max_pixels)
    elif isinstance(source, np.ndarray):
        return _image_from_array(source, max_pixels)
    elif isinstance(source, (bytes, bytearray)):
        image = _decode_bytes(bytes(source), max_pixels)
    elif isinstance(source, (str, os.PathLike)):
        image = _decode_file(source, max_pixels)
    else:
        raise ImageError(
            f"unsupported image source of type {type(source).__name__}: pass a file path, bytes, "
            "a PIL image or a uint8 numpy array"
        )
    upright = _apply_exif_orientation(image, _describe(source))
    return _convert_to_rgb(upright, _describe(source))


def _describe(source: ImageSource) -> str:
    """Name a source for error messages: its path, or what kind of in-memory object it is."""
    if isinstance(source, (str, os.PathLike)):
        return f"image file {os.fspath(source)!r}"
    if isinstance(source, (bytes, bytearray)):
        return f"image bytes ({len(source)} bytes)"
    return "PIL image"


def _decode_file(source: str | os.PathLike[str], max_pixels: int) -> Image.Image:
    """Open and fully decode the file at `source`, turning every failure into an `ImageError`."""
    description = _describe(source)
    if os.fspath(source).startswith(("http://", "https://")):
        raise ImageError(f"{description}: URLs are not supported; download the image and pass its path")
    path = Path(source)
    if not path.exists():
        raise ImageError(f"{description}: no such file")
    if path.is_dir():
        raise ImageError(f"{description}: is a directory, not an image file")
    try:
        with path.open("rb") as stream:
            if os.fstat(stream.fileno()).st_size == 0:
                raise ImageError(f"{description}: the file is empty (0 bytes)")
            return _decode_stream(stream, description, max_pixels)
    except ImageError:
        raise
    except OSError as error:
        raise ImageError(f"{description}: cannot be read ({error.strerror or error})") from error


def _decode_bytes(data: bytes, max_pixels: int) -> Image.Image:
    """Fully decode an encoded image held in memory."""
    description = _describe(data)
    if not data:
        raise ImageError(f"{description}: no data (0 bytes)")
    return _decode_stream(io.BytesIO(data), description, max_pixels)


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    """Make Pillow raise on decompression bombs and truncated data for the duration of one decode.

    `warnings.catch_warnings` restores the warning filters on exit, so other code keeps Pillow's
    default of a mere warning.
    """
    with _TRUNCATION_SETTING_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        previous_setting = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous_setting


def _decode_stream(stream: IO[bytes], description: str, max_pixels: int) -> Image.Image:
    """Identify, size-check and then decode the first frame of an encoded image."""
    allowed = ", ".join(sorted(ALLOWED_FORMATS))
    with _strict_decoding():
        try:
            image = Image.open(stream, formats=sorted(ALLOWED_FORMATS))
        except UnidentifiedImageError as error:
            raise ImageError(
                f"{description}: not a readable image in an allowed format ({allowed})"
            ) from error
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageError(f"{description}: refused as a possible decompression bomb ({error})") from error
        except _DECODE_ERRORS as error:
            raise ImageError(f"{description}: corrupt image header ({error})") from error
        if image.format not in _DECODED_FORMATS:
            raise ImageError(f"{description}: format {image.format} is not allowed ({allowed})")
        _check_pixel_count(image.size, max_pixels, description)
        try:
            # Decoding happens here, inside the strict settings, so truncation raises now rather
            # than when someone first touches the pixels.
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageError(f"{description}: refused as a possible decompression bomb ({error})") from error
        except _DECODE_ERRORS as error:
            raise ImageError(f"{description}: truncated or corrupt {image.format} data ({error})") from error
    return image


def _check_pixel_count(size: tuple[int, int], max_pixels: int, description: str) -> None:
    """Refuse images with no pixels or with more than `max_pixels` of them."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{description}: the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"{description}: {width}x{height} = {width * height} pixels is over the limit of "
            f"{max_pixels} pixels"
        )


def _checked_pillow_image(image: Image.Image, max_pixels: int) -> Image.Image:
    """Size-check a caller's Pillow image and make sure its pixels can actually be decoded."""
    description = _describe(image)
    _check_pixel_count(image.size, max_pixels, description)
    with _strict_decoding():
        try:
            # An image from `Image.open` is still lazy; decoding it now surfaces truncation here.
            image.load()
        except _DECODE_ERRORS as error:
            raise ImageError(f"{description}: truncated or corrupt image data ({error})") from error
    return image


def _apply_exif_orientation(image: Image.Image, description: str) -> Image.Image:
    """Return an upright copy of `image`, following its EXIF orientation tag when it has one."""
    try:
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS as error:
        raise ImageError(f"{description}: unreadable EXIF orientation data ({error})") from error


def _convert_to_rgb(image: Image.Image, description: str) -> Image.Image:
    """Convert any mode to RGB with Pillow, as the reference pipeline does (alpha is dropped)."""
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ImageError(f"{description}: mode {image.mode} cannot be converted to RGB ({error})") from error


def _image_from_array(array: np.ndarray, max_pixels: int) -> Image.Image:
    """Build an RGB image from a uint8 array of grey, RGB or RGBA values."""
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating):
            raise ImageError(
                f"numpy image: float arrays ({array.dtype}) are not accepted; pass uint8 values in "
                "0..255, e.g. (array * 255).round().astype(np.uint8)"
            )
        raise ImageError(f"numpy image: dtype {array.dtype} is not supported; pass a uint8 array")
    channels = array.shape[2] if array.ndim == 3 else 1
    if array.ndim not in (2, 3) or channels not in (1, 3, 4):
        raise ImageError(
            f"numpy image: shape {array.shape} is not (height, width), (height, width, 1), "
            "(height, width, 3) or (height, width, 4)"
        )
    height, width = array.shape[:2]
    _check_pixel_count((width, height), max_pixels, "numpy image")
    if channels == 1:
        array = array.reshape(height, width)
    # Pillow infers mode L, RGB or RGBA from the shape; converting RGBA drops alpha, as for files.
    return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")
