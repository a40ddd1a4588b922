"""Render a task's answer on its image: boxes, quadrilaterals, polygon masks or a caption banner.

`draw_result` accepts the `{task: answer}` dictionary that `Florence2Processor.post_process_generation`
(and omnivis's own parser) returns, for every Florence-2 task:

* `{"bboxes", "labels"}` with optional `"scores"`: detection, dense captions, grounding, proposals;
* `{"quad_boxes", "labels"}`: OCR with regions, each box as eight numbers x1, y1, ..., x4, y4;
* `{"polygons", "labels"}`: segmentation, each instance a list of flat [x0, y0, x1, y1, ...] lists;
* `{"bboxes", "bboxes_labels", "polygons", "polygons_labels"}`: open-vocabulary detection;
* a string: captions, OCR and region descriptions, shown in a banner under the image.

Each distinct label gets its own colour, outlines are as thick as the image is large, masks are filled
semi-transparently, label text sits on a filled tag kept inside the image, and long captions wrap.
"""

import functools
import io
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from PIL import Image, ImageDraw, ImageFont

from omnivis.errors import InputError
from omnivis.io import atomic_write_bytes

Font: TypeAlias = ImageFont.FreeTypeFont | ImageFont.ImageFont
Point = tuple[float, float]
Box = tuple[float, float, float, float]
RGB = tuple[int, int, int]

# Kelly's and Tableau's high-contrast colours, ordered so that neighbours differ strongly.
PALETTE: tuple[RGB, ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 225, 25),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (0, 0, 128),
    (128, 128, 128),
)

# Searched in order; the bare file name lets Pillow look through the system's font directories.
FONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "DejaVuSans.ttf",
)

# Far-off coordinates only need to land outside the picture; clamping keeps them inside the integer
# range Pillow's C drawing code accepts.
_COORDINATE_LIMIT = float(2**20)
_MASK_OPACITY = 110  # of 255: the object stays visible under its mask
# OCR labels from the reference parser can keep "</s>" and friends; they are noise in a picture.
_SEQUENCE_MARKERS = ("<s>", "</s>", "<pad>")
_BANNER_BACKGROUND: RGB = (24, 24, 24)
_BANNER_TEXT: RGB = (245, 245, 245)


@dataclass(frozen=True)
class _Instance:
    """One drawable answer item: a label with a box, a quadrilateral or polygons."""

    label: str
    score: float | None = None
    box: Box | None = None
    outline: tuple[Point, ...] | None = None  # a quadrilateral's corners
    polygons: tuple[tuple[Point, ...], ...] = ()

    @property
    def shapes(self) -> list[tuple[Point, ...]]:
        """Every point outline of the instance: its quadrilateral and its polygons."""
        return ([self.outline] if self.outline else []) + list(self.polygons)


