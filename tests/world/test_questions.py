"""Questions and answers, each answer recomputed from the scene graph with the test's own reading."""

import re

import numpy as np
import pytest

from omnivis.world import VARIANTS, sample_scene
from omnivis.world.language import POSITION_PHRASES, Describer
from omnivis.world.questions import POSITION_MARGIN, questions
from world.parse_phrases import objects_read, read_expression, read_phrase

SCENES_PER_VARIANT = 50


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def asked(request: pytest.FixtureRequest) -> list:
    found = []
    for index in range(SCENES_PER_VARIANT):
        scene = sample_scene(index, 13, VARIANTS[request.param])
        rng = np.random.Generator(np.random.PCG64(scene.language_seed))
        found.append((scene, questions(scene, Describer(scene), rng)))
    return found


def _cell(box: tuple[float, ...], size: int = 256) -> tuple[str, float]:
    """The third-of-the-image cell of the box's centre, spelled out by hand, and its distance to a border."""
    x, y = (box[0] + box[2]) / 2 / size, (box[1] + box[3]) / 2 / size
    rows, columns = ("top", "", "bottom"), ("left", "", "right")
    row, column = rows[min(2, int(y * 3))], columns[min(2, int(x * 3))]
    name = " ".join(part for part in (row, column) if part) or "center"
    return name, min(abs(x - 1 / 3), abs(x - 2 / 3), abs(y - 1 / 3), abs(y - 2 / 3))


def test_questions_are_clean_and_of_known_kinds(asked: list) -> None:
    kinds = set()
    for _, found in asked:
        for question, answer, kind in found:
            kinds.add(kind)
            assert (
                question.endswith("?") and question.isascii() and "<" not in question and "\n" not in question
            )
            assert answer and answer.isascii() and "\n" not in answer
    assert kinds == {"count", "colour", "position", "reading", "other"}


def test_counts_equal_the_scene_graph(asked: list) -> None:
    for scene, found in asked:
        for question, answer, kind in found:
            if kind != "count":
                continue
            subject = re.fullmatch(r"How many (.+) are there\?", question).group(1)
            expected = len(objects_read(read_phrase("two " + subject, scene), scene))
            assert answer == str(expected), (scene.image_id, question)


def test_colour_and_position_answers_are_read_off_the_named_object(asked: list) -> None:
    colours = {name for name, _ in VARIANTS["default"].colours}
    for scene, found in asked:
        for question, answer, kind in found:
            if kind == "colour":
                expression = re.fullmatch(r"What colour is (.+)\?", question).group(1)
                (target,) = read_expression(expression, scene)
                assert answer == scene.objects[target].colour
                head = (
                    expression.split(" left of ")[0]
                    .split(" right of ")[0]
                    .split(" above ")[0]
                    .split(" below ")[0]
                )
                assert not set(head.split()) & colours  # the question does not give the answer away
            if kind == "position":
                expression = re.fullmatch(r"Where is (.+)\?", question).group(1)
                (target,) = read_expression(expression, scene)
                cell, margin = _cell(scene.objects[target].box)
                assert answer == cell and margin >= POSITION_MARGIN


def test_reading_answers_are_the_text_the_clue_points_at(asked: list) -> None:
    for scene, found in asked:
        texts = scene.texts
        for question, answer, kind in found:
            if kind != "reading":
                continue
            if question == "What is written in the image?":
                assert [item.text for item in texts] == [answer]
                continue
            if match := re.fullmatch(r"What is written on the (.+) plate\?", question):
                chosen = [item for item in texts if item.plate == match.group(1)]
            elif match := re.fullmatch(r"What is written in (.+) letters\?", question):
                chosen = [item for item in texts if item.colour == match.group(1)]
            else:
                where = re.fullmatch(r"What is written (.+)\?", question).group(1)
                cell = next(name for name, phrase in POSITION_PHRASES.items() if phrase == where)
                chosen = [item for item in texts if _cell(item.box)[0] == cell]
                assert _cell(chosen[0].box)[1] >= POSITION_MARGIN
            assert [item.text for item in chosen] == [answer], question


def test_existence_answers(asked: list) -> None:
    answers = set()
    for scene, found in asked:
        for question, answer, kind in found:
            if kind == "other":
                colour, shape = re.fullmatch(r"Is there an? (\w+) (\w+)\?", question).groups()
                exists = any(item.colour == colour and item.shape == shape for item in scene.shapes)
                assert answer == ("yes" if exists else "no")
                answers.add(answer)
    assert answers == {"yes", "no"}
