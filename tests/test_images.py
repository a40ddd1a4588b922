"""`load_image`: allowed formats round-trip; anything unsafe or broken raises a clear `ImageError`."""

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from omnivis.errors import ImageError, InputError, OmnivisError
from omnivis.images import ALLOWED_FORMATS, DEFAULT_MAX_PIXELS, load_image

# Four flat colour blocks: exact under every lossless codec, nearly exact under JPEG.
BLOCK_COLOURS = [(200, 30, 40), (20, 160, 60), (30, 60, 220), (250, 250, 250)]


def _blocks(width: int = 32, height: int = 24) -> Image.Image:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    half_height, half_width = height // 2, width // 2
    pixels[:half_height, :half_width] = BLOCK_COLOURS[0]
    pixels[:half_height, half_width:] = BLOCK_COLOURS[1]
    pixels[half_height:, :half_width] = BLOCK_COLOURS[2]
    pixels[half_height:, half_width:] = BLOCK_COLOURS[3]
    return Image.fromarray(pixels)


def _encode(image: Image.Image, format_name: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format_name, **options)
    return buffer.getvalue()


def _png_claiming_size(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims `width` x `height` pixels."""
    data = bytearray(_encode(Image.new("L", (1, 1)), "PNG"))
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])  # keep depth, colour type, ...
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


LOSSLESS = {
    "PNG": {},
    "BMP": {},
    "TIFF": {},
    "WEBP": {"lossless": True},
    "GIF": {},
}


@pytest.mark.parametrize("format_name", sorted(LOSSLESS))
def test_lossless_formats_round_trip_exactly(tmp_path: Path, format_name: str) -> None:
    original = _blocks()
    path = tmp_path / f"image.{format_name.lower()}"
    path.write_bytes(_encode(original, format_name, **LOSSLESS[format_name]))
    for source in (path, str(path), path.read_bytes()):
        loaded = load_image(source)
        assert loaded.mode == "RGB" and loaded.size == original.size
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(original))


def test_jpeg_round_trip_matches_plain_pillow_decode(tmp_path: Path) -> None:
    data = _encode(_blocks(), "JPEG", quality=95)
    loaded = load_image(data)
    expected = Image.open(io.BytesIO(data)).convert("RGB")
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(expected))
    assert np.abs(np.asarray(loaded)[2, 2].astype(int) - BLOCK_COLOURS[0]).max() <= 6


def test_allowed_formats_are_exactly_the_documented_list() -> None:
    assert ALLOWED_FORMATS == {"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"}
    assert DEFAULT_MAX_PIXELS == 2**26


@pytest.mark.parametrize("format_name", ["PPM", "ICO", "TGA", "PCX"])
def test_refused_formats(tmp_path: Path, format_name: str) -> None:
    # Named .png on purpose: the decoded content decides, not the extension.
    path = tmp_path / "disguised.png"
    path.write_bytes(_encode(_blocks(), format_name))
    with pytest.raises(ImageError, match="allowed format") as caught:
        load_image(path)
    assert str(path) in str(caught.value)


def test_errors_are_omnivis_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        load_image(tmp_path / "missing.png")
    assert issubclass(ImageError, OmnivisError) and issubclass(ImageError, ValueError)


def test_zero_byte_file_and_empty_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ImageError, match=r"empty \(0 bytes\)") as caught:
        load_image(path)
    assert str(path) in str(caught.value)
    with pytest.raises(ImageError, match="0 bytes"):
        load_image(b"")


@pytest.mark.parametrize("format_name", ["PNG", "JPEG"])
def test_truncated_files_are_refused_not_padded(tmp_path: Path, format_name: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), format_name)
    path = tmp_path / f"cut.{format_name.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated") as caught:
        load_image(path)
    assert str(path) in str(caught.value)


def test_truncation_is_refused_even_when_pillow_is_told_to_accept_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), "PNG")
    with pytest.raises(ImageError, match="truncated"):
        load_image(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # other code's setting is given back


def test_lazily_opened_truncated_pillow_image_is_refused(tmp_path: Path) -> None:
    noise = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), "JPEG")
    image = Image.open(io.BytesIO(data[: len(data) // 2]))  # header only: pixels not decoded yet
    with pytest.raises(ImageError, match="truncated"):
        load_image(image)


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match="not a readable image") as caught:
        load_image(path)
    assert str(path) in str(caught.value)


def test_directory_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)
    missing = tmp_path / "nowhere" / "photo.png"
    with pytest.raises(ImageError, match="no such file") as caught:
        load_image(str(missing))
    assert str(missing) in str(caught.value)


def test_urls_are_refused_with_advice() -> None:
    with pytest.raises(ImageError, match="URLs are not supported"):
        load_image("https://example.com/cat.jpg")


def test_bomb_over_twice_pillows_limit() -> None:
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None
    side = int((2.5 * limit) ** 0.5)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(_png_claiming_size(side, side), max_pixels=10 * limit)


def test_bomb_between_one_and_two_times_pillows_limit_is_refused_without_global_change() -> None:
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None
    side = int((1.5 * limit) ** 0.5)
    data = _png_claiming_size(side, side)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(data, max_pixels=10 * limit)  # our own limit would allow it: Pillow's warning must stop it
    # Everyone else still gets Pillow's default behaviour: a warning, not an error.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Image.open(io.BytesIO(data))
    assert any(issubclass(warning.category, Image.DecompressionBombWarning) for warning in caught)
    assert Image.MAX_IMAGE_PIXELS == limit


def test_default_limit_refuses_before_decoding() -> None:
    # 9000 x 9000 = 81 Mpx: under Pillow's limit, over ours; the tiny file holds no such pixel data,
    # so reaching the decoder would have reported corruption instead.
    with pytest.raises(ImageError, match=r"9000x9000 = 81000000 pixels is over the limit of 67108864"):
        load_image(_png_claiming_size(9000, 9000))


def test_per_call_limit(tmp_path: Path) -> None:
    data = _encode(_blocks(10, 10), "PNG")
    assert load_image(data, max_pixels=100).size == (10, 10)
    with pytest.raises(ImageError, match="over the limit of 99 pixels"):
        load_image(data, max_pixels=99)
    with pytest.raises(ImageError, match="over the limit"):
        load_image(np.zeros((10, 10, 3), dtype=np.uint8), max_pixels=50)
    with pytest.raises(ImageError, match="over the limit"):
        load_image(_blocks(10, 10), max_pixels=50)


def test_exif_rotated_jpeg_is_made_upright() -> None:
    image = Image.new("RGB", (40, 20), (220, 20, 20))
    image.paste((20, 20, 220), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    loaded = load_image(_encode(image, "JPEG", quality=95, exif=exif.tobytes()))
    assert loaded.size == (20, 40)
    pixels = np.asarray(loaded).astype(int)
    assert pixels[5, 10, 0] > 180 and pixels[5, 10, 2] < 60  # the red left half is now on top
    assert pixels[35, 10, 2] > 180 and pixels[35, 10, 0] < 60


def test_gif_and_tiff_give_their_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    for format_name in ("GIF", "TIFF"):
        data = _encode(frames[0], format_name, save_all=True, append_images=frames[1:])
        assert Image.open(io.BytesIO(data)).n_frames == 3
        assert np.asarray(load_image(data))[4, 4].tolist() == [255, 0, 0]


def _mode_image(mode: str) -> Image.Image:
    """A 6x4 image of `mode` with varied values, built from a gradient."""
    gradient = np.tile(np.linspace(0, 255, 6, dtype=np.uint8), (4, 1))
    rgba = np.stack([gradient, gradient[:, ::-1], np.full_like(gradient, 90), gradient], axis=-1)
    base = Image.fromarray(rgba)
    if mode in ("I;16", "I", "F"):
        return Image.fromarray(gradient.astype(np.uint16) * 250).convert(mode)  # values up to 63750
    return base.convert(mode)


ALL_MODES = [
    "1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK",
    "YCbCr", "LAB", "HSV", "I;16", "I", "F",
]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_mode_becomes_rgb_of_the_same_size(mode: str) -> None:
    image = _mode_image(mode)
    loaded = load_image(image)
    assert loaded.mode == "RGB" and loaded.size == image.size
    assert image.mode == mode  # the caller's image is not modified
    assert loaded is not image


def test_alpha_is_dropped_like_the_reference_pipeline() -> None:
    rgba = Image.new("RGBA", (3, 1), (10, 20, 30, 255))
    rgba.putpixel((1, 0), (10, 20, 30, 0))  # fully transparent: its stored colour shows
    rgba.putpixel((2, 0), (0, 0, 0, 0))
    assert np.asarray(load_image(rgba)).tolist() == [[[10, 20, 30], [10, 20, 30], [0, 0, 0]]]
    assert np.asarray(load_image(Image.new("LA", (1, 1), (40, 0)))).tolist() == [[[40, 40, 40]]]
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    assert np.asarray(load_image(palette)).tolist() == [[[0, 0, 0], [200, 0, 0]]]


def test_transparent_png_file_keeps_stored_colours() -> None:
    rgba = Image.new("RGBA", (2, 1), (250, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 90, 0, 255))
    assert np.asarray(load_image(_encode(rgba, "PNG"))).tolist() == [[[250, 0, 0], [0, 90, 0]]]


def test_wide_integer_modes_are_clipped_like_the_reference() -> None:
    sixteen_bit = Image.fromarray(np.array([[0, 100, 255, 256, 65535]], dtype=np.uint16))
    assert sixteen_bit.mode == "I;16"
    assert np.asarray(load_image(sixteen_bit))[0, :, 0].tolist() == [0, 100, 255, 255, 255]
    bilevel = Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1")
    assert np.asarray(load_image(bilevel))[0].tolist() == [[0, 0, 0], [255, 255, 255]]


def test_arrays_of_every_accepted_shape() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for array in (grey, grey[..., None]):
        loaded = np.asarray(load_image(array))
        assert loaded.shape == (3, 4, 3)
        np.testing.assert_array_equal(loaded, np.repeat(grey[..., None], 3, axis=-1))
    colour = np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(load_image(colour)), colour)
    mirrored = colour[:, ::-1]  # a non-contiguous view
    np.testing.assert_array_equal(np.asarray(load_image(mirrored)), mirrored)
    for alpha in (0, 128, 255):
        rgba = np.dstack([colour, np.full((5, 7), alpha, dtype=np.uint8)])
        np.testing.assert_array_equal(np.asarray(load_image(rgba)), colour)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_float_arrays_are_refused_with_advice(dtype: type) -> None:
    with pytest.raises(ImageError, match="float arrays .* pass uint8"):
        load_image(np.zeros((4, 4, 3), dtype=dtype))


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.bool_, np.int8])
def test_other_dtypes_are_refused(dtype: type) -> None:
    with pytest.raises(ImageError, match="pass a uint8 array"):
        load_image(np.zeros((4, 4, 3), dtype=dtype))


@pytest.mark.parametrize("shape", [(4,), (4, 4, 2), (4, 4, 5), (1, 4, 4, 3), (0, 4, 3), (4, 0)])
def test_bad_array_shapes_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ImageError, match=r"shape|no pixels"):
        load_image(np.zeros(shape, dtype=np.uint8))


def test_one_by_one_images() -> None:
    pixel = Image.new("RGB", (1, 1), (1, 2, 3))
    for source in (pixel, _encode(pixel, "PNG"), np.array([[[1, 2, 3]]], dtype=np.uint8)):
        loaded = load_image(source)
        assert loaded.size == (1, 1) and loaded.getpixel((0, 0)) == (1, 2, 3)


def test_empty_pillow_image_is_refused() -> None:
    with pytest.raises(ImageError, match="no pixels"):
        load_image(Image.new("RGB", (0, 3)))


def test_unsupported_source_type() -> None:
    with pytest.raises(ImageError, match="unsupported image source of type int"):
        load_image(42)  # type: ignore[arg-type]


@pytest.mark.oracle
@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_mode_matches_the_reference_loader(mode: str) -> None:
    from transformers.image_utils import load_image as reference_load_image

    image = _mode_image(mode)
    np.testing.assert_array_equal(np.asarray(load_image(image)), np.asarray(reference_load_image(image)))


@pytest.mark.oracle
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_match_the_reference_loader(tmp_path: Path, orientation: int) -> None:
    from transformers.image_utils import load_image as reference_load_image

    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"oriented-{orientation}.jpg"
    path.write_bytes(_encode(_blocks(30, 14), "JPEG", exif=exif.tobytes()))
    ours, theirs = load_image(path), reference_load_image(str(path))
    assert ours.size == theirs.size == ((30, 14) if orientation <= 4 else (14, 30))
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
