"""Training examples: records -> (image, task prompt, target tokens) -> padded batches.

Determinism is by position, not by process. The training stream is a sequence of record positions
0, 1, 2, ...; position p is record `permutation_e[p % N]` of epoch e = p // N (a fresh seeded permutation per
epoch), and the tasks and examples drawn for it depend only on (seed, p). Optimizer step s takes the positions
[s * G, (s + 1) * G) for the global batch G = world_size * batch_size * accumulation, and rank r of W reads
the positions congruent to r modulo W inside each micro-batch: its own share, read by random access to the
Parquet shards. So 2 ranks with batch B see, together, exactly the records 1 process with batch 2B sees, and
resuming at step s needs nothing but s.

An image gives `examples_per_image` examples of distinct tasks, drawn by the mixture's weights among the
tasks it supports; its visual tokens are computed once and shared by them (`Batch.image_index`). A record
supporting none of the mixture's tasks (a COCO image without annotations) is passed over for the next one
of the epoch's order, deterministically. Nothing crashes a run mid-way for one bad annotation: a target
longer than the decoder's table, or a prompt longer than what the encoder has room for after the visual
tokens, is cut and counted; an annotation that cannot be written as a target is skipped and counted.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from omnivis.data.dataset import Dataset, open_dataset
from omnivis.data.manifest import supported_tasks
from omnivis.data.records import Record
from omnivis.data.transforms import IMAGENET_MEAN, IMAGENET_STD, preprocess
from omnivis.errors import DatasetError
from omnivis.images import load_image
from omnivis.model.florence import IGNORE_INDEX, TextChunk
from omnivis.pretrain.tagging_data import TaggingTargets, stack_targets
from omnivis.tasks import TASKS, build_prompt
from omnivis.tasks.targets import Example, all_examples
from omnivis.tokenizer import Tokenizer

# Records tried, from a position on, for one that supports a task of the mixture.
MAX_RECORD_PROBES = 64


@dataclass(frozen=True)
class EncodedExample:
    """One example as token ids: `labels` is `<s> target </s>`; either is cut to its budget when too long."""

    task: str
    prompt_ids: tuple[int, ...]
    labels: tuple[int, ...]
    truncated: bool  # the target or the prompt was cut


@dataclass
class ImageSample:
    """One image of the stream with the examples drawn for it."""

    position: int
    image_id: str
    pixels: torch.Tensor  # (3, H, W), normalised
    examples: list[EncodedExample]
    unwritable: int = 0  # annotations drawn that cannot be written as targets (skipped)
    tagging: tuple[torch.Tensor, ...] | None = None  # the record's tagging targets (`RecordTargets`), if kept


@dataclass
class Batch:
    """A padded micro-batch: images once, examples row by row."""

    pixel_values: torch.Tensor  # (images, 3, H, W)
    image_index: torch.Tensor  # (rows,) the image each example row reads
    input_ids: torch.Tensor  # (rows, prompt tokens), right-padded
    attention_mask: torch.Tensor  # (rows, prompt tokens), 1 = real token
    decoder_input_ids: torch.Tensor  # (rows, target tokens): labels shifted right after the start token
    labels: torch.Tensor  # (rows, target tokens), IGNORE_INDEX on padding
    tasks: list[str]
    image_ids: list[str]
    positions: list[int]
    truncated: int  # examples whose target or prompt was cut to its budget
    task_counts: Counter[str] = field(default_factory=Counter)
    unwritable: int = 0  # annotations skipped because no target parses back to them
    chunks: list[TextChunk] = field(
        default_factory=list
    )  # the rows again, grouped by length (see `chunk_rows`)
    chunk_labels: list[torch.Tensor] = field(default_factory=list)  # (rows, target tokens) per chunk
    chunk_rows: list[torch.Tensor] = field(default_factory=list)  # (rows,) each chunk's rows of `labels`
    tagging: TaggingTargets | None = None  # the images' tagging targets, when the run keeps those losses

    @property
    def target_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def to(self, device: torch.device) -> Batch:
        moved = {
            name: getattr(self, name).to(device, non_blocking=True)
            for name in (
                "pixel_values",
                "image_index",
                "input_ids",
                "attention_mask",
                "decoder_input_ids",
                "labels",
            )
        }
        return Batch(**moved, tasks=self.tasks, image_ids=self.image_ids, positions=self.positions,
                     truncated=self.truncated, task_counts=self.task_counts, unwritable=self.unwritable,
                     chunks=[chunk.to(device) for chunk in self.chunks],
                     chunk_labels=[labels.to(device, non_blocking=True) for labels in self.chunk_labels],
                     chunk_rows=self.chunk_rows,
                     tagging=None if self.tagging is None else self.tagging.to(device))  # fmt: skip


def resolve_mixture(dataset: Dataset, mixture: Mapping[str, float]) -> dict[str, float]:
    """The task weights to train with: `mixture`, or 1 for every task the dataset supports.

    Raises:
        DatasetError: The mixture asks (with a positive weight) for a task no record of the dataset supports.
    """
    available = {task for task, count in dataset.manifest.tasks.items() if count > 0}
    if not mixture:
        weights = {task: 1.0 for task in TASKS if task in available}
        if not weights:
            raise DatasetError(f"{dataset.directory}: no record supports any task")
        return weights
    missing = [task for task, weight in mixture.items() if weight > 0 and task not in available]
    if missing:
        raise DatasetError(
            f"{dataset.directory} has no examples of {', '.join(missing)}, which the mixture asks for; "
            f"it supports {', '.join(sorted(available)) or 'no task'}"
        )
    return {task: weight for task, weight in mixture.items() if weight > 0}


class TrainingStream(TorchDataset[ImageSample]):
    """Map-style view of the stream: `stream[position]` is the image sample at that position."""

    def __init__(
        self,
        directory: str,
        tokenizer: Tokenizer,
        image_size: tuple[int, int],
        mixture: Mapping[str, float],
        *,
        examples_per_image: int = 1,
        max_target_tokens: int,
        max_prompt_tokens: int = 1 << 30,
        seed: int = 0,
        shuffle: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        record_targets: Callable[[Record], tuple[torch.Tensor, ...]] | None = None,
    ) -> None:
        self.directory = directory
        self.dataset = open_dataset(directory)
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.mixture = dict(mixture)
        self.examples_per_image = examples_per_image
        self.max_target_tokens = max_target_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.seed = seed
        self.shuffle = shuffle
        self.mean, self.std = tuple(mean), tuple(std)
        self.record_targets = record_targets  # the tagging targets each image also carries (None: none)
        if len(self.dataset) == 0:
            raise DatasetError(f"{directory} holds no records")

    def __len__(self) -> int:  # positions are unbounded; one epoch is a natural length for samplers
        return len(self.dataset)

    def record_index(self, position: int, probe: int = 0) -> int:
        """The record at a stream position; `probe` > 0 gives the ones after it in the epoch's order."""
        epoch, offset = divmod(position, len(self.dataset))
        offset = (offset + probe) % len(self.dataset)
        return int(self._permutation(epoch)[offset]) if self.shuffle else offset

    @functools.lru_cache(maxsize=2)  # noqa: B019 - the stream lives as long as the run
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(len(self.dataset))

    def __getitem__(self, position: int) -> ImageSample:
        rng = np.random.default_rng([self.seed, position])
        for probe in range(min(MAX_RECORD_PROBES, len(self.dataset))):
            record = self.dataset[self.record_index(position, probe)]
            drawn, unwritable = draw_examples(record, self.mixture, self.examples_per_image, rng)
            if drawn:
                break
        else:
            raise DatasetError(
                f"{self.directory}: none of {MAX_RECORD_PROBES} records from stream position {position} on has an "
                f"example of {', '.join(self.mixture)}"
            )
        chosen = [self._encode(example, (record.width, record.height)) for example in drawn]
        image = load_image(record.image)
        pixels = preprocess([image], size=self.image_size, mean=self.mean, std=self.std)[0]
        tagging = None if self.record_targets is None else self.record_targets(record)
        return ImageSample(position, record.image_id, pixels, chosen, unwritable, tagging)

    def _encode(self, example: Example, image_size: tuple[int, int]) -> EncodedExample:
        tokenizer = self.tokenizer
        prompt = build_prompt(example.task, example.input, image_size=image_size)
        prompt_ids = (tokenizer.bos_token_id, *tokenizer.encode(prompt), tokenizer.eos_token_id)
        labels = (tokenizer.bos_token_id, *tokenizer.encode(example.target), tokenizer.eos_token_id)
        long_prompt = len(prompt_ids) > self.max_prompt_tokens
        if long_prompt:  # keep the closing </s>: the encoder reads a complete, if shortened, prompt
            prompt_ids = (*prompt_ids[: self.max_prompt_tokens - 1], tokenizer.eos_token_id)
        truncated = long_prompt or len(labels) > self.max_target_tokens
        return EncodedExample(example.task, prompt_ids, labels[: self.max_target_tokens], truncated)

    def __getstate__(self) -> dict[str, object]:  # loader workers reopen the dataset themselves
        state = dict(self.__dict__)
        state["dataset"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.dataset = open_dataset(self.directory)


class Curriculum(TorchDataset[ImageSample]):
    """Lessons in order: the streams' positions below a lesson's end read that lesson, the rest the last stream.

    A lesson ends at a position (its optimizer steps times the global micro-batches' images), so which stream a
    position reads depends on the position alone, and a resumed run reads exactly what an uninterrupted one would.
    Each later stream starts at its own position 0.
    """

    def __init__(self, lessons: Sequence[tuple[TrainingStream, int]], final: TrainingStream) -> None:
        ends = list(itertools.accumulate(length for _, length in lessons))
        if any(length < 1 for _, length in lessons):
            raise ValueError("every lesson must last at least one position")
        self.streams = [stream for stream, _ in lessons] + [final]
        self.starts = [0, *ends]  # the first position of each stream

    def __len__(self) -> int:
        return len(self.streams[-1])

    def __getitem__(self, position: int) -> ImageSample:
        lesson = bisect.bisect_right(self.starts, position) - 1
        sample = self.streams[lesson][position - self.starts[lesson]]
        return replace(sample, position=position)  # the run's position, which the data-position state counts


def draw_examples(
    record: Record, mixture: Mapping[str, float], count: int, rng: np.random.Generator
) -> tuple[list[Example], int]:
    """Up to `count` examples of distinct tasks, tasks drawn by weight among those the record supports.

    Returns:
        The examples (none when the record supports no task of the mixture), and how many annotations of
        the drawn tasks could not be written as targets (skipped, for the log to count).
    """
    offered = supported_tasks(record)
    tasks = [task for task in mixture if task in offered]
    if not tasks:
        return [], 0
    weights = np.array([mixture[task] for task in tasks], dtype=np.float64)
    picked = rng.choice(len(tasks), size=min(count, len(tasks)), replace=False, p=weights / weights.sum())
    drawn: list[Example] = []
    unwritable = 0
    for index in sorted(picked.tolist()):  # sorted: the order does not depend on the draw's internals
        made, refused = all_examples(record, [tasks[index]])
        unwritable += len(refused)
        if made:
            drawn.append(made[int(rng.integers(len(made)))])
    return drawn, unwritable


def micro_batch_positions(step: int, micro: int, *, rank: int, world_size: int, batch_size: int,
                          accumulation: int) -> list[int]:  # fmt: skip
    """The stream positions rank `rank` reads for micro-batch `micro` of optimizer step `step`."""
    first = (step * accumulation + micro) * world_size * batch_size
    return [first + slot * world_size + rank for slot in range(batch_size)]


class StepSampler:
    """Batch sampler for a DataLoader: this rank's micro-batches from `start_step` to `steps`."""

    def __init__(self, start_step: int, steps: int, *, rank: int, world_size: int, batch_size: int,
                 accumulation: int) -> None:  # fmt: skip
        self.start_step, self.steps = start_step, steps
        self.layout = {
            "rank": rank,
            "world_size": world_size,
            "batch_size": batch_size,
            "accumulation": accumulation,
        }
        self.accumulation = accumulation

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.steps):
            for micro in range(self.accumulation):
                yield micro_batch_positions(step, micro, **self.layout)

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.accumulation


