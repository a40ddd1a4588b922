"""Tests of omnivis.model.generation.

The oracle tests drive a small random transformers BART through omnivis' `generate` (via the step/select
interface, with transformers' own KV cache) and compare with `BartForConditionalGeneration.generate` on the
same inputs: identical sequences, and token scores equal to `compute_transition_scores` within 1e-5.
Hand-computed toy decoders check the padding, the forced tokens and one beam search; the n-gram ban is checked
by hand and against transformers (the configuration: test_generation_config.py).
"""

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration
from transformers import GenerationConfig as ReferenceGenerationConfig
from transformers.cache_utils import EncoderDecoderCache
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor
from transformers.modeling_outputs import BaseModelOutput

from omnivis.errors import InputError
from omnivis.model.generation import ban_repeated_ngrams, generate
from omnivis.model.generation_config import GenerationConfig

# Florence-2's special tokens: the decoder starts with the EOS token.
VOCAB_SIZE, BOS, PAD, EOS = 300, 0, 1, 2
SPECIAL_TOKENS = {
    "decoder_start_token_id": EOS,
    "bos_token_id": BOS,
    "eos_token_id": EOS,
    "pad_token_id": PAD,
}
# (seed, EOS logit bias) of random models whose rows end at many different steps, some never (from a scan).
SCENARIOS = ((7, 4.0), (14, 4.0), (0, 3.0), (16, 3.0), (17, 1.0))
BATCH_SIZE = 4


@functools.cache
def reference_model(scenario: int) -> BartForConditionalGeneration:
    seed, eos_bias = SCENARIOS[scenario]
    torch.manual_seed(seed)
    config = BartConfig(
        vocab_size=VOCAB_SIZE,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        init_std=0.3,  # peaked distributions, so beams and greedy disagree and n-grams repeat
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        forced_eos_token_id=None,
        tie_word_embeddings=False,  # tied, a random BART just repeats its last token
    )
    model = BartForConditionalGeneration(config).eval()
    model.generation_config = ReferenceGenerationConfig(**SPECIAL_TOKENS)
    with torch.no_grad():
        model.final_logits_bias[0, EOS] = eos_bias
    return model


