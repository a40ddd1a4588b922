"""Multi-task training: the paper's recipe (section 6.1) on one CPU, one GPU, or many through torchrun.

    from omnivis.train import RECIPES, train, apply_overrides
    config = apply_overrides(RECIPES["tiny-world-cpu"](), ["steps=500", "optim.learning_rate=5e-4"])
    result = train(config)                       # or: omnivis train --preset tiny-world-cpu steps=500

Layout: `config` (typed settings), `recipes` (named presets), `data` (records -> batches, deterministic by
position), `loss` (summed token loss, location smoothing), `optim` (AdamW + schedule), `model_setup`
(initialisation, freezing), `distributed` (DDP/FSDP), `checkpointing` (the files, atomic), `resume` (saving
and restoring a run's whole state), `monitor` and `summary` (logs, curve), `evaluation` (periodic eval),
`builders` (the loop's setup), `loop` (the loop itself), `launch` (several local processes from inside a
program).
"""

from omnivis.train.config import TrainConfig, apply_overrides, config_from_dict
from omnivis.train.launch import train_local
from omnivis.train.loop import TrainResult, train
from omnivis.train.recipes import RECIPES, resolve_config, smoke

__all__ = [
    "RECIPES",
    "TrainConfig",
    "TrainResult",
    "apply_overrides",
    "config_from_dict",
    "resolve_config",
    "smoke",
    "train",
    "train_local",
]
