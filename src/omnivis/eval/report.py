"""Evaluation results for people: a plain-text metrics table and a self-contained HTML report.

`format_table` prints one row per task and one column per metric. `write_report` writes `report.html`
with the same table, each task's counts and notes, and a gallery of its best and worst samples: the
prediction and the truth drawn side by side on the sample's image (PNG files under `gallery/`, the only
things the page references). Every piece of text is html-escaped, since labels, inputs and image ids
come from data and models and may hold `<`, `&` or any unicode. The page's pieces (`metrics_table_html`,
`task_section`, `figure_html`, `draw_answer`, `shrink`) and its stylesheet (`PAGE_STYLE`) are public: the demo's
page (`omnivis.eval.demo_report`) is built from them.
"""

from __future__ import annotations

import html
import itertools
import math
import numbers
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from omnivis.draw import draw_result, save_png
from omnivis.errors import InputError
from omnivis.eval.metrics import LOWER_IS_BETTER, METRIC_NAMES
from omnivis.images import load_image
from omnivis.io import atomic_directory, atomic_write_text

# Column order of the tables: the metrics' own order; names not listed there follow, sorted.
METRIC_ORDER: tuple[str, ...] = METRIC_NAMES

# Drawings are shrunk to this long side first: a report of hundreds of full-size photos would weigh gigabytes.
MAX_DRAWING_SIDE = 512
# Answers are also listed as text under their drawing; a dense answer is cut after this many lines.
_MAX_ANSWER_LINES = 12
_MAX_DETAIL_DEPTH = 4
# Answer keys whose numbers are pixel coordinates, to be scaled with the image.
_GEOMETRY_KEYS = frozenset({"bboxes", "quad_boxes", "polygons"})


@dataclass(frozen=True)
class GalleryItem:
    """One evaluated sample to show.

    Attributes:
        task: The task token, e.g. "<OD>".
        image_id: The sample's image id, shown as text only.
        input: The task's input as display text (a phrase, a question, "x0,y0,x1,y1"), None if none.
        score: The sample's own score (higher is better), None when it has none.
        image: The encoded image file (PNG or JPEG bytes).
        prediction: The model's answer in the structure `run()` returns under the task key (a string,
            or a dict such as {"bboxes": [...], "labels": [...]}); None when the model gave no answer.
        truth: The truth, in the same structure as `prediction`.
    """

    task: str
    image_id: str
    input: str | None
    score: float | None
    image: bytes = field(repr=False)
    prediction: Any
    truth: Any


@dataclass(frozen=True)
class TaskGallery:
    """The samples of one task to show: those that scored best and those that scored worst."""

    best: list[GalleryItem]
    worst: list[GalleryItem]


