"""Named training presets: plain functions returning a `TrainConfig`, each opening with its command.

`RECIPES` maps names to them (`omnivis train --preset NAME`); `smoke` shrinks any of them to a run of a few
seconds, which the tests run for every recipe. Figures quoted are measured, on the machines named.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from omnivis.train.config import DataSettings, ModelSettings, OptimSettings, TrainConfig

WORLD_TRAIN = "data/world-train"  # made by `omnivis data make-world data/world-train --n 20000 --seed 1`
WORLD_VAL = "data/world-val"  # made by `omnivis data make-world data/world-val --n 200 --seed 2`


# The world recipe's mixture: the tasks the acceptance figures name (detection, referring expressions and
# segmentation, grounding, brief captions, OCR, VQA) weighted up, the long detailed captions down.
WORLD_MIXTURE: dict[str, float] = {
    "<CAPTION>": 2.0, "<DETAILED_CAPTION>": 0.5, "<MORE_DETAILED_CAPTION>": 0.25, "<OD>": 2.0,
    "<DENSE_REGION_CAPTION>": 1.0, "<REGION_PROPOSAL>": 0.5, "<CAPTION_TO_PHRASE_GROUNDING>": 2.0,
    "<REFERRING_EXPRESSION_SEGMENTATION>": 2.0, "<REGION_TO_SEGMENTATION>": 1.0, "<OPEN_VOCABULARY_DETECTION>": 2.0,
    "<REGION_TO_CATEGORY>": 1.0, "<REGION_TO_DESCRIPTION>": 1.0, "<OCR>": 1.5, "<OCR_WITH_REGION>": 1.0,
    "<REGION_TO_OCR>": 1.0, "<VQA>": 2.0,
}  # fmt: skip
TAGGING_RUN = (
    "runs/tiny-tagging"  # made by `omnivis pretrain tagging --data data/world-train --out runs/tiny-tagging`
)


def tiny_world_cpu() -> TrainConfig:
    """The `tiny` model on the procedural world, on 2 CPU cores (two single-threaded DDP processes).

    Command:
        omnivis data make-world data/world-train --n 20000 --seed 1
        omnivis data make-world data/world-val --n 200 --seed 2
        omnivis pretrain tagging --data data/world-train --out runs/tiny-tagging --steps 800
        OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 -m omnivis train --preset tiny-world-cpu
    Inputs are 128 px (a 4x4 grid, 17 visual tokens); every image serves 4 tasks per step so the vision tower's
    cost is shared; location targets are smoothed over +-2 bins. The vision tower starts from the tagging run
    and stays frozen: trained from scratch through the text model it collapses (see `omnivis.pretrain`).
    Expected time: ~1 s a step (2 x 8 images, 64 examples), 2,400 steps in ~40 min (measured 2026-12-03 on a
    shared 2-core machine); `--resume` continues exactly.
    Expected result: the committed checkpoint's stages 2 and 3 are this recipe (overrides in models/README.md;
    stage 3 unfreezes the tower at 3e-5): after them, on a fresh split, brief-caption CIDEr 2.61, VQA 0.43,
    region proposals AP50 0.32, phrase grounding Recall@1 0.19, `<OD>` AP50 0.03 (measured 2026-12-04).
    """
    return TrainConfig(
        model=ModelSettings(
            preset="tiny", image_size=128, dropout=0.0, vision_init=f"{TAGGING_RUN}/final", freeze=("vision",)
        ),
        data=DataSettings(
            train=WORLD_TRAIN, eval=WORLD_VAL, examples_per_image=4, max_target_tokens=256,
            mixture=dict(WORLD_MIXTURE), length_chunks=4,
        ),
        optim=OptimSettings(
            learning_rate=6e-4, weight_decay=0.01, warmup_steps=200, min_learning_rate_ratio=0.05,
            location_smoothing=0.1,
        ),
        steps=2400, batch_size=8, precision="float32", device="cpu", out="runs/tiny-world-cpu",
        log_every=10, checkpoint_every=250, eval_every=0, eval_limit=24, eval_max_new_tokens=256,
    )  # fmt: skip


def tiny_world_gpu() -> TrainConfig:
    """The `tiny` model on the procedural world, on one GPU (bf16 autocast).

    Measured (2026-12-04, one H200 with 16 CPU cores): with 128 images a step at 256 px and 14 loader
    processes the loop trains ~430 images/s median (1,700 examples/s), ~40x the 2-core CPU recipe; whether the
    loader or the GPU bounds it was not measured. The committed checkpoint's stage 4 is this recipe so
    overridden, from the CPU stages, for 1,273 steps (~8 min): `<OD>` AP50 0.03 -> 0.23, region proposals 0.32
    -> 0.90, phrase grounding 0.19 -> 0.52 on a fresh split (models/README.md). The preset's own 20,000 steps
    from the tagging tower have not been run.

    Command:
        omnivis data make-world data/world-train --n 20000 --seed 1
        omnivis data make-world data/world-val --n 200 --seed 2
        omnivis pretrain tagging --data data/world-train --out runs/tiny-tagging --steps 800
        omnivis train --preset tiny-world-gpu
    """
    config = tiny_world_cpu()
    return replace(
        config, steps=20000, batch_size=64, precision="auto", device="auto", out="runs/tiny-world-gpu",
        data=replace(config.data, num_workers=6), eval_every=2000, checkpoint_every=1000, eval_limit=64,
    )  # fmt: skip


def base_finetune() -> TrainConfig:
    """Fine-tune an official Florence-2-base on a user's dataset (e.g. a COCO import).

    Command:
        omnivis data import-coco instances.json --images images/ --captions captions.json --out my_data/
        omnivis train --preset base-finetune --init /models/Florence-2-base --data my_data/
    The learning rate is the paper's fine-tuning one for the base size; the vision tower trains at a tenth of it.
    Keep a share of the original tasks (data.mixture) to avoid forgetting them.
    Expected time: ~70 s a step of 2 images at 768 px on one CPU core (bench/RESULTS.md); use a GPU.
    Expected result: depends on the user's data; the tests run it at tiny scale on both official layouts.
    """
    return TrainConfig(
        model=ModelSettings(preset="florence2-base", init=""),
        data=DataSettings(train="", max_target_tokens=1024),
        optim=OptimSettings(learning_rate=1e-6, vision_learning_rate=1e-7, warmup_steps=50, weight_decay=0.01),
        steps=2000, batch_size=8, out="runs/base-finetune", checkpoint_every=500, eval_every=500,
    )  # fmt: skip


# The demo's mixture: brief captions, detection and VQA (the tasks it must beat the baseline on) most often,
# every other task a little so that each is at least begun. VQA most: its baseline (each question's majority
# training answer) is the hardest to beat, and its examples are short, so cheap.
DEMO_MIXTURE: dict[str, float] = {
    "<CAPTION>": 3.0, "<OD>": 3.0, "<VQA>": 5.0, "<OPEN_VOCABULARY_DETECTION>": 1.0,
    "<REGION_TO_CATEGORY>": 1.0, "<CAPTION_TO_PHRASE_GROUNDING>": 0.5, "<REFERRING_EXPRESSION_SEGMENTATION>": 0.5,
    "<REGION_TO_SEGMENTATION>": 0.25, "<DENSE_REGION_CAPTION>": 0.25, "<REGION_PROPOSAL>": 0.25,
    "<REGION_TO_DESCRIPTION>": 0.25, "<DETAILED_CAPTION>": 0.25, "<MORE_DETAILED_CAPTION>": 0.1,
    "<OCR>": 0.25, "<OCR_WITH_REGION>": 0.1, "<REGION_TO_OCR>": 0.25,
}  # fmt: skip


def demo_cpu() -> TrainConfig:
    """What `omnivis demo --train` runs: a `tiny` model in about 11 minutes of 2 CPU cores.

    Command:
        omnivis demo --train          (two processes under torchrun, 8 images each a step)
    When the committed checkpoint is there, the demo runs this on its whole multimodal encoder
    (`on_shared_encoder`: tower, projector, text encoder and token table taken, all but the token table
    frozen, 256 px) and only the decoder's layers learn from scratch; without it, everything does, at 128 px
    with ordered location tokens (`model.ordinal_locations`), as below.
    Expected time: ~0.7-1.3 s a step on the shared encoder, so the demo's time limit (~11 minutes of
    training) ends the run at 500-850 steps (850 is all of them); the whole `omnivis demo --train` took
    10 min 23 s to 11 min 54 s (2026-12-05 and -06).
    Its decoder, like every model trained from scratch, decodes without the official 3-gram ban.
    The learning rate is the one that learns to see in time (measured on 600 steps, 2026-12-03): at 1e-3
    with 50 warm-up steps the text side settles on answers that ignore the image (`image_reliance` 0.0000 at
    step 200, 0.0004 at 600); at 6e-4 with 200 it reads it from step ~200 and brief-caption CIDEr went from
    0.54 to 1.58. VQA answers weigh 4 in the loss (`optim.task_loss_weights`): an answer is a token or two
    beside a detection's dozens, so unweighted VQA barely moves the gradient and the run learns the priors.
    Expected result (held-out seed 7, 48 scenes: every one of its ~640 questions, whose baseline is each
    question's majority training answer, 0.375; 32 brief captions, baseline CIDEr 0.45; 32 detections,
    baseline AP50 0), VQA / CIDEr / AP50 in runs the ~11-minute limit ended, on 2 cores, 2026-12-05 and -06:
      - the shared encoder of stage 6i's checkpoint (committed on 2026-12-06), as `omnivis demo --train`,
        decoding without the 3-gram ban: 0.827 / 5.76 / 0.681 (10 min 23 s, all 850 steps, ~0.70 s each;
        proposals 0.61, region to category 1.00, referring expressions 0.25, 14 of 16 tasks beaten).
      - the shared encoder of stage 6f's checkpoint, the same way: 0.810 / 5.36 / 0.718 (10 min 34 s, all 850
        steps, ~0.70 s each; proposals 0.58, region to category 1.00, referring expressions 0.25, 13 of 16).
      - the shared encoder of stage 6d's checkpoint, the same way: 0.777 / 4.90 / 0.631 (11 min 11 s, all 850
        steps, ~0.75 s each; proposals 0.54, region to category 1.00, referring expressions 0.50, 13 of 16).
      - the shared encoders of stages 5c-6, one stage at a time: VQA 0.39-0.77, CIDEr 2.8-4.6, AP50
        0.20-0.69 (500-850 steps of ~0.7-1.3 s; 10-13 of 16 tasks beaten), mostly higher with each later one.
      - 5c's with the token table learnt from scratch (`vision_init_token_table` off): 0.382 / 3.11 / 0.137
        (632 steps; 11 of 16): prompts in unknown embeddings, so the frozen encoder reads no question.
      - tower, projector and text encoder taken, all trainable but the tower: 0.349 / 2.72 / 0.0006 (545
        steps of ~1.23 s); with the text encoder frozen, and through the tie the random token table and LM
        head too (since fixed in `model_setup.freeze`): 0.394 / 2.21 / 0.031 (795 steps).
      - the committed tower alone, frozen, the rest from scratch at 128 px (the demo until 2026-12-05): 0.404
        / 2.35 / 0.0028 (781 steps); with the projector's positions as sinusoids (`model.
        sinusoid_image_positions`, boxes then move with the image but miss) 0.375 / 2.27 / 0.0067 (767);
        with location smoothing over 60 bins at 0.6: 0.375 / 2.67 / 0.0005 (744); with 250 steps of the easy
        world first (`data.curriculum`) 0.389 / 2.76 / 0 (819); with the checkpoint's projector 0.372 / 2.56
        / 0.0056 (836). On 2026-12-04 the same recipe and its variants (VQA weighted 1, 4 or 8, drawn 3x,
        a re-tagged tower at 128 or 256 px) gave VQA 0.34-0.40, CIDEr 0.8-2.5 and AP50 below 0.004: in all
        of them the boxes were the location tokens' prior, the same few places whatever the image.
    So a decoder from scratch learns to read a trained encoder in ~600 steps, while ~800 steps are far too
    few to learn the encoder's side of seeing where things are.
    """
    return TrainConfig(
        model=ModelSettings(preset="tiny", image_size=128, dropout=0.0, ordinal_locations=True),
        data=DataSettings(
            train=WORLD_TRAIN, examples_per_image=3, max_target_tokens=256, mixture=dict(DEMO_MIXTURE),
            length_chunks=3,
        ),
        optim=OptimSettings(
            learning_rate=6e-4, weight_decay=0.01, warmup_steps=200,
            min_learning_rate_ratio=0.05, location_smoothing=0.1, task_loss_weights={"<VQA>": 4.0},
        ),
        steps=850, batch_size=8, precision="float32", device="cpu", out="runs/demo-cpu",
        log_every=10, checkpoint_every=200, eval_every=0,
    )  # fmt: skip


def on_shared_encoder(config: TrainConfig, checkpoint: str | Path, image_size: int) -> TrainConfig:
    """`config` on the whole multimodal encoder of `checkpoint`: only the decoder's layers learn from scratch.

    What `omnivis demo --train` runs when the committed checkpoint is there (measured in `demo_cpu`): the
    vision tower, projector, text encoder and token table are the checkpoint's; all but the token table stay
    frozen (it is also the LM head, which the new decoder must fit); inputs are the `image_size` those were
    trained at.
    """
    model = replace(
        config.model, vision_init=str(checkpoint), vision_init_projector=True, vision_init_text_encoder=True,
        vision_init_token_table=True, ordinal_locations=False, image_size=image_size,
        freeze=("vision", "projector", "text_encoder"),
    )  # fmt: skip
    return replace(config, model=model)


RECIPES: dict[str, Callable[[], TrainConfig]] = {
    "tiny-world-cpu": tiny_world_cpu,
    "tiny-world-gpu": tiny_world_gpu,
    "base-finetune": base_finetune,
    "demo-cpu": demo_cpu,
}


def smoke(
    config: TrainConfig, *, data: str | Path, out: str | Path, init: str | Path | None = None
) -> TrainConfig:
    """`config` shrunk to a few seconds on a CPU: 3 steps of 2 images, on `data`, into `out`."""
    model = replace(config.model, init=str(init) if init is not None else config.model.init or "scratch")
    if model.init == "scratch":  # a tiny model of 64 px, without the recipe's pre-trained, frozen tower
        model = replace(
            model, preset="tiny", image_size=64, vision_init="", vision_init_projector=False,
            vision_init_text_encoder=False, vision_init_token_table=False, freeze=(),
        )  # fmt: skip
    else:  # a checkpoint's weights: nothing left to initialise
        model = replace(model, ordinal_locations=False, sinusoid_image_positions=False)
    return replace(
        config, model=model, data=replace(config.data, train=str(data), eval="", num_workers=0),
        steps=3, batch_size=2, accumulation=1, device="cpu", precision="float32", out=str(out), log_every=1,
        checkpoint_every=2, eval_every=0, optim=replace(config.optim, warmup_steps=1),
    )  # fmt: skip


def resolve_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    init: str | None = None,
    data: str | None = None,
    out: str | None = None,
) -> TrainConfig:
    """The config a command line asks for: a preset or a JSON file, then `--init/--data/--out`, then overrides.

    Raises:
        ConfigError: An unknown preset, an unreadable config file, or a bad field or override.
    """
    import json

    from omnivis.errors import ConfigError
    from omnivis.train.config import apply_overrides, config_from_dict

    if (preset is None) == (config_file is None):
        raise ConfigError("give exactly one of a preset (--preset) and a config file (--config)")
    if preset is not None:
        if preset not in RECIPES:
            raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(RECIPES)}")
        config = RECIPES[preset]()
    else:
        try:
            values = json.loads(Path(config_file).read_text(encoding="utf-8"))  # type: ignore[arg-type]
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot read the config file {config_file}: {error}") from error
        config = config_from_dict(values)
    # Shortcut values go in JSON-quoted: a path is a string even when it looks like a number.
    shortcuts = [f"model.init={json.dumps(init)}"] if init is not None else []
    shortcuts += [f"data.train={json.dumps(data)}"] if data is not None else []
    shortcuts += [f"out={json.dumps(out)}"] if out is not None else []
    return apply_overrides(config, [*shortcuts, *overrides])
