"""Visual questions with exact answers: counting, colour, position, reading, and existence.

Every answer is read off the scene graph. A question names an object only through a description that singles
it out (verified by `language.resolve`); position questions are asked only about objects whose centre is
clearly inside one third-of-the-image cell, so the answer never hangs on a pixel. Counts are digits ("0",
"2"), colours and positions are the world's own words ("red", "top left"), reading answers are the text
exactly as written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from omnivis.world import language
from omnivis.world.language import Describer
from omnivis.world.scene import Scene
from omnivis.world.text import TextObject

Question = tuple[str, str, str]  # (question, answer, kind)

POSITION_MARGIN = 0.04  # image share between an object's centre and any cell border, for position questions
CATEGORY_COUNT_QUESTIONS = 2  # "How many stars are there?" about present categories
ATTRIBUTE_QUESTIONS = 2  # colour and position questions each
ABSENT_ATTEMPTS = 20  # tries to find a colour-shape pair absent from the scene


def _pick(rng: np.random.Generator, options: Sequence[object], count: int) -> list[int]:
    """Indices of up to `count` options, chosen at random, in their original order."""
    return sorted(int(index) for index in rng.permutation(len(options))[:count])


def count_questions(scene: Scene, rng: np.random.Generator) -> list[Question]:
    """How many shapes, of some categories (one absent), of a colour, of a colour and shape, of texts."""
    shapes = scene.shapes
    found = [("How many shapes are there?", str(len(shapes)), "count")]
    categories = Counter(item.shape for item in shapes)
    present = sorted(categories)
    for index in _pick(rng, present, CATEGORY_COUNT_QUESTIONS):
        found.append(
            (
                f"How many {language.plural(present[index])} are there?",
                str(categories[present[index]]),
                "count",
            )
        )
    absent = [shape for shape in scene.config.shapes if shape not in categories]
    if absent:
        shape = absent[int(rng.integers(len(absent)))]
        found.append((f"How many {language.plural(shape)} are there?", "0", "count"))
    colours = Counter(item.colour for item in shapes)
    if colours:
        colour = sorted(colours)[int(rng.integers(len(colours)))]
        found.append((f"How many {colour} shapes are there?", str(colours[colour]), "count"))
        groups = Counter((item.colour, item.shape) for item in shapes)
        colour, shape = sorted(groups)[int(rng.integers(len(groups)))]
        found.append(
            (f"How many {colour} {language.plural(shape)} are there?", str(groups[colour, shape]), "count")
        )
    if scene.texts:
        found.append(("How many pieces of text are there?", str(len(scene.texts)), "count"))
    return found


def colour_questions(scene: Scene, describer: Describer, rng: np.random.Generator) -> list[Question]:
    """Ask "What colour is the small star?" of shapes that can be singled out without naming their colour."""
    options = []
    for index, item in enumerate(scene.objects):
        description = describer.describe(index, excluded=("colour",)) if item.category != "text" else None
        if description is not None:
            options.append((f"What colour is {description.expression()}?", item.colour, "colour"))
    return [options[index] for index in _pick(rng, options, ATTRIBUTE_QUESTIONS)]


def position_questions(scene: Scene, describer: Describer, rng: np.random.Generator) -> list[Question]:
    """Ask "Where is the red star?" (answer "top left") of objects clearly inside one cell."""
    width, height = scene.config.width, scene.config.height
    options = []
    for index, item in enumerate(scene.objects):
        description = describer.describe(index)
        if description is not None and language.position_margin(item.box, width, height) >= POSITION_MARGIN:
            answer = language.position(item.box, width, height)
            options.append((f"Where is {description.expression()}?", answer, "position"))
    return [options[index] for index in _pick(rng, options, ATTRIBUTE_QUESTIONS)]


def reading_questions(scene: Scene, rng: np.random.Generator) -> list[Question]:
    """Ask "What is written on the yellow plate?" of each text that a trait besides its text singles out."""
    texts = scene.texts
    if len(texts) == 1:
        return [("What is written in the image?", texts[0].text, "reading")]
    found = []
    for item in texts:
        ways = _reading_ways(scene, item, texts)
        if ways:
            found.append((ways[int(rng.integers(len(ways)))], item.text, "reading"))
    return found


def _reading_ways(scene: Scene, item: TextObject, texts: Sequence[TextObject]) -> list[str]:
    """Questions that point at `item` by its plate, ink colour or position, each unique among the texts."""
    width, height = scene.config.width, scene.config.height
    ways = []
    if item.plate and sum(other.plate == item.plate for other in texts) == 1:
        ways.append(f"What is written on the {item.plate} plate?")
    if sum(other.colour == item.colour for other in texts) == 1:
        ways.append(f"What is written in {item.colour} letters?")
    where = language.position(item.box, width, height)
    clear = language.position_margin(item.box, width, height) >= POSITION_MARGIN
    if clear and sum(language.position(other.box, width, height) == where for other in texts) == 1:
        ways.append(f"What is written {language.POSITION_PHRASES[where]}?")
    return ways


def existence_questions(scene: Scene, rng: np.random.Generator) -> list[Question]:
    """Ask "Is there a red star?" of one present colour-shape pair ("yes") and one absent pair ("no")."""
    present = sorted({(item.colour, item.shape) for item in scene.shapes})
    found = []
    if present:
        colour, shape = present[int(rng.integers(len(present)))]
        found.append((f"Is there {language.with_article(f'{colour} {shape}')}?", "yes", "other"))
    colours = [name for name, _ in scene.config.colours]
    for _ in range(ABSENT_ATTEMPTS):
        pair = (
            colours[int(rng.integers(len(colours)))],
            scene.config.shapes[int(rng.integers(len(scene.config.shapes)))],
        )
        if pair not in present:
            found.append((f"Is there {language.with_article(f'{pair[0]} {pair[1]}')}?", "no", "other"))
            break
    return found


def questions(scene: Scene, describer: Describer, rng: np.random.Generator) -> list[Question]:
    """Every question asked about a scene, grouped by kind."""
    return [
        *count_questions(scene, rng),
        *colour_questions(scene, describer, rng),
        *position_questions(scene, describer, rng),
        *reading_questions(scene, rng),
        *existence_questions(scene, rng),
    ]
