"""Captions and their grounded phrases, read back with an independent parser and checked against the scene."""

import re

import numpy as np
import pytest

from omnivis.world import VARIANTS, captions, sample_scene
from omnivis.world.language import Describer
from world.parse_phrases import objects_read, read_expression, read_phrase

SCENES_PER_VARIANT = 40


def _captions(scene):  # type: ignore[no-untyped-def]
    describer = Describer(scene)
    rng = np.random.Generator(np.random.PCG64(scene.language_seed))
    return {
        "brief": captions.brief_caption(scene),
        "detailed": captions.detailed_caption(scene, describer, rng),
        "more_detailed": captions.more_detailed_caption(scene, describer, rng),
    }


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def captioned(request: pytest.FixtureRequest) -> list:
    scenes = [sample_scene(index, 5, VARIANTS[request.param]) for index in range(SCENES_PER_VARIANT)]
    return [(scene, _captions(scene)) for scene in scenes]


def test_captions_are_clean_target_text(captioned: list) -> None:
    for _, levels in captioned:
        for text, phrases in levels.values():
            assert text.isascii() and "<" not in text and "\n" not in text and text.endswith(".")
            assert text == text.strip() and "  " not in text
            for phrase in phrases:
                assert text[phrase.start : phrase.end] == phrase.phrase
                assert phrase.phrase.lower() not in {"it", "they", "the image", "this image"}
                assert phrase.boxes


def test_grounded_phrases_name_exactly_their_boxes(captioned: list) -> None:
    for scene, levels in captioned:
        boxes = [item.box for item in scene.objects]
        for level, (text, phrases) in levels.items():
            for phrase in phrases:
                grounded = sorted(boxes.index(box) for box in phrase.boxes)
                if phrase.phrase.lower().startswith("the "):  # a definite reference: exactly one object
                    assert read_expression(phrase.phrase[:1].lower() + phrase.phrase[1:], scene) == grounded
                    continue
                reading = read_phrase(phrase.phrase, scene)
                assert reading.count == len(phrase.boxes), (text, phrase.phrase)
                matching = objects_read(reading, scene)
                if level == "more_detailed" and reading.count == 1:
                    assert set(grounded) <= set(matching), phrase.phrase  # one particular object of its kind
                else:
                    assert grounded == matching, (
                        scene.image_id,
                        level,
                        phrase.phrase,
                    )  # every object of its kind


def test_brief_and_detailed_captions_mention_everything(captioned: list) -> None:
    for scene, levels in captioned:
        every_object = {item.box for item in scene.objects}
        for level in ("brief", "detailed"):
            text, phrases = levels[level]
            assert {box for phrase in phrases for box in phrase.boxes} == every_object
            assert captions.background_words(scene) in text
        text, _ = levels["detailed"]
        for item in scene.texts:
            assert f'"{item.text}" is written in {item.colour} letters' in text
            if item.plate:
                assert re.search(
                    f'"{re.escape(item.text)}" is written in [a-z ]+ letters on an? {item.plate} plate', text
                )
            else:
                assert f'"{item.text}" is written in {item.colour} letters directly on the background' in text


def test_more_detailed_caption_gives_every_shape_a_sentence(captioned: list) -> None:
    for scene, levels in captioned:
        text, phrases = levels["more_detailed"]
        singles = [
            phrase.boxes[0]
            for phrase in phrases
            if len(phrase.boxes) == 1 and not phrase.phrase.lower().startswith("the ")
        ]
        assert {item.box for item in scene.shapes} <= set(singles)
        hidden = sum(1 for item in scene.shapes if item.occluders)
        assert text.count("partly hidden behind") == hidden
        assert len(text.split()) > len(levels["detailed"][0].split()) > len(levels["brief"][0].split())


def test_total_counts_equal_the_scene_graph(captioned: list) -> None:
    for scene, levels in captioned:
        _, phrases = levels["detailed"]
        if scene.shapes:
            total = next(phrase for phrase in phrases if phrase.phrase.endswith(("shapes", "shape")))
            assert read_phrase(total.phrase, scene).count == len(scene.shapes)


def test_every_background_kind_is_described() -> None:
    seen = set()
    for index in range(60):
        scene = sample_scene(index, 9)
        words = captions.background_words(scene)
        seen.add(scene.background.kind)
        assert scene.background.colour in words
        if scene.background.kind == "gradient":
            assert scene.background.second_colour in words and "gradient" in words
    assert seen == set(VARIANTS["default"].backgrounds)
