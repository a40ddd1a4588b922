"""The world's words: object phrases, positions, spatial relations, and uniquely referring expressions.

A referring expression is written from a structured `Description` (a category, some attributes, and optionally
a spatial relation to another, uniquely described object). `resolve` evaluates a description against every
object of the scene graph; an expression is only ever emitted when `resolve` returns exactly its object. Among
the descriptions that single an object out, the simplest is chosen: fewest attributes first, then attributes
alone before a relation.

Vocabulary rules (they become target text): ASCII only, no "<", no newline; written text is quoted with double
quotes, e.g. the word "apple"; text objects are named 'word "apple"' (one word) or 'text "open daily"' (a
line).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from omnivis.world.scene import Scene, SceneObject, ShapeObject
from omnivis.world.text import TextObject

NUMBER_WORDS = (
    "no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)  # fmt: skip
IRREGULAR_PLURALS = {"cross": "crosses", "piece of text": "pieces of text", "line of text": "lines of text"}
PATTERN_ADJECTIVES = {"stripes": "striped", "dots": "dotted", "checker": "checkered", "plain": "plain"}
PLAIN = "plain"  # the pattern value of a shape without pattern, as descriptions name it

# The image is cut into thirds along each axis; an object's cell is the one holding its box's centre.
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
POSITION_PHRASES = {
    "top left": "in the top left", "top": "at the top", "top right": "in the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "in the bottom left", "bottom": "at the bottom", "bottom right": "in the bottom right",
}  # fmt: skip
# Spatial relations between boxes: strict, so they hold without any judgement call.
RELATIONS = ("left of", "right of", "above", "below")
# Attribute sets tried for a unique description, simplest first (the category is always named).
ATTRIBUTE_SETS: tuple[tuple[str, ...], ...] = (
    (), ("colour",), ("size",), ("pattern",), ("size", "colour"), ("pattern", "colour"), ("size", "pattern"),
    ("size", "pattern", "colour"),
)  # fmt: skip


def number_word(count: int) -> str:
    """The word for a count: "two" for 2; digits beyond twenty."""
    return NUMBER_WORDS[count] if 0 <= count < len(NUMBER_WORDS) else str(count)


def plural(noun: str) -> str:
    """The plural of a (last) noun: "star" -> "stars", "cross" -> "crosses"."""
    return IRREGULAR_PLURALS.get(noun, noun + "s")


def with_article(phrase: str) -> str:
    """The phrase after "a" or "an": "a red star", "an orange star"."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def listed(phrases: Sequence[str]) -> str:
    """Phrases as an English list: "a", "a and b", "a, b and c"."""
    return phrases[-1] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def counted(count: int, words: str, noun: str) -> str:
    """A counted noun phrase: "a red star" for one, "two red stars" for two (`words` holds the attributes)."""
    if count == 1:
        return with_article(" ".join(part for part in (words, noun) if part))
    return " ".join(part for part in (number_word(count), words, plural(noun)) if part)


def position(box: Sequence[float], width: int, height: int) -> str:
    """The third-of-the-image cell holding the box's centre: "top left", "top", ..., "center", ..."""
    row = ROWS[min(2, int(3 * (box[1] + box[3]) / 2 / height))]
    column = COLUMNS[min(2, int(3 * (box[0] + box[2]) / 2 / width))]
    if row == "middle":
        return column
    return row if column == "center" else f"{row} {column}"


def position_margin(box: Sequence[float], width: int, height: int) -> float:
    """How far (as a share of the image side) the box's centre is from the nearest border between cells."""
    x = (box[0] + box[2]) / 2 / width
    y = (box[1] + box[3]) / 2 / height
    return min(abs(value - border) for value in (x, y) for border in (1 / 3, 2 / 3))


def holds(relation: str, first: Sequence[float], second: Sequence[float]) -> bool:
    """Whether box `first` is `relation` ("left of", "right of", "above", "below") box `second`, apart."""
    if relation == "left of":
        return first[2] <= second[0]
    if relation == "right of":
        return first[0] >= second[2]
    if relation == "above":
        return first[3] <= second[1]
    return first[1] >= second[3]


