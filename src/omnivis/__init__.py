"""omnivis: unified, prompt-driven vision with one Florence-2-style sequence-to-sequence model.

    import omnivis
    m = omnivis.load("path/or/preset", device="cpu", dtype=None)
    out = m.run(image, task="<OD>", text=None, num_beams=3, max_new_tokens=1024, return_scores=False)
    outs = m.run_batch(images, task="<CAPTION_TO_PHRASE_GROUNDING>", texts=[...])
    m.tasks()
"""

from __future__ import annotations

import importlib
from typing import Any

from omnivis.errors import CheckpointError, DatasetError, ImageError, InputError, OmnivisError, ParseError

__version__ = "0.1.0"

# The public API, imported on first use so that `import omnivis` (and the CLI's `--help`) stays fast.
_LAZY = {
    "load": "omnivis.loading",
    "save": "omnivis.loading",
    "Predictor": "omnivis.predictor",
    "create_model": "omnivis.model.presets",
    "PRESETS": "omnivis.model.presets",
    "TASKS": "omnivis.tasks",
}

__all__ = ["CheckpointError", "DatasetError", "ImageError", "InputError", "OmnivisError", "ParseError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'omnivis' has no attribute {name!r}")
