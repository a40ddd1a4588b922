"""Rebuilds src/omnivis/assets/tokenizer/: the byte-level BPE shipped for presets and from-scratch models.

    .venv/bin/python tools/build_bundled_tokenizer.py [--world-scenes N] [CORPUS.txt ...]

The corpus is the task prompts, the text of N scenes of each procedural-world variant (captions, phrases,
region descriptions, referring expressions, questions, answers and the words written in the scenes), and the
given text files. The committed asset was built with the defaults plus the Florence-2 paper's English text
(../shared/seeds/florence2-en.txt), so that a model trained on the world spends few tokens per sentence and
still reads ordinary English. The result is deterministic for a given corpus.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omnivis.loading import BUNDLED_TOKENIZER
from omnivis.tasks import TASKS
from omnivis.tokenizer import train_tokenizer
from omnivis.world import VARIANTS, generate

VOCAB_SIZE = 2048
WORLD_SCENES = 4000
WORLD_SEED = 1_000_003  # not a seed the tests, the demo or the model card use


def corpus(paths: list[Path], world_scenes: int) -> list[str]:
    lines = [task.prompt for task in TASKS.values()] + [task.description for task in TASKS.values()]
    for config in VARIANTS.values():
        for record in generate(world_scenes, WORLD_SEED, config):
            lines += [text for text in record.texts() if text]
    for path in paths:
        lines += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("texts", nargs="*", type=Path, help="extra English text files")
    parser.add_argument("--world-scenes", type=int, default=WORLD_SCENES, help="scenes per world variant")
    args = parser.parse_args()
    tokenizer = train_tokenizer(corpus(args.texts, args.world_scenes), VOCAB_SIZE)
    BUNDLED_TOKENIZER.mkdir(parents=True, exist_ok=True)
    tokenizer.save(BUNDLED_TOKENIZER)
    print(f"{tokenizer.vocab_size} tokens written to {BUNDLED_TOKENIZER}")


if __name__ == "__main__":
    main()
