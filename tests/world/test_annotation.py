"""Records of the world: deterministic, valid, and faithful to the scene graph they come from."""

import io
import math
import multiprocessing

import numpy as np
import pytest
from PIL import Image

from omnivis.data.records import Provenance
from omnivis.errors import InputError
from omnivis.world import VARIANTS, generate, generate_record, referring_expressions, render, sample_scene
from omnivis.world.geometry import signed_area
from omnivis.world.scene import ShapeObject

RECORDS_PER_VARIANT = 150
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def generated(request: pytest.FixtureRequest) -> list:
    config = VARIANTS[request.param]
    return [
        (sample_scene(index, 2, config), generate_record(index, 2, config))
        for index in range(RECORDS_PER_VARIANT)
    ]


def _records_in_a_fresh_process(indices: list[int]) -> list[bytes]:
    return [generate_record(index, 4, VARIANTS["hard"]).image for index in indices]


def test_same_arguments_give_byte_identical_records_even_in_another_process() -> None:
    indices = [0, 1, 2]
    here = [generate_record(index, 4, VARIANTS["hard"]) for index in indices]
    assert here == [generate_record(index, 4, VARIANTS["hard"]) for index in indices]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        there = pool.apply(_records_in_a_fresh_process, (indices,))
    assert there == [record.image for record in here]


def test_different_seeds_give_different_records() -> None:
    first, second = generate_record(0, 1), generate_record(0, 2)
    assert first.image != second.image and first.captions != second.captions


def test_every_record_validates(generated: list) -> None:
    for _, record in generated:
        assert record.validate() is record


def test_image_is_the_rendered_scene_as_png(generated: list) -> None:
    for scene, record in generated[:10]:
        assert record.image.startswith(PNG_SIGNATURE)
        decoded = Image.open(io.BytesIO(record.image))
        assert decoded.mode == "RGB" and decoded.size == (record.width, record.height) == (256, 256)
        assert np.array_equal(np.asarray(decoded), np.asarray(render(scene).image))


def test_identity_source_provenance_and_metadata(generated: list) -> None:
    world = Provenance("world", 0)
    for index, (scene, record) in enumerate(generated):
        assert record.image_id == scene.image_id == f"world-{scene.config.name}-2-{index:07d}"
        assert record.source == "world"
        annotations = [
            *record.captions,
            *record.regions,
            *record.text_lines,
            *record.groundings,
            *record.referring,
            *record.questions,
        ]
        assert all(annotation.provenance == world for annotation in annotations)
        assert record.metadata == {
            "generator": "omnivis.world",
            "variant": scene.config.name,
            "background": scene.background.kind,
        }
        assert [caption.level for caption in record.captions] == ["brief", "detailed", "more_detailed"]
        assert [grounding.caption for grounding in record.groundings] == [
            caption.text for caption in record.captions
        ]


def test_regions_are_the_scene_objects(generated: list) -> None:
    for scene, record in generated:
        assert len(record.regions) == len(scene.objects)
        for region, item in zip(record.regions, scene.objects, strict=True):
            assert region.box == item.box and region.category == item.category
            assert region.score is None and not region.is_crowd
            if isinstance(item, ShapeObject):
                assert region.polygons == item.visible and region.phrase.endswith(item.shape)
                assert item.colour in region.phrase and item.size in region.phrase
            else:
                assert region.polygons == (item.quad,) and region.phrase.endswith(f'"{item.text}"')
            for text in (region.phrase, region.description, region.category):
                assert text.isascii() and "<" not in text and "\n" not in text
            assert region.description.endswith(".") and region.description[0].isupper()
            x0, y0, x1, y1 = region.box
            width, height = x1 - x0, y1 - y0  # COCO's (x, y, width, height) round trip is exact
            assert (x0 + width, y0 + height) == (x1, y1)


def test_referring_expressions_point_at_their_regions(generated: list) -> None:
    for scene, record in generated[:40]:
        expected = [(description.expression(), index) for description, index in referring_expressions(scene)]
        assert [(item.expression, item.region) for item in record.referring] == expected
        assert len({item.expression for item in record.referring}) == len(record.referring)


def test_text_lines_follow_the_text_in_reading_order(generated: list) -> None:
    lines = 0
    for scene, record in generated:
        assert [line.text for line in record.text_lines] == [item.text for item in scene.texts]
        assert record.ocr_text() == "\n".join(item.text for item in scene.texts)
        for line, item in zip(record.text_lines, scene.texts, strict=True):
            lines += 1
            corners = np.asarray(line.quad).reshape(4, 2)
            assert signed_area(corners) > 0  # clockwise on screen
            # The first edge runs along the reading direction: from top-left to top-right of the turned text.
            along = corners[1] - corners[0]
            assert math.degrees(math.atan2(-along[1], along[0])) == pytest.approx(item.rotation, abs=0.5)
            down = corners[3] - corners[0]
            cosine = np.dot(along, down) / np.linalg.norm(along) / np.linalg.norm(down)
            assert abs(cosine) < 0.01  # a rectangle (up to 1/16-pixel snapping), not just any quadrilateral
    assert lines >= 30


def test_the_sample_covers_the_whole_vocabulary(generated: list) -> None:
    scenes = [scene for scene, _ in generated]
    config = scenes[0].config
    shapes = [item for scene in scenes for item in scene.shapes]
    texts = [item for scene in scenes for item in scene.texts]
    assert {item.shape for item in shapes} == set(config.shapes)
    assert {item.colour for item in shapes} == {name for name, _ in config.colours}
    assert {item.size for item in shapes} == {name for name, _, _ in config.size_classes}
    assert {item.pattern for item in shapes} == {None, *config.patterns}
    assert {scene.background.kind for scene in scenes} == set(config.backgrounds)
    assert {item.font for item in texts} == set(config.fonts)
    assert {item.font_size for item in texts} == set(config.text_sizes)
    assert {item.plate is None for item in texts} == {True, False}
    # ... and the knobs that switch a feature off are respected (the easy variant turns these off).
    assert any(item.occluders for item in shapes) == config.allow_occlusion
    assert any(item.rotation != 0 for item in texts) == (config.text_rotation_range > 0)
    assert any(item.text in config.lines for item in texts) == (config.line_probability > 0)
    assert any(not item.is_word for item in texts)  # some "words" are two (e.g. "gate 12")


def test_generate_yields_consecutive_records() -> None:
    records = list(generate(3, 8, VARIANTS["hard"], start=5))
    assert records == [generate_record(index, 8, VARIANTS["hard"]) for index in (5, 6, 7)]
    assert list(generate(0, 8)) == []


@pytest.mark.parametrize(("count", "start"), [(-1, 0), (2, -1), (1.5, 0)])
def test_generate_refuses_bad_ranges_at_once(count: object, start: object) -> None:
    with pytest.raises(InputError, match="non-negative integer"):
        generate(count, 0, start=start)  # type: ignore[arg-type]


def test_png_writer_gives_decoders_the_exact_pixels_of_any_rgb_image() -> None:
    import io

    import numpy as np
    from PIL import Image

    from omnivis.errors import InputError
    from omnivis.world.annotation import encode_png

    rng = np.random.default_rng(0)
    for height, width in ((1, 1), (3, 7), (256, 256), (31, 400)):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        decoded = Image.open(io.BytesIO(encode_png(Image.fromarray(pixels))))
        decoded.load()  # verifies every chunk's CRC and the zlib stream
        assert decoded.format == "PNG" and decoded.mode == "RGB"
        assert np.array_equal(np.asarray(decoded), pixels)
    with pytest.raises(InputError, match="mode L"):
        encode_png(Image.new("L", (2, 2)))