def shape_words(item: ShapeObject, *, size: bool = True, pattern: bool = True, colour: bool = True) -> str:
    """The attributes and name of a shape: "small striped red star"."""
    words = [item.size if size else "", PATTERN_ADJECTIVES[item.pattern] if pattern and item.pattern else ""]
    return " ".join(word for word in (*words, item.colour if colour else "", item.shape) if word)


def text_words(item: TextObject) -> str:
    """The name of a text object: 'word "apple"' or 'text "open daily"'."""
    return f'{"word" if item.is_word else "text"} "{item.text}"'


def object_words(item: SceneObject) -> str:
    """The region phrase of any object: all of a shape's attributes, or a text's quoted text."""
    return shape_words(item) if isinstance(item, ShapeObject) else text_words(item)


@dataclass(frozen=True)
class Description:
    """A structured description of one object.

    Attributes:
        category: Shape name, or "text".
        size: Size class, or None for any.
        pattern: "stripes", "dots", "checker", "plain" (no pattern), or None for any.
        colour: Shape colour, or None for any.
        text: A text object's text (text objects are named by it).
        relation: One of `RELATIONS`, or None.
        anchor: The uniquely described object the relation refers to.
    """

    category: str
    size: str | None = None
    pattern: str | None = None
    colour: str | None = None
    text: str | None = None
    relation: str | None = None
    anchor: Description | None = None

    def words(self) -> str:
        """The description without article: "small red star left of the blue square"."""
        if self.text is not None:
            head = f'{"word" if " " not in self.text else "text"} "{self.text}"'
        else:
            pattern = PATTERN_ADJECTIVES[self.pattern] if self.pattern else None
            head = " ".join(word for word in (self.size, pattern, self.colour, self.category) if word)
        if self.relation is None or self.anchor is None:
            return head
        return f"{head} {self.relation} {self.anchor.expression()}"

    def expression(self) -> str:
        """The referring expression: "the small red star left of the blue square"."""
        return "the " + self.words()

    def word_count(self) -> int:
        """How many words the expression has: the measure of simplicity."""
        return len(self.expression().split())


def matches(description: Description, item: SceneObject) -> bool:
    """Whether an object has every attribute the description names (its relation is not checked here)."""
    if isinstance(item, TextObject):
        attributes_given = description.size or description.pattern or description.colour
        return (
            description.category == "text" and not attributes_given and description.text in (None, item.text)
        )
    pattern = item.pattern or PLAIN
    return (
        description.category == item.shape
        and description.text is None
        and description.size in (None, item.size)
        and description.pattern in (None, pattern)
        and description.colour in (None, item.colour)
    )


def resolve(description: Description, objects: Sequence[SceneObject]) -> list[int]:
    """The indices of every object the description fits, checked one by one against the scene graph.

    A relation counts only when its anchor resolves to exactly one object, other than the candidate.
    """
    found = [index for index, item in enumerate(objects) if matches(description, item)]
    if description.relation is None:
        return found
    if description.anchor is None:
        return []
    anchors = resolve(description.anchor, objects)
    if len(anchors) != 1:
        return []
    anchor = anchors[0]
    return [
        index
        for index in found
        if index != anchor and holds(description.relation, objects[index].box, objects[anchor].box)
    ]


def _attribute_description(item: SceneObject, attributes: tuple[str, ...]) -> Description:
    if isinstance(item, TextObject):
        return Description("text", text=item.text)
    return Description(
        item.shape,
        size=item.size if "size" in attributes else None,
        pattern=(item.pattern or PLAIN) if "pattern" in attributes else None,
        colour=item.colour if "colour" in attributes else None,
    )


