"""The pair `bench/train.py` times: omnivis's model and transformers' Florence-2 holding the same weights, and
batches in the inputs each expects (random tokens of realistic padding, or a real multi-task world batch).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import BartConfig, Florence2Config, Florence2ForConditionalGeneration, Florence2VisionConfig

from omnivis.data.build import make_world_dataset
from omnivis.data.dataset import open_dataset
from omnivis.model import checkpoint
from omnivis.model.florence import IGNORE_INDEX, Florence2, FlorenceConfig
from omnivis.tokenizer import Tokenizer
from omnivis.train import data
from omnivis.train.loss import LossSettings, summed_token_loss

DECODER_START, PAD, BOS, EOS = 2, 1, 0, 2  # BART's ids, which Florence-2 keeps
WORLD_SCENES, WORLD_SEED = 64, 1  # the --stream dataset: scenes drawn, and their seed
STREAM_TARGET_TOKENS = 512  # the --stream target budget (cut to the decoder's position table if shorter)


@dataclass
class Batch:
    """One training batch, in the inputs each implementation expects."""

    pixel_values: torch.Tensor  # (B, 3, H, W), already normalised
    prompt_ids: torch.Tensor  # (B, P), right-padded with PAD
    prompt_mask: torch.Tensor  # (B, P), 1 = real token
    labels: torch.Tensor  # (B, T), IGNORE_INDEX past each target's end
    decoder_input_ids: torch.Tensor  # (B, T): labels shifted right, DECODER_START first, padding as PAD
    reference_ids: torch.Tensor  # (B, N + P): N `<image>` placeholders, then the prompt
    reference_mask: torch.Tensor  # (B, N + P)


def reference_config(config: FlorenceConfig, image_token: int) -> Florence2Config:
    """The transformers config of the network an omnivis `FlorenceConfig` describes."""
    vision, projector, text = config.vision, config.projector, config.text
    vision_config = Florence2VisionConfig(
        in_channels=vision.in_channels, embed_dim=list(vision.embed_dims), depths=list(vision.depths),
        num_heads=list(vision.num_heads), num_groups=list(vision.num_groups),
        patch_size=list(vision.patch_sizes), patch_stride=list(vision.patch_strides),
        patch_padding=list(vision.patch_paddings), patch_prenorm=list(vision.patch_prenorm),
        window_size=vision.window_size, mlp_ratio=vision.mlp_ratio, qkv_bias=vision.qkv_bias,
        drop_path_rate=vision.drop_path_rate, projection_dim=projector.projection_dim,
        max_position_embeddings=projector.max_grid_positions,
        max_temporal_embeddings=projector.max_temporal_embeddings,
    )  # fmt: skip
    text_config = BartConfig(
        vocab_size=text.vocab_size, d_model=text.d_model, encoder_layers=text.encoder_layers,
        decoder_layers=text.decoder_layers, encoder_attention_heads=text.encoder_attention_heads,
        decoder_attention_heads=text.decoder_attention_heads, encoder_ffn_dim=text.encoder_ffn_dim,
        decoder_ffn_dim=text.decoder_ffn_dim, max_position_embeddings=text.max_position_embeddings,
        activation_function=text.activation_function, scale_embedding=text.scale_embedding,
        dropout=text.dropout, attention_dropout=text.attention_dropout,
        activation_dropout=text.activation_dropout, pad_token_id=text.pad_token_id,
        bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=DECODER_START,
    )  # fmt: skip
    return Florence2Config(vision_config=vision_config, text_config=text_config, image_token_id=image_token)


def build_pair(
    config: FlorenceConfig, device: str, seed: int = 0
) -> tuple[Florence2, Florence2ForConditionalGeneration]:
    """omnivis's model and the reference, holding the same weights (the reference's random initialisation)."""
    torch.manual_seed(seed)
    image_token = config.text.vocab_size - 1  # a row the batch never uses otherwise
    reference = Florence2ForConditionalGeneration(reference_config(config, image_token))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        # Random LayerNorm affines and biases, so a mis-wired norm or bias cannot pass the loss check.
        for name, parameter in reference.named_parameters():
            if name.endswith("bias") or "norm" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    ours = Florence2(config)
    state = checkpoint.native_to_omnivis(reference.state_dict())
    checkpoint.load_state_into(ours, state, "the reference's state_dict")
    return ours.to(device), reference.to(device)


def make_batch(
    config: FlorenceConfig, batch: int, prompt_tokens: int, target_tokens: int, device: str
) -> Batch:
    """Random pixels and token ids with the padding a real batch has: prompts and targets of varied length."""
    seeded = torch.Generator().manual_seed(2)
    vocab = config.text.vocab_size
    height, width = config.image_size
    pixels = torch.randn(batch, 3, height, width, generator=seeded)
    # Ordinary ids only: 0-2 are <s>, <pad>, </s>; the last row is the reference's <image> placeholder.
    words = lambda rows, columns: torch.randint(3, vocab - 1, (rows, columns), generator=seeded)
    length = lambda low, high: int(torch.randint(low, high + 1, (), generator=seeded))
    prompt_ids, labels = words(batch, prompt_tokens), words(batch, target_tokens)
    prompt_ids[:, 0], prompt_mask = BOS, torch.ones(batch, prompt_tokens, dtype=torch.long)
    for row in range(batch):
        prompt_length = length(max(2, prompt_tokens // 2), prompt_tokens)
        target_length = length(max(1, target_tokens // 2), target_tokens)
        prompt_ids[row, prompt_length - 1], prompt_ids[row, prompt_length:] = EOS, PAD
        prompt_mask[row, prompt_length:] = 0
        labels[row, target_length - 1], labels[row, target_length:] = EOS, IGNORE_INDEX
    decoder_input_ids = torch.full_like(labels, DECODER_START)
    decoder_input_ids[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE_INDEX, PAD)
    return assemble(config, pixels, prompt_ids, prompt_mask, labels, decoder_input_ids, device)


def assemble(config: FlorenceConfig, pixels: torch.Tensor, prompt_ids: torch.Tensor,
             prompt_mask: torch.Tensor, labels: torch.Tensor, decoder_input_ids: torch.Tensor,
             device: str) -> Batch:  # fmt: skip
    """A `Batch` on `device`, the reference's prompts made of `<image>` placeholders (the vocabulary's last
    row, which `build_pair` names the image token) followed by the bare prompt."""
    image_token = config.text.vocab_size - 1
    image = torch.full((len(prompt_ids), config.num_image_tokens), image_token, dtype=torch.long)
    reference_ids = torch.cat([image, prompt_ids], dim=1)
    reference_mask = torch.cat([torch.ones_like(image), prompt_mask], dim=1)
    tensors = (pixels, prompt_ids, prompt_mask, labels, decoder_input_ids, reference_ids, reference_mask)
    return Batch(*(tensor.to(device) for tensor in tensors))


def make_stream_batch(
    config: FlorenceConfig, tokenizer: Tokenizer, images: int, examples_per_image: int, length_chunks: int
) -> data.Batch:
    """One batch of `images` images of a fresh procedural world dataset, as omnivis's training loop reads it:
    every task the dataset supports, weighted alike, `examples_per_image` distinct tasks per image."""
    positions = config.text.max_position_embeddings
    with tempfile.TemporaryDirectory() as directory:
        make_world_dataset(directory, WORLD_SCENES, seed=WORLD_SEED, workers=1, progress=False)
        mixture = data.resolve_mixture(open_dataset(directory), {})  # {}: all tasks the dataset supports
        stream = data.TrainingStream(
            directory, tokenizer, config.image_size, mixture, examples_per_image=examples_per_image,
            max_target_tokens=min(STREAM_TARGET_TOKENS, positions),
            max_prompt_tokens=positions - config.num_image_tokens,  # as the loop: the encoder's room
        )  # fmt: skip
        samples = [stream[position] for position in range(images)]
    batch = data.collate(samples, tokenizer.pad_token_id, DECODER_START, length_chunks=length_chunks)
    if bool((batch.input_ids == config.text.vocab_size - 1).any()):
        raise SystemExit("a prompt uses the vocabulary's last id, which the reference reads as <image>")
    return batch


def recipe_rows(config: FlorenceConfig, batch: data.Batch, device: str) -> Batch:
    """The same examples as the common recipe feeds them: one row per example with its own copy of its image,
    every row padded to the batch's longest prompt and target (`collate`'s row tensors are exactly that)."""
    return assemble(config, batch.pixel_values[batch.image_index], batch.input_ids, batch.attention_mask,
                    batch.labels, batch.decoder_input_ids, device)  # fmt: skip


def positions_computed(batch: data.Batch, image_tokens: int) -> dict[str, tuple[int, int, int]]:
    """(vision-tower images, encoder positions, decoder positions) a step computes, padding included, for the
    real tokens alone, the recipe's rows and omnivis's chunks. Both ways give every row its image's visual
    tokens in the encoder; they differ in images encoded and in padding."""
    rows, prompt_length = batch.input_ids.shape
    shapes = [(len(chunk.input_ids), chunk.input_ids.shape[1], labels.shape[1])
              for chunk, labels in zip(batch.chunks, batch.chunk_labels, strict=True)]  # fmt: skip
    images, real_prompt = len(batch.image_ids), int(batch.attention_mask.sum())
    return {
        "real tokens": (images, rows * image_tokens + real_prompt, batch.target_tokens),
        "reference": (rows, rows * (image_tokens + prompt_length), batch.labels.numel()),
        "omnivis": (images, sum(count * (image_tokens + prompt) for count, prompt, _ in shapes),
                    sum(count * target for count, _, target in shapes)),
    }  # fmt: skip


def our_loss(model: Florence2, batch: Batch) -> torch.Tensor:
    """omnivis's mean token loss: pixels and the bare prompt in, the visual tokens go in front of it."""
    return model(
        batch.pixel_values, batch.prompt_ids, batch.decoder_input_ids, batch.prompt_mask, batch.labels
    )["loss"]


