"""Florence-2: image encoder -> projector -> visual tokens + prompt tokens -> encoder-decoder -> tied LM head.

Paper, section 3 and figure 2: the visual tokens are concatenated in front of the prompt's token embeddings and the
whole sequence is encoded by a BART-style transformer; the decoder writes text whose vocabulary includes 1,000
quantized location tokens; one cross-entropy loss serves every task. This module sees tensors only: images arrive
normalised, prompts arrive as token ids (see `omnivis.predictor` for the image + task -> answer path).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from omnivis.model.davit import DaViT, DaViTConfig
from omnivis.model.projector import ImageProjector, ProjectorConfig
from omnivis.model.seq2seq import DecoderCache, Seq2Seq, Seq2SeqConfig

IGNORE_INDEX = -100  # label value excluded from the loss (padding), as PyTorch's cross_entropy expects


@dataclass
class FlorenceConfig:
    vision: DaViTConfig = field(default_factory=DaViTConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    text: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    image_size: tuple[int, int] = (
        768,
        768,
    )  # (height, width) images are resized to; 768 gives a 24x24 token grid

    def __post_init__(self) -> None:
        if self.projector.vision_dim != self.vision.embed_dims[-1]:
            raise ValueError(
                f"projector.vision_dim {self.projector.vision_dim} != last DaViT width {self.vision.embed_dims[-1]}"
            )
        if self.projector.projection_dim != self.text.d_model:
            raise ValueError(
                f"projector.projection_dim {self.projector.projection_dim} != text d_model {self.text.d_model}"
            )
        self.image_size = tuple(self.image_size)  # type: ignore[assignment]  # JSON gives lists

    @property
    def grid_size(self) -> tuple[int, int]:
        """(rows, columns) of the DaViT feature grid: the image shrinks 32x, rounding up."""
        height, width = self.image_size
        return -(-height // 32), -(-width // 32)

    @property
    def num_image_tokens(self) -> int:
        """1 pooled token + the DaViT grid."""
        rows, columns = self.grid_size
        return 1 + rows * columns

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FlorenceConfig:
        known = {"vision", "projector", "text", "image_size"}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown FlorenceConfig fields: {sorted(unknown)}")
        return cls(
            vision=DaViTConfig(**values["vision"]),
            projector=ProjectorConfig(**values["projector"]),
            text=Seq2SeqConfig(**values["text"]),
            image_size=tuple(values.get("image_size", (768, 768))),  # type: ignore[arg-type]
        )


@dataclass
class TextChunk:
    """Rows of a batch encoded and decoded together, padded only to their own longest prompt and target.

    Training groups rows of similar length into chunks, so a 3-token answer is not padded to a 200-token
    caption's length; the images are still encoded once for all chunks.
    """

    image_index: torch.Tensor  # (rows,) the image each row reads
    input_ids: torch.Tensor  # (rows, prompt tokens)
    attention_mask: torch.Tensor  # (rows, prompt tokens), 1 = real token
    decoder_input_ids: torch.Tensor  # (rows, target tokens)

    def to(self, device: torch.device) -> TextChunk:
        return TextChunk(*(tensor.to(device, non_blocking=True) for tensor in
                           (self.image_index, self.input_ids, self.attention_mask, self.decoder_input_ids)))  # fmt: skip


@dataclass
class EncoderOutput:
    states: torch.Tensor  # (B, image tokens + prompt tokens, d_model)
    mask: torch.Tensor  # (B, image tokens + prompt tokens), 1 = real token


def _init_weights(module: nn.Module) -> None:
    """BART's initialisation (normal, std 0.02) for a model trained from scratch; checkpoints overwrite it."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])


