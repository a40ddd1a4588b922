"""Captions at three levels of detail, each with its phrases grounded to boxes (FLD-5B sections 4.3.1, 4.3.3).

- brief: one sentence naming the most salient things by category and count, and the background;
- detailed: the counts, every shape group by colour and shape, the text written, and one spatial relation;
- more detailed: a paragraph with a sentence per object (attributes, position, what hides part of it), the
  text with its style, colour and plate, and spatial relations.

Every noun phrase that names objects is grounded while the caption is written: its character span and the
boxes of exactly the objects it names ("two red stars" -> both stars' boxes). Counts come from the scene
graph.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from omnivis.data.records import Box, GroundedPhrase
from omnivis.world import language
from omnivis.world.language import RELATIONS, Describer, counted, with_article
from omnivis.world.scene import Scene, SceneObject, ShapeObject
from omnivis.world.text import TextObject

BRIEF_MAX_GROUPS = 3  # above this many shape categories the brief caption just counts "shapes"
MAX_RELATIONS = {"detailed": 1, "more_detailed": 2}  # relation sentences per caption level
MAX_OCCLUDERS_NAMED = 2  # shapes named as hiding part of one shape
TILT_DEGREES = 10.0  # text turned at least this much is called tilted
TEXTURE_WORDS = {"lines": "faint lines", "grid": "a faint grid", "waves": "faint waves"}


class CaptionWriter:
    """Builds a caption piece by piece, recording each grounded phrase's span and boxes."""

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._length = 0
        self._phrases: list[GroundedPhrase] = []

    def add(self, text: str) -> None:
        """Append plain text."""
        self._pieces.append(text)
        self._length += len(text)

    def phrase(self, text: str, boxes: Sequence[Box], *, capital: bool = False) -> None:
        """Append a phrase grounded to `boxes`; `capital` starts a sentence with it."""
        if capital:
            text = text[:1].upper() + text[1:]
        self._phrases.append(GroundedPhrase(text, self._length, self._length + len(text), tuple(boxes)))
        self.add(text)

    def finish(self) -> tuple[str, tuple[GroundedPhrase, ...]]:
        """The caption and its grounded phrases."""
        return "".join(self._pieces), tuple(self._phrases)


def background_words(scene: Scene) -> str:
    """The background as a noun phrase: "a pale blue background", "a mottled cream background", ..."""
    background = scene.background
    if background.kind == "gradient":
        return f"a {background.colour} to {background.second_colour} gradient background"
    if background.kind == "noise":
        return with_article(f"mottled {background.colour} background")
    if background.kind == "texture":
        return with_article(f"{background.colour} background with {TEXTURE_WORDS[background.texture]}")
    return with_article(f"{background.colour} background")


def _boxes(items: Sequence[SceneObject]) -> list[Box]:
    return [item.box for item in items]


def _text_group_words(texts: Sequence[TextObject]) -> str:
    """How to count text objects: words, lines of text, or pieces of text."""
    if all(item.is_word for item in texts):
        return "word"
    return "line of text" if not any(item.is_word for item in texts) else "piece of text"


def _list_items(
    writer: CaptionWriter, items: Sequence[tuple[str, list[Box]]], *, capital: bool = False
) -> None:
    """Write grounded phrases as an English list: "a, b and c"."""
    for position, (phrase, boxes) in enumerate(items):
        if position:
            writer.add(" and " if position == len(items) - 1 else ", ")
        writer.phrase(phrase, boxes, capital=capital and position == 0)


def _text_items(texts: Sequence[TextObject], most_listed: int) -> list[tuple[str, list[Box]]]:
    """Each text named ('the word "apple"'), or all of them counted when there are more than `most_listed`."""
    if len(texts) > most_listed:
        return [(counted(len(texts), "", _text_group_words(texts)), _boxes(texts))]
    return [(f"the {language.text_words(item)}", [item.box]) for item in texts]


def brief_caption(scene: Scene) -> tuple[str, tuple[GroundedPhrase, ...]]:
    """One sentence: the shapes by category (or just their count), the text, and the background."""
    shapes, texts = scene.shapes, scene.texts
    categories = Counter(item.shape for item in shapes)
    items: list[tuple[str, list[Box]]]
    if len(categories) > BRIEF_MAX_GROUPS:
        items = [(counted(len(shapes), "", "shape"), _boxes(shapes))]
    else:
        items = [
            (counted(count, "", shape), _boxes([item for item in shapes if item.shape == shape]))
            for shape, count in sorted(categories.items(), key=lambda entry: (-entry[1], entry[0]))
        ]
    items += _text_items(texts, 2)
    writer = CaptionWriter()
    if not items:
        writer.add(f"Nothing but {background_words(scene)}.")
        return writer.finish()
    _list_items(writer, items, capital=True)
    writer.add(f" on {background_words(scene)}.")
    return writer.finish()


def _overview(writer: CaptionWriter, scene: Scene) -> None:
    """Write the opening sentence, e.g. 'The image shows five shapes and the word "apple" on a ...'."""
    items = []
    if scene.shapes:
        items.append((counted(len(scene.shapes), "", "shape"), _boxes(scene.shapes)))
    items += _text_items(scene.texts, 2)
    writer.add("The image shows ")
    if items:
        _list_items(writer, items)
        writer.add(" on ")
    writer.add(f"{background_words(scene)}.")


