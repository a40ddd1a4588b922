"""Builders for the network a run trains: its initial weights, input size, dropout, frozen parts and adapters.

Initialisation is one of: a preset from scratch (seeded), an omnivis checkpoint or an official Florence-2
directory (through `omnivis.load`, so both official layouts work), and optionally a vision tower taken alone
from another checkpoint (e.g. one pre-trained by `omnivis.pretrain`). Changing the input size from the
checkpoint's keeps every weight and stretches the projector's position table over the new grid (the paper's
high-resolution tuning stage, section 6.1).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from omnivis.errors import CheckpointError, ConfigError
from omnivis.loading import bundled_tokenizer, image_processing_of, load, omnivis_generation_defaults
from omnivis.model import checkpoint
from omnivis.model.florence import Florence2, FlorenceConfig
from omnivis.model.presets import preset_config
from omnivis.predictor import ImageProcessing, Predictor
from omnivis.tasks.locations import NUM_BINS
from omnivis.train.config import FREEZABLE, ModelSettings

VISION_PREFIX = "vision_tower."
PROJECTOR_PREFIX = "multi_modal_projector."
TEXT_ENCODER_PREFIX = "language_model.encoder."
TOKEN_TABLE_PREFIX = "language_model.shared."
_SHARED_TOKEN_TABLE = ("embed_tokens.weight",)  # the encoder's name for language_model.shared


def build_predictor(settings: ModelSettings, seed: int) -> Predictor:
    """The model to train, with its tokenizer, decoding defaults and image processing, on the CPU.

    Raises:
        CheckpointError: A checkpoint that cannot be read or whose tensors do not fit the model.
        ConfigError: A setting the model cannot take (an input size beyond its position table).
    """
    if settings.init == "scratch":
        tokenizer = bundled_tokenizer()
        config = preset_config(settings.preset, vocab_size=tokenizer.vocab_size)
        with torch.random.fork_rng(devices=[]):  # the weights depend on the seed alone, not on earlier draws
            torch.manual_seed(seed)
            model = Florence2(_adjusted(config, settings))
        if settings.ordinal_locations:
            order_location_embeddings(model, [tokenizer.location_token_id(k) for k in range(NUM_BINS)])
        if settings.sinusoid_image_positions:
            model.multi_modal_projector.image_position_embed.fill_sinusoids_()
        processing = ImageProcessing(size=model.config.image_size)
        predictor = Predictor(model, tokenizer, omnivis_generation_defaults(tokenizer), processing)
    else:
        predictor = load(settings.init)
        predictor = _refit(predictor, settings)
    if settings.vision_init:
        load_encoder_parts(
            predictor.model, Path(settings.vision_init), projector=settings.vision_init_projector,
            text_encoder=settings.vision_init_text_encoder, token_table=settings.vision_init_token_table,
        )  # fmt: skip
    freeze(predictor.model, settings.freeze)
    if settings.lora_rank > 0:
        from omnivis.train.lora import add_adapters  # peft is optional

        add_adapters(predictor.model, settings)
    if settings.grad_checkpointing:
        predictor.model.set_grad_checkpointing(True)
    return predictor


def order_location_embeddings(model: Florence2, location_ids: list[int]) -> None:
    """Sets the embedding rows of the location tokens (bins 0..N-1, in order) to sinusoids of the bin.

    The transformer's position code over the bin index, scaled to the rows' initial spread (std 0.02):
    bins a few apart start nearly alike, so what a gradient teaches about one bin carries to its
    neighbours. The table is tied to the LM head, so a location's logit starts as a smooth function of the
    bin too. Random rows, by contrast, are 1,000 unrelated classes, each learnt only when it is the target.
    """
    weight = model.language_model.shared.weight  # (V, D), also the LM head's
    dimension = weight.shape[1]
    bins = torch.arange(len(location_ids), dtype=torch.float32)[:, None]  # (N, 1)
    frequencies = 10000.0 ** (-torch.arange(0, dimension, 2, dtype=torch.float32) / dimension)  # (D/2,)
    angles = bins * frequencies  # (N, D/2)
    code = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)[:, :dimension]  # (N, D) interleaved
    with torch.no_grad():
        weight[torch.tensor(location_ids)] = (code * (0.02 * 2**0.5)).to(weight.dtype)  # RMS 0.02, as init


def _adjusted(config: FlorenceConfig, settings: ModelSettings) -> FlorenceConfig:
    """`config` with the run's input size and dropout."""
    text = config.text
    if settings.dropout >= 0:
        text = dataclasses.replace(text, dropout=settings.dropout, attention_dropout=settings.dropout)
    image_size = (settings.image_size, settings.image_size) if settings.image_size else config.image_size
    adjusted = dataclasses.replace(config, text=text, image_size=image_size)
    if max(adjusted.grid_size) > config.projector.max_grid_positions:
        rows, columns = adjusted.grid_size
        raise ConfigError(
            f"model.image_size {settings.image_size} gives a {rows}x{columns} grid, over the position table's "
            f"{config.projector.max_grid_positions}"
        )
    return adjusted