def collate(
    samples: Sequence[ImageSample], pad_token_id: int, decoder_start_token_id: int, length_chunks: int = 1
) -> Batch:
    """Pads a list of image samples into one `Batch`, its rows also grouped into `length_chunks` chunks."""
    rows = [(index, example) for index, sample in enumerate(samples) for example in sample.examples]
    prompt_length = max((len(example.prompt_ids) for _, example in rows), default=1)
    target_length = max((len(example.labels) for _, example in rows), default=1)
    input_ids = torch.full((len(rows), prompt_length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), prompt_length), dtype=torch.long)
    labels = torch.full((len(rows), target_length), IGNORE_INDEX, dtype=torch.long)
    decoder_input_ids = torch.full((len(rows), target_length), pad_token_id, dtype=torch.long)
    for row, (_, example) in enumerate(rows):
        input_ids[row, : len(example.prompt_ids)] = torch.tensor(example.prompt_ids)
        attention_mask[row, : len(example.prompt_ids)] = 1
        labels[row, : len(example.labels)] = torch.tensor(example.labels)
        # Teacher forcing: the decoder reads the start token, then each label but the last.
        decoder_input_ids[row, 0] = decoder_start_token_id
        decoder_input_ids[row, 1 : len(example.labels)] = torch.tensor(example.labels[:-1])
    image_index = torch.tensor([index for index, _ in rows], dtype=torch.long)
    lengths = [len(example.prompt_ids) + len(example.labels) for _, example in rows]
    chunks, chunk_labels, rows_of_chunks = chunk_rows(lengths, length_chunks, image_index, input_ids,
                                                      attention_mask, decoder_input_ids, labels)  # fmt: skip
    return Batch(
        pixel_values=torch.stack([sample.pixels for sample in samples]),
        image_index=image_index,
        input_ids=input_ids,
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids,
        labels=labels,
        tasks=[example.task for _, example in rows],
        image_ids=[sample.image_id for sample in samples],
        positions=[sample.position for sample in samples],
        truncated=sum(example.truncated for _, example in rows),
        task_counts=Counter(example.task for _, example in rows),
        unwritable=sum(sample.unwritable for sample in samples),
        chunks=chunks,
        chunk_labels=chunk_labels,
        chunk_rows=rows_of_chunks,
        tagging=stack_targets(tagged) if (tagged := [s.tagging for s in samples if s.tagging is not None]) else None,
    )