def format_table(metrics: Mapping[str, Mapping[str, float | None]]) -> str:
    """A plain-text table of metric values, one row per task and one column per metric.

    Columns follow `METRIC_ORDER`, then unknown metric names sorted. Values have 4 decimals and are
    right-aligned; None shows as "n/a" and a metric a task lacks leaves its cell empty. Lower-is-better
    metrics (CER, WER) are shown as they are. Lines carry no trailing spaces and the text no final
    newline; with no tasks only the header ("task") and its rule remain.

    Args:
        metrics: Task token -> metric name -> value, with tasks in the order the rows should have.

    Returns:
        The table: a header line, a rule of dashes, then one line per task.

    Raises:
        InputError: A value is neither a real number nor None.
    """
    columns = _metric_columns(metrics)
    rows = [["task", *columns]]
    for task, values in metrics.items():
        rows.append([task, *(_format_value(values[name]) if name in values else "" for name in columns)])
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]))]
    lines = []
    for task_cell, *value_cells in rows:
        aligned = [cell.rjust(width) for cell, width in zip(value_cells, widths[1:])]
        lines.append("  ".join([task_cell.ljust(widths[0]), *aligned]).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _format_value(value: float | None) -> str:
    """A metric value or score as table text: 4 decimals, or "n/a" for None."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"a metric value must be a real number or None, got {value!r}")
    return f"{float(value):.4f}"


def _metric_columns(metrics: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    """Every metric name that occurs, known ones in `METRIC_ORDER`, unknown ones after them, sorted."""
    names = {name for values in metrics.values() for name in values}
    known = [name for name in METRIC_ORDER if name in names]
    return known + sorted(names - set(METRIC_ORDER))


def write_report(
    out_dir: Path,
    metrics: Mapping[str, Mapping[str, float | None]],
    details: Mapping[str, Mapping[str, Any]],
    galleries: Mapping[str, TaskGallery],
    title: str = "omnivis evaluation",
) -> Path:
    """Write `out_dir/report.html` and the drawings it shows under `out_dir/gallery/`.

    The page holds the metrics table, then one section per task with its details (any keys: numbers,
    dicts of counts, lists of notes) and its best and worst samples, prediction beside truth. It uses
    inline CSS only and references nothing but its own PNG files, by relative path. The gallery folder
    is rebuilt from scratch on every call (drawings of an earlier report are removed), and every file
    is written atomically.

    Args:
        out_dir: The folder to write into; created if missing.
        metrics: Task token -> metric name -> value, as for `format_table`.
        details: Task token -> counts and notes to show under the table.
        galleries: Task token -> the samples to draw.
        title: The page's title.

    Returns:
        The path of the written `report.html`.

    Raises:
        InputError: A metric value is not a number or None, or a gallery image cannot be decoded.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = metrics_table_html(metrics)  # checks the values before anything is drawn
    tasks = list(dict.fromkeys([*metrics, *details, *galleries]))
    sections = []
    with atomic_directory(out_dir / "gallery") as gallery_dir:
        counter = itertools.count(1)  # one numbering for the whole report: file names never collide
        for task in tasks:
            gallery = galleries.get(task)
            sections.append(task_section(task, details.get(task, {}), gallery, gallery_dir, counter))
    page = _PAGE.format(
        style=PAGE_STYLE,
        title=_escape(title),
        table=table,
        lower_is_better=" and ".join(sorted(LOWER_IS_BETTER)),
        sections="\n".join(sections),
    )
    # A lone surrogate (possible in str, never valid UTF-8) must not make the whole report fail.
    page = page.encode("utf-8", "replace").decode("utf-8")
    report_path = out_dir / "report.html"
    atomic_write_text(report_path, page)
    return report_path


# The stylesheet of every omnivis page (this report, the demo's): one look, written once.
PAGE_STYLE = """\
body { font-family: system-ui, sans-serif; margin: 2em; color: #1a1a1a; background: #fafafa; }
table.metrics { border-collapse: collapse; margin-bottom: 1em; }
table.metrics th, table.metrics td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
table.metrics td.value { text-align: right; font-variant-numeric: tabular-nums; }
section.task, section.photo { margin-top: 2.5em; border-top: 2px solid #444; }
dl.details dt { font-weight: bold; margin-top: 0.4em; }
dl.details dd { margin-left: 1.5em; }
div.gallery { display: flex; flex-wrap: wrap; gap: 1.5em; }
article.item { background: #fff; border: 1px solid #ddd; padding: 0.6em; max-width: 1080px; }
div.pair { display: flex; flex-wrap: wrap; gap: 0.8em; }
figure { margin: 0; }
figcaption { font-weight: bold; }
img { max-width: 512px; height: auto; display: block; }
pre.answer { white-space: pre-wrap; overflow-wrap: anywhere; max-width: 512px; font-size: 0.85em; }
.note { color: #a33; font-style: italic; }
.caption { margin: 0 0 0.5em 0; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
{style}</style>
</head>
<body>
<h1>{title}</h1>
<h2>Metrics</h2>
{table}
<p>Higher is better for every metric except {lower_is_better} (error rates: lower is better).</p>
{sections}
</body>
</html>
"""


def _escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def metrics_table_html(metrics: Mapping[str, Mapping[str, float | None]]) -> str:
    """The metrics as an HTML table with the columns and cells of `format_table`."""
    columns = _metric_columns(metrics)
    header = "".join(f"<th>{_escape(name)}</th>" for name in ["task", *columns])
    rows = []
    for task, values in metrics.items():
        texts = [_format_value(values[name]) if name in values else "" for name in columns]
        cells = "".join(f'<td class="value">{text}</td>' for text in texts)
        rows.append(f"<tr><th>{_escape(task)}</th>{cells}</tr>")
    if not rows:
        return '<p class="note">no metrics</p>'
    return f'<table class="metrics">\n<tr>{header}</tr>\n' + "\n".join(rows) + "\n</table>"


def task_section(
    task: str,
    details: Mapping[str, Any],
    gallery: TaskGallery | None,
    gallery_dir: Path,
    counter: Iterator[int],
) -> str:
    """One task's part of the page: its heading, details, and best and worst samples."""
    parts = [f'<section class="task">\n<h2>{_escape(task)}</h2>']
    if details:
        parts.append(_details_html(details))
    if gallery is not None:
        for heading, items in (("best", gallery.best), ("worst", gallery.worst)):
            drawn = [_item_html(item, gallery_dir, counter) for item in items]
            body = "\n".join(drawn) if drawn else '<p class="note">none</p>'
            parts.append(f'<h3>{heading}</h3>\n<div class="gallery">\n{body}\n</div>')
    parts.append("</section>")
    return "\n".join(parts)


def _details_html(details: Mapping[str, Any]) -> str:
    entries = "".join(
        f"<dt>{_escape(key)}</dt><dd>{_value_html(value, depth=1)}</dd>" for key, value in details.items()
    )
    return f'<dl class="details">{entries}</dl>'


def _value_html(value: Any, depth: int) -> str:
    """Any detail value as HTML: numbers and text inline, mappings and lists as nested lists."""
    if value is None:
        return "n/a"
    if isinstance(value, numbers.Integral):  # bools included: shown as True / False
        return _escape(value)
    if isinstance(value, numbers.Real):
        return _escape(f"{float(value):.4f}")
    # The depth cap also ends self-referencing containers.
    if isinstance(value, (str, bytes)) or depth > _MAX_DETAIL_DEPTH:
        return _escape(value)
    if isinstance(value, Mapping):
        entries = [f"{_escape(key)}: {_value_html(item, depth + 1)}" for key, item in value.items()]
    elif isinstance(value, Iterable):
        entries = [_value_html(item, depth + 1) for item in value]
    else:
        return _escape(value)
    if not entries:
        return "none"
    return "<ul>" + "".join(f"<li>{entry}</li>" for entry in entries) + "</ul>"


def _item_html(item: GalleryItem, gallery_dir: Path, counter: Iterator[int]) -> str:
    """Draw one sample's prediction and truth into `gallery_dir` and return the HTML showing them."""
    try:
        image = load_image(item.image)
    except InputError as error:
        where = f"gallery image of task {item.task!r}, image id {item.image_id!r}"
        raise InputError(f"{where}: {error}") from error
    image, factor = shrink(image)
    number = next(counter)
    stem = f"{_safe_stem(item.task)}-{number:04d}"
    caption = [f"image <code>{_escape(item.image_id)}</code>", f"score {_format_value(item.score)}"]
    if item.input is not None:
        caption.append(f"input: <q>{_escape(item.input)}</q>")
    figures = []
    sides = (("prediction", item.prediction, "no answer"), ("truth", item.truth, "no truth"))
    for side, answer, missing_note in sides:
        drawing, note = draw_answer(image, item.task, answer, factor, missing_note)
        file_name = f"{stem}-{side}.png"
        save_png(drawing, gallery_dir / file_name)
        figures.append(figure_html(side, file_name, drawing.size, note, answer))
    return (
        f'<article class="item">\n<p class="caption">{" · ".join(caption)}</p>\n'
        f'<div class="pair">\n{figures[0]}\n{figures[1]}\n</div>\n</article>'
    )


def figure_html(side: str, file_name: str, size: tuple[int, int], note: str | None, answer: Any) -> str:
    """One drawing as a captioned figure: its PNG under `gallery/`, the note if any, the answer as text."""
    width, height = size
    note_html = f'<p class="note">{_escape(note)}</p>' if note else ""
    lines = _answer_lines(answer)
    text_html = f'<pre class="answer">{_escape(chr(10).join(lines))}</pre>' if lines else ""
    return (
        f"<figure><figcaption>{side}</figcaption>"
        f'<img src="gallery/{_escape(file_name)}" width="{width}" height="{height}" alt="{side}"'
        ' loading="lazy">'
        f"{note_html}{text_html}</figure>"
    )


def _safe_stem(task: str) -> str:
    """The task token reduced to ASCII letters and digits, for file names; never empty."""
    return re.sub(r"[^A-Za-z0-9]", "", task) or "task"


def shrink(image: Image.Image) -> tuple[Image.Image, float]:
    """The image scaled down to `MAX_DRAWING_SIDE` on its long side if larger, and the factor used."""
    long_side = max(image.size)
    if long_side <= MAX_DRAWING_SIDE:
        return image, 1.0
    factor = MAX_DRAWING_SIDE / long_side
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS), factor


