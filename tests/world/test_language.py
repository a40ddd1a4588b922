"""Phrases, positions, relations, and referring expressions checked against the scene graph."""

import itertools

import pytest

from omnivis.world import VARIANTS, Description, language, referring_expressions, resolve, sample_scene
from omnivis.world.language import Describer
from omnivis.world.scene import Scene, ShapeObject
from world.parse_phrases import PATTERNS, read_expression


def _shape(
    shape: str, colour: str, size: str, box: tuple[float, float, float, float], pattern: str | None = None
) -> ShapeObject:
    x0, y0, x1, y1 = box
    outline = (x0, y0, x1, y0, x1, y1, x0, y1)
    return ShapeObject(shape, colour, (0, 0, 0), size, pattern, (9, 9, 9), 5.0, 0.0, outline, (outline,), box)


@pytest.fixture(scope="module")
def hand_scene() -> Scene:
    base = sample_scene(0, 0)
    text = next(item for index in range(50) for item in sample_scene(index, 0).texts)
    objects = (
        _shape("star", "red", "small", (10, 10, 30, 30)),
        _shape("star", "red", "large", (200, 10, 240, 50)),
        _shape("square", "blue", "medium", (100, 10, 140, 50), pattern="dots"),
        text,
    )
    return Scene("hand", base.config, base.background, objects, 0)


def test_counting_words() -> None:
    assert [language.number_word(count) for count in (0, 1, 2, 12, 25)] == [
        "no",
        "one",
        "two",
        "twelve",
        "25",
    ]
    assert language.plural("cross") == "crosses" and language.plural("star") == "stars"
    assert (
        language.with_article("orange star") == "an orange star"
        and language.with_article("red star") == "a red star"
    )
    assert language.counted(1, "red", "cross") == "a red cross"
    assert language.counted(3, "red", "cross") == "three red crosses"
    assert language.counted(2, "", "shape") == "two shapes"
    assert language.listed(["a star"]) == "a star"
    assert language.listed(["a star", "a cross", "a circle"]) == "a star, a cross and a circle"


@pytest.mark.parametrize(
    ("box", "cell"),
    [
        ((0, 0, 20, 20), "top left"),
        ((100, 0, 150, 40), "top"),
        ((230, 0, 256, 20), "top right"),
        ((0, 120, 30, 140), "left"),
        ((110, 110, 140, 140), "center"),
        ((200, 100, 250, 150), "right"),
        ((10, 200, 40, 250), "bottom left"),
        ((120, 240, 130, 256), "bottom"),
        ((200, 200, 256, 256), "bottom right"),
    ],
)
def test_positions_are_thirds_of_the_image(box: tuple[float, float, float, float], cell: str) -> None:
    assert language.position(box, 256, 256) == cell


def test_position_margin_measures_distance_to_the_nearest_third() -> None:
    # Centre (128, 40): y = 0.156 is 0.177 from the border at 1/3; x = 0.5 is 0.167 from both borders.
    assert language.position_margin((118, 30, 138, 50), 256, 256) == pytest.approx(1 / 2 - 1 / 3)
    assert language.position_margin((80, 80, 90, 90), 256, 256) == pytest.approx(abs(85 / 256 - 1 / 3))


def test_relations_need_boxes_apart() -> None:
    left, right, overlapping = (0, 0, 10, 10), (10, 5, 20, 15), (5, 20, 15, 30)
    assert language.holds("left of", left, right) and language.holds("right of", right, left)
    assert not language.holds("left of", left, overlapping)
    assert language.holds("above", left, overlapping) and language.holds("below", overlapping, left)
    assert not language.holds("above", left, right)


def test_resolve_evaluates_attributes_and_relations(hand_scene: Scene) -> None:
    objects = hand_scene.objects
    text = objects[3].text
    assert resolve(Description("star", colour="red"), objects) == [0, 1]
    assert resolve(Description("star", relation="left of", anchor=Description("square")), objects) == [0]
    assert resolve(Description("star", relation="right of", anchor=Description("square")), objects) == [1]
    # A relation to an ambiguous anchor names nothing.
    assert resolve(Description("square", relation="right of", anchor=Description("star")), objects) == []
    assert resolve(Description("square", pattern="dots"), objects) == [2]
    assert resolve(Description("square", pattern="plain"), objects) == []
    assert resolve(Description("star", pattern="plain", size="large"), objects) == [1]
    assert resolve(Description("text", text=text), objects) == [3]
    assert resolve(Description("text", colour="red"), objects) == []


def test_describer_picks_the_simplest_unique_description(hand_scene: Scene) -> None:
    describer = Describer(hand_scene)
    assert describer.describe(0).expression() == "the small star"
    assert describer.describe(2).expression() == "the square"
    assert describer.describe(0, excluded=("size",)).expression() == "the star left of the square"
    assert describer.describe(3).expression().startswith(('the word "', 'the text "'))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_referring_expressions_name_exactly_their_object(variant: str) -> None:
    described = total = 0
    for index in range(40):
        scene = sample_scene(index, 21, VARIANTS[variant])
        found = referring_expressions(scene)
        total += len(scene.objects)
        described += len(found)
        for description, target in found:
            expression = description.expression()
            assert expression.isascii() and "<" not in expression and "\n" not in expression
            assert read_expression(expression, scene) == [target], (scene.image_id, expression)
            assert resolve(description, scene.objects) == [target]
            if description.relation is not None:
                assert not _any_attribute_phrase_is_unique(scene, target)
    assert described >= 0.85 * total


def _any_attribute_phrase_is_unique(scene: Scene, target: int) -> bool:
    """Whether any phrase of the target's own attributes alone (no relation) reads to the target only."""
    item = scene.objects[target]
    if not isinstance(item, ShapeObject):
        return True
    pattern_word = next(word for word, name in PATTERNS.items() if name == item.pattern)
    options = [(item.size, None), (pattern_word, None), (item.colour, None)]
    for choice in itertools.product(*options):
        phrase = " ".join(["the", *(word for word in choice if word), item.shape])
        if read_expression(phrase, scene) == [target]:
            return True
    return False