@dataclass(frozen=True)
class _Style:
    """Sizes that scale with the image, so drawings read the same at any resolution."""

    line_width: int
    font: Font
    padding: int

    @classmethod
    def for_size(cls, width: int, height: int) -> "_Style":
        shorter_side = min(width, height)
        font_size = max(11, round(shorter_side * 0.028))
        line_width = max(2, round(shorter_side / 220))
        return cls(line_width=line_width, font=_load_font(font_size), padding=max(2, font_size // 4))


def draw_result(image: Image.Image, task: str, result: Mapping[str, Any]) -> Image.Image:
    """Draw one task's answer on a copy of its image.

    Args:
        image: The image the answer refers to; coordinates in the answer are its pixels.
        task: The task token the answer is keyed by, e.g. "<OD>".
        result: The `{task: answer}` dictionary returned by post-processing.

    Returns:
        A new RGB image: the input with shapes and labels drawn on it, or, for text answers, with the
        text in a banner added beneath it. An empty answer gives an unchanged copy.

    Raises:
        InputError: `result` has no entry for `task`, or the answer has a shape no task produces.
    """
    if task not in result:
        raise InputError(f"the result has no answer for task {task!r} (keys: {sorted(result)})")
    answer = result[task]
    canvas = image.convert("RGB")
    if isinstance(answer, str):
        return _add_caption_banner(canvas, answer) if answer.strip() else canvas.copy()
    if not isinstance(answer, Mapping):
        raise InputError(f"cannot draw an answer of type {type(answer).__name__} for task {task!r}")
    instances = _collect_instances(answer)
    if not instances:
        return canvas.copy()
    return _draw_instances(canvas, instances)


def _collect_instances(answer: Mapping[str, Any]) -> list[_Instance]:
    """Flatten every shape kind an answer may hold into one list of instances."""
    known_keys = {"bboxes", "quad_boxes", "polygons"}
    if not known_keys & set(answer):
        raise InputError(
            f"cannot draw an answer with keys {sorted(answer)}; expected one of {sorted(known_keys)}"
        )
    instances: list[_Instance] = []
    box_labels = answer.get("bboxes_labels", answer.get("labels", []))
    scores = answer.get("scores", [])
    for index, box in enumerate(answer.get("bboxes", [])):
        corners = _finite_numbers(box)
        if len(corners) == 4:
            x0, y0, x1, y1 = corners
            box_corners = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            instances.append(_Instance(_label(box_labels, index), _score(scores, index), box=box_corners))
    for index, quad in enumerate(answer.get("quad_boxes", [])):
        points = _points(quad)
        if points:
            instances.append(_Instance(_label(answer.get("labels", []), index), outline=points))
    polygon_labels = answer.get("polygons_labels", answer.get("labels", []))
    for index, instance_polygons in enumerate(answer.get("polygons", [])):
        shapes = tuple(points for points in map(_points, instance_polygons) if points)
        if shapes:
            instances.append(_Instance(_label(polygon_labels, index), polygons=shapes))
    return instances


def _label(labels: Sequence[Any], index: int) -> str:
    """The label of item `index` as text; empty when the list is shorter (answers may be ragged)."""
    value = labels[index] if index < len(labels) else None
    return "" if value is None else str(value)


def _score(scores: Sequence[Any], index: int) -> float | None:
    value = scores[index] if index < len(scores) else None
    return float(value) if isinstance(value, numbers.Real) and math.isfinite(value) else None


def _finite_numbers(values: Any) -> list[float]:
    """The coordinates as floats, clamped to a drawable range; empty when any is not a finite number."""
    if not isinstance(values, (list, tuple)):
        return []
    coordinates = [float(value) for value in values if isinstance(value, numbers.Real)]  # numpy scalars too
    if len(coordinates) != len(values) or not all(math.isfinite(value) for value in coordinates):
        return []
    return [min(max(value, -_COORDINATE_LIMIT), _COORDINATE_LIMIT) for value in coordinates]


def _points(flat_coordinates: Sequence[Any]) -> tuple[Point, ...]:
    """Pair up flat x, y coordinates; a trailing unpaired value is dropped."""
    coordinates = _finite_numbers(flat_coordinates)
    return tuple((coordinates[i], coordinates[i + 1]) for i in range(0, len(coordinates) - 1, 2))


def _draw_instances(canvas: Image.Image, instances: list[_Instance]) -> Image.Image:
    """Fill masks, then outline every shape, then place labels on top of everything."""
    style = _Style.for_size(*canvas.size)
    colours = _colours_by_label(instances)
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    overlay_draw = ImageDraw.Draw(overlay)
    for index, instance in enumerate(instances):
        for polygon in instance.polygons:
            if len(polygon) >= 3:
                overlay_draw.polygon(polygon, fill=(*colours[index], _MASK_OPACITY))
    drawing = Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")
    draw = ImageDraw.Draw(drawing)
    for index, instance in enumerate(instances):
        _outline_instance(draw, instance, colours[index], style.line_width)
    layout = _TagLayout(drawing.size)
    for index, instance in enumerate(instances):
        text = _display_label(instance)
        anchor = _label_anchor(instance)
        if text and anchor is not None:
            _draw_label(draw, text, anchor, colours[index], style, layout)
    return drawing


def _display_label(instance: _Instance) -> str:
    """The tag text: the label without the sequence markers the reference leaves in, plus any score."""
    label = instance.label
    for marker in _SEQUENCE_MARKERS:
        label = label.replace(marker, "")
    label = " ".join(label.split())
    return label if instance.score is None else f"{label} {instance.score:.2f}".strip()


def _colours_by_label(instances: list[_Instance]) -> list[RGB]:
    """One colour per distinct label in order of appearance; unlabelled items each get their own."""
    colour_of_key: dict[str, RGB] = {}
    colours = []
    for index, instance in enumerate(instances):
        key = f"label:{instance.label}" if instance.label else f"item:{index}"
        if key not in colour_of_key:
            colour_of_key[key] = PALETTE[len(colour_of_key) % len(PALETTE)]
        colours.append(colour_of_key[key])
    return colours


def _outline_instance(draw: ImageDraw.ImageDraw, instance: _Instance, colour: RGB, width: int) -> None:
    if instance.box is not None:
        draw.rectangle(instance.box, outline=colour, width=width)
    for points in instance.shapes:
        if len(points) == 1:
            x, y = points[0]
            draw.ellipse((x - width, y - width, x + width, y + width), fill=colour)
        else:
            draw.line([*points, points[0]], fill=colour, width=width, joint="curve")


def _label_anchor(instance: _Instance) -> Point | None:
    """The top-left corner a label hangs from: the box's corner, or the shape's bounding box corner."""
    if instance.box is not None:
        return instance.box[0], instance.box[1]
    points = [point for shape in instance.shapes for point in shape]
    if not points:
        return None
    return min(x for x, _ in points), min(y for _, y in points)


class _TagLayout:
    """Places label tags inside the image, moving a tag down when its spot is already taken."""

    def __init__(self, image_size: tuple[int, int]) -> None:
        self.image_width, self.image_height = image_size
        self.placed: list[Box] = []

    def place(self, anchor: Point, tag_width: float, tag_height: float) -> Box:
        """Reserve and return a tag rectangle just above `anchor` if free, else on a lower row."""
        x = min(max(0.0, anchor[0]), max(0.0, self.image_width - tag_width))
        candidates = [anchor[1] - tag_height] + [anchor[1] + row * tag_height for row in range(4)]
        rows = [min(max(0.0, y), max(0.0, self.image_height - tag_height)) for y in candidates]
        free_rows = [y for y in rows if not self._taken((x, y, x + tag_width, y + tag_height))]
        y = free_rows[0] if free_rows else rows[0]  # crowded everywhere: keep the natural spot
        tag = (x, y, x + tag_width, y + tag_height)
        self.placed.append(tag)
        return tag


    def _taken(self, box: Box) -> bool:
        """Whether `box` overlaps a tag placed earlier."""
        return any(
            box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3]
            for other in self.placed
        )


def _draw_label(
    draw: ImageDraw.ImageDraw, text: str, anchor: Point, colour: RGB, style: _Style, layout: _TagLayout
) -> None:
    """Write `text` on a filled tag of `colour` near `anchor`."""
    text = _fit_text(text, style.font, layout.image_width - 2 * style.padding)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=style.font)
    x0, y0, x1, y1 = layout.place(anchor, right - left + 2 * style.padding, bottom - top + 2 * style.padding)
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
    origin = (x0 + style.padding - left, y0 + style.padding - top)
    draw.text(origin, text, font=style.font, fill=_text_colour(colour))


