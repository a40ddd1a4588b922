"""An independent reader of the world's phrases, for tests: words in, matching scene objects out.

It knows only the vocabulary (from the config) and plain English, none of the generator's code paths, so a
test that parses a generated phrase and evaluates it against the scene graph checks the generator's language
against the truth rather than against itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from omnivis.world.scene import Scene, ShapeObject

NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}  # fmt: skip
PATTERNS = {"striped": "stripes", "dotted": "dots", "checkered": "checker", "plain": None}
RELATIONS = ("left of", "right of", "above", "below")
TEXT_GROUPS = {"word", "words", "piece of text", "pieces of text", "line of text", "lines of text"}
QUOTED = re.compile(r'^(?:the )?(?:word|text) "([^"]+)"$')


@dataclass
class Reading:
    """What a noun phrase says: how many, and which attributes."""

    count: int | None  # None for "the ..." (a definite reference: exactly one)
    shape: str | None  # None for "shapes"
    size: str | None = None
    colour: str | None = None
    pattern: str | None = "any"  # "any" unless a pattern word is given; None means plain
    text: str | None = None


def read_phrase(phrase: str, scene: Scene) -> Reading:
    """Parse "two red stars", "a small striped blue circle", "the word \"apple\"", "seven shapes", ..."""
    phrase = phrase[:1].lower() + phrase[1:]
    quoted = QUOTED.match(phrase)
    if quoted:
        return Reading(1, "text", text=quoted.group(1))
    words = phrase.split()
    count = None
    if words[0] == "the":
        words = words[1:]
    elif words[0] in NUMBERS:
        count = NUMBERS[words.pop(0)]
    if " ".join(words) in TEXT_GROUPS:
        return Reading(count, "text")
    config = scene.config
    sizes = {name for name, _, _ in config.size_classes}
    colours = {name for name, _ in config.colours}
    reading = Reading(count, None)
    noun = words.pop()
    for word in words:
        if word in sizes:
            reading.size = word
        elif word in colours:
            reading.colour = word
        elif word in PATTERNS:
            reading.pattern = PATTERNS[word]
        else:
            raise AssertionError(f"unknown word {word!r} in phrase {phrase!r}")
    singular = {shape: shape for shape in config.shapes} | {_plural(shape): shape for shape in config.shapes}
    if noun in ("shape", "shapes"):
        reading.shape = None
    elif noun in singular:
        reading.shape = singular[noun]
    else:
        raise AssertionError(f"unknown noun {noun!r} in phrase {phrase!r}")
    return reading


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def objects_read(reading: Reading, scene: Scene) -> list[int]:
    """Indices of the scene objects that have every attribute the reading names."""
    found = []
    for index, item in enumerate(scene.objects):
        if reading.shape == "text":
            if item.category == "text" and reading.text in (None, getattr(item, "text", None)):
                found.append(index)
            continue
        if not isinstance(item, ShapeObject) or reading.shape not in (None, item.shape):
            continue
        if reading.size not in (None, item.size) or reading.colour not in (None, item.colour):
            continue
        if reading.pattern != "any" and reading.pattern != item.pattern:
            continue
        found.append(index)
    return found


def read_expression(expression: str, scene: Scene) -> list[int]:
    """The objects a referring expression ("the red star left of the blue square") picks out."""
    for relation in RELATIONS:
        marker = f" {relation} the "
        if (
            marker in expression
            and not expression.startswith('the word "')
            and not expression.startswith('the text "')
        ):
            head, anchor_text = expression.split(marker, 1)
            anchors = read_expression("the " + anchor_text, scene)
            if len(anchors) != 1:
                return []
            anchor_box = scene.objects[anchors[0]].box
            return [
                index
                for index in objects_read(read_phrase(head, scene), scene)
                if index != anchors[0] and _holds(relation, scene.objects[index].box, anchor_box)
            ]
    return objects_read(read_phrase(expression, scene), scene)


def _holds(relation: str, first: tuple[float, ...], second: tuple[float, ...]) -> bool:
    # Spelled out independently of the generator: boxes strictly apart along one axis.
    return {
        "left of": first[2] <= second[0],
        "right of": second[2] <= first[0],
        "above": first[3] <= second[1],
        "below": second[3] <= first[1],
    }[relation]
