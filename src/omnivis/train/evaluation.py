"""Periodic evaluation during training: `omnivis.eval` on held-out data, run by rank 0.

Under FSDP the parameters are sharded, so every rank joins in gathering a full copy, and rank 0 evaluates
that copy; under DDP or one process, rank 0 evaluates its own replica, switched to eval mode and back.
"""

from __future__ import annotations

import copy
import typing
from dataclasses import dataclass

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from omnivis.eval import run_evaluation
from omnivis.eval.inference import DecodingSettings
from omnivis.eval.metrics import headline_score
from omnivis.eval.outputs import metrics_only
from omnivis.model.checkpoint import untie
from omnivis.model.florence import Florence2
from omnivis.predictor import Predictor
from omnivis.train.config import TrainConfig
from omnivis.train.distributed import Runtime


@dataclass(frozen=True)
class EvaluationSettings:
    dataset: str
    tasks: tuple[str, ...]
    limit: int
    decoding: DecodingSettings

    @classmethod
    def from_config(cls, config: TrainConfig, predictor: Predictor) -> EvaluationSettings:
        tasks = config.eval_tasks or tuple(config.data.mixture) or ()
        decoding = DecodingSettings(batch_size=16, num_beams=config.eval_num_beams,
                                    max_new_tokens=config.eval_max_new_tokens)  # fmt: skip
        return cls(config.data.eval, tasks, config.eval_limit, decoding)


@dataclass(frozen=True)
class EvaluationResult:
    metrics: dict[str, dict[str, float | None]]
    score: float  # `headline_score`: higher is better

    @property
    def flat(self) -> dict[str, float | None]:
        """{"<OD>/AP50": 0.71, ...} for logs."""
        return {
            f"{task}/{name}": value for task, values in self.metrics.items() for name, value in values.items()
        }


def evaluate_checkpoint(
    predictor: Predictor, model: torch.nn.Module, settings: EvaluationSettings, runtime: Runtime
) -> EvaluationResult | None:
    """Evaluates the current weights; the result on rank 0, None elsewhere."""
    evaluated = _full_copy(predictor, model, runtime) if _is_sharded(model) else predictor
    if not runtime.is_main:
        return None
    was_training = evaluated.model.training
    evaluated.model.eval()
    try:
        evaluation = run_evaluation(evaluated, settings.dataset, settings.tasks or None, limit=settings.limit,
                                    settings=settings.decoding, device=str(runtime.device))  # fmt: skip
    finally:
        evaluated.model.train(was_training)
    metrics = metrics_only(evaluation)
    return EvaluationResult(metrics, headline_score(metrics))


def _is_sharded(model: torch.nn.Module) -> bool:
    return any(hasattr(parameter, "full_tensor") for parameter in model.parameters())


def _full_copy(predictor: Predictor, model: torch.nn.Module, runtime: Runtime) -> Predictor:
    """A plain replica of a sharded model (rank 0 gets the weights; every rank must call this)."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not runtime.is_main:
        return predictor
    replica = Florence2(copy.deepcopy(predictor.model.config))
    replica.load_state_dict(untie(typing.cast(dict[str, torch.Tensor], state)), strict=False)
    replica.tie_weights()
    return Predictor(replica.to(runtime.device), predictor.tokenizer, predictor.generation,
                     predictor.image_processing, predictor.parse_config)  # fmt: skip
