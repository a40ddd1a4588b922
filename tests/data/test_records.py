"""Record invariants: validate() accepts good records and names the record and annotation of a bad one."""

import dataclasses
import math

import pytest

from omnivis.data.records import (
    Caption,
    GroundedPhrase,
    Grounding,
    Provenance,
    QuestionAnswer,
    Record,
    ReferringExpression,
    Region,
    TextLine,
)
from omnivis.errors import DatasetError

TRUTH = Provenance("world")


def good_record() -> Record:
    caption = "a red circle and a blue star"
    return Record(
        image_id="r1",
        image=b"\x89PNG fake bytes are not decoded by validate",
        width=100,
        height=50,
        source="world",
        captions=(Caption("brief", caption, TRUTH),),
        regions=(
            Region((10, 10, 30, 30), "circle", TRUTH, "red circle", polygons=((10, 10, 30, 10, 30, 30),)),
            Region((50, 5, 99.5, 50), "star", TRUTH),
        ),
        text_lines=(TextLine("hello", (60, 1, 90, 1, 90, 9, 60, 9), TRUTH),),
        groundings=(Grounding(caption, (GroundedPhrase("a red circle", 0, 12, ((10, 10, 30, 30),)),), TRUTH),),
        referring=(ReferringExpression("the star", 1, TRUTH),),
        questions=(QuestionAnswer("How many stars are there?", "1", "count", TRUTH),),
    )


def test_a_good_record_validates_and_answers_its_helpers() -> None:
    record = good_record()
    assert record.validate() is record
    assert record.image_size == (100, 50)
    assert record.caption("brief") == "a red circle and a blue star"
    assert record.caption("detailed") is None
    assert record.ocr_text() == "hello"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: dataclasses.replace(r, image_id=""), "image_id"),
        (lambda r: dataclasses.replace(r, image=b""), "empty"),
        (lambda r: dataclasses.replace(r, width=0), "positive"),
        (lambda r: dataclasses.replace(r, captions=(Caption("long", "x", TRUTH),)), "caption level"),
        (lambda r: _region(r, box=(-1, 0, 5, 5)), "outside"),
        (lambda r: _region(r, box=(10, 10, 5, 30)), "inverted"),
        (lambda r: _region(r, box=(0, 0, math.nan, 5)), "non-finite"),
        (lambda r: _region(r, box=(0, 0, 101, 5)), "outside"),
        (lambda r: _region(r, category=""), "empty category"),
        (lambda r: _region(r, polygons=((1, 1, 2, 2),)), "at least 6"),
        (lambda r: _region(r, polygons=((1, 1, 2, 2, 3, 60),)), "outside"),
        (lambda r: _region(r, score=math.inf), "score"),
        (lambda r: _region(r, provenance=Provenance("world", -1)), "round"),
        (lambda r: _region(r, provenance=Provenance("world", 1.5)), "round"),  # type: ignore[arg-type]
        (lambda r: _region(r, phrase=None), "strings"),  # type: ignore[arg-type]
        (lambda r: dataclasses.replace(r, text_lines=(TextLine("x", (0,) * 6, TRUTH),)), "8 coordinates"),
        (lambda r: dataclasses.replace(r, referring=(ReferringExpression("x", 2, TRUTH),)), "does not exist"),
        (lambda r: _grounding(r, GroundedPhrase("a blue", 0, 6, ())), "is not caption"),
        (lambda r: _grounding(r, GroundedPhrase("a red", 0.0, 5, ())), "integers"),  # type: ignore[arg-type]
        (lambda r: _grounding(r, GroundedPhrase("a red", 0, 5, ((0, 0, 200, 5),))), "outside"),
    ],
)
def test_a_broken_invariant_is_named_with_its_record(change, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DatasetError, match=message) as raised:
        change(good_record()).validate()
    assert "record" in str(raised.value)


def _region(record: Record, **changes: object) -> Record:
    return dataclasses.replace(record, regions=(dataclasses.replace(record.regions[0], **changes),))


def _grounding(record: Record, phrase: GroundedPhrase) -> Record:
    grounding = dataclasses.replace(record.groundings[0], phrases=(phrase,))
    return dataclasses.replace(record, groundings=(grounding,))