def draw_answer(
    image: Image.Image, task: str, answer: Any, factor: float, missing_note: str
) -> tuple[Image.Image, str | None]:
    """The answer drawn on the image, with a note when there is nothing (or nothing drawable) to draw."""
    if answer is None:
        return image, missing_note
    try:
        return draw_result(image, task, {task: _scaled_answer(answer, factor)}), None
    except (ValueError, TypeError) as error:
        # A malformed model answer must cost one drawing, not the whole report at the end of a long run.
        return image, f"cannot draw this answer: {error}"


def _scaled_answer(answer: Any, factor: float) -> Any:
    """The answer with its pixel coordinates multiplied by `factor`, to match a resized image."""
    if factor == 1.0 or not isinstance(answer, Mapping):
        return answer
    return {key: _scaled(value, factor) if key in _GEOMETRY_KEYS else value for key, value in answer.items()}


def _scaled(value: Any, factor: float) -> Any:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value) * factor
    if isinstance(value, (list, tuple)):
        return [_scaled(item, factor) for item in value]
    return value  # not a coordinate; drawing skips it as it would have before scaling


def _answer_lines(answer: Any) -> list[str]:
    """An answer as short text lines: the text itself, or one line per box, quadrilateral or mask."""
    if answer is None:
        return []
    if isinstance(answer, str):
        return [answer]
    if not isinstance(answer, Mapping):
        return [str(answer)]
    labels = answer.get("labels", [])
    box_labels = answer.get("bboxes_labels", labels)
    lines = [
        *_shape_lines(answer.get("bboxes", []), box_labels, answer.get("scores", [])),
        *_shape_lines(answer.get("quad_boxes", []), labels, []),
    ]
    polygon_labels = answer.get("polygons_labels", labels)
    for index, polygons in enumerate(_as_list(answer.get("polygons", []))):
        point_count = sum(len(_as_list(polygon)) // 2 for polygon in _as_list(polygons))
        lines.append(f"{_item_label(polygon_labels, index)}: mask of {point_count} points")
    if not lines:
        shown_keys = _GEOMETRY_KEYS | {"labels", "bboxes_labels", "polygons_labels", "scores"}
        lines = [f"{key}: {value}" for key, value in answer.items() if key not in shown_keys] or ["(empty)"]
    if len(lines) > _MAX_ANSWER_LINES:
        hidden = len(lines) - _MAX_ANSWER_LINES
        lines = lines[:_MAX_ANSWER_LINES] + [f"… and {hidden} more"]
    return lines


def _shape_lines(shapes: Any, labels: Any, scores: Any) -> list[str]:
    """One "label (score) [coordinates]" line per box or quadrilateral."""
    lines = []
    score_list = _as_list(scores)
    for index, coordinates in enumerate(_as_list(shapes)):
        score = score_list[index] if index < len(score_list) else None
        score_text = f" ({score:.2f})" if isinstance(score, numbers.Real) and math.isfinite(score) else ""
        numbers_text = ", ".join(_coordinate_text(value) for value in _as_list(coordinates))
        lines.append(f"{_item_label(labels, index)}{score_text} [{numbers_text}]".strip())
    return lines


def _coordinate_text(value: Any) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{round(float(value), 1):g}"
    return str(value)


def _item_label(labels: Any, index: int) -> str:
    label_list = _as_list(labels)
    return str(label_list[index]) if index < len(label_list) and label_list[index] is not None else ""


def _as_list(value: Any) -> Sequence[Any]:
    """A list or tuple as it is; anything else (a malformed answer part) as empty."""
    return value if isinstance(value, (list, tuple)) else []
