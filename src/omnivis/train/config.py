"""Training configs: typed dataclasses, validated, overridable field by field, saved with every run.

A `TrainConfig` holds four plain dataclasses (model, data, optimisation, the tower's tagging losses) and the
loop's own knobs. `config_from_dict` builds one from JSON (unknown or wrongly typed fields are errors that name
the field's dotted path), `apply_overrides` applies `key=value` strings from the command line
(`optim.learning_rate=3e-4`), and `TrainConfig.to_dict` is what `config.json` of a run and of each checkpoint
holds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from omnivis.errors import ConfigError

# What may be frozen (`ModelSettings.freeze`): a name and the parameter-name prefixes it covers.
FREEZABLE: dict[str, tuple[str, ...]] = {
    "vision": ("vision_tower.",),
    **{f"vision.stage{stage}": (f"vision_tower.convs.{stage}.", f"vision_tower.blocks.{stage}.") for stage in range(4)},
    "projector": ("multi_modal_projector.",),
    "embeddings": ("language_model.shared.", "language_model.encoder.embed_positions.",
                   "language_model.decoder.embed_positions.", "language_model.encoder.layernorm_embedding.",
                   "language_model.decoder.layernorm_embedding."),
    "text_encoder": ("language_model.encoder.",),
    "text_decoder": ("language_model.decoder.",),
}  # fmt: skip
PRECISIONS = ("auto", "float32", "bfloat16")
_Need = Callable[[bool, str], None]  # records a problem when its condition is false
SCHEDULES = ("cosine", "linear", "constant")
STRATEGIES = ("ddp", "fsdp")


@dataclass
class ModelSettings:
    """Which network to train and where its weights start."""

    preset: str = "tiny"  # a shape of omnivis.model.presets.PRESETS, used when init is "scratch"
    init: str = "scratch"  # "scratch", or a checkpoint directory: omnivis's own or official Florence-2
    vision_init: str = ""  # a checkpoint whose vision tower (and, below, more) starts the model; "" = none
    # With vision_init, its projector too (the position table stretched to this input's grid): the image's
    # whole path into the text model, 2-D positions included.
    vision_init_projector: bool = False
    # With vision_init_projector, its text encoder's layers too (not the token table, which is the decoder's
    # and the LM head's): the whole multimodal encoder shared, the decoder and token table learnt.
    vision_init_text_encoder: bool = False
    # With vision_init_text_encoder, the token table too (the encoder's input, so prompts read as they were
    # trained; tied to the decoder's input and the LM head): only the decoder's layers start from scratch.
    vision_init_token_table: bool = False
    image_size: int = 0  # square input side in pixels; 0 keeps the preset's or checkpoint's (a change
    # from the checkpoint's interpolates the projector's position table: the high-resolution stage)
    dropout: float = -1.0  # the text model's dropout and attention dropout; -1 keeps the preset's
    freeze: tuple[str, ...] = ()  # names of FREEZABLE; frozen parameters get requires_grad=False
    ordinal_locations: bool = False  # from scratch: the 1,000 location tokens' embeddings (tied to the LM
    # head) start as sinusoids of their bin, so neighbouring bins start alike instead of unrelated
    sinusoid_image_positions: bool = False  # from scratch: the projector's 2-D position table starts as
    # sinusoids of the row and column (amplitude 1) instead of std 0.02, ~1% of a cell's features
    grad_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% more time
    lora_rank: int = 0  # > 0 trains LoRA adapters (peft) of this rank instead of the full weights
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")  # module names the adapters wrap


@dataclass
class DataSettings:
    """Where examples come from and how tasks are mixed."""

    train: str = ""  # a dataset directory (omnivis Parquet shards + manifest.json)
    # Earlier lessons, in order: dataset directory -> optimizer steps drawn from it before `train` (e.g. the
    # easy world first: a model learning from scratch finds what its answers depend on in uncluttered scenes);
    # the schedule and `steps` span all lessons.
    curriculum: dict[str, int] = field(default_factory=dict)
    eval: str = ""  # a held-out dataset directory for periodic evaluation; "" = none
    mixture: dict[str, float] = field(default_factory=dict)  # task -> weight; empty = every task the
    # dataset supports, weight 1 each. A record draws its tasks among those it supports, by weight.
    examples_per_image: int = 1  # examples (distinct tasks) per image in a batch; the image is encoded once
    max_target_tokens: int = 0  # targets are cut to this many tokens and counted; 0 = the decoder's table
    length_chunks: int = 1  # rows of a micro-batch run as this many chunks of similar length (less padding)
    shuffle: bool = True  # a fresh seeded permutation of the records every epoch
    num_workers: int = 0  # DataLoader worker processes per rank (0 = load in the training process)


@dataclass
class OptimSettings:
    """AdamW with linear warm-up then decay, as the paper trains (section 6.1)."""

    learning_rate: float = 1e-4
    vision_learning_rate: float = 0.0  # the vision tower's peak rate; 0 = learning_rate
    weight_decay: float = 0.01  # not applied to biases, norms and embeddings
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 100
    schedule: str = "cosine"  # one of SCHEDULES, from the peak down to min_learning_rate_ratio * peak
    min_learning_rate_ratio: float = 0.0
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    label_smoothing: float = 0.0  # uniform label smoothing over the vocabulary
    location_smoothing: float = 0.0  # share of a location token's target spread over neighbouring bins:
    # a box off by one bin is nearly right, and the loss should say so
    location_smoothing_radius: int = 2  # bins on each side that share location_smoothing
    task_loss_weights: dict[str, float] = field(default_factory=dict)  # task -> weight of its target tokens
    # in the loss (else 1): a VQA answer is a token or two, so by the token its task barely moves the gradient


@dataclass
class TaggingSettings:
    """The tower's tagging losses kept beside the language loss (`omnivis.pretrain.tagging`): linear heads on
    the tower's last feature map name each image's tags and each cell's object and word. The language loss
    alone wears away what tagging pre-training taught the tower (its cells' word probe 0.51 -> 0.21)."""

    weight: float = 0.0  # weight of the per-image tagging loss beside the mean token loss; 0 = off
    heads: str = ""  # a tagging run or training checkpoint whose heads and vocabularies continue; "" = fresh
    cell_weight: float = 1.0  # the per-cell terms (category, colour, objectness, box) beside the pooled ones
    word_weight: float = 1.0  # the per-cell word term
    vocabulary_records: int = 2000  # fresh heads: records of data.train the vocabularies are counted on
    max_tags: int = 512  # fresh heads: the most frequent tags kept


@dataclass
class TrainConfig:
    """One training run; `omnivis.train.RECIPES` holds the named presets."""

    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    tagging: TaggingSettings = field(default_factory=TaggingSettings)
    steps: int = 1000  # optimizer steps
    batch_size: int = 16  # images per rank per micro-batch
    accumulation: int = 1  # micro-batches per optimizer step
    precision: str = "auto"  # one of PRECISIONS; auto = bfloat16 autocast on CUDA, float32 on CPU
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda"
    distributed: str = "ddp"  # one of STRATEGIES, used when launched by torchrun with WORLD_SIZE > 1
    seed: int = 0
    deterministic: bool = False  # deterministic kernels: bit-identical reruns and resumes (slower on GPU)
    out: str = "runs/train"  # run directory: config, metrics, checkpoints, summary
    log_every: int = 10  # steps between metric lines
    checkpoint_every: int = 500  # steps between checkpoints (and one at the end)
    keep_last: int = 2  # checkpoints kept besides the best
    eval_every: int = 0  # steps between evaluations on data.eval; 0 = at the end only (if data.eval)
    eval_limit: int = 32  # images evaluated each time
    eval_tasks: tuple[str, ...] = ()  # tasks evaluated; () = those of the mixture
    eval_num_beams: int = 1
    eval_max_new_tokens: int = 256
    max_time_minutes: float = 0.0  # stop (with a checkpoint) after this wall time; 0 = no limit

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """A validated `TrainConfig` from a (JSON) mapping; missing fields keep their defaults.

    Raises:
        ConfigError: An unknown field, a value of the wrong type, or a value out of range; the message
            names the field's dotted path.
    """
    config = _build(TrainConfig, values, "")
    validate(config)
    return config


def apply_overrides(config: TrainConfig, overrides: Iterable[str]) -> TrainConfig:
    """A copy of `config` with `key=value` overrides applied, e.g. `optim.learning_rate=3e-4`.

    Values are read as JSON when they parse (numbers, true/false, lists, objects), else as plain strings;
    a tuple field also takes a comma-separated list, bare or in brackets (`model.freeze=vision,projector`,
    `model.freeze=[vision]`).

    Raises:
        ConfigError: A malformed override, an unknown field, or a value of the wrong type.
    """
    values = config.to_dict()
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"override {override!r} is not of the form key=value (e.g. steps=200)")
        path = key.strip().split(".")
        target = values
        for depth, name in enumerate(path[:-1]):
            if not isinstance(target.get(name), dict):
                raise ConfigError(f"unknown config field {'.'.join(path[: depth + 1])!r} in {override!r}")
            target = target[name]
        if path[-1] not in target:
            raise ConfigError(
                f"unknown config field {key.strip()!r}; known here: {', '.join(sorted(target))}"
            )
        target[path[-1]] = _parse_value(text, target[path[-1]])
    return config_from_dict(values)


