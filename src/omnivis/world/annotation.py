"""From scene graph to `Record`: the image and every FLD-5B annotation, exact by construction.

`generate_record(index, seed, config)` is a pure function of its arguments: the scene, the wording choices and
the PNG bytes are the same in any process on any machine with the same library versions, so dataset shards can
be generated in parallel. What a record holds:

- captions: brief, detailed and more detailed, each also as a grounding (phrases with spans and boxes);
- regions: one per object, in `Scene.objects` order (shapes in drawing order, then text in reading order):
  box and polygons of the visible part, category (the shape's name, or "text"), phrase ("small striped red
  star", 'word "apple"', 'text "open daily"') and a one-sentence description;
- referring expressions: every object that a verified unique expression names, pointing at its region;
- text lines: one per text object, in reading order, with its quadrilateral;
- questions: counting, colour, position, reading and existence questions with exact answers.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

from omnivis.data.records import (
    Caption,
    CaptionLevel,
    GroundedPhrase,
    Grounding,
    Provenance,
    QuestionAnswer,
    Record,
    ReferringExpression,
    Region,
    TextLine,
)
from omnivis.errors import InputError
from omnivis.world import captions, language
from omnivis.world.config import VARIANTS, WorldConfig
from omnivis.world.language import Describer
from omnivis.world.questions import questions
from omnivis.world.rendering import draw
from omnivis.world.scene import Scene, SceneObject, ShapeObject, sample_scene
from omnivis.world.text import TextObject

WORLD = Provenance("world", 0)  # every world annotation is original, exact truth
SOURCE = "world"
# zlib level of the PNG data: 3 makes scenes smaller than Pillow's level 1 does, in about a third of its time.
PNG_ZLIB_LEVEL = 3
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_FILTER_UP = 2  # each byte stored as its difference from the byte above: flat areas become zeros


def encode_png(image: Image.Image) -> bytes:
    """An RGB image as PNG bytes, deterministically (fixed filter and zlib level, no metadata).

    Pillow's writer picks a filter per row by trying all five, which costs a third of a scene's time; the
    world's images are flat regions and smooth ramps, for which the "up" filter alone compresses as well. So
    the file is assembled here: IHDR, one IDAT of zlib-compressed filtered rows, IEND (PNG spec, section 11).
    Any PNG decoder reads it; `tests/world/test_annotation.py` checks Pillow gives back the exact pixels.
    """
    if image.mode != "RGB":
        raise InputError(f"encode_png writes RGB images, got mode {image.mode}")
    pixels = np.asarray(image, dtype=np.uint8)
    height, width, channels = pixels.shape
    rows = pixels.reshape(height, width * channels)  # (H, W*3)
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)  # (H, 1 + W*3): filter byte first
    filtered[:, 0] = _PNG_FILTER_UP
    filtered[:, 1:] = rows
    filtered[1:, 1:] -= rows[:-1]  # uint8 arithmetic wraps modulo 256, as the filter is defined
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, no interlace
    data = zlib.compress(filtered.tobytes(), PNG_ZLIB_LEVEL)
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """Length, type, data and the CRC-32 of type + data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def region_description(scene: Scene, item: SceneObject) -> str:
    """One sentence about an object, e.g. "A small red star in the top left, partly hidden behind a cross"."""
    where = language.POSITION_PHRASES[language.position(item.box, scene.config.width, scene.config.height)]
    if isinstance(item, TextObject):
        surface = f"on {language.with_article(item.plate)} plate" if item.plate else "on the background"
        return f"The {language.text_words(item)} written in {item.colour} letters {surface} {where}."
    sentence = f"{language.with_article(language.shape_words(item))} {where}"
    if item.occluders:
        hiders = [
            language.with_article(language.object_words(scene.objects[index])) for index in item.occluders
        ]
        sentence += ", partly hidden behind " + language.listed(hiders)
    return sentence[:1].upper() + sentence[1:] + "."


def _region(scene: Scene, item: SceneObject) -> Region:
    return Region(
        box=item.box,
        category=item.category,
        provenance=WORLD,
        phrase=language.object_words(item),
        description=region_description(scene, item),
        polygons=item.visible if isinstance(item, ShapeObject) else (item.quad,),
    )


def annotate(scene: Scene, image: Image.Image | None = None) -> Record:
    """The record of a scene: its image (drawn unless given) and every annotation.

    Args:
        scene: The scene graph.
        image: The scene as already drawn by `draw` or `render`, to skip drawing it again.
    """
    if image is None:
        image = draw(scene)
    rng = np.random.Generator(np.random.PCG64(scene.language_seed))
    describer = Describer(scene)
    levels: tuple[tuple[CaptionLevel, tuple[str, tuple[GroundedPhrase, ...]]], ...] = (
        ("brief", captions.brief_caption(scene)),
        ("detailed", captions.detailed_caption(scene, describer, rng)),
        ("more_detailed", captions.more_detailed_caption(scene, describer, rng)),
    )
    config = scene.config
    return Record(
        image_id=scene.image_id,
        image=encode_png(image),
        width=config.width,
        height=config.height,
        source=SOURCE,
        captions=tuple(Caption(level, text, WORLD) for level, (text, _) in levels),
        regions=tuple(_region(scene, item) for item in scene.objects),
        text_lines=tuple(TextLine(item.text, item.quad, WORLD) for item in scene.texts),
        groundings=tuple(Grounding(text, phrases, WORLD) for _, (text, phrases) in levels),
        referring=tuple(
            ReferringExpression(description.expression(), index, WORLD)
            for description, index in language.referring_expressions(scene, describer)
        ),
        questions=tuple(
            QuestionAnswer(question, answer, kind, WORLD)
            for question, answer, kind in questions(scene, describer, rng)
        ),
        metadata={
            "generator": "omnivis.world",
            "variant": config.name,
            "background": scene.background.kind,
        },
    )


def generate_record(index: int, seed: int, config: WorldConfig = VARIANTS["default"]) -> Record:
    """World image `index` of the dataset seeded `seed`, with all its annotations.

    The result depends on (config, seed, index) alone; its id is f"world-{config.name}-{seed}-{index:07d}".

    Raises:
        InputError: A negative or non-integer index or seed.
    """
    return annotate(sample_scene(index, seed, config))


def generate(
    count: int, seed: int, config: WorldConfig = VARIANTS["default"], start: int = 0
) -> Iterator[Record]:
    """Records `start`, `start + 1`, ..., `start + count - 1` of the dataset seeded `seed`.

    Raises:
        InputError: A negative count or start (raised at once, not on first iteration).
    """
    for name, value in (("count", count), ("start", start)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InputError(f"world generate: {name} must be a non-negative integer, got {value!r}")
    return (generate_record(index, seed, config) for index in range(start, start + count))