class Describer:
    """Finds the simplest unique description of each object of a scene.

    Attribute matches and relations are tabulated once per scene as boolean matrices, so searching every
    attribute set, relation and anchor stays cheap; each description found is then verified with `resolve`.
    """

    def __init__(self, scene: Scene) -> None:
        self.objects = scene.objects
        count = len(self.objects)
        keys = {
            "category": [item.category for item in self.objects],
            "text": [item.text if isinstance(item, TextObject) else None for item in self.objects],
            "size": [getattr(item, "size", None) for item in self.objects],
            "pattern": [
                (item.pattern or PLAIN) if isinstance(item, ShapeObject) else None for item in self.objects
            ],
            "colour": [item.colour if isinstance(item, ShapeObject) else None for item in self.objects],
        }
        # same[key][i, j]: objects i and j agree on `key`.
        self.same = {}
        for key, values in keys.items():
            column = np.empty(count, dtype=object)
            column[:] = values
            self.same[key] = column[:, None] == column[None, :]
        boxes = np.array([item.box for item in self.objects], dtype=np.float64).reshape(count, 4)
        x0, y0, x1, y1 = (boxes[:, side] for side in range(4))
        # related[r][i, j]: object i is `r` object j (the tests of `holds`; never i == j: boxes have area).
        self.related = {
            "left of": x1[:, None] <= x0[None, :],
            "right of": x0[:, None] >= x1[None, :],
            "above": y1[:, None] <= y0[None, :],
            "below": y0[:, None] >= y1[None, :],
        }
        # matching[s][i, j]: objects i and j share category, text and the attributes ATTRIBUTE_SETS[s].
        self.matching = []
        for attributes in ATTRIBUTE_SETS:
            agree = self.same["category"] & self.same["text"]
            for attribute in attributes:
                agree = agree & self.same[attribute]
            self.matching.append(agree)
        self._alike = np.array([agree.sum(axis=1) for agree in self.matching])  # (sets, objects)
        self.unique_alone = [self._alone(index, ()) for index in range(count)]
        self._found: dict[tuple[int, tuple[str, ...]], Description | None] = {}

    def _alone(self, index: int, excluded: tuple[str, ...]) -> Description | None:
        """The simplest attribute-only description naming object `index` alone."""
        for position, attributes in enumerate(ATTRIBUTE_SETS):
            if self._alike[position, index] == 1 and not set(attributes) & set(excluded):
                return _attribute_description(self.objects[index], attributes)
        return None

    def describe(self, index: int, excluded: tuple[str, ...] = ()) -> Description | None:
        """The simplest verified unique description of object `index`, never naming the `excluded` attributes.

        Returns:
            The description, or None when no attribute set, alone or with one relation, singles it out.
        """
        key = (index, excluded)
        if key not in self._found:
            candidate = self._alone(index, excluded)
            if candidate is None:
                candidate = self._relational(index, excluded)
            verified = candidate is not None and resolve(candidate, self.objects) == [index]
            self._found[key] = candidate if verified else None
        return self._found[key]

    def _relational(self, index: int, excluded: tuple[str, ...]) -> Description | None:
        """The simplest "attributes + relation + uniquely described anchor" naming `index` alone."""
        anchors = np.array([description is not None for description in self.unique_alone])
        anchors[index] = False
        for position, attributes in enumerate(ATTRIBUTE_SETS):
            if set(attributes) & set(excluded):
                continue
            alike = self.matching[position][index].astype(np.int64)  # (objects,)
            base = _attribute_description(self.objects[index], attributes)
            options = []
            for relation in RELATIONS:
                table = self.related[relation]
                # Per anchor: how many objects like the target stand in `relation` to it; one means unique.
                usable = anchors & table[index] & (alike @ table == 1)
                options += [
                    dataclasses.replace(base, relation=relation, anchor=self.unique_alone[int(anchor)])
                    for anchor in np.flatnonzero(usable)
                ]
            if options:
                return min(options, key=Description.word_count)
        return None


def referring_expressions(scene: Scene, describer: Describer | None = None) -> list[tuple[Description, int]]:
    """One verified unique description per object that has one, with the object's index, in object order."""
    describer = describer or Describer(scene)
    found = ((describer.describe(index), index) for index in range(len(scene.objects)))
    return [(description, index) for description, index in found if description is not None]