def _shape_groups(shapes: Sequence[ShapeObject]) -> list[tuple[str, list[Box]]]:
    """Shapes grouped by colour and shape, in order of appearance: "two red stars", "a small blue circle"."""
    groups: dict[tuple[str, str], list[ShapeObject]] = {}
    for item in shapes:
        groups.setdefault((item.colour, item.shape), []).append(item)
    phrases = []
    for (colour, shape), members in groups.items():
        if len(members) == 1:
            phrases.append((with_article(language.shape_words(members[0])), _boxes(members)))
        else:
            phrases.append((counted(len(members), colour, shape), _boxes(members)))
    return phrases


def _text_sentence(writer: CaptionWriter, scene: Scene, item: TextObject, *, detailed: bool) -> None:
    """Write a text's sentence, e.g. 'The word "apple" is written in black letters on a white plate'."""
    writer.add(" ")
    writer.phrase(f"the {language.text_words(item)}", [item.box], capital=True)
    style = _font_style(item.font) + " " if detailed else ""
    writer.add(f" is written in {style}{item.colour} letters")
    writer.add(f" on {with_article(item.plate)} plate" if item.plate else " directly on the background")
    where = language.position(item.box, scene.config.width, scene.config.height)
    writer.add(" " + language.POSITION_PHRASES[where])
    if detailed and abs(item.rotation) >= TILT_DEGREES:
        writer.add(", tilted upward" if item.rotation > 0 else ", tilted downward")
    writer.add(".")


def _font_style(font: str) -> str:
    """The style words of a DejaVu font file name: "bold serif", "italic", "monospaced", "plain"."""
    words = [
        word for key, word in (("Bold", "bold"), ("Oblique", "italic"), ("Italic", "italic")) if key in font
    ]
    words += ["monospaced"] if "Mono" in font else ["serif"] if "Serif" in font else []
    return " ".join(words) or "plain"


def _relation_sentences(
    writer: CaptionWriter, scene: Scene, describer: Describer, rng: np.random.Generator, limit: int
) -> None:
    """Up to `limit` sentences "The red circle is left of the square." between uniquely described objects."""
    # One relation per pair of objects (the first that holds), so no two sentences relate the same pair.
    unique = np.array([description is not None for description in describer.unique_alone])
    tables = np.stack(
        [describer.related[relation] for relation in RELATIONS]
    )  # (relations, objects, objects)
    related = tables.any(axis=0) & np.triu(unique[:, None] & unique[None, :], k=1)
    firsts, seconds = np.nonzero(related)
    relations = tables.argmax(axis=0)[firsts, seconds]
    for pick in sorted(rng.permutation(len(firsts))[:limit].tolist()):
        first, second, relation = int(firsts[pick]), int(seconds[pick]), RELATIONS[int(relations[pick])]
        subject, anchor = describer.unique_alone[first], describer.unique_alone[second]
        if subject is None or anchor is None:  # excluded by `unique` above
            continue
        writer.add(" ")
        writer.phrase(subject.expression(), [scene.objects[first].box], capital=True)
        writer.add(f" is {relation} ")
        writer.phrase(anchor.expression(), [scene.objects[second].box])
        writer.add(".")


def detailed_caption(
    scene: Scene, describer: Describer, rng: np.random.Generator
) -> tuple[str, tuple[GroundedPhrase, ...]]:
    """A few sentences: counts, the shape groups, the text, one spatial relation."""
    writer = CaptionWriter()
    _overview(writer, scene)
    groups = _shape_groups(scene.shapes)
    if groups:
        writer.add(" The shapes are " if len(scene.shapes) > 1 else " The shape is ")
        _list_items(writer, groups)
        writer.add(".")
    for item in scene.texts:
        _text_sentence(writer, scene, item, detailed=False)
    _relation_sentences(writer, scene, describer, rng, MAX_RELATIONS["detailed"])
    return writer.finish()


def _shape_sentence(writer: CaptionWriter, scene: Scene, item: ShapeObject, rng: np.random.Generator) -> None:
    """Write a shape's sentence, e.g. "In the top left there is a small red star.", and what hides it."""
    where = language.POSITION_PHRASES[language.position(item.box, scene.config.width, scene.config.height)]
    phrase = with_article(language.shape_words(item))
    writer.add(" ")
    template = int(rng.integers(3))
    if template == 0:
        writer.add(where[:1].upper() + where[1:] + " there is ")
        writer.phrase(phrase, [item.box])
    else:
        writer.phrase(phrase, [item.box], capital=True)
        writer.add((" sits " if template == 1 else " is ") + where)
    writer.add(".")
    occluders = [scene.objects[index] for index in item.occluders[:MAX_OCCLUDERS_NAMED]]
    if occluders:
        writer.add(" It is partly hidden behind ")
        _list_items(
            writer, [(with_article(language.object_words(other)), [other.box]) for other in occluders]
        )
        writer.add(".")


def more_detailed_caption(
    scene: Scene, describer: Describer, rng: np.random.Generator
) -> tuple[str, tuple[GroundedPhrase, ...]]:
    """A paragraph: an overview, a sentence per shape (top to bottom, left to right), the text, relations."""
    writer = CaptionWriter()
    _overview(writer, scene)
    for shape in sorted(scene.shapes, key=lambda shape: (_row(shape, scene), shape.box[0])):
        _shape_sentence(writer, scene, shape, rng)
    for text in scene.texts:
        _text_sentence(writer, scene, text, detailed=True)
    _relation_sentences(writer, scene, describer, rng, MAX_RELATIONS["more_detailed"])
    return writer.finish()


def _row(item: SceneObject, scene: Scene) -> int:
    return min(2, int(3 * (item.box[1] + item.box[3]) / 2 / scene.config.height))
