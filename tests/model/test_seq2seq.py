"""The BART-style encoder-decoder against transformers' BART on the same weights, and the KV cache against itself."""

from __future__ import annotations

import pytest
import torch

from omnivis.model.seq2seq import Seq2Seq, Seq2SeqConfig

CONFIG = Seq2SeqConfig(
    vocab_size=97, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
    decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
)  # fmt: skip


def _model(seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(CONFIG).eval()
    with torch.no_grad():  # random norms and biases, so a mis-wired one cannot hide
        for name, parameter in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


@pytest.mark.oracle
def test_matches_transformers_bart() -> None:
    from transformers import BartConfig, BartModel

    ours = _model()
    reference = BartModel(
        BartConfig(
            vocab_size=97, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        )  # fmt: skip
    ).eval()
    state = ours.state_dict()
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    reference.encoder.embed_tokens.weight = reference.shared.weight
    reference.decoder.embed_tokens.weight = reference.shared.weight

    input_ids = torch.randint(3, 97, (2, 9))
    mask = torch.ones_like(input_ids)
    mask[1, 6:] = 0  # right padding on the second row
    decoder_ids = torch.randint(3, 97, (2, 5))
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_ids)
        encoded = ours.encoder(ours.embed_tokens(input_ids), mask)
        decoded = ours.decoder(decoder_ids, encoded, mask)
    assert (encoded - expected.encoder_last_hidden_state).abs().max() < 1e-5
    assert (decoded - expected.last_hidden_state).abs().max() < 1e-5


def test_cached_steps_equal_the_full_pass() -> None:
    model = _model(1)
    input_ids = torch.randint(3, 97, (3, 7))
    mask = torch.ones_like(input_ids)
    mask[2, 4:] = 0
    decoder_ids = torch.randint(3, 97, (3, 6))
    with torch.no_grad():
        encoded = model.encoder(model.embed_tokens(input_ids), mask)
        full = model.decoder(decoder_ids, encoded, mask)
        cache = model.decoder.start_cache(encoded, mask, capacity=6)
        steps = [model.decoder.step(decoder_ids[:, t : t + 1], cache) for t in range(6)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    assert cache.length == 6


def test_cache_select_reorders_rows() -> None:
    model = _model(2)
    encoded = torch.randn(2, 5, 32)
    with torch.no_grad():
        cache = model.decoder.start_cache(encoded, None, capacity=4)
        model.decoder.step(torch.tensor([[5], [6]]), cache)
        swapped = cache.select(torch.tensor([1, 0]))
        a = model.decoder.step(torch.tensor([[7], [7]]), swapped)
        b = model.decoder.step(torch.tensor([[7], [7]]), cache)
    assert torch.allclose(a, b.flip(0), atol=1e-6)


def test_positions_beyond_the_table_are_refused() -> None:
    model = _model()
    with pytest.raises(ValueError, match="position table"):
        model.encoder(torch.randn(1, 65, 32), None)
    with pytest.raises(ValueError, match="position table"):
        model.decoder.start_cache(torch.randn(1, 3, 32), None, capacity=65)
