"""Records built by hand for the dataset-format tests: tiny real PNGs, and a strategy of valid records."""

from __future__ import annotations

import io

from hypothesis import strategies as st
from PIL import Image

from omnivis.data.records import (
    CAPTION_LEVELS,
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

WORLD = Provenance("world")


def png_bytes(width: int, height: int, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A real PNG of one colour, made with Pillow."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def full_record(index: int, width: int = 16, height: int = 12) -> Record:
    """A record with every annotation kind, a decodable PNG, and an id and details derived from `index`."""
    star = Region(
        box=(1.0, 1.0, 7.5, 6.0),
        category="star",
        provenance=WORLD,
        phrase="small red star",
        description="A small red star near the top left corner.",
        polygons=((1.0, 1.0, 7.5, 1.0, 4.0, 6.0),),
    )
    square = Region((8.0, 2.0, 15.0, 11.0), "square", Provenance("specialist:detector", 1), score=0.75)
    caption = f"a star and a square {index}"
    return Record(
        image_id=f"image-{index:03d}",
        image=png_bytes(width, height, (index % 256, 40, 90)),
        width=width,
        height=height,
        source="world",
        captions=(
            Caption("brief", caption, WORLD),
            Caption("detailed", "A small red star beside a grey square.", WORLD),
        ),
        regions=(star, square),
        text_lines=(TextLine("HI", (2.0, 8.0, 6.0, 8.0, 6.0, 11.0, 2.0, 11.0), WORLD),),
        groundings=(
            Grounding(caption, (GroundedPhrase("a star", 0, 6, ((1.0, 1.0, 7.5, 6.0),)),), WORLD),
        ),
        referring=(ReferringExpression("the star", 0, WORLD),),
        questions=(QuestionAnswer("How many stars?", "1", "count", WORLD),),
        metadata={"scene": str(index), "seed": "7"},
    )


_TEXT = st.text(max_size=10)
_PROVENANCES = st.builds(Provenance, _TEXT, st.integers(0, 2**31 - 1))
# Scores a region may hold: validate() refuses non-finite ones.
_FINITE_SCORES = st.none() | st.floats(allow_nan=False, allow_infinity=False)


def _coordinate(limit: int) -> st.SearchStrategy[float]:
    # Ints are allowed in records; they come back as the equal float.
    return st.floats(0, limit, allow_nan=False) | st.integers(0, limit)


@st.composite
def _box(draw: st.DrawFn, width: int, height: int) -> tuple[float, float, float, float]:
    x0, x1 = sorted(draw(st.lists(_coordinate(width), min_size=2, max_size=2)))
    y0, y1 = sorted(draw(st.lists(_coordinate(height), min_size=2, max_size=2)))
    return (x0, y0, x1, y1)


def _points(width: int, height: int, min_size: int, max_size: int) -> st.SearchStrategy[tuple[float, ...]]:
    point = st.tuples(_coordinate(width), _coordinate(height))
    points = st.lists(point, min_size=min_size, max_size=max_size)
    return points.map(lambda pairs: tuple(value for pair in pairs for value in pair))


@st.composite
def _grounding(draw: st.DrawFn, width: int, height: int) -> Grounding:
    caption = draw(st.text(min_size=1, max_size=20))
    phrases = []
    for _ in range(draw(st.integers(0, 3))):
        start = draw(st.integers(0, len(caption)))
        end = draw(st.integers(start, len(caption)))
        boxes = tuple(draw(st.lists(_box(width, height), max_size=2)))
        phrases.append(GroundedPhrase(caption[start:end], start, end, boxes))
    return Grounding(caption, tuple(phrases), draw(_PROVENANCES))


@st.composite
def valid_records(draw: st.DrawFn, image_id: str | None = None) -> Record:
    """Any record that passes `Record.validate`, with arbitrary (not decodable) image bytes."""
    width, height = draw(st.integers(1, 5000)), draw(st.integers(1, 5000))
    region = st.builds(
        Region,
        box=_box(width, height),
        category=st.text(min_size=1, max_size=10),
        provenance=_PROVENANCES,
        phrase=_TEXT,
        description=_TEXT,
        polygons=st.lists(_points(width, height, 3, 6), max_size=2).map(tuple),
        score=_FINITE_SCORES,
        is_crowd=st.booleans(),
    )
    regions = tuple(draw(st.lists(region, max_size=3)))
    text_line = st.builds(
        TextLine, _TEXT, _points(width, height, 4, 4), _PROVENANCES, st.none() | st.floats(allow_nan=False)
    )
    caption = st.builds(Caption, st.sampled_from(CAPTION_LEVELS), _TEXT, _PROVENANCES)
    question = st.builds(QuestionAnswer, _TEXT, _TEXT, _TEXT, _PROVENANCES)
    referring = st.builds(ReferringExpression, _TEXT, st.integers(0, max(0, len(regions) - 1)), _PROVENANCES)
    return Record(
        image_id=image_id if image_id is not None else draw(st.text(min_size=1, max_size=10)),
        image=draw(st.binary(min_size=1, max_size=40)),
        width=width,
        height=height,
        source=draw(_TEXT),
        captions=tuple(draw(st.lists(caption, max_size=3))),
        regions=regions,
        text_lines=tuple(draw(st.lists(text_line, max_size=2))),
        groundings=tuple(draw(st.lists(_grounding(width, height), max_size=2))),
        referring=tuple(draw(st.lists(referring, max_size=2 if regions else 0))),
        questions=tuple(draw(st.lists(question, max_size=2))),
        metadata=draw(st.dictionaries(_TEXT, _TEXT, max_size=3)),
    )
