"""What a dataset holds: examples per task, regions per category, and a few samples drawn with their truth.

`omnivis data stats DIR` reads every record once (counting from the records themselves, not trusting the
manifest) and draws the first few examples of each task, the target's parsed answer overlaid on the image,
so a person can look at what a model will be taught.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnivis.data.parquet import open_dataset
from omnivis.data.records import Record
from omnivis.draw import draw_result, save_png
from omnivis.images import load_image
from omnivis.io import atomic_write_json
from omnivis.tasks import TASKS
from omnivis.tasks.targets import Example, all_examples


@dataclass
class DatasetStats:
    """Counts over a dataset.

    Attributes:
        records: Number of records.
        sources: Records per image source.
        examples: Training examples per task prompt (what the target serializers make of the records).
        records_per_task: Records giving at least one example of each task.
        categories: Regions per category.
        unrepresentable: Examples that cannot be written as targets, per task (each is named in `problems`).
        problems: One line per unrepresentable example: image id, task and reason.
        drawn: Paths of the sample drawings written.
        skipped: Records left out as unreadable or invalid (only when reading with `skip_bad`), each named.
    """

    records: int = 0
    sources: Counter[str] = field(default_factory=Counter)
    examples: Counter[str] = field(default_factory=Counter)
    records_per_task: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    unrepresentable: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    drawn: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The counts as plain JSON types, tasks in registry order and categories by name."""
        return {
            "records": self.records,
            "sources": dict(sorted(self.sources.items())),
            "examples": {task: self.examples[task] for task in TASKS},
            "records_per_task": {task: self.records_per_task[task] for task in TASKS},
            "categories": dict(sorted(self.categories.items())),
            "unrepresentable": {task: self.unrepresentable[task] for task in TASKS if self.unrepresentable[task]},
            "problems": self.problems,
            "drawn": [str(path) for path in self.drawn],
            "skipped": self.skipped,
        }

    def table(self) -> str:
        """A plain-text table of the per-task counts."""
        lines = [f"{self.records} records; sources: {dict(sorted(self.sources.items()))}"]
        lines.append(f"{'task':<36} {'records':>8} {'examples':>9} {'unrepresentable':>16}")
        for task in TASKS:
            counts = (self.records_per_task[task], self.examples[task], self.unrepresentable[task])
            lines.append(f"{task:<36} {counts[0]:>8} {counts[1]:>9} {counts[2]:>16}")
        top = ", ".join(f"{name} {count}" for name, count in self.categories.most_common(12))
        lines.append(f"{len(self.categories)} categories: {top}")
        lines += [f"skipped: {line}" for line in self.skipped]
        return "\n".join(lines)


def dataset_stats(
    directory: str | Path,
    out_dir: str | Path | None = None,
    *,
    samples_per_task: int = 2,
    skip_bad: bool = False,
) -> DatasetStats:
    """Count a dataset's examples per task and regions per category; draw a few samples of each task.

    Args:
        directory: A Parquet dataset written by omnivis.
        out_dir: Where to write `stats.json` and the drawings (`<task>-<n>.png`); None writes nothing.
        samples_per_task: Examples drawn per task.
        skip_bad: Skip unreadable shards and invalid records (listed in `skipped`) instead of stopping.

    Returns:
        The counts, and the paths of the drawings.
    """
    stats = DatasetStats()
    pending = {task: samples_per_task for task in TASKS} if out_dir is not None else {}
    dataset = open_dataset(directory, skip_bad=skip_bad, check_images=skip_bad)
    for record in dataset:
        examples, unrepresentable = all_examples(record)
        _count(stats, record, examples)
        for item in unrepresentable:
            stats.unrepresentable[item.task] += 1
            stats.problems.append(f"{item.image_id}: {item.task}: {item.reason}")
        if out_dir is not None and any(pending[example.task] for example in examples):
            _draw_samples(record, examples, pending, Path(out_dir), stats)
    stats.skipped = [f"{item.file} row {item.row} ({item.image_id}): {item.reason}" for item in dataset.skipped]
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "stats.json", stats.to_json())
    return stats


def _count(stats: DatasetStats, record: Record, examples: list[Example]) -> None:
    stats.records += 1
    stats.sources[record.source] += 1
    stats.categories.update(region.category for region in record.regions)
    tasks = Counter(example.task for example in examples)
    stats.examples.update(tasks)
    stats.records_per_task.update(tasks.keys())


def _draw_samples(
    record: Record, examples: list[Example], pending: dict[str, int], out_dir: Path, stats: DatasetStats
) -> None:
    """Draw the first pending example of each task this record has, its input shown in a banner."""
    image = load_image(record.image)
    for example in examples:
        if not pending[example.task]:
            continue
        pending[example.task] -= 1
        drawing = draw_result(image, example.task, {example.task: example.answer})
        if example.input is not None:
            # A text answer is drawn as a banner under the image: the same drawing shows the task's input.
            banner = f"{example.task} {_describe_input(example.input)}"
            drawing = draw_result(drawing, example.task, {example.task: banner})
        path = out_dir / f"{example.task.strip('<>').lower()}-{pending[example.task]}.png"
        save_png(drawing, path)
        stats.drawn.append(path)


def _describe_input(task_input: Any) -> str:
    if isinstance(task_input, str):
        return f"input: {task_input!r}"
    return "region: (" + ", ".join(f"{value:g}" for value in task_input) + ")"