def _parse_value(text: str, current: Any) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if isinstance(current, list | tuple):
        inner = text.strip()
        if inner.startswith("[") and inner.endswith("]"):  # a shell-typed list: `[vision, projector]`
            inner = inner[1:-1]
        return [part.strip() for part in inner.split(",") if part.strip()]
    return text


def _build(cls: type, values: Any, prefix: str) -> Any:
    """An instance of dataclass `cls` from a mapping, each field converted to its declared type."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be an object, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        names = ", ".join(prefix + name for name in unknown)
        raise ConfigError(
            f"unknown config field(s) {names}; known: {', '.join(prefix + k for k in sorted(known))}"
        )
    return cls(**{name: _convert(value, hints[name], prefix + name) for name, value in values.items()})


def _convert(value: Any, hint: Any, path: str) -> Any:
    """`value` as type `hint` (a dataclass, bool, int, float, str, tuple[...], dict[str, float])."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path + ".")  # type: ignore[arg-type]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{path} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return value
    if origin is tuple:
        return _convert_tuple(value, typing.get_args(hint), path)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be an object of name -> number, got {value!r}")
        key_type, value_type = typing.get_args(hint)
        return {
            _convert(k, key_type, f"{path}[{k!r}]"): _convert(v, value_type, f"{path}[{k!r}]")
            for k, v in value.items()
        }
    if isinstance(hint, types.UnionType):  # pragma: no cover - no union fields today
        raise ConfigError(f"{path}: union types are not supported")
    raise ConfigError(f"{path}: unsupported field type {hint!r}")  # pragma: no cover


