"""Greedy and beam-search search that picks, token for token, what transformers' `generate` picks.

The decoder is driven through two callables, so this module knows nothing about the model:

- `step(last_tokens, state) -> (logits, state)`: `last_tokens` is a `(rows, 1)` LongTensor, `logits` the
  `(rows, vocab)` next-token scores, and the new state holds a cache extended by one position;
- `select(state, row_index) -> state`: keeps the rows of `state` at `row_index`. It is called once to repeat
  each batch row `num_beams` times (interleaved, like `torch.repeat_interleave`) and then before every beam
  step to reorder the beams' caches.

Every decision mirrors transformers 5.23 (`_sample` without sampling, `_beam_search`, the n-gram, forced-BOS
and forced-EOS logits processors in that order, the max-length and EOS stopping criteria): the same float32
arithmetic, the same `torch.topk` calls on tensors of the same layout (so ties break the same way), the same
`-1e9` exclusions, and the same length penalty, computed from the number of generated tokens.

A warning on `no_repeat_ngram_size`: Florence-2 checkpoints ship with 3, which forbids any 3 tokens from
appearing twice in one answer. Harmless for captions, but OCR text and the `<loc_k>` coordinates of detection
or OCR-with-region answers repeat legitimately, so long structured answers get bent into wrong tokens. Set it
to 0 for those tasks when matching the reference implementation does not matter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import torch

from omnivis.errors import InputError
from omnivis.model.generation_config import GenerationConfig, as_token_tuple, check_integer

State = TypeVar("State")
StepFn = Callable[[torch.Tensor, State], tuple[torch.Tensor, State]]
SelectFn = Callable[[State, torch.Tensor], State]

# The score transformers gives to beams that must never be picked (and to the empty finished-beam slots).
_EXCLUDED = -1.0e9


@dataclass(frozen=True)
class GenerationOutput:
    """What `generate` returns.

    Attributes:
        sequences: `(batch, length)` tokens, starting with the decoder start token and padded after EOS.
        token_scores: `(batch, length - 1)` log-probability of each generated token (0 on padding), or None
            when not requested. Beam search: the processed log-softmax the search ranked the token by
            (transformers' `compute_transition_scores(..., normalize_logits=False)`); greedy: the log-softmax
            of the processed logits (`normalize_logits=True`).
    """

    sequences: torch.Tensor
    token_scores: torch.Tensor | None


@dataclass(frozen=True)
class _Search:
    """One search's settings: the config, its special tokens resolved with transformers' fallbacks, sizes."""

    config: GenerationConfig
    batch_size: int
    return_scores: bool
    device: torch.device
    start: int
    eos_ids: tuple[int, ...]
    eos: torch.Tensor | None  # (eos_count,) on `device`, None when no EOS token is set
    pad: int | None
    max_length: int  # start token included

    @classmethod
    def resolve(cls, config: GenerationConfig, batch_size: int, return_scores: bool, device: str) -> _Search:
        check_integer("batch_size", batch_size, minimum=1)
        start = config.decoder_start_token_id
        start = config.bos_token_id if start is None else start
        if start is None:
            raise InputError("generation needs decoder_start_token_id (or bos_token_id) to start the decoder")
        eos_ids = config.eos_token_ids
        eos = torch.tensor(eos_ids, dtype=torch.long, device=device) if eos_ids else None
        pad = config.pad_token_id if config.pad_token_id is not None else (eos_ids[0] if eos_ids else None)
        max_length = config.max_new_tokens + 1
        return cls(
            config, batch_size, return_scores, torch.device(device), start, eos_ids, eos, pad, max_length
        )

    def process(self, sequences: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """transformers' processors in its order (n-gram ban, forced BOS, forced EOS) on `(rows, vocab)`
        scores, given the `(rows, length)` tokens so far."""
        length = sequences.shape[1]
        scores = ban_repeated_ngrams(sequences, scores, self.config.no_repeat_ngram_size)
        if self.config.forced_bos_token_id is not None and length == 1:
            scores = _force_tokens(scores, (self.config.forced_bos_token_id,))
        if self.config.forced_eos_token_id is not None and length == self.max_length - 1:
            scores = _force_tokens(scores, as_token_tuple(self.config.forced_eos_token_id))
        return scores


def ban_repeated_ngrams(sequences: torch.Tensor, scores: torch.Tensor, ngram_size: int) -> torch.Tensor:
    """Sets to -inf the score of every token that would complete an n-gram already present in its row.

    Args:
        sequences: `(rows, length)` tokens so far.
        scores: `(rows, vocab)` next-token scores.
        ngram_size: n; 0 disables the ban.

    Returns:
        A new `(rows, vocab)` tensor, or `scores` itself when nothing can be banned yet.
    """
    rows, length = sequences.shape
    if ngram_size <= 0 or length < ngram_size:
        return scores
    vocab_size = scores.shape[1]
    windows = sequences.unfold(1, ngram_size, 1)  # (rows, windows, ngram_size)
    last_tokens = sequences[:, length - ngram_size + 1 :]  # (rows, ngram_size - 1)
    repeats_suffix = (windows[:, :, :-1] == last_tokens[:, None, :]).all(dim=2)  # (rows, windows)
    # Windows not ending like the sequence, and tokens without a score column, all point at one spare column.
    spare_column = vocab_size
    banned_columns = torch.where(repeats_suffix, windows[:, :, -1].clamp(max=spare_column), spare_column)
    banned = torch.zeros((rows, vocab_size + 1), dtype=torch.bool, device=scores.device)
    banned.scatter_(1, banned_columns, True)  # (rows, vocab + 1)
    return scores.masked_fill(banned[:, :vocab_size], -math.inf)


@torch.no_grad()
def generate(
    step: StepFn[State],
    select: SelectFn[State],
    state: State,
    batch_size: int,
    config: GenerationConfig,
    *,
    device: torch.device | str = "cpu",
    return_scores: bool = False,
) -> GenerationOutput:
    """Decodes `batch_size` sequences greedily or by beam search, as transformers' `generate` does.

    Args:
        step: Runs the decoder on the last tokens, see the module docstring.
        select: Keeps state rows by index, see the module docstring. Unused by greedy search.
        state: The model's state for `batch_size` rows (encoder output, attention mask, empty cache).
        batch_size: Number of inputs.
        config: Decoding options.
        device: The model's device, where every tensor of the search is kept.
        return_scores: Also return each generated token's log-probability (one more tensor per beam).

    Returns:
        The sequences, and their token scores when asked.

    Raises:
        InputError: `batch_size` is not a positive integer, or no start token is configured.
    """
    search = _Search.resolve(config, batch_size, return_scores, device)
    if config.num_beams == 1:
        return _greedy_search(step, state, search)
    return _beam_search(step, select, state, search)


def _greedy_search(step: StepFn[State], state: State, search: _Search) -> GenerationOutput:
    """Greedy search: each row takes its best token until EOS, then padding, until every row is done."""
    batch_size, device, max_length = search.batch_size, search.device, search.max_length
    sequences = torch.full((batch_size, max_length), search.start, dtype=torch.long, device=device)
    token_scores = torch.zeros((batch_size, max_length - 1), device=device) if search.return_scores else None
    unfinished = torch.ones(batch_size, dtype=torch.bool, device=device)  # (batch,)
    length = 1
    while True:
        logits, state = step(sequences[:, length - 1 : length], state)
        scores = search.process(sequences[:, :length], logits.float())  # (batch, vocab)
        next_tokens = scores.argmax(dim=-1)  # (batch,)
        if search.eos is not None:
            # transformers pads finished rows only when an EOS token is configured.
            next_tokens = torch.where(unfinished, next_tokens, search.pad)
        if token_scores is not None:
            chosen = torch.log_softmax(scores, dim=-1).gather(1, next_tokens[:, None]).squeeze(1)  # (batch,)
            token_scores[:, length - 1] = torch.where(unfinished, chosen, 0.0)
        sequences[:, length] = next_tokens
        length += 1
        if search.eos is not None:
            unfinished &= ~torch.isin(next_tokens, search.eos)
        if length >= max_length or not bool(unfinished.any()):
            break
    scores_out = None if token_scores is None else token_scores[:, : length - 1]
    return GenerationOutput(sequences=sequences[:, :length], token_scores=scores_out)


@dataclass(frozen=True)
class _Beams:
    """Hypotheses, several per batch row, and what is known of each."""

    sequences: torch.Tensor  # (batch, hypotheses, max_length)
    source_rows: torch.Tensor  # (batch, hypotheses, max_new_tokens): flat beam row of each step, -1 if none
    token_scores: torch.Tensor | None  # (batch, hypotheses, max_new_tokens)
    scores: torch.Tensor  # (batch, hypotheses)
    done: torch.Tensor  # (batch, hypotheses) bool: ended (candidates) or slot filled (finished hypotheses)

    def take(self, index: torch.Tensor) -> _Beams:
        """The hypotheses at `index` `(batch, chosen)` along each row."""
        return _Beams(*(_take_along_beams(tensor, index) for tensor in vars(self).values()))

    def followed_by(self, other: _Beams) -> _Beams:
        """These hypotheses, then `other`'s, along each row."""
        pairs = zip(vars(self).values(), vars(other).values(), strict=True)
        return _Beams(*(None if mine is None else torch.cat((mine, theirs), dim=1) for mine, theirs in pairs))


def _beam_search(
    step: StepFn[State], select: SelectFn[State], state: State, search: _Search
) -> GenerationOutput:
    """Beam search, step for step as transformers' `_beam_search`."""
    batch_size, num_beams, device = search.batch_size, search.config.num_beams, search.device
    running = _initial_beams(search)
    # The finished slots start empty, at the excluded score.
    finished = replace(running, scores=torch.full_like(running.scores, _EXCLUDED))
    improvable = torch.ones((batch_size, 1), dtype=torch.bool, device=device)
    state = select(state, torch.arange(batch_size, device=device).repeat_interleave(num_beams))
    length = 1
    while True:
        flat_sequences = running.sequences.view(batch_size * num_beams, search.max_length)
        logits, state = step(flat_sequences[:, length - 1 : length], state)
        log_probs = search.process(flat_sequences[:, :length], torch.log_softmax(logits.float(), dim=-1))
        candidates = _expand(running, log_probs, length, search)
        # Candidates that ended cannot continue: push them below every live one.
        live = replace(candidates, scores=candidates.scores + candidates.done.float() * _EXCLUDED)
        running = live.take(torch.topk(live.scores, k=num_beams)[1])
        finished = _keep_finished(finished, candidates, improvable, length, search)
        length += 1
        improvable = _still_improvable(improvable, running, finished, length, search)
        all_full = finished.done.all() & (search.config.early_stopping is True)
        if not bool(improvable.any() & ~all_full & ~candidates.done.all()):
            break
        state = select(state, running.source_rows[:, :, length - 2].reshape(-1))
    return _best_hypotheses(finished)


def _initial_beams(search: _Search) -> _Beams:
    """`num_beams` copies of the start token per row; only the first is alive, so step one picks no twins."""
    batch_size, num_beams, device = search.batch_size, search.config.num_beams, search.device
    max_length = search.max_length
    # transformers pads beam outputs with the pad token, or the first EOS when the pad token is 0 (falsy).
    fill = (search.pad or search.eos_ids[0]) if search.eos_ids else -1
    sequences = torch.full((batch_size, num_beams, max_length), fill, dtype=torch.long, device=device)
    sequences[:, :, 0] = search.start
    source_rows = torch.full((batch_size, num_beams, max_length - 1), -1, dtype=torch.long, device=device)
    token_scores = torch.zeros(source_rows.shape, device=device) if search.return_scores else None
    scores = torch.zeros((batch_size, num_beams), device=device)
    scores[:, 1:] = _EXCLUDED
    done = torch.zeros((batch_size, num_beams), dtype=torch.bool, device=device)
    return _Beams(sequences, source_rows, token_scores, scores, done)


def _expand(running: _Beams, log_probs: torch.Tensor, length: int, search: _Search) -> _Beams:
    """Each row's best continuations over all its beams, scored by summed log-probability.

    Keeps enough of them (twice num_beams, more with several EOS tokens) that num_beams do not end.
    `log_probs` are the processed `(rows, vocab)` next-token log-probabilities; `length` counts the tokens so
    far, start token included.
    """
    batch_size, num_beams = running.scores.shape
    vocab_size = log_probs.shape[-1]
    flat_log_probs = log_probs.view(batch_size, num_beams * vocab_size)
    accumulated = log_probs.view(batch_size, num_beams, vocab_size) + running.scores[:, :, None]
    accumulated = accumulated.view(batch_size, num_beams * vocab_size)  # (batch, num_beams * vocab)
    kept = max(2, 1 + len(search.eos_ids)) * num_beams
    top_scores, top_indices = torch.topk(accumulated, k=kept)  # (batch, kept)
    beams, new_tokens = top_indices // vocab_size, top_indices % vocab_size  # (batch, kept) each
    candidates = running.take(beams)
    candidates.sequences[:, :, length] = new_tokens
    row_offsets = torch.arange(batch_size, device=beams.device)[:, None] * num_beams
    candidates.source_rows[:, :, length - 1] = beams + row_offsets
    if candidates.token_scores is not None:
        candidates.token_scores[:, :, length - 1] = flat_log_probs.gather(1, top_indices)
    ends = torch.full_like(new_tokens, length + 1 >= search.max_length, dtype=torch.bool)
    if search.eos is not None:
        ends |= torch.isin(new_tokens, search.eos)
    return replace(candidates, scores=top_scores, done=ends)


def _keep_finished(
    finished: _Beams, candidates: _Beams, improvable: torch.Tensor, length: int, search: _Search
) -> _Beams:
    """Merges the candidates that just ended into each row's best `num_beams` finished hypotheses."""
    config, num_beams = search.config, search.config.num_beams
    # Only the top num_beams candidates may finish; the others only back up the running beams.
    just_finished = candidates.done.clone()
    just_finished[:, num_beams:] = False
    # The exclusions are added one at a time, as transformers does, so that float32 rounds the same way.
    ranked = candidates.scores / (float(length) ** config.length_penalty)
    row_is_full = finished.done.all(dim=1, keepdim=True) & (config.early_stopping is True)  # (batch, 1)
    ranked = ranked + row_is_full.float() * _EXCLUDED
    ranked = ranked + (~improvable).float() * _EXCLUDED
    ranked = ranked + (~just_finished).float() * _EXCLUDED
    merged = finished.followed_by(replace(candidates, scores=ranked, done=just_finished))
    return merged.take(torch.topk(merged.scores, k=num_beams)[1])


def _still_improvable(
    improvable: torch.Tensor, running: _Beams, finished: _Beams, length: int, search: _Search
) -> torch.Tensor:
    """Rows whose best running beam may still beat their worst finished hypothesis, `(batch, 1)`.

    Once a row cannot improve it stays so: transformers' early-stopping heuristic.
    """
    config = search.config
    if config.early_stopping == "never" and config.length_penalty > 0.0:
        hoped_length = search.max_length - 1
    else:
        hoped_length = length - 1
    best_running = running.scores[:, :1] / (hoped_length**config.length_penalty)  # (batch, 1)
    worst_finished = finished.scores.min(dim=1, keepdim=True)[0]  # (batch, 1)
    # An empty finished slot counts as the excluded score, which any real beam beats.
    worst_finished = torch.where(finished.done, worst_finished, _EXCLUDED)  # (batch, num_beams)
    return improvable & (best_running > worst_finished).any(dim=-1, keepdim=True)


def _best_hypotheses(finished: _Beams) -> GenerationOutput:
    """Each row's best finished hypothesis, cut to the longest of them."""
    source_rows = finished.source_rows[:, 0]  # (batch, max_new_tokens)
    generated = source_rows >= 0
    generated_length = int(generated.sum(dim=1).max())
    sequences = finished.sequences[:, 0, : 1 + generated_length]
    token_scores = None
    if finished.token_scores is not None:
        token_scores = torch.where(generated, finished.token_scores[:, 0], 0.0)[:, :generated_length]
    return GenerationOutput(sequences=sequences, token_scores=token_scores)


def _force_tokens(scores: torch.Tensor, token_ids: tuple[int, ...]) -> torch.Tensor:
    """Scores that allow only `token_ids` (score 0), everything else -inf."""
    forced = torch.full_like(scores, -math.inf)
    forced[:, list(token_ids)] = 0.0
    return forced


def _take_along_beams(tensor: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    """`tensor[b, index[b, i], ...]` for a `(batch, hypotheses, ...)` tensor and a `(batch, chosen)` index."""
    if tensor is None:
        return None
    expanded = index.view(*index.shape, *[1] * (tensor.dim() - 2)).expand(-1, -1, *tensor.shape[2:])
    return tensor.gather(1, expanded)
