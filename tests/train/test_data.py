"""The training stream: positions, rank shares, task draws, encoding and padding."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from omnivis.data.dataset import open_dataset
from omnivis.data.parquet import write_dataset
from omnivis.errors import DatasetError
from omnivis.loading import bundled_tokenizer
from omnivis.model.florence import IGNORE_INDEX
from omnivis.tasks import build_prompt
from omnivis.train.data import (
    Curriculum,
    StepSampler,
    TrainingStream,
    collate,
    draw_examples,
    micro_batch_positions,
    resolve_mixture,
)
from omnivis.world import VARIANTS, generate_record


def _stream(directory: Path, **options) -> TrainingStream:
    settings = {"examples_per_image": 2, "max_target_tokens": 512, "seed": 5} | options
    return TrainingStream(str(directory), bundled_tokenizer(), (64, 64), {"<OD>": 1.0, "<CAPTION>": 1.0, "<VQA>": 1.0},
                          **settings)  # fmt: skip


def test_two_ranks_read_together_what_one_process_reads_with_twice_the_batch() -> None:
    for step in range(3):
        for micro in range(2):
            single = micro_batch_positions(step, micro, rank=0, world_size=1, batch_size=8, accumulation=2)
            shares = [micro_batch_positions(step, micro, rank=r, world_size=2, batch_size=4, accumulation=2)
                      for r in range(2)]  # fmt: skip
            assert sorted(shares[0] + shares[1]) == single
            assert not set(shares[0]) & set(shares[1])
    # Hand-computed: step 1, micro 1 of 2, 2 ranks x 3 images: first position (1*2+1)*6 = 18.
    assert micro_batch_positions(1, 1, rank=1, world_size=2, batch_size=3, accumulation=2) == [19, 21, 23]


def test_the_sampler_resumes_at_a_step() -> None:
    full = list(StepSampler(0, 5, rank=0, world_size=1, batch_size=2, accumulation=1))
    assert list(StepSampler(3, 5, rank=0, world_size=1, batch_size=2, accumulation=1)) == full[3:]
    assert full[0] == [0, 1] and len(full) == 5


def test_positions_cover_every_record_once_per_epoch(world_train: Path) -> None:
    stream = _stream(world_train)
    count = len(stream.dataset)
    first = [stream.record_index(p) for p in range(count)]
    second = [stream.record_index(p) for p in range(count, 2 * count)]
    assert sorted(first) == sorted(second) == list(range(count))
    assert first != second  # a fresh permutation each epoch
    assert [_stream(world_train, shuffle=False).record_index(p) for p in range(count + 2)] == [
        *range(count),
        0,
        1,
    ]


def test_a_sample_depends_on_its_position_alone(world_train: Path) -> None:
    one, other = _stream(world_train), _stream(world_train)
    for position in (0, 7, 30):
        a, b = one[position], other[position]
        assert a.image_id == b.image_id and a.examples == b.examples
        assert torch.equal(a.pixels, b.pixels)
    assert (
        _stream(world_train, seed=6)[0].examples != one[0].examples
        or _stream(world_train, seed=6)[0].image_id != one[0].image_id
    )


def test_a_curriculum_reads_each_lesson_then_the_training_data(
    world_train: Path, captions_only: Path
) -> None:
    lesson, final = _stream(captions_only, shuffle=False), _stream(world_train, shuffle=False)
    curriculum = Curriculum([(lesson, 6)], final)
    lesson_ids = {lesson[p].image_id for p in range(len(lesson))}
    assert not lesson_ids & {final[p].image_id for p in range(len(final))}  # two datasets told apart by id
    for position in range(10):
        sample = curriculum[position]
        # The lesson's positions 0-5, then the training data's own positions from 0: a fresh start there.
        expected = lesson[position] if position < 6 else final[position - 6]
        assert (sample.image_id, sample.examples) == (expected.image_id, expected.examples)
        assert torch.equal(sample.pixels, expected.pixels)
        assert sample.position == position  # the run's position, as the sampler and the resume state count
    assert len(curriculum) == len(final)
    with pytest.raises(ValueError, match="at least one position"):
        Curriculum([(lesson, 0)], final)


def test_examples_encode_prompt_and_target_as_the_predictor_does(world_train: Path) -> None:
    stream = _stream(world_train)
    tokenizer = stream.tokenizer
    sample = stream[3]
    record = stream.dataset[stream.record_index(3)]
    assert len(sample.examples) == 2 and len({e.task for e in sample.examples}) == 2
    for example in sample.examples:
        assert (
            example.prompt_ids[0] == tokenizer.bos_token_id
            and example.prompt_ids[-1] == tokenizer.eos_token_id
        )
        prompt = tokenizer.decode(example.prompt_ids[1:-1])
        assert example.labels[0] == tokenizer.bos_token_id and example.labels[-1] == tokenizer.eos_token_id
        target = tokenizer.decode(example.labels[1:-1])
        if example.task == "<CAPTION>":
            assert prompt == build_prompt("<CAPTION>") and target == record.caption("brief")
        if example.task == "<VQA>":
            assert target in {qa.answer for qa in record.questions}


def test_task_draws_follow_the_weights() -> None:
    record = generate_record(index=0, seed=1, config=VARIANTS["default"])
    rng = np.random.default_rng(0)
    counts = {"<OD>": 0, "<CAPTION>": 0}
    for _ in range(2000):
        (example,), unwritable = draw_examples(record, {"<OD>": 3.0, "<CAPTION>": 1.0}, 1, rng)
        counts[example.task] += 1
        assert unwritable == 0
    assert counts["<OD>"] / 2000 == pytest.approx(0.75, abs=0.03)
    drawn, _ = draw_examples(record, {"<OD>": 1.0}, 5, rng)  # fewer tasks than asked: one example each
    assert [example.task for example in drawn] == ["<OD>"]
    stripped = dataclasses.replace(record, regions=(), groundings=(), referring=())
    assert draw_examples(stripped, {"<OD>": 1.0}, 1, rng) == ([], 0)


def test_records_without_the_mixture_tasks_are_passed_over(tmp_path: Path) -> None:
    records = [generate_record(index=i, seed=4, config=VARIANTS["default"]) for i in range(6)]
    # Records 0, 2 and 4 lose their regions: like COCO images without annotations.
    records = [dataclasses.replace(r, regions=(), groundings=(), referring=()) if i % 2 == 0 else r
               for i, r in enumerate(records)]  # fmt: skip
    write_dataset(records, tmp_path / "data")
    stream = TrainingStream(str(tmp_path / "data"), bundled_tokenizer(), (64, 64), {"<OD>": 1.0},
                            max_target_tokens=512, shuffle=False)  # fmt: skip
    image_ids = [stream[position].image_id for position in range(6)]
    assert image_ids == [records[i].image_id for i in (1, 1, 3, 3, 5, 5)]


def test_unwritable_annotations_are_skipped_and_counted(tmp_path: Path) -> None:
    record = generate_record(index=0, seed=4, config=VARIANTS["default"])
    first = dataclasses.replace(record.regions[0], category="a<b")  # "<" would start a special token
    record = dataclasses.replace(record, regions=(first, *record.regions[1:]))
    drawn, unwritable = draw_examples(record, {"<REGION_TO_CATEGORY>": 1.0}, 1, np.random.default_rng(0))
    assert unwritable == 1 and len(drawn) == 1 and "<" not in drawn[0].target.split("<loc_")[0]


def test_long_prompts_are_cut_keeping_the_closing_token(world_train: Path) -> None:
    stream = TrainingStream(str(world_train), bundled_tokenizer(), (64, 64), {"<CAPTION_TO_PHRASE_GROUNDING>": 1.0},
                            max_target_tokens=512, max_prompt_tokens=6, seed=0)  # fmt: skip
    (example,) = stream[0].examples
    assert len(example.prompt_ids) == 6 and example.truncated
    assert example.prompt_ids[-1] == stream.tokenizer.eos_token_id


def test_long_targets_are_cut_and_counted(world_train: Path) -> None:
    stream = TrainingStream(str(world_train), bundled_tokenizer(), (64, 64), {"<MORE_DETAILED_CAPTION>": 1.0},
                            max_target_tokens=12, seed=0)  # fmt: skip
    sample = stream[0]
    assert len(sample.examples[0].labels) == 12 and sample.examples[0].truncated
    batch = collate([sample, stream[1]], pad_token_id=1, decoder_start_token_id=2)
    assert batch.truncated == 2


def test_collate_pads_and_shifts(world_train: Path) -> None:
    stream = _stream(world_train)
    samples = [stream[0], stream[1]]
    batch = collate(samples, pad_token_id=1, decoder_start_token_id=2)
    rows = [example for sample in samples for example in sample.examples]
    assert batch.pixel_values.shape == (2, 3, 64, 64)
    assert batch.image_index.tolist() == [0] * len(samples[0].examples) + [1] * len(samples[1].examples)
    for row, example in enumerate(rows):
        length = len(example.labels)
        assert batch.labels[row, :length].tolist() == list(example.labels)
        assert (batch.labels[row, length:] == IGNORE_INDEX).all()
        assert batch.decoder_input_ids[row, 0] == 2
        assert batch.decoder_input_ids[row, 1:length].tolist() == list(example.labels[:-1])
        assert batch.attention_mask[row].sum() == len(example.prompt_ids)
        assert (batch.input_ids[row, len(example.prompt_ids) :] == 1).all()
    assert batch.target_tokens == sum(len(example.labels) for example in rows)


def test_the_mixture_must_be_drawable(captions_only: Path) -> None:
    dataset = open_dataset(captions_only)
    assert set(resolve_mixture(dataset, {})) == {"<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>"}
    with pytest.raises(DatasetError, match=r"no examples of <OD>, <VQA>, which the mixture asks for"):
        resolve_mixture(dataset, {"<CAPTION>": 1.0, "<OD>": 1.0, "<VQA>": 2.0})
    assert resolve_mixture(dataset, {"<CAPTION>": 1.0, "<OD>": 0.0}) == {"<CAPTION>": 1.0}


def test_length_chunks_hold_every_row_once_and_give_the_same_loss(world_train: Path) -> None:
    from omnivis.model.florence import Florence2
    from omnivis.model.presets import preset_config
    from omnivis.train.loss import LossSettings, summed_token_loss

    stream = TrainingStream(str(world_train), bundled_tokenizer(), (64, 64), {"<OD>": 1.0, "<VQA>": 1.0,
                            "<MORE_DETAILED_CAPTION>": 1.0, "<REGION_TO_CATEGORY>": 1.0}, examples_per_image=4,
                            max_target_tokens=512)  # fmt: skip
    samples = [stream[0], stream[1], stream[2]]
    whole = collate(samples, pad_token_id=1, decoder_start_token_id=2, length_chunks=1)
    split = collate(samples, pad_token_id=1, decoder_start_token_id=2, length_chunks=3)
    assert len(whole.chunks) == 1 and len(split.chunks) == 3
    assert sorted(torch.cat([c.image_index for c in split.chunks]).tolist()) == sorted(
        whole.image_index.tolist()
    )
    assert sum(int((labels != IGNORE_INDEX).sum()) for labels in split.chunk_labels) == whole.target_tokens
    padded = sum(labels.numel() for labels in split.chunk_labels)
    assert padded < whole.labels.numel()  # the point of chunking: less padding
    # Each chunk names its rows of the batch: by them a chunk's row finds its task (for its loss weight).
    assert sorted(torch.cat(split.chunk_rows).tolist()) == list(range(len(whole.tasks)))
    for rows, labels in zip(split.chunk_rows, split.chunk_labels, strict=True):
        assert torch.equal(split.labels[rows, : labels.shape[1]], labels)
        assert (split.labels[rows, labels.shape[1] :] == IGNORE_INDEX).all()
    config = preset_config("tiny", vocab_size=stream.tokenizer.vocab_size)
    config.image_size = (64, 64)
    torch.manual_seed(0)
    model = Florence2(config).eval()
    losses = []
    for batch in (whole, split):
        chunk_logits = model(batch.pixel_values, chunks=batch.chunks)["chunk_logits"]
        losses.append(sum(summed_token_loss(logits, labels, LossSettings())
                          for logits, labels in zip(chunk_logits, batch.chunk_labels)))  # fmt: skip
    reference = model(whole.pixel_values, whole.input_ids, whole.decoder_input_ids, attention_mask=whole.attention_mask,
                      image_index=whole.image_index)["logits"]  # fmt: skip
    expected = summed_token_loss(reference, whole.labels, LossSettings())
    assert torch.allclose(losses[0], expected, rtol=1e-5) and torch.allclose(losses[1], expected, rtol=1e-5)
