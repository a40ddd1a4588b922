"""Finding the structured parts of a generated answer: labelled boxes, polygons and text lines.

Each finder reads the decoded text with the reference `Florence2PostProcessor`'s regular expressions, so that
its quirks carry over unchanged: a label may not hold "<" and is cut at a newline (the reference's `.`), a
label spans up to the first location token, a run of more than four location tokens after a label makes one
box per full group of four, a polygon drops an unpaired last coordinate, and `<sep>`/`<poly>` tokens are
skipped over inside a label.

The finders work on "answer text": the decoded text with every `<s>`, `</s>` and `<pad>` removed (in that
order, as the reference does). They return bin indices and character spans in that text; callers dequantize
and, for scores, map spans back to tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from omnivis.tasks.locations import LOCATION_TOKEN_PATTERN

SEQUENCE_MARKERS = ("<s>", "</s>", "<pad>")

# A label (no "<") followed by four or more location tokens; without a label for the label-less tasks.
_LABELLED_BOXES = re.compile(r"([^<]+(?:<loc_\d+>){4,})")
_UNLABELLED_BOXES = re.compile(r"(?:(?:<loc_\d+>){4,})")
# The label: everything before the first location (or box-like) tag, leading whitespace skipped.
_LABEL = re.compile(r"^\s*(.*?)(?=<od>|</od>|<box>|</box>|<bbox>|</bbox>|<loc_)")
_BOX = re.compile(r"<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>")

# Polygons: locations, separators and polygon brackets may follow the label in any mix.
_POLYGON_PART = r"(?:<loc_\d+>|<sep>|<poly>|</poly>)"
_LABELLED_POLYGONS = re.compile(rf"([^<]+{_POLYGON_PART}{{4,}})")
_UNLABELLED_POLYGONS = re.compile(rf"(?:{_POLYGON_PART}{{4,}})")
_POLYGON_LABEL = re.compile(r"^\s*(.*?)(?=<od>|</od>|<box>|</box>|<bbox>|</bbox>|<loc_|<poly>)")
_LEADING_LOCATION = re.compile(r"^<loc_\d+>")
_POLYGON_GROUP = re.compile(r"<poly>(.*?)</poly>")
_POLYGON = re.compile(r"((?:<loc_\d+>)+)(?:<sep>|$)")

# A text line and the four corners of its quadrilateral.
TEXT_LINE_PATTERN = r"(.+?)" + r"<loc_(\d+)>" * 8


@dataclass(frozen=True)
class FoundBox:
    """A box in answer text: its label, its four bins, and where its location tokens are."""

    label: str
    bins: tuple[int, int, int, int]
    span: tuple[int, int]


@dataclass(frozen=True)
class FoundPolygons:
    """One object's polygons in answer text: its label and one bin list per polygon (x, y, x, y, ...)."""

    label: str
    polygons: list[list[int]]


@dataclass(frozen=True)
class FoundTextLine:
    """A line of text and the eight bins of its quadrilateral."""

    text: str
    bins: list[int]


def answer_text(text: str) -> str:
    """Decoded text without its sequence markers, as every structured parser of the reference reads it."""
    for marker in SEQUENCE_MARKERS:
        text = text.replace(marker, "")
    return text


def find_boxes(text: str, *, labelled: bool, banned_labels: frozenset[str] = frozenset()) -> list[FoundBox]:
    """Boxes in answer text, in order; several boxes after one label share it.

    Args:
        text: Answer text (see `answer_text`).
        labelled: Whether each box group follows a label (detection, grounding) or not (region proposals).
        banned_labels: Labels to drop with their boxes (phrase grounding's pronouns and the like).

    Returns:
        The boxes; labels have their non-ASCII characters removed, as in the reference.
    """
    pattern = _LABELLED_BOXES if labelled else _UNLABELLED_BOXES
    found = []
    for group in pattern.finditer(text):
        label_match = _LABEL.search(group.group(0))
        if label_match is None:  # the label holds a newline
            continue
        label = label_match.group(0).strip()
        if label in banned_labels:
            continue
        label = label.encode("ascii", "ignore").decode("ascii")
        for box in _BOX.finditer(group.group(0)):
            bins = (int(box.group(1)), int(box.group(2)), int(box.group(3)), int(box.group(4)))
            span = (group.start() + box.start(), group.start() + box.end())
            found.append(FoundBox(label, bins, span))
    return found


def find_polygons(text: str, *, labelled: bool) -> list[FoundPolygons]:
    """Objects with polygon masks in answer text, in order.

    Within one label's run, `<poly>...</poly>` brackets (when both appear) delimit separate objects;
    `<sep>` separates the polygons of one object.

    Args:
        text: Answer text (see `answer_text`).
        labelled: Whether each run follows a label (open-vocabulary detection) or not (segmentation).
    """
    pattern = _LABELLED_POLYGONS if labelled else _UNLABELLED_POLYGONS
    found = []
    for run in pattern.finditer(text):
        run_text = run.group(0)
        # A label-less run may start with a stray location token that is not part of the label.
        label_match = _POLYGON_LABEL.search(_LEADING_LOCATION.sub("", run_text, count=1))
        if label_match is None:
            continue
        label = label_match.group(0).strip()
        for object_text in _polygon_objects(run_text):
            polygons = [_paired_bins(polygon.group(1)) for polygon in _POLYGON.finditer(object_text)]
            if polygons:
                found.append(FoundPolygons(label, polygons))
    return found


def _polygon_objects(run_text: str) -> Iterator[str]:
    """The text of each object in a run: each `<poly>...</poly>` group, or the whole run without brackets."""
    if "<poly>" in run_text and "</poly>" in run_text:
        for group in _POLYGON_GROUP.finditer(run_text):
            yield group.group(1)
    else:
        yield run_text


def _paired_bins(locations: str) -> list[int]:
    """The bins of a run of location tokens, without an unpaired last one."""
    bins = [int(match.group(1)) for match in LOCATION_TOKEN_PATTERN.finditer(locations)]
    return bins[: len(bins) - len(bins) % 2]


def find_text_lines(text: str, pattern: str | None = None) -> list[FoundTextLine]:
    """Lines of text, each followed by its quadrilateral's eight location tokens.

    Args:
        text: Answer text (see `answer_text`).
        pattern: A regular expression with nine groups (the text, then eight bins); the default matches
            the shortest text before each eight location tokens.
    """
    found = []
    for text_and_bins in re.findall(pattern or TEXT_LINE_PATTERN, text):
        line, *bins = text_and_bins
        found.append(FoundTextLine(line.strip(), [int(bin_text) for bin_text in bins]))
    return found


def shoelace_area(coordinates: list[int]) -> float:
    """The area the reference gives a quadrilateral (x0, y0, ..., x3, y3) before filtering small lines.

    It is the shoelace formula over the first three edges only: the closing edge from the fourth corner
    back to the first is left out, as the reference leaves it out.
    """
    xs, ys = coordinates[0::2], coordinates[1::2]
    return 0.5 * abs(sum(xs[index] * ys[index + 1] - xs[index + 1] * ys[index] for index in range(3)))