def chunk_rows(
    lengths: Sequence[int],
    count: int,
    image_index: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    decoder_input_ids: torch.Tensor,
    labels: torch.Tensor,
) -> tuple[list[TextChunk], list[torch.Tensor], list[torch.Tensor]]:
    """Rows sorted by length and split into up to `count` chunks of nearly equal size, each cut to its own
    longest prompt and target: the text model's cost follows the real lengths, not the batch's longest row.

    Returns:
        The chunks, their labels, and the rows each chunk holds (indices into the batch's rows).
    """
    order = sorted(range(len(lengths)), key=lambda row: (lengths[row], row))
    chunks: list[TextChunk] = []
    chunk_labels: list[torch.Tensor] = []
    rows_of_chunks: list[torch.Tensor] = []
    for part in np.array_split(np.array(order, dtype=np.int64), min(count, len(order))):
        rows = torch.from_numpy(part)
        prompt = int(attention_mask[rows].sum(dim=1).max())
        target = int((labels[rows] != IGNORE_INDEX).sum(dim=1).max())
        chunks.append(TextChunk(image_index[rows], input_ids[rows, :prompt], attention_mask[rows, :prompt],
                                decoder_input_ids[rows, :target]))  # fmt: skip
        chunk_labels.append(labels[rows, :target])
        rows_of_chunks.append(rows)
    return chunks, chunk_labels, rows_of_chunks