def _text_colour(background: RGB) -> RGB:
    """Black on light tags, white on dark ones (perceived luminance, ITU-R BT.601 weights)."""
    red, green, blue = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else (255, 255, 255)


def _fit_text(text: str, font: Font, max_width: float) -> str:
    """Shorten `text` with an ellipsis until it fits in `max_width` pixels."""
    if font.getlength(text) <= max_width:
        return text
    # Bisect on the kept prefix's length: widths grow with length, and labels can be paragraphs.
    shortest, longest = 0, len(text)
    while shortest < longest:
        middle = (shortest + longest + 1) // 2
        if font.getlength(text[:middle] + "…") <= max_width:
            shortest = middle
        else:
            longest = middle - 1
    return text[:shortest] + "…"


def _add_caption_banner(image: Image.Image, text: str) -> Image.Image:
    """Return the image with `text` wrapped to its width in a dark banner underneath."""
    style = _Style.for_size(*image.size)
    margin = 3 * style.padding
    lines = _wrap(text, style.font, image.width - 2 * margin)
    # The tallest and deepest glyphs of a sample give a line height that works for any font kind.
    line_height = style.font.getbbox("ÅgjpqyÉ|")[3] + style.padding
    banner = Image.new("RGB", (image.width, len(lines) * line_height + 2 * margin), _BANNER_BACKGROUND)
    draw = ImageDraw.Draw(banner)
    for row, line in enumerate(lines):
        draw.text((margin, margin + row * line_height), line, font=style.font, fill=_BANNER_TEXT)
    result = Image.new("RGB", (image.width, image.height + banner.height))
    result.paste(image, (0, 0))
    result.paste(banner, (0, image.height))
    return result


def _wrap(text: str, font: Font, max_width: float) -> list[str]:
    """Break text into lines no wider than `max_width`, splitting words only when one is too long."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for character in word:  # a word wider than the image is cut wherever it overflows
                if line and font.getlength(line + character) > max_width:
                    lines.append(line)
                    line = ""
                line += character
        lines.append(line)
    return lines


@functools.lru_cache(maxsize=16)
def _load_font(size: int) -> Font:
    """A scalable TrueType font when one is installed, else Pillow's built-in font; never fails."""
    for candidate in FONT_CANDIDATES:
        try:
            return ImageFont.truetype(candidate, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType only has the fixed-size bitmap font
        return ImageFont.load_default()


def save_png(image: Image.Image, path: str | Path) -> None:
    """Writes `image` as a PNG atomically: a reader never sees half a file, a failure leaves the old one."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())
