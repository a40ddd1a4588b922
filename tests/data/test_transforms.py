"""`preprocess` equals the reference's Pillow-path Florence-2 image processor exactly; checks by hand too."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omnivis.data.transforms import (
    DEFAULT_INPUT_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    input_to_image_coordinates,
    preprocess,
)
from omnivis.errors import InputError
from omnivis.images import load_image

ASSETS = Path(__file__).resolve().parents[2] / "src" / "omnivis" / "assets"

# Florence-2's preprocessor_config.json as published with the checkpoints, verbatim.
FLORENCE2_PREPROCESSOR_CONFIG = {
    "crop_size": {"height": 768, "width": 768},
    "do_center_crop": False,
    "do_convert_rgb": None,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "CLIPImageProcessor",
    "image_seq_length": 577,
    "image_std": [0.229, 0.224, 0.225],
    "processor_class": "Florence2Processor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 768, "width": 768},
}


def _noise(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _test_images() -> list[Image.Image]:
    """Downscaled and upscaled, square and not, sharp and smooth, and a single pixel."""
    ramp = np.linspace(0, 255, 300)[None, :, None]
    gradient = np.broadcast_to(ramp, (200, 300, 3)).round().astype(np.uint8)
    return [
        load_image(ASSETS / "sample.png"),
        load_image(ASSETS / "document.png"),
        _noise(1100, 900, seed=0),
        _noise(37, 61, seed=1),
        Image.fromarray(np.ascontiguousarray(gradient)),
        Image.new("RGB", (1, 1), (255, 0, 128)),
    ]


@pytest.fixture(scope="module")
def reference_pil_processor() -> object:
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(**FLORENCE2_PREPROCESSOR_CONFIG)


@pytest.mark.oracle
def test_matches_reference_pillow_processor_bit_for_bit(reference_pil_processor: object) -> None:
    images = _test_images()
    ours = preprocess(images)
    for index, image in enumerate(images):
        expected = reference_pil_processor(image, return_tensors="pt")  # type: ignore[operator]
        expected = expected["pixel_values"]
        assert expected.dtype == ours.dtype == torch.float32
        assert torch.equal(ours[index : index + 1], expected), f"image {index} differs"


@pytest.mark.oracle
def test_matches_reference_with_other_size_and_statistics() -> None:
    from transformers import CLIPImageProcessorPil

    mean, std = (0.5, 0.25, 0.75), (0.3, 0.2, 0.1)
    reference = CLIPImageProcessorPil(
        **{
            **FLORENCE2_PREPROCESSOR_CONFIG,
            "size": {"height": 96, "width": 160},
            "image_mean": mean,
            "image_std": std,
        }
    )
    image = _noise(123, 77, seed=2)
    expected = reference(image, return_tensors="pt")["pixel_values"]
    assert torch.equal(preprocess([image], size=(96, 160), mean=mean, std=std), expected)


@pytest.mark.oracle
def test_auto_processor_defaults_to_torchvision_which_differs_slightly(tmp_path: Path) -> None:
    from transformers import AutoImageProcessor

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(FLORENCE2_PREPROCESSOR_CONFIG))
    default = AutoImageProcessor.from_pretrained(tmp_path)
    pillow = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    assert type(default).__name__ == "CLIPImageProcessor" and default.backend == "torchvision"
    assert type(pillow).__name__ == "CLIPImageProcessorPil"
    image = load_image(ASSETS / "sample.png")
    ours = preprocess([image])
    assert torch.equal(ours, pillow(image, return_tensors="pt")["pixel_values"])
    difference = (ours - default(image, return_tensors="pt")["pixel_values"]).abs().max().item()
    assert 0 < difference <= 2 / 255 / min(IMAGENET_STD) + 1e-6  # at most two 8-bit levels apart


def test_uniform_colour_by_hand() -> None:
    colour = (255, 0, 128)
    pixels = preprocess([Image.new("RGB", (50, 20), colour)], size=(8, 12))
    assert pixels.shape == (1, 3, 8, 12) and pixels.dtype == torch.float32
    for channel in range(3):
        scaled = np.float32(np.float64(colour[channel]) * (1 / 255))
        expected = (scaled - np.float32(IMAGENET_MEAN[channel])) / np.float32(IMAGENET_STD[channel])
        assert torch.all(pixels[0, channel] == torch.tensor(float(expected))), channel
    assert abs(pixels[0, 0, 0, 0].item() - (1 - 0.485) / 0.229) < 1e-6


def test_size_is_height_then_width_and_aspect_is_not_kept() -> None:
    half_black = np.zeros((10, 10, 3), dtype=np.uint8)
    half_black[:, 5:] = 255  # left half black, right half white
    pixels = preprocess([Image.fromarray(half_black)], size=(4, 16))
    assert pixels.shape == (1, 3, 4, 16)
    assert (pixels[0, :, :, :6] < 0).all() and (pixels[0, :, :, 10:] > 0).all()


def test_batch_of_mixed_sizes_stacks_in_order() -> None:
    red, blue = Image.new("RGB", (30, 10), (255, 0, 0)), Image.new("RGB", (7, 90), (0, 0, 255))
    batch = preprocess([red, blue], size=(16, 16))
    assert batch.shape == (2, 3, 16, 16)
    assert (batch[0, 0] > 2).all() and (batch[1, 2] > 2).all()
    assert torch.equal(batch[1:], preprocess([blue], size=(16, 16)))


def test_default_size_and_statistics() -> None:
    assert DEFAULT_INPUT_SIZE == (768, 768)
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    assert preprocess([Image.new("RGB", (3, 2))]).shape == (1, 3, 768, 768)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"images": []}, "at least one image"),
        ({"images": [Image.new("RGBA", (2, 2))]}, "mode 'RGBA'"),
        ({"images": [np.zeros((2, 2, 3), dtype=np.uint8)]}, "not a PIL image"),
        ({"images": [Image.new("RGB", (2, 2))], "size": (0, 4)}, "positive integers"),
        ({"images": [Image.new("RGB", (2, 2))], "size": (4, 4, 4)}, "positive integers"),
        ({"images": [Image.new("RGB", (2, 2))], "mean": (0.5, 0.5)}, "mean needs one value per RGB channel"),
        ({"images": [Image.new("RGB", (2, 2))], "std": (0.5, 0.0, 0.5)}, "std must not contain zero"),
    ],
)
def test_invalid_arguments(arguments: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        preprocess(**arguments)


def test_input_to_image_coordinates_by_hand() -> None:
    boxes = torch.tensor([[0.0, 0.0, 768.0, 768.0], [384.0, 192.0, 96.0, 768.0]])
    mapped = input_to_image_coordinates(boxes, image_width=1000, image_height=500)
    expected = torch.tensor([[0.0, 0.0, 1000.0, 500.0], [500.0, 125.0, 125.0, 500.0]])
    assert torch.equal(mapped, expected)
    quad = torch.tensor([10, 20, 30, 40, 50, 60, 70, 80])  # integers come back as floats
    mapped_quad = input_to_image_coordinates(quad, image_width=20, image_height=10, input_size=(40, 10))
    assert mapped_quad.dtype == torch.float32
    assert mapped_quad.tolist() == [20.0, 5.0, 60.0, 10.0, 100.0, 15.0, 140.0, 20.0]
    assert input_to_image_coordinates(boxes.double(), 7, 9).dtype == torch.float64


def test_input_to_image_coordinates_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="alternate x, y"):
        input_to_image_coordinates(torch.zeros(3), 10, 10)
    with pytest.raises(InputError, match="alternate x, y"):
        input_to_image_coordinates(torch.tensor(1.0), 10, 10)
    with pytest.raises(InputError, match="image size must be positive"):
        input_to_image_coordinates(torch.zeros(4), 0, 10)