def reference_loss(model: Florence2ForConditionalGeneration, batch: Batch) -> torch.Tensor:
    """The reference's mean token loss: `<image>` placeholders in its prompt give way to the visual tokens."""
    return model(
        input_ids=batch.reference_ids, pixel_values=batch.pixel_values, attention_mask=batch.reference_mask,
        decoder_input_ids=batch.decoder_input_ids, labels=batch.labels,
    ).loss  # fmt: skip


def chunked_loss(model: Florence2, batch: data.Batch) -> torch.Tensor:
    """omnivis's training loss (`train.loop._forward_backward`): one vision pass for the batch's images, the
    rows decoded chunk by chunk, token losses summed over every chunk and divided by the target tokens."""
    chunk_logits = model(batch.pixel_values, chunks=batch.chunks)["chunk_logits"]
    summed = sum(summed_token_loss(logits, labels, LossSettings())
                 for logits, labels in zip(chunk_logits, batch.chunk_labels, strict=True))  # fmt: skip
    return summed / batch.target_tokens


def check_same_network(
    sides: Sequence[tuple[torch.nn.Module, Callable[[], torch.Tensor]]],
) -> dict[str, tuple[float, float]]:
    """First-batch loss and gradient norm of (reference, omnivis), each a model and its loss function, in eval
    mode and float32 (dropout and autocast would make them differ by chance, not by fault). TF32 convolutions
    are turned off for the same reason."""
    allow_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    values: dict[str, list[float]] = {"loss": [], "gradient norm": []}
    for model, loss_function in sides:
        model.eval()
        loss = loss_function()
        loss.backward()
        gradients = [p.grad for p in model.parameters() if p.grad is not None]
        values["loss"].append(loss.item())
        values["gradient norm"].append(torch.stack([g.norm() for g in gradients]).norm().item())
        model.zero_grad(set_to_none=True)
        model.train()
    torch.backends.cudnn.allow_tf32 = allow_tf32
    return {name: (pair[0], pair[1]) for name, pair in values.items()}
