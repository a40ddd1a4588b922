"""`omnivis.load`: a Predictor from an official Florence-2 directory, an omnivis checkpoint, or a preset name.

Nothing is downloaded and no code from a checkpoint directory runs: weights come from safetensors (or a
weights-only pickle), settings from JSON, the tokenizer from its JSON/vocabulary files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from omnivis.draw import draw_result, save_png
from omnivis.errors import CheckpointError, InputError
from omnivis.images import load_image
from omnivis.io import atomic_directory, atomic_write_json
from omnivis.model import checkpoint
from omnivis.model.florence import Florence2, FlorenceConfig
from omnivis.model.generation_config import GenerationConfig
from omnivis.model.presets import PRESETS, preset_config
from omnivis.predictor import ImageProcessing, Predictor
from omnivis.tokenizer import Tokenizer

OMNIVIS_FORMAT = "omnivis"
# A small byte-level BPE with Florence-2's special, task and location tokens, for randomly initialised presets.
BUNDLED_TOKENIZER = Path(__file__).parent / "assets" / "tokenizer"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load(
    source: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None
) -> Predictor:
    """Loads a model ready to `run`.

    Args:
        source: a checkpoint directory (transformers-native or original Florence-2 layout, or omnivis's own),
            or a preset name ("tiny", "florence2-base", "florence2-large") for a randomly initialised model.
        device: where the model runs.
        dtype: weights' dtype (a torch dtype or its name); None keeps float32, which the reference parity holds for.

    Returns:
        A `Predictor`.
    """
    torch_dtype = _resolve_dtype(dtype)
    path = Path(source)
    if path.is_dir():
        predictor = _load_directory(path)
    elif str(source) in PRESETS:
        predictor = _load_preset(str(source))
    elif path.exists():
        raise CheckpointError(f"{path} is a file; give the checkpoint directory that holds it")
    else:
        raise CheckpointError(
            f"{source!r} is neither a checkpoint directory nor a preset ({', '.join(PRESETS)})"
        )
    predictor.model.to(device=device, dtype=torch_dtype).eval()
    return predictor


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def bundled_tokenizer() -> Tokenizer:
    """The tokenizer shipped with omnivis (no download): used by presets and models trained from scratch."""
    return Tokenizer.from_directory(BUNDLED_TOKENIZER)


def _load_preset(name: str) -> Predictor:
    tokenizer = bundled_tokenizer()
    # A random preset answers with the bundled tokenizer, so its vocabulary is sized to it. Its weights come
    # from a fixed seed, so the same preset gives the same answers, without touching the caller's RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Florence2(preset_config(name, vocab_size=tokenizer.vocab_size))
    height, width = model.config.image_size
    return Predictor(
        model, tokenizer, omnivis_generation_defaults(tokenizer), ImageProcessing(size=(height, width))
    )


def omnivis_generation_defaults(tokenizer: Tokenizer) -> GenerationConfig:
    """The decoding settings of omnivis's own models (presets, models trained from scratch): the official
    ones without the n-gram ban.

    `no_repeat_ngram_size=3` forbids any 3 tokens from appearing twice in one answer, yet structured answers
    repeat them by right: a grounded caption names "a red circle" and "a red square", coordinates recur.
    Measured on the committed `tiny` world checkpoint (`omnivis eval`, 50 scenes of seed 5, greedy), ban -> no
    ban: phrase grounding Recall@1 0.69 -> 0.81, more-detailed caption CIDEr 0.75 -> 1.27, detailed 1.64 ->
    1.77, brief 3.88 -> 3.93; detection and segmentation within 0.01. Official checkpoints keep their own
    `generation_config.json` (3), so they still answer as the reference does.
    """
    return dataclasses.replace(florence_generation_defaults(tokenizer), no_repeat_ngram_size=0)


def florence_generation_defaults(tokenizer: Tokenizer) -> GenerationConfig:
    """The official checkpoints' decoding settings, for models without a generation_config.json of their own."""
    return GenerationConfig(
        max_new_tokens=1024,
        num_beams=3,
        early_stopping=True,
        no_repeat_ngram_size=3,
        forced_bos_token_id=tokenizer.bos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
        **_special_token_ids(tokenizer),
    )


def _load_directory(directory: Path) -> Predictor:
    config = checkpoint.read_json(directory / "config.json")
    weights, weights_file = checkpoint.read_weights(directory)
    layout = checkpoint.detect_layout(config, weights)
    tokenizer = Tokenizer.from_directory(directory)
    processing = image_processing_of(directory)
    if layout == OMNIVIS_FORMAT:
        model_config = FlorenceConfig.from_dict(config["model"])
        state = weights
    else:
        state = (
            checkpoint.native_to_omnivis(weights)
            if layout == "native"
            else checkpoint.remote_code_to_omnivis(weights)
        )
        vocab_size = _vocabulary_rows(state)
        model_config = checkpoint.config_from_official(config, processing.size, vocab_size)
    model = Florence2(model_config)
    checkpoint.load_state_into(model, state, str(weights_file))
    generation = _generation_config(directory, config, tokenizer)
    return Predictor(model, tokenizer, generation, processing, _parse_config(directory))


def _vocabulary_rows(state: dict[str, torch.Tensor]) -> int:
    for name in (checkpoint.SHARED, *checkpoint.TIED_ALIASES):
        if name in state:
            return int(state[name].shape[0])
    raise CheckpointError("no token embedding found in the checkpoint")


def _generation_config(directory: Path, config: dict[str, Any], tokenizer: Tokenizer) -> GenerationConfig:
    """generation_config.json when present, as transformers reads it; else the decoding options of config.json
    (the original layout keeps them in its text_config), with the tokenizer's special ids where it has none."""
    path = directory / "generation_config.json"
    if path.exists():
        return GenerationConfig.from_dict(checkpoint.read_json(path))
    return GenerationConfig.from_dict({**_special_token_ids(tokenizer), **_model_config_options(config)})


def _model_config_options(config: dict[str, Any]) -> dict[str, Any]:
    """transformers' `GenerationConfig.from_model_config`: a text_config value applies where the top level leaves
    the option absent or at its default (a top-level default value does not hide the nested setting)."""
    defaults: dict[str, Any] = {field.name: field.default for field in dataclasses.fields(GenerationConfig)}
    defaults["max_length"] = 20  # transformers' default, counted with the decoder start token
    options = {name: value for name, value in config.items() if not isinstance(value, dict)}
    for name, value in (config.get("text_config") or {}).items():
        if options.get(name, defaults.get(name)) == defaults.get(name):
            options[name] = value
    return options


def _special_token_ids(tokenizer: Tokenizer) -> dict[str, int]:
    return {
        "decoder_start_token_id": tokenizer.eos_token_id,  # BART starts decoding from </s>
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def image_processing_of(directory: Path) -> ImageProcessing:
    """A checkpoint directory's resize and normalisation settings: preprocessor_config.json (original layout)
    or the `image_processor` entry of processor_config.json (transformers 5)."""
    values: dict[str, Any] = {}
    if (directory / "preprocessor_config.json").exists():
        values = checkpoint.read_json(directory / "preprocessor_config.json")
    elif (directory / "processor_config.json").exists():
        values = dict(checkpoint.read_json(directory / "processor_config.json").get("image_processor") or {})
    if not values:
        return ImageProcessing()
    size = values.get("size") or {}
    crop = values.get("crop_size") or {}
    height = size.get("height") or crop.get("height") or 768
    width = size.get("width") or crop.get("width") or 768
    mean = tuple(values.get("image_mean", ImageProcessing.mean))
    std = tuple(values.get("image_std", ImageProcessing.std))
    return ImageProcessing(size=(int(height), int(width)), mean=mean, std=std)  # type: ignore[arg-type]


def _parse_config(directory: Path) -> dict[str, Any]:
    """The reference processor's post_processor_config (e.g. banned grounding phrases), when stored."""
    path = directory / "processor_config.json"
    if not path.exists():
        return {}
    return dict(checkpoint.read_json(path).get("post_processor_config") or {})


def predict_files(
    images: Sequence[Path],
    model: str | Path,
    task: str,
    text: str | tuple[float, float, float, float] | None = None,
    *,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    return_scores: bool = False,
    device: str = "cpu",
    dtype: str | None = None,
    json_path: Path | None = None,
    draw_path: Path | None = None,
) -> list[dict[str, Any]]:
    """`omnivis predict`: answers for image files, optionally written as JSON and drawn; all inputs are
    checked before anything is written."""
    if draw_path is not None and len(images) != 1:
        raise InputError(f"--draw renders one image; {len(images)} were given")
    predictor = load(model, device=device, dtype=dtype)
    pictures = [load_image(path) for path in images]
    answers = predictor.run_batch(
        pictures,
        task,
        None if text is None else [text] * len(pictures),
        num_beams,
        max_new_tokens,
        return_scores,
    )
    records = [{"image": str(path), **answer} for path, answer in zip(images, answers)]
    if json_path is not None:
        atomic_write_json(json_path, records)
    if draw_path is not None:
        save_png(draw_result(pictures[0], task, answers[0]), draw_path)
    return records


def save(predictor: Predictor, directory: str | Path) -> None:
    """Writes an omnivis checkpoint (safetensors + JSON config + tokenizer.json), atomically."""
    with atomic_directory(Path(directory)) as staging:
        write_checkpoint_files(predictor, staging)


def write_checkpoint_files(
    predictor: Predictor, directory: Path, state: dict[str, torch.Tensor] | None = None
) -> None:
    """Writes the files of an omnivis checkpoint into an existing (staging) directory.

    Args:
        predictor: The model, tokenizer and settings to write.
        directory: The directory, typically an `atomic_directory` staging one.
        state: The weights to write instead of the model's own, e.g. gathered from FSDP shards.
    """
    model = predictor.model
    if state is None:
        checkpoint.save_weights(model, directory / "model.safetensors")
    else:
        checkpoint.save_state(state, directory / "model.safetensors")
    atomic_write_json(directory / "config.json", {"format": OMNIVIS_FORMAT, "model": model.config.to_dict()})
    atomic_write_json(directory / "generation_config.json", dataclasses.asdict(predictor.generation))
    processing = predictor.image_processing
    atomic_write_json(
        directory / "preprocessor_config.json",
        {
            "size": {"height": processing.size[0], "width": processing.size[1]},
            "image_mean": list(processing.mean),
            "image_std": list(processing.std),
        },
    )
    if predictor.parse_config:
        atomic_write_json(
            directory / "processor_config.json", {"post_processor_config": predictor.parse_config}
        )
    predictor.tokenizer.save(directory)


__all__ = ["load", "save", "write_checkpoint_files"]