class Florence2(nn.Module):
    """The whole model; attribute names follow the transformers-native checkpoint (minus its `model.` prefix)."""

    def __init__(self, config: FlorenceConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_tower = DaViT(config.vision)
        self.multi_modal_projector = ImageProjector(config.projector)
        self.language_model = Seq2Seq(config.text)
        self.lm_head = nn.Linear(config.text.d_model, config.text.vocab_size, bias=False)
        self.apply(_init_weights)
        self.tie_weights()

    def tie_weights(self) -> None:
        """One table for input embeddings and output logits, as BART and Florence-2 are trained."""
        self.lm_head.weight = self.language_model.shared.weight

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> (B, 1 + H/32 * W/32, d_model) visual tokens."""
        features = self.vision_tower.forward_features(pixel_values.to(self.dtype))  # (B, C, H/32, W/32)
        return self.multi_modal_projector(features)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_tokens: torch.Tensor | None = None,
    ) -> EncoderOutput:
        """Encodes visual tokens followed by the prompt (B, T); give pixels or precomputed `image_tokens`."""
        if (pixel_values is None) == (image_tokens is None):
            raise ValueError("give exactly one of pixel_values and image_tokens")
        if image_tokens is None:
            image_tokens = self.encode_image(pixel_values)  # type: ignore[arg-type]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        prompt = self.language_model.embed_tokens(input_ids).to(image_tokens.dtype)  # (B, T, d_model)
        embeddings = torch.cat([image_tokens, prompt], dim=1)  # (B, N + T, d_model)
        image_mask = attention_mask.new_ones(image_tokens.shape[:2])
        mask = torch.cat([image_mask, attention_mask], dim=1)  # (B, N + T)
        return EncoderOutput(self.language_model.encoder(embeddings, mask), mask)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        image_index: torch.Tensor | None = None,
        chunks: list[TextChunk] | None = None,
        feature_heads: nn.Module | None = None,
    ) -> dict[str, Any]:
        """Teacher-forced pass. Returns `logits` (B, T, vocab) and, given `labels` (B, T), the mean token `loss`.

        `image_index` (B,), when given, says which of the `pixel_values` images each row reads, so several
        prompts about one image share one pass through the vision tower (training draws several tasks per image).
        With `chunks` instead of the row tensors, returns `chunk_logits`: one (rows, T, vocab) per chunk, every
        chunk reading the same single pass over the images. `feature_heads`, a module registered on this model
        (training's auxiliary losses on the tower), reads the tower's (images, C, h, w) feature map; its output
        is returned as `feature_outputs`. It runs inside this forward so that DDP and FSDP see its parameters.
        """
        features = self.vision_tower.forward_features(pixel_values.to(self.dtype))  # (images, C, h, w)
        image_tokens = self.multi_modal_projector(features)  # (images, N, d_model)
        if chunks is not None:
            chunk_logits = [self._decode_rows(image_tokens[c.image_index], c.input_ids, c.attention_mask,
                                              c.decoder_input_ids) for c in chunks]  # fmt: skip
            if feature_heads is None:
                return {"chunk_logits": chunk_logits}
            return {"chunk_logits": chunk_logits, "feature_outputs": feature_heads(features)}
        if input_ids is None or decoder_input_ids is None:
            raise ValueError("give input_ids and decoder_input_ids, or chunks")
        if image_index is not None:
            image_tokens = image_tokens[image_index]  # (B, N, d_model)
        logits = self._decode_rows(image_tokens, input_ids, attention_mask, decoder_input_ids)
        output: dict[str, Any] = {"logits": logits}
        if feature_heads is not None:
            output["feature_outputs"] = feature_heads(features)
        if labels is not None:
            output["loss"] = F.cross_entropy(
                logits.flatten(0, 1).float(),
                labels.flatten(),
                ignore_index=IGNORE_INDEX,
                label_smoothing=label_smoothing,
            )
        return output

    def _decode_rows(
        self,
        image_tokens: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        decoder_input_ids: torch.Tensor,
    ) -> torch.Tensor:
        """(B, N, d_model) visual tokens + (B, T) prompts -> (B, T', vocab) logits for (B, T') decoder inputs."""
        encoded = self.encode(input_ids, attention_mask, image_tokens=image_tokens)
        hidden = self.language_model.decoder(decoder_input_ids, encoded.states, encoded.mask)
        return self.logits(hidden)

    # Incremental decoding, the interface `omnivis.model.generation` drives.

    def start_decoding(self, encoded: EncoderOutput, capacity: int) -> DecoderCache:
        return self.language_model.decoder.start_cache(encoded.states, encoded.mask, capacity)

    def decode_step(self, tokens: torch.Tensor, cache: DecoderCache) -> tuple[torch.Tensor, DecoderCache]:
        """(rows, 1) last tokens -> (rows, vocab) next-token logits, with the cache extended in place."""
        hidden = self.language_model.decoder.step(tokens, cache)  # (rows, 1, d_model)
        return self.logits(hidden[:, -1]), cache

    @staticmethod
    def select_cache(cache: DecoderCache, rows: torch.Tensor) -> DecoderCache:
        return cache.select(rows)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.vision_tower.set_grad_checkpointing(enable)
        self.language_model.encoder.gradient_checkpointing = enable

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