@functools.cache
def encoder_inputs(scenario: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded prompts of different lengths and their attention mask, (batch, source) each."""
    generator = torch.Generator().manual_seed(SCENARIOS[scenario][0])
    lengths = torch.randint(3, 9, (BATCH_SIZE,), generator=generator)
    input_ids = torch.randint(3, VOCAB_SIZE, (BATCH_SIZE, int(lengths.max())), generator=generator)
    attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
    return input_ids.masked_fill(attention_mask == 0, PAD), attention_mask


@dataclass
class BartState:
    encoder_states: torch.Tensor  # (rows, source, d_model)
    attention_mask: torch.Tensor  # (rows, source)
    cache: EncoderDecoderCache | None = None


def bart_decoder(model: BartForConditionalGeneration) -> tuple[Callable, Callable]:
    """The step/select pair running transformers' BART decoder with its own KV cache."""

    def step(tokens: torch.Tensor, state: BartState) -> tuple[torch.Tensor, BartState]:
        output = model(
            decoder_input_ids=tokens,
            encoder_outputs=BaseModelOutput(last_hidden_state=state.encoder_states),
            attention_mask=state.attention_mask,
            past_key_values=state.cache,
            use_cache=True,
        )
        return output.logits[:, -1], replace(state, cache=output.past_key_values)

    def select(state: BartState, rows: torch.Tensor) -> BartState:
        if state.cache is not None:
            state.cache.reorder_cache(rows)
        encoder_states = state.encoder_states.index_select(0, rows)
        return BartState(encoder_states, state.attention_mask.index_select(0, rows), state.cache)

    return step, select


def omnivis_generate(scenario: int, options: dict[str, Any], return_scores: bool = True) -> Any:
    model = reference_model(scenario)
    input_ids, attention_mask = encoder_inputs(scenario)
    with torch.no_grad():
        encoder_states = model.get_encoder()(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
    step, select = bart_decoder(model)
    config = GenerationConfig(**{**SPECIAL_TOKENS, **options})
    state = BartState(encoder_states, attention_mask)
    return generate(step, select, state, BATCH_SIZE, config, return_scores=return_scores)


def reference_generate(scenario: int, options: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' sequences and transition scores (normalised for greedy, as omnivis' are)."""
    model = reference_model(scenario)
    input_ids, attention_mask = encoder_inputs(scenario)
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        return_dict_in_generate=True,
        output_scores=True,
        **options,
    )
    beam_search = options["num_beams"] > 1
    scores = model.compute_transition_scores(
        output.sequences,
        output.scores,
        output.beam_indices if beam_search else None,
        normalize_logits=not beam_search,
    )
    return output.sequences, scores


def generated_positions(sequences: torch.Tensor, eos_ids: tuple[int, ...] = (EOS,)) -> torch.Tensor:
    """(batch, length - 1) True up to and including each row's first EOS."""
    ended = torch.isin(sequences[:, 1:], torch.tensor(eos_ids)).long().cumsum(dim=1)
    return torch.cat((torch.zeros_like(ended[:, :1]), ended[:, :-1]), dim=1) == 0


def oracle_cases() -> list[tuple[int, dict[str, Any]]]:
    """Every combination of beams, early stopping, n-gram ban, length penalty and forced tokens once, spread
    over the scenarios, each length limit paired with each value of the other options, then specials."""
    combinations = [
        dict(num_beams=beams, early_stopping=early, no_repeat_ngram_size=ngram, length_penalty=penalty)
        | (dict(forced_bos_token_id=BOS, forced_eos_token_id=EOS) if forced else {})
        for beams, early, ngram, penalty, forced in itertools.product(
            (1, 2, 3, 4), (True, False, "never"), (0, 3), (1.0, 2.0), (False, True)
        )
        if beams > 1 or (early is False and penalty == 1.0)
    ]
    # A short limit makes rows run into the forced EOS and the max length; this index pattern gives each value
    # of every other option both limits.
    cases = [
        (index % len(SCENARIOS), options | {"max_new_tokens": (6, 20)[(index // 2 + index // 8) % 2]})
        for index, options in enumerate(combinations)
    ]
    extras = [
        dict(num_beams=3, early_stopping="never", length_penalty=-0.5, max_new_tokens=20),
        dict(
            num_beams=3, early_stopping=False, length_penalty=0.0, max_new_tokens=12, no_repeat_ngram_size=2
        ),
        dict(num_beams=2, max_new_tokens=1, forced_bos_token_id=BOS, forced_eos_token_id=EOS),
        dict(num_beams=1, max_new_tokens=1, forced_bos_token_id=BOS, forced_eos_token_id=EOS),
        dict(
            num_beams=3, pad_token_id=0, max_new_tokens=20
        ),  # transformers pads beams with EOS when pad is 0
        dict(
            num_beams=3, eos_token_id=[EOS, 7], max_new_tokens=20
        ),  # two EOS tokens: 3 * num_beams candidates
        dict(num_beams=1, eos_token_id=[EOS, 7], max_new_tokens=20, no_repeat_ngram_size=1),
    ]
    for index, options in enumerate(extras):
        cases += [(index % len(SCENARIOS), options), ((index + 2) % len(SCENARIOS), options)]
    return cases


def case_id(case: tuple[int, dict[str, Any]]) -> str:
    scenario, options = case
    return f"s{scenario}-" + "-".join(f"{name}={value}" for name, value in options.items())


@pytest.mark.oracle
@pytest.mark.parametrize("case", oracle_cases(), ids=case_id)
def test_generate_matches_transformers(case: tuple[int, dict[str, Any]]) -> None:
    scenario, options = case
    expected_sequences, expected_scores = reference_generate(scenario, options)
    output = omnivis_generate(scenario, options)
    assert output.sequences.shape == expected_sequences.shape
    assert torch.equal(output.sequences, expected_sequences)
    assert output.token_scores is not None and output.token_scores.shape == expected_scores.shape
    if options["num_beams"] > 1:
        torch.testing.assert_close(output.token_scores, expected_scores, rtol=0.0, atol=1e-5)
    else:
        # transformers also scores the padding of finished rows; omnivis gives it 0.
        eos_ids = tuple(options.get("eos_token_id", [EOS]))
        real = generated_positions(expected_sequences, eos_ids)
        torch.testing.assert_close(output.token_scores[real], expected_scores[real], rtol=0.0, atol=1e-5)
        assert not output.token_scores[~real].any()


@pytest.mark.oracle
def test_scores_are_optional_and_do_not_change_the_tokens() -> None:
    options = dict(num_beams=3, no_repeat_ngram_size=3, max_new_tokens=20)
    with_scores = omnivis_generate(0, options, return_scores=True)
    without_scores = omnivis_generate(0, options, return_scores=False)
    assert without_scores.token_scores is None
    assert torch.equal(with_scores.sequences, without_scores.sequences)


@pytest.mark.oracle
def test_scenarios_exercise_the_interesting_cases() -> None:
    """Guards the oracle comparison against becoming vacuous if the random models change."""
    end_steps, ngram_changes, forced_changes = set(), 0, 0
    for scenario in range(len(SCENARIOS)):
        for num_beams in (1, 3):
            plain = omnivis_generate(scenario, dict(num_beams=num_beams, max_new_tokens=20)).sequences
            generated = generated_positions(plain).sum(dim=1)
            ended = (plain[:, 1:] == EOS).any(dim=1)
            end_steps.update(torch.where(ended, generated, -1).tolist())
            banned = omnivis_generate(
                scenario, dict(num_beams=num_beams, max_new_tokens=20, no_repeat_ngram_size=3)
            )
            ngram_changes += not torch.equal(plain, banned.sequences)
            short = dict(num_beams=num_beams, max_new_tokens=6)
            forced = omnivis_generate(scenario, {**short, "forced_eos_token_id": EOS}).sequences
            forced_changes += not torch.equal(omnivis_generate(scenario, short).sequences, forced)
    assert -1 in end_steps and len(end_steps) >= 6  # rows that never end, and rows ending at many steps
    assert ngram_changes >= 5
    assert forced_changes >= 5


def row_tables(tables: torch.Tensor) -> tuple[Callable, Callable, torch.Tensor]:
    """A toy decoder: row `r` scores the next token as `tables[r, last_token]`; the state holds row ids."""

    def step(tokens: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tables[rows, tokens[:, 0]], rows

    def select(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return rows[index]

    return step, select, torch.arange(tables.shape[0])


def chain_tables(chains: list[dict[int, int]], vocab_size: int = 5) -> torch.Tensor:
    """Per row, logits `ln 3` for the token `chain[last]` and 0 elsewhere: probability 3/7 over 5 tokens."""
    tables = torch.zeros((len(chains), vocab_size, vocab_size))
    for row, chain in enumerate(chains):
        for last, following in chain.items():
            tables[row, last, following] = math.log(3.0)
    return tables


CHOSEN = math.log(3 / 7)


def test_greedy_pads_rows_that_end_early_and_scores_each_token() -> None:
    step, select, state = row_tables(chain_tables([{2: 3, 3: 2}, {2: 4, 4: 3, 3: 2}]))
    config = GenerationConfig(max_new_tokens=10, **SPECIAL_TOKENS)
    output = generate(step, select, state, 2, config, return_scores=True)
    assert output.sequences.tolist() == [[2, 3, 2, PAD], [2, 4, 3, 2]]
    assert output.token_scores is not None
    torch.testing.assert_close(
        output.token_scores, torch.tensor([[CHOSEN, CHOSEN, 0.0], [CHOSEN, CHOSEN, CHOSEN]])
    )


def test_greedy_stops_at_max_new_tokens_and_forces_bos_then_eos() -> None:
    step, select, state = row_tables(chain_tables([{2: 3, 0: 3, 3: 4, 4: 3}]))
    unforced = GenerationConfig(max_new_tokens=3, **SPECIAL_TOKENS)
    assert generate(step, select, state, 1, unforced).sequences.tolist() == [[2, 3, 4, 3]]
    forced = replace(unforced, forced_bos_token_id=BOS, forced_eos_token_id=EOS)
    output = generate(step, select, state, 1, forced, return_scores=True)
    assert output.sequences.tolist() == [[2, BOS, 3, EOS]]
    assert output.token_scores is not None
    torch.testing.assert_close(
        output.token_scores, torch.tensor([[0.0, CHOSEN, 0.0]])
    )  # forced tokens are certain
    # With a single new token both rules apply to it, and the EOS rule, applied last, wins.
    single = generate(step, select, state, 1, replace(forced, max_new_tokens=1, num_beams=2))
    assert single.sequences.tolist() == [[2, EOS]]


def test_decoder_start_falls_back_to_bos() -> None:
    step, select, state = row_tables(chain_tables([{4: 3, 3: 2}]))
    config = GenerationConfig(bos_token_id=4, eos_token_id=EOS, max_new_tokens=5)
    assert generate(step, select, state, 1, config).sequences.tolist() == [[4, 3, 2]]
    with pytest.raises(InputError, match="decoder_start_token_id"):
        generate(step, select, state, 1, GenerationConfig(eos_token_id=EOS))
    with pytest.raises(InputError, match="batch_size"):
        generate(step, select, state, 0, config)


def test_beam_search_finds_the_likelier_sequence_greedy_misses() -> None:
    # Tokens: 2 start/EOS, 3 "a", 4 "b"; 0 and 1 impossible. a: 0.5 then EOS 0.3; b: 0.4 then EOS 0.9.
    probabilities = torch.zeros((1, 5, 5))
    probabilities[0, 2, 2:] = torch.tensor([0.1, 0.5, 0.4])
    probabilities[0, 3, 2:] = torch.tensor([0.3, 0.4, 0.3])
    probabilities[0, 4, 2:] = torch.tensor([0.9, 0.05, 0.05])
    step, select, state = row_tables(probabilities.log())
    config = GenerationConfig(max_new_tokens=2, length_penalty=0.0, **SPECIAL_TOKENS)
    assert generate(step, select, state, 1, config).sequences.tolist() == [[2, 3, 3]]
    output = generate(step, select, state, 1, replace(config, num_beams=2), return_scores=True)
    assert output.sequences.tolist() == [[2, 4, 2]]  # 0.4 * 0.9 beats 0.5 * 0.4
    assert output.token_scores is not None
    torch.testing.assert_close(output.token_scores, torch.tensor([[math.log(0.4), math.log(0.9)]]))


def test_ngram_ban_by_hand() -> None:
    scores = torch.zeros((3, 10))
    sequences = torch.tensor([[5, 6, 7, 5, 6], [5, 6, 7, 8, 6], [1, 2, 1, 2, 1]])
    banned = ban_repeated_ngrams(sequences, scores, 3)
    assert torch.isinf(banned).nonzero().tolist() == [
        [0, 7],
        [2, 2],
    ]  # "5 6 7" seen; "2 1 2" seen; row 1 is free
    pairs = ban_repeated_ngrams(torch.tensor([[1, 2, 1, 3, 1]]), torch.zeros((1, 10)), 2)
    assert torch.isinf(pairs).nonzero()[:, 1].tolist() == [2, 3]  # 1 was followed by 2 and by 3
    singles = ban_repeated_ngrams(torch.tensor([[4, 9, 4]]), torch.zeros((1, 10)), 1)
    assert torch.isinf(singles).nonzero()[:, 1].tolist() == [4, 9]  # every token already present
    assert ban_repeated_ngrams(sequences[:, :2], scores, 3) is scores  # no complete 3-gram yet
    assert ban_repeated_ngrams(sequences, scores, 0) is scores
    # Tokens past the scored vocabulary ban nothing.
    assert not torch.isinf(ban_repeated_ngrams(torch.tensor([[5, 12, 5]]), torch.zeros((1, 10)), 2)).any()


@pytest.mark.oracle
def test_ngram_ban_matches_transformers_on_random_sequences() -> None:
    generator = torch.Generator().manual_seed(0)
    for ngram_size in (1, 2, 3, 4):
        sequences = torch.randint(0, 6, (8, 30), generator=generator)  # few tokens, so n-grams repeat
        scores = torch.randn((8, 6), generator=generator)
        expected = NoRepeatNGramLogitsProcessor(ngram_size)(sequences, scores.clone())
        assert torch.equal(ban_repeated_ngrams(sequences, scores, ngram_size), expected)


def test_without_eos_every_row_runs_to_the_limit() -> None:
    step, select, state = row_tables(chain_tables([{4: 3, 3: 2, 2: 3}, {4: 2, 2: 2}]))
    for num_beams in (1, 2):
        config = GenerationConfig(decoder_start_token_id=4, max_new_tokens=3, num_beams=num_beams)
        output = generate(step, select, state, 2, config, return_scores=True)
        assert output.sequences.tolist() == [[4, 3, 2, 3], [4, 2, 2, 2]]
        assert output.token_scores is not None
        torch.testing.assert_close(output.token_scores, torch.full((2, 3), CHOSEN))
