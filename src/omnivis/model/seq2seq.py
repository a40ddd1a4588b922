"""The BART-style multi-modal encoder-decoder of Florence-2 (paper, section 3: "Multi-modality encoder decoder").

The encoder reads the visual tokens and the prompt's token embeddings as one sequence; the decoder writes the answer,
whose vocabulary includes 1,000 location tokens. Everything here is BART as the official checkpoints define it:
post-LayerNorm residual blocks, learned positions with an offset of 2 (a historical BART quirk the weights depend on),
a LayerNorm on the embeddings (`layernorm_embedding`), GELU MLPs, and one embedding table shared by encoder, decoder
and the LM head. Module names follow the official transformers-native checkpoint so that its weights load by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# BART shifts every position id by 2 before the lookup; its weights (and therefore Florence-2's) were trained that way.
POSITION_OFFSET = 2


@dataclass
class Seq2SeqConfig:
    vocab_size: int = (
        51289  # 50265 BART tokens + 1024 Florence-2 task/location tokens (51328 when padded to x64)
    )
    d_model: int = 768
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 12
    decoder_attention_heads: int = 12
    encoder_ffn_dim: int = 3072
    decoder_ffn_dim: int = 3072
    # Positions are shared by the image tokens (577) and the prompt, so this bounds image + prompt length.
    max_position_embeddings: int = 1024
    activation_function: str = "gelu"
    scale_embedding: bool = False  # Florence-2 keeps BART-base's unscaled embeddings
    pad_token_id: int = 1
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0

    def __post_init__(self) -> None:
        for heads, name in (
            (self.encoder_attention_heads, "encoder"),
            (self.decoder_attention_heads, "decoder"),
        ):
            if self.d_model % heads:
                raise ValueError(f"d_model {self.d_model} is not divisible by {name} heads {heads}")


_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "gelu_new": lambda x: F.gelu(x, approximate="tanh")}


class Attention(nn.Module):
    """Multi-head attention over `torch.nn.functional.scaled_dot_product_attention`."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, T, head_dim)

    def project_keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split_heads(self.k_proj(source)), self.split_heads(self.v_proj(source))

    def attend(
        self,
        query_states: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Attends `query_states` (B, T, C) to pre-split `keys`/`values` (B, heads, S, head_dim)."""
        queries = self.split_heads(self.q_proj(query_states))  # (B, heads, T, head_dim)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=mask, dropout_p=dropout, is_causal=is_causal
        )
        batch, _, tokens, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, -1))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        keys, values = self.project_keys_values(x)
        return self.attend(x, keys, values, mask, is_causal)


class EncoderLayer(nn.Module):
    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        dim = config.d_model
        self.self_attn = Attention(dim, config.encoder_attention_heads, config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation = _ACTIVATIONS[config.activation_function]
        self.dropout = config.dropout
        self.activation_dropout = config.activation_dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # Post-LN: normalise after each residual sum, as BART does.
        x = self.self_attn_layer_norm(x + F.dropout(self.self_attn(x, mask), self.dropout, self.training))
        hidden = F.dropout(self.activation(self.fc1(x)), self.activation_dropout, self.training)
        x = self.final_layer_norm(x + F.dropout(self.fc2(hidden), self.dropout, self.training))
        if x.dtype == torch.float16:
            # fp16 overflow guard, as in BART: saturate instead of producing inf.
            limit = torch.finfo(x.dtype).max - 1000
            x = x.clamp(-limit, limit)
        return x


@dataclass
class DecoderCache:
    """Keys and values a decoder keeps between steps, one entry per layer.

    Self-attention entries are preallocated to the longest sequence the caller will decode, so a step writes
    one slot instead of concatenating (a copy of the whole cache per token). Cross-attention entries are the
    projected encoder states, computed once.
    """

    self_keys: list[torch.Tensor]  # each (rows, heads, capacity, head_dim)
    self_values: list[torch.Tensor]
    cross_keys: list[torch.Tensor]  # each (rows, heads, source_len, head_dim)
    cross_values: list[torch.Tensor]
    cross_mask: torch.Tensor | None  # (rows, 1, 1, source_len) bool, True = attend
    length: int = 0

    def select(self, rows: torch.Tensor) -> DecoderCache:
        """The cache of `rows` (indices into this cache's rows), for beam expansion and reordering."""
        pick = lambda tensors: [t.index_select(0, rows) for t in tensors]
        mask = None if self.cross_mask is None else self.cross_mask.index_select(0, rows)
        return DecoderCache(
            pick(self.self_keys),
            pick(self.self_values),
            pick(self.cross_keys),
            pick(self.cross_values),
            mask,
            self.length,
        )


class DecoderLayer(nn.Module):
    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        dim = config.d_model
        self.self_attn = Attention(dim, config.decoder_attention_heads, config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.encoder_attn = Attention(dim, config.decoder_attention_heads, config.attention_dropout)
        self.encoder_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation = _ACTIVATIONS[config.activation_function]
        self.dropout = config.dropout
        self.activation_dropout = config.activation_dropout

    def forward(
        self,
        x: torch.Tensor,
        self_keys: torch.Tensor | None,
        self_values: torch.Tensor | None,
        cross_keys: torch.Tensor | None,
        cross_values: torch.Tensor | None,
        cross_mask: torch.Tensor | None,
        is_causal: bool,
        encoder_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One layer. Keys/values not given are projected here: from `x` (self-attention) and from
        `encoder_states` (cross-attention). Teacher-forced training passes none, so every weight the layer
        uses is touched inside its own forward (which FSDP's per-layer hooks rely on); decoding passes cached ones."""
        if self_keys is None or self_values is None:
            self_keys, self_values = self.self_attn.project_keys_values(x)
        if cross_keys is None or cross_values is None:
            if encoder_states is None:
                raise ValueError(
                    "give cross-attention keys/values or the encoder states to project them from"
                )
            cross_keys, cross_values = self.encoder_attn.project_keys_values(encoder_states)
        attended = self.self_attn.attend(x, self_keys, self_values, is_causal=is_causal)
        x = self.self_attn_layer_norm(x + F.dropout(attended, self.dropout, self.training))
        attended = self.encoder_attn.attend(x, cross_keys, cross_values, cross_mask)
        x = self.encoder_attn_layer_norm(x + F.dropout(attended, self.dropout, self.training))
        hidden = F.dropout(self.activation(self.fc1(x)), self.activation_dropout, self.training)
        return self.final_layer_norm(x + F.dropout(self.fc2(hidden), self.dropout, self.training))


class _Stack(nn.Module):
    """What encoder and decoder share: token and position embeddings and the embedding LayerNorm."""

    def __init__(self, config: Seq2SeqConfig, shared: nn.Embedding) -> None:
        super().__init__()
        self.embed_tokens = shared
        self.embed_positions = nn.Embedding(config.max_position_embeddings + POSITION_OFFSET, config.d_model)
        self.layernorm_embedding = nn.LayerNorm(config.d_model)
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.max_positions = config.max_position_embeddings
        self.dropout = config.dropout

    def embed(self, token_embeddings: torch.Tensor, first_position: int = 0) -> torch.Tensor:
        length = token_embeddings.shape[1]
        if first_position + length > self.max_positions:
            raise ValueError(
                f"sequence of {first_position + length} positions exceeds the position table ({self.max_positions})"
            )
        positions = torch.arange(first_position, first_position + length, device=token_embeddings.device)
        x = token_embeddings + self.embed_positions(positions + POSITION_OFFSET)  # (B, T, C)
        return F.dropout(self.layernorm_embedding(x), self.dropout, self.training)


class Encoder(_Stack):
    def __init__(self, config: Seq2SeqConfig, shared: nn.Embedding) -> None:
        super().__init__(config, shared)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.gradient_checkpointing = False

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Encodes (B, S, C) embeddings; `attention_mask` (B, S) is 1 for real tokens, 0 for padding."""
        x = self.embed(inputs_embeds)
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, mask, use_reentrant=False)
            else:
                x = layer(x, mask)
        return x


class Decoder(_Stack):
    def __init__(self, config: Seq2SeqConfig, shared: nn.Embedding) -> None:
        super().__init__(config, shared)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.num_heads = config.decoder_attention_heads

    def start_cache(
        self, encoder_states: torch.Tensor, encoder_mask: torch.Tensor | None, capacity: int
    ) -> DecoderCache:
        """An empty cache for decoding up to `capacity` tokens against `encoder_states` (rows, S, C)."""
        if capacity > self.max_positions:
            raise ValueError(
                f"cannot decode {capacity} tokens: the position table holds {self.max_positions}"
            )
        rows, _, dim = encoder_states.shape
        head_dim = dim // self.num_heads
        empty = lambda: encoder_states.new_zeros(rows, self.num_heads, capacity, head_dim)
        cross = [layer.encoder_attn.project_keys_values(encoder_states) for layer in self.layers]
        mask = None if encoder_mask is None else encoder_mask.bool()[:, None, None, :]
        return DecoderCache(
            self_keys=[empty() for _ in self.layers],
            self_values=[empty() for _ in self.layers],
            cross_keys=[keys for keys, _ in cross],
            cross_values=[values for _, values in cross],
            cross_mask=mask,
        )

    def step(self, input_ids: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
        """Decodes the next token(s) (rows, T) given the cache, writing their keys/values into it in place."""
        start, length = cache.length, input_ids.shape[1]
        if start > 0 and length > 1:
            raise ValueError("after the first call, decode one token per step")
        x = self.embed(self.embed_tokens(input_ids) * self.embed_scale, first_position=start)
        for index, layer in enumerate(self.layers):
            # Project this step's keys/values from the layer's input, store them, attend to everything so far.
            keys, values = layer.self_attn.project_keys_values(x)
            cache.self_keys[index][:, :, start : start + length] = keys
            cache.self_values[index][:, :, start : start + length] = values
            x = layer(
                x,
                cache.self_keys[index][:, :, : start + length],
                cache.self_values[index][:, :, : start + length],
                cache.cross_keys[index],
                cache.cross_values[index],
                cache.cross_mask,
                is_causal=length > 1 and start == 0,
            )
        cache.length = start + length
        return x

    def forward(
        self, input_ids: torch.Tensor, encoder_states: torch.Tensor, encoder_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Teacher-forced decoding of a whole (B, T) sequence, causal, for training and scoring."""
        x = self.embed(self.embed_tokens(input_ids) * self.embed_scale)
        mask = None if encoder_mask is None else encoder_mask.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, None, None, None, None, mask, is_causal=True, encoder_states=encoder_states)
        return x


class Seq2Seq(nn.Module):
    """BART encoder-decoder with one shared token embedding; the LM head lives in the Florence-2 wrapper."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.encoder = Encoder(config, self.shared)
        self.decoder = Decoder(config, self.shared)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.shared(input_ids) * self.encoder.embed_scale
