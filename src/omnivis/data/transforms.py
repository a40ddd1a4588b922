"""Turn RGB images into the normalised pixel tensor the image encoder reads.

`preprocess` reproduces, bit for bit, the Pillow path of the reference Florence-2 image processor
(transformers 5.23, `CLIPImageProcessorPil` configured as Florence-2's `preprocessor_config.json`
does): a bicubic resize with Pillow to 768x768 (aspect ratio not kept, no crop), a rescale by 1/255
and a normalisation with the ImageNet mean and standard deviation, channels first.

Which reference path: transformers 5 maps Florence-2 to two image processors, `CLIPImageProcessor`
(torchvision backend) and `CLIPImageProcessorPil` (Pillow/numpy backend). `AutoImageProcessor` picks
torchvision whenever it is installed, unless it is called with `backend="pil"` (or the deprecated
`use_fast=False`). The two do not agree: torchvision's bicubic resize rounds differently from
Pillow's, so a few pixels land one or two 8-bit levels apart. Measured on this package's sample
images, on random noise (60x40 up to 2000x1500) and on a smooth gradient, the max abs difference
after normalisation is 0.0175 (one level) to 0.035 (two levels), the mean abs difference at most
2e-4, and 2e-7 on the gradient. omnivis follows the Pillow path, which is the one the
original Florence-2 processor used.

Exactness: the reference rescales in float64 and casts to float32 before normalising in float32.
Because the resized pixels are uint8, each output value depends only on its channel and its byte, so
the whole arithmetic is done once for the 256 possible bytes per channel, with the reference's exact
operations, and applied as a lookup table. That gives identical float32 values with one table read
per value instead of a float64 round trip over the whole image (about 4 ms for 768x768, after the
~19 ms Pillow resize; the reference takes ~50 ms per image).
"""

import functools
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from omnivis.errors import InputError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# (height, width) of the encoder's input, as in Florence-2's preprocessor configuration.
DEFAULT_INPUT_SIZE: tuple[int, int] = (768, 768)

# The reference stores the rescale factor as the float64 value of 1/255.
_RESCALE_FACTOR: float = 1 / 255

_LEVELS = 256  # distinct values of a uint8 pixel


