"""The demo's page: the model against the trivial baseline on every task, and every task on photographs.

`write_demo_report` writes `report.html` (the comparison table, both metrics tables, each task's best and
worst samples drawn, the bundled photographs with every task's answer drawn), its drawings under
`gallery/` and `comparison.json`; it shares `omnivis.eval.report`'s pieces and stylesheet.
"""

from __future__ import annotations

import html
import itertools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omnivis.data.samples import SampleImage
from omnivis.draw import save_png
from omnivis.eval.comparison import ComparisonRow, comparison_html, format_value
from omnivis.eval.evaluation import Evaluation, RecordSource
from omnivis.eval.outputs import task_gallery
from omnivis.eval.report import PAGE_STYLE, draw_answer, figure_html, metrics_table_html, shrink, task_section
from omnivis.images import load_image
from omnivis.io import atomic_directory, atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class PhotoAnswers:
    """Every task's input and answer on one photograph."""

    sample: SampleImage
    inputs: dict[str, Any]
    answers: dict[str, Any]


def write_demo_report(
    out: Path,
    rows: list[ComparisonRow],
    evaluation: Evaluation,
    baseline: Evaluation,
    source: RecordSource,
    photos: list[PhotoAnswers],
    context: str,
) -> Path:
    """Writes `out/report.html`, its drawings (`out/gallery/`, replaced whole) and `out/comparison.json`."""
    verdicts = {row.task: row for row in rows}
    sections = []
    with atomic_directory(out / "gallery") as gallery_dir:
        counter = itertools.count(1)  # one numbering for every drawing: file names never collide
        for task in evaluation.metrics:
            row = verdicts[task]
            values = f"model {format_value(row.model)}, baseline {format_value(row.baseline)}"
            against = f"{row.metric}: {values} ({row.verdict})"
            details = {"against the baseline": against, **evaluation.details[task]}
            gallery = task_gallery(evaluation, task, source)
            sections.append(task_section(task, details, gallery, gallery_dir, counter))
        photo_html = _photos_html(photos, gallery_dir)
    page = _PAGE.format(
        style=PAGE_STYLE,
        context=context,
        comparison=comparison_html(rows),
        model_table=metrics_table_html(evaluation.metrics),
        baseline_table=metrics_table_html(baseline.metrics),
        sections="\n".join(sections),
        photos=photo_html,
    )
    atomic_write_json(
        out / "comparison.json",
        {"rows": [asdict(row) for row in rows], "model": evaluation.metrics, "baseline": baseline.metrics},
    )
    report = out / "report.html"
    # A lone surrogate (possible in a model's text, never valid UTF-8) must not make the whole report fail.
    atomic_write_text(report, page.encode("utf-8", "replace").decode("utf-8"))
    return report


def _photos_html(photos: list[PhotoAnswers], gallery_dir: Path) -> str:
    """The photographs' section: each task's answer drawn on each photograph, with its input."""
    if not photos:
        return '<p class="note">no photographs were asked for</p>'
    parts = []
    for photo in photos:
        image, factor = shrink(load_image(photo.sample.path))
        figures = []
        for number, (task, answer) in enumerate(photo.answers.items(), start=1):
            drawing, note = draw_answer(image, task, answer, factor, "no answer")
            file_name = f"photo-{photo.sample.name}-{number:02d}.png"
            save_png(drawing, gallery_dir / file_name)
            given = photo.inputs.get(task)
            label = task if given is None else f"{task} {_input_text(given)}"
            figures.append(figure_html(label, file_name, drawing.size, note, answer))
        parts.append(
            f'<section class="photo">\n<h3>{html.escape(photo.sample.name)}: '
            f"{html.escape(photo.sample.description)}</h3>\n"
            f'<div class="gallery">\n' + "\n".join(figures) + "\n</div>\n</section>"
        )
    return "\n".join(parts)


def _input_text(given: Any) -> str:
    if isinstance(given, tuple):
        return "region " + ",".join(f"{value:.0f}" for value in given)
    return f"“{given}”"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>omnivis demo</title>
<style>
{style}</style>
</head>
<body>
<h1>omnivis demo</h1>
{context}
<h2>The model against the trivial baseline</h2>
{comparison}
<p>Each task is judged on its headline metric; higher is better except for CER (an error rate).</p>
<h2>Every metric</h2>
<h3>The model</h3>
{model_table}
<h3>The trivial baseline</h3>
{baseline_table}
<h2>Each task: best and worst samples, prediction beside truth</h2>
{sections}
<h2>Photographs: no truth here</h2>
<p>Real photographs bundled with scikit-image. They have no annotations, so nothing below is scored, and
the model was trained on the procedural world only (shapes and text on plain backgrounds): expect it to
describe shapes that are not there. They show every task's answer drawn, not what the model knows about
photographs.</p>
{photos}
</body>
</html>
"""
