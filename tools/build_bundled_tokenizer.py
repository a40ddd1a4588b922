"""Rebuilds src/omnivis/assets/tokenizer/: the byte-level BPE shipped for presets and from-scratch models.

    .venv/bin/python tools/build_bundled_tokenizer.py [CORPUS.txt ...]

The corpus is the task prompts plus the given text files (the committed asset was learned from the Florence-2
paper's English text, ../shared/seeds/florence2-en.txt). The result is deterministic for a given corpus.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omnivis.loading import BUNDLED_TOKENIZER
from omnivis.tasks import TASKS
from omnivis.tokenizer import train_tokenizer

VOCAB_SIZE = 2048


def corpus(paths: list[Path]) -> list[str]:
    lines = [task.prompt for task in TASKS.values()] + [task.description for task in TASKS.values()]
    for path in paths:
        lines += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines


def main() -> None:
    tokenizer = train_tokenizer(corpus([Path(p) for p in sys.argv[1:]]), VOCAB_SIZE)
    BUNDLED_TOKENIZER.mkdir(parents=True, exist_ok=True)
    tokenizer.save(BUNDLED_TOKENIZER)
    print(f"{tokenizer.vocab_size} tokens written to {BUNDLED_TOKENIZER}")


if __name__ == "__main__":
    main()
