"""Reference Florence-2 checkpoints for the parity tests, built offline from transformers (test-only).

`build_reference` makes a randomly initialised `Florence2ForConditionalGeneration` with its processor and writes it
with `save_pretrained` (the transformers-native layout); `write_remote_code_layout` re-keys the same weights into the
original microsoft layout (fp16 `pytorch_model.bin`, original names, original config.json spelling).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from oracle_tokenizer import make_florence_tokenizer
from transformers import (
    BartConfig,
    CLIPImageProcessorPil,
    Florence2Config,
    Florence2ForConditionalGeneration,
    Florence2Processor,
    Florence2VisionConfig,
)

from omnivis.tasks.parsing import BANNED_GROUNDING_PHRASES

# The official list (the original layout hard-codes it; converted checkpoints store it in their processor config).
BANNED_GROUNDING = list(BANNED_GROUNDING_PHRASES)
# As the official converted checkpoints store it: every parse type the reference knows must be listed.
POST_PROCESSOR_CONFIG = {
    "ocr": {
        "pattern": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
        "area_threshold": 0.0,
    },
    "phrase_grounding": {"banned_grounding_tokens": BANNED_GROUNDING},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}

SMALL_VISION = dict(
    embed_dim=[16, 32, 48, 64], depths=[1, 1, 2, 1], num_heads=[1, 2, 3, 4], num_groups=[1, 2, 3, 4],
    window_size=12, projection_dim=48, max_position_embeddings=50, max_temporal_embeddings=100,
)  # fmt: skip
SMALL_TEXT = dict(
    d_model=48, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=96, decoder_ffn_dim=96, max_position_embeddings=1024,
)  # fmt: skip
BASE_VISION = dict(
    embed_dim=[128, 256, 512, 1024], depths=[1, 1, 9, 1], num_heads=[4, 8, 16, 32], num_groups=[4, 8, 16, 32],
    window_size=12, projection_dim=768,
)  # fmt: skip
BASE_TEXT = dict(
    d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12, decoder_attention_heads=12,
    encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024,
)  # fmt: skip


@dataclass
class Reference:
    model: Florence2ForConditionalGeneration
    processor: Florence2Processor
    directory: Path
    remote_vocab: int  # the vocabulary of the original layout: base BPE + Florence-2 tokens, no <image>


def build_reference(
    directory: Path,
    vision: dict[str, Any],
    text: dict[str, Any],
    image_size: int = 768,
    seed: int = 0,
    vocab_rows: int | None = None,
) -> Reference:
    """A random reference model + processor saved to `directory` in the transformers-native layout.

    `vocab_rows` sizes the embedding table (51328 is the official native one); rows past the stand-in
    tokenizer's vocabulary are zero, so they are never generated.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = make_florence_tokenizer(directory, layout="native")
    grid = -(-image_size // 32)
    image_processor = CLIPImageProcessorPil(
        size={"height": image_size, "width": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=False,
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        image_seq_length=1 + grid * grid,
    )
    processor = Florence2Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        post_processor_config=POST_PROCESSOR_CONFIG,
    )
    vocab = vocab_rows or -(-len(tokenizer) // 64) * 64  # native checkpoints pad the vocabulary to a multiple of 64
    bart = BartConfig(
        vocab_size=vocab, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
        forced_bos_token_id=0, forced_eos_token_id=2, **text,
    )  # fmt: skip
    config = Florence2Config(
        vision_config=Florence2VisionConfig(**vision), text_config=bart, image_token_id=tokenizer.image_token_id
    )
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config).eval()
    _spread_weights(model)
    remote_vocab = tokenizer.image_token_id  # <image> was appended after the Florence-2 tokens
    with torch.no_grad():
        # Zero rows for <image> and the padding: their logits stay 0, far below the best random logits, so
        # neither layout's reference ever emits them (the original layout does not even have them).
        model.get_input_embeddings().weight[remote_vocab:] = 0
        # fp16-representable weights, so the fp16 original layout holds exactly the same model.
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    model.generation_config.update(
        num_beams=3, no_repeat_ngram_size=3, early_stopping=True, max_new_tokens=1024,
        decoder_start_token_id=2, forced_bos_token_id=0, forced_eos_token_id=2,
    )  # fmt: skip
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return Reference(model, processor, directory, remote_vocab)


def _spread_weights(model: torch.nn.Module) -> None:
    """Random LayerNorm affines and biases, so a mis-wired norm or bias cannot hide behind 1s and 0s."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)


def write_remote_code_layout(reference: Reference, directory: Path) -> Path:
    """The same weights in the original microsoft layout: fp16 pytorch_model.bin and original names."""
    from oracle_names import native_to_remote_code

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in reference.model.state_dict().items()}
    remote = native_to_remote_code(state, remote_vocab=reference.remote_vocab)
    torch.save({k: v.half().contiguous() for k, v in remote.items()}, directory / "pytorch_model.bin")
    config = reference.model.config
    vision, text = config.vision_config, config.text_config.to_dict()
    text["vocab_size"] = remote["language_model.model.shared.weight"].shape[0]
    # The original config.json keeps the decoding settings in its text_config (there is no generation_config.json).
    text.update(
        num_beams=3, no_repeat_ngram_size=3, early_stopping=True, bos_token_id=0, eos_token_id=2, pad_token_id=1,
        decoder_start_token_id=2, forced_bos_token_id=0, forced_eos_token_id=2,
    )  # fmt: skip
    original = {
        "model_type": "florence2",
        "architectures": ["Florence2ForConditionalGeneration"],
        "auto_map": {"AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration"},
        "vision_config": {
            "model_type": "davit", "dim_embed": list(vision.embed_dim), "depths": list(vision.depths),
            "num_heads": list(vision.num_heads), "num_groups": list(vision.num_groups),
            "window_size": vision.window_size, "patch_size": list(vision.patch_size),
            "patch_stride": list(vision.patch_stride), "patch_padding": list(vision.patch_padding),
            "patch_prenorm": list(vision.patch_prenorm), "drop_path_rate": 0.1, "projection_dim": vision.projection_dim,
            "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": vision.max_position_embeddings},
            "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": vision.max_temporal_embeddings},
            "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
        },
        "text_config": text,
        "projection_dim": vision.projection_dim,
    }  # fmt: skip
    (directory / "config.json").write_text(json.dumps(original, indent=2, default=str))
    make_florence_tokenizer(directory, layout="remote")
    # The original layout keeps the image settings in preprocessor_config.json and no post-processor config.
    processor_config = json.loads((reference.directory / "processor_config.json").read_text())
    (directory / "preprocessor_config.json").write_text(json.dumps(processor_config["image_processor"]))
    return directory