def preprocess(
    images: Sequence[Image.Image],
    size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Resize, rescale and normalise RGB images into one batch for the image encoder.

    Args:
        images: RGB Pillow images of any sizes, for instance from `omnivis.images.load_image`.
        size: The (height, width) every image is resized to, ignoring its aspect ratio.
        mean: Per-channel mean subtracted after scaling pixels to 0..1.
        std: Per-channel standard deviation the result is divided by.

    Returns:
        A float32 tensor shaped (batch, 3, height, width), equal to what the reference Pillow
        processor produces for the same images.

    Raises:
        InputError: No images, an image that is not in mode "RGB", a non-positive size, or a mean or
            std without exactly three values (or with a zero std).
    """
    if len(images) == 0:
        raise InputError("preprocess needs at least one image")
    height, width = _checked_size(size)
    table = _normalisation_table(_three_values(mean, "mean"), _three_values(std, "std"))
    batch = torch.empty((len(images), 3, height, width), dtype=torch.float32)
    batch_array = batch.numpy()  # shares memory: filling it fills the tensor
    for index, image in enumerate(images):
        pixels = _resized_pixels(image, index, height, width)  # (height, width, 3) uint8
        _apply_table(table, pixels, out=batch_array[index])
    return batch


def input_to_image_coordinates(
    coordinates: torch.Tensor,
    image_width: int,
    image_height: int,
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
) -> torch.Tensor:
    """Map pixel coordinates on the resized encoder input back onto the original image.

    `preprocess` stretches each axis independently, so the inverse is a separate scale per axis.

    Args:
        coordinates: Points as alternating x, y values along the last dimension (a box
            (x0, y0, x1, y1), a quad, a flat polygon); its last dimension must have even length.
        image_width: Width of the original image, in pixels.
        image_height: Height of the original image, in pixels.
        input_size: The (height, width) the image was resized to.

    Returns:
        A float tensor of the same shape, in original-image pixel coordinates.

    Raises:
        InputError: The last dimension has odd length, or a size is not positive.
    """
    input_height, input_width = _checked_size(input_size)
    if image_width <= 0 or image_height <= 0:
        raise InputError(f"image size must be positive, got {image_width}x{image_height}")
    if coordinates.ndim == 0 or coordinates.shape[-1] % 2 != 0:
        raise InputError(
            f"coordinates must alternate x, y along the last dimension; got shape {tuple(coordinates.shape)}"
        )
    scale = torch.tensor([image_width / input_width, image_height / input_height], dtype=torch.float64)
    points = coordinates.to(torch.float64).unflatten(-1, (-1, 2))  # (..., points, 2)
    return (points * scale).flatten(-2).to(torch.promote_types(coordinates.dtype, torch.float32))


def _checked_size(size: tuple[int, int]) -> tuple[int, int]:
    """Validate a (height, width) pair."""
    if len(size) != 2 or any(int(side) != side or side <= 0 for side in size):
        raise InputError(f"size must be two positive integers (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def _three_values(values: Sequence[float], name: str) -> tuple[float, float, float]:
    """Validate a per-channel statistic and make it hashable for the table cache."""
    if len(values) != 3:
        raise InputError(f"{name} needs one value per RGB channel (3), got {len(values)}")
    first, second, third = (float(value) for value in values)
    return first, second, third


def _resized_pixels(image: Image.Image, index: int, height: int, width: int) -> np.ndarray:
    """Resize one RGB image with Pillow's bicubic filter, as the reference does."""
    if not isinstance(image, Image.Image):
        raise InputError(f"image {index} is a {type(image).__name__}, not a PIL image; use load_image")
    if image.mode != "RGB":
        raise InputError(
            f"image {index} has mode {image.mode!r}, expected 'RGB'; use load_image to convert it"
        )
    resized = image.resize((width, height), Image.Resampling.BICUBIC)  # Pillow takes (width, height)
    return np.asarray(resized)


@functools.lru_cache(maxsize=8)
def _normalisation_table(mean: tuple[float, float, float], std: tuple[float, float, float]) -> np.ndarray:
    """Precompute the normalised float32 value of every byte, per channel, with the reference's arithmetic.

    Returns:
        A read-only (3, 256) float32 array: entry [c, v] is the output for byte v in channel c.
    """
    if any(value == 0 for value in std):
        raise InputError(f"std must not contain zero, got {std}")
    levels = np.arange(_LEVELS, dtype=np.uint8)
    # The reference multiplies in float64 and only then casts to float32 ...
    scaled = (levels.astype(np.float64) * _RESCALE_FACTOR).astype(np.float32)  # (256,)
    # ... and subtracts and divides in float32 with float32 statistics.
    mean_column = np.array(mean, dtype=np.float32)[:, None]  # (3, 1)
    std_column = np.array(std, dtype=np.float32)[:, None]  # (3, 1)
    table = np.ascontiguousarray((scaled[None, :] - mean_column) / std_column, dtype=np.float32)  # (3, 256)
    table.flags.writeable = False  # the cache hands the same array to every caller
    return table


def _apply_table(table: np.ndarray, pixels: np.ndarray, out: np.ndarray) -> None:
    """Write the table value of each byte of a (height, width, 3) uint8 image into `out`, channels first."""
    channels_first = np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (3, height, width) uint8
    for channel in range(3):
        # numpy's take is several times faster than torch indexing here; bytes never exceed the
        # table's 256 entries, so "clip" only skips the bounds check's extra buffering.
        np.take(table[channel], channels_first[channel], out=out[channel], mode="clip")