def _refit(predictor: Predictor, settings: ModelSettings) -> Predictor:
    """A loaded model rebuilt with the run's input size and dropout, weights kept (positions resampled)."""
    old = predictor.model.config
    new = _adjusted(old, settings)
    if new == old:
        return predictor
    model = Florence2(new)
    model.load_state_dict(predictor.model.state_dict())
    model.tie_weights()
    if new.image_size != old.image_size:
        model.multi_modal_projector.image_position_embed.resample_(old.grid_size, new.grid_size)
    processing = dataclasses.replace(predictor.image_processing, size=new.image_size)
    return dataclasses.replace(predictor, model=model, image_processing=processing)


def load_encoder_parts(
    model: Florence2, directory: Path, *, projector: bool = False, text_encoder: bool = False,
    token_table: bool = False,
) -> None:  # fmt: skip
    """Replaces the vision tower's weights (and the projector's, text encoder's, token table's) by another's.

    The directory may hold any supported layout. A projector's 2-D position table is stretched from the grid
    that checkpoint was trained at to this model's, as the high-resolution stage does. `text_encoder` takes
    the encoder's layers and position table, not the token table it shares with the decoder and the LM head:
    `token_table` takes that one.

    Raises:
        CheckpointError: No vision tower (or projector, text encoder, token table) in it, or tensors whose
            names or shapes do not fit.
    """
    if not directory.is_dir():
        raise CheckpointError(f"model.vision_init: {directory} is not a checkpoint directory")
    weights, path = checkpoint.read_weights(directory)
    config = checkpoint.read_json(directory / "config.json")
    layout = checkpoint.detect_layout(config, weights)
    if layout == "native":
        weights = checkpoint.native_to_omnivis(weights)
    elif layout != "omnivis":
        weights = checkpoint.remote_code_to_omnivis(weights)
    parts: list[tuple[str, nn.Module]] = [(VISION_PREFIX, model.vision_tower)]
    parts += [(PROJECTOR_PREFIX, model.multi_modal_projector)] if projector else []
    parts += [(TEXT_ENCODER_PREFIX, model.language_model.encoder)] if text_encoder else []
    parts += [(TOKEN_TABLE_PREFIX, model.language_model.shared)] if token_table else []
    for prefix, module in parts:
        state = {name[len(prefix) :]: tensor for name, tensor in weights.items() if name.startswith(prefix)}
        expected = {name: tensor.shape for name, tensor in module.state_dict().items()}
        # The encoder's token table is the model's shared one (decoder input and LM head too): it stays.
        for name in _SHARED_TOKEN_TABLE if module is model.language_model.encoder else ():
            state.pop(name, None)
            expected.pop(name, None)
        if not state:
            raise CheckpointError(f"{path} holds no {prefix.rstrip('.')} weights ({prefix}*)")
        checkpoint.check_state(state, expected, f"{path} ({prefix.rstrip('.')})")
        module.load_state_dict(state, strict=False)  # strict: check_state compared every name and shape
    if projector:
        trained_at = dataclasses.replace(model.config, image_size=image_processing_of(directory).size)
        positions = model.multi_modal_projector.image_position_embed
        positions.resample_(trained_at.grid_size, model.config.grid_size)


def freeze(model: nn.Module, names: tuple[str, ...]) -> None:
    """Sets requires_grad=False on every parameter under the named parts (see `config.FREEZABLE`).

    The optimizer is built from trainable parameters only, so a frozen weight is neither updated nor decayed.
    A tied parameter goes by its first name alone: the token table, which both text stacks embed with and the
    LM head reads, is `language_model.shared`, frozen by `embeddings` and not by `text_encoder` (whose
    `embed_tokens` it also is): freezing the encoder must not fix the decoder's output layer.
    """
    prefixes = tuple(prefix for name in names for prefix in FREEZABLE[name])
    if not prefixes:
        return
    for name, parameter in model.named_parameters():  # tied parameters once, under their first name
        if name.startswith(prefixes):
            parameter.requires_grad_(False)


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every parameter that trains, tied ones once."""
    return [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]


def set_training_mode(model: nn.Module, frozen: tuple[str, ...]) -> None:
    """Training mode for the parts that train, eval mode for the frozen ones.

    A frozen part in training mode would still drop paths and activations at random (DaViT's stochastic
    depth, dropout), so the features the trained parts learn from would differ from those seen at inference.
    """
    model.train()
    prefixes = tuple(prefix for name in frozen for prefix in FREEZABLE[name])
    if not prefixes:
        return
    for name, module in model.named_modules():
        if (name + ".").startswith(prefixes):
            module.eval()