def _convert_tuple(value: Any, arguments: tuple[Any, ...], path: str) -> tuple[Any, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{path} must be a list, got {value!r}")
    if len(arguments) == 2 and arguments[1] is Ellipsis:
        return tuple(_convert(item, arguments[0], f"{path}[{i}]") for i, item in enumerate(value))
    if len(value) != len(arguments):
        raise ConfigError(f"{path} must hold {len(arguments)} values, got {len(value)}")
    return tuple(_convert(item, hint, f"{path}[{i}]") for i, (item, hint) in enumerate(zip(value, arguments)))


def validate(config: TrainConfig) -> None:
    """Checks ranges and names (types are checked on construction by `config_from_dict`).

    Raises:
        ConfigError: Naming every field out of range.
    """
    problems: list[str] = []

    def need(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    _check_model(config, need)
    _check_data(config.data, need)
    _check_optim(config.optim, need)
    _check_tagging(config, need)
    _check_loop(config, need)
    if problems:
        raise ConfigError("invalid training config: " + "; ".join(problems))


def _check_model(config: TrainConfig, need: _Need) -> None:
    from omnivis.model.presets import PRESETS

    model = config.model
    need(model.preset in PRESETS, f"model.preset {model.preset!r} is not one of {', '.join(PRESETS)}")
    need(model.image_size == 0 or (model.image_size > 0 and model.image_size % 32 == 0),
         f"model.image_size must be 0 or a positive multiple of 32, got {model.image_size}")  # fmt: skip
    need(
        model.dropout == -1.0 or 0.0 <= model.dropout < 1.0,
        f"model.dropout must be -1 or in [0, 1), got {model.dropout}",
    )
    for name in model.freeze:
        need(name in FREEZABLE, f"model.freeze: {name!r} is not one of {', '.join(FREEZABLE)}")
    need(bool(model.init), 'model.init must be "scratch" or a checkpoint directory (--init)')
    need(
        not model.ordinal_locations or model.init == "scratch",
        "model.ordinal_locations shapes a model's initial weights: it needs model.init=scratch",
    )
    need(
        not model.sinusoid_image_positions or (model.init == "scratch" and not model.vision_init_projector),
        "model.sinusoid_image_positions shapes a from-scratch projector: it needs model.init=scratch and no "
        "model.vision_init_projector",
    )
    need(not model.vision_init_projector or bool(model.vision_init),
         "model.vision_init_projector takes the projector of model.vision_init: give that checkpoint")  # fmt: skip
    need(
        not model.vision_init_text_encoder or model.vision_init_projector,
        "model.vision_init_text_encoder reads what the checkpoint's projector gives it: it needs "
        "model.vision_init_projector=true",
    )
    need(
        not model.vision_init_token_table or model.vision_init_text_encoder,
        "model.vision_init_token_table feeds the checkpoint's text encoder: it needs "
        "model.vision_init_text_encoder=true",
    )
    need(
        not (model.vision_init_token_table and model.ordinal_locations),
        "model.ordinal_locations shapes a token table that model.vision_init_token_table replaces: drop one",
    )
    need(model.lora_rank >= 0, f"model.lora_rank must be >= 0, got {model.lora_rank}")
    need(model.lora_alpha > 0, f"model.lora_alpha must be > 0, got {model.lora_alpha}")
    need(
        model.lora_rank == 0 or config.distributed == "ddp",
        "LoRA (model.lora_rank > 0) runs with distributed=ddp",
    )


def _check_data(data: DataSettings, need: _Need) -> None:
    from omnivis.tasks import TASKS

    need(bool(data.train), "data.train must name a dataset directory")
    for directory, lesson_steps in data.curriculum.items():
        need(bool(directory), "data.curriculum: a lesson must name a dataset directory")
        need(lesson_steps >= 1, f"data.curriculum[{directory!r}] must be >= 1 steps, got {lesson_steps}")
    for task, weight in data.mixture.items():
        need(task in TASKS, f"data.mixture: unknown task {task!r}; known: {', '.join(TASKS)}")
        need(weight >= 0, f"data.mixture[{task!r}] must be >= 0, got {weight}")
    need(not data.mixture or sum(data.mixture.values()) > 0, "data.mixture: the weights sum to 0")
    need(data.examples_per_image >= 1, f"data.examples_per_image must be >= 1, got {data.examples_per_image}")
    need(data.length_chunks >= 1, f"data.length_chunks must be >= 1, got {data.length_chunks}")
    need(data.max_target_tokens >= 0, f"data.max_target_tokens must be >= 0, got {data.max_target_tokens}")
    need(data.num_workers >= 0, f"data.num_workers must be >= 0, got {data.num_workers}")


def _check_optim(optim: OptimSettings, need: _Need) -> None:
    from omnivis.tasks import TASKS

    need(optim.learning_rate > 0, f"optim.learning_rate must be > 0, got {optim.learning_rate}")
    need(
        optim.vision_learning_rate >= 0,
        f"optim.vision_learning_rate must be >= 0, got {optim.vision_learning_rate}",
    )
    need(optim.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {optim.weight_decay}")
    need(all(0 <= beta < 1 for beta in optim.betas), f"optim.betas must be in [0, 1), got {optim.betas}")
    need(optim.eps > 0, f"optim.eps must be > 0, got {optim.eps}")
    need(optim.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {optim.warmup_steps}")
    need(
        optim.schedule in SCHEDULES,
        f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {optim.schedule!r}",
    )
    need(0 <= optim.min_learning_rate_ratio <= 1, "optim.min_learning_rate_ratio must be in [0, 1]")
    need(optim.grad_clip >= 0, f"optim.grad_clip must be >= 0, got {optim.grad_clip}")
    need(
        0 <= optim.label_smoothing < 1,
        f"optim.label_smoothing must be in [0, 1), got {optim.label_smoothing}",
    )
    need(
        0 <= optim.location_smoothing < 1,
        f"optim.location_smoothing must be in [0, 1), got {optim.location_smoothing}",
    )
    need(optim.location_smoothing_radius >= 1, "optim.location_smoothing_radius must be >= 1")
    for task, weight in optim.task_loss_weights.items():
        need(task in TASKS, f"optim.task_loss_weights: unknown task {task!r}; known: {', '.join(TASKS)}")
        need(weight > 0, f"optim.task_loss_weights[{task!r}] must be > 0, got {weight}")


def _check_tagging(config: TrainConfig, need: _Need) -> None:
    tagging = config.tagging
    for name in ("weight", "cell_weight", "word_weight"):
        need(getattr(tagging, name) >= 0, f"tagging.{name} must be >= 0, got {getattr(tagging, name)}")
    for name in ("vocabulary_records", "max_tags"):
        need(getattr(tagging, name) >= 1, f"tagging.{name} must be >= 1, got {getattr(tagging, name)}")
    need(not tagging.heads or tagging.weight > 0, "tagging.heads continues heads that tagging.weight=0 leaves out")
    need(tagging.weight == 0 or config.model.lora_rank == 0,
         "tagging.weight > 0 teaches the tower, which LoRA (model.lora_rank > 0) leaves frozen: drop one")  # fmt: skip


def _check_loop(config: TrainConfig, need: _Need) -> None:
    from omnivis.tasks import TASKS

    for name in ("steps", "batch_size", "accumulation", "log_every", "checkpoint_every", "keep_last", "eval_limit",
                 "eval_num_beams", "eval_max_new_tokens"):  # fmt: skip
        need(getattr(config, name) >= 1, f"{name} must be >= 1, got {getattr(config, name)}")
    need(config.eval_every >= 0, f"eval_every must be >= 0, got {config.eval_every}")
    lessons = sum(config.data.curriculum.values())
    need(lessons < config.steps, f"data.curriculum's lessons take {lessons} of the {config.steps} steps: "
         "data.train would never be read")  # fmt: skip
    for task in config.eval_tasks:
        need(task in TASKS, f"eval_tasks: unknown task {task!r}")
    need(
        config.precision in PRECISIONS,
        f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}",
    )
    need(config.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {config.device!r}")
    need(config.distributed in STRATEGIES, f"distributed must be one of {', '.join(STRATEGIES)}")
    need(config.max_time_minutes >= 0, f"max_time_minutes must be >= 0, got {config.max_time_minutes}")
    need(bool(config.out), "out must name a run directory")
