"""DaViT against its references: transformers' `Florence2VisionBackbone` and timm's `davit_base_fl`.

Weights are random but every tensor (norm scales and biases included) is drawn from a seeded generator, so a
swapped norm, a wrong scale or a mis-ordered permutation shows up as an O(1) difference.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import asdict

import pytest
import torch

from omnivis.errors import CheckpointError, InputError
from omnivis.model.davit import (
    DaViT,
    DaViTConfig,
    drop_path_schedule,
    florence2_base_vision,
    florence2_large_vision,
    remote_code_to_native_vision_keys,
)

TOLERANCE = 1e-5  # max abs difference allowed against a reference, float32

# Small but complete: depth 2 in two stages, heads != groups (a swap would show), and a 5-token window so that
# the 64x96 test input needs window padding at every stage (grids 16x24, 8x12, 4x6, 2x3).
SMALL = DaViTConfig(
    embed_dims=(16, 32, 48, 64), depths=(1, 2, 2, 1), num_heads=(2, 4, 4, 8), num_groups=(4, 2, 8, 4),
    window_size=5, drop_path_rate=0.2,
)  # fmt: skip


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter seeded random values near a trained model's scale (std 0.02, norm scales ~1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            is_norm_scale = ".norm" in name and name.endswith("weight")
            parameter.copy_(1.0 + 0.1 * noise if is_norm_scale else 0.02 * noise)


def random_pixels(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def without_init(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Build a module on the CPU with uninitialised storage: its weights are all overwritten next (fast)."""
    with torch.device("meta"):
        module = build()
    return module.to_empty(device="cpu").eval()


def our_model(config: DaViTConfig) -> DaViT:
    """Our tower with seeded random weights, in eval mode."""
    model = without_init(lambda: DaViT(config))
    randomize_(model)
    return model


def transformers_backbone(config: DaViTConfig, attention: str) -> torch.nn.Module:
    """transformers' vision tower for `config`, with uninitialised weights, in eval mode."""
    from transformers import Florence2VisionConfig
    from transformers.models.florence2.modeling_florence2 import Florence2VisionBackbone

    reference_config = Florence2VisionConfig(
        in_channels=config.in_channels, depths=list(config.depths), patch_size=list(config.patch_sizes),
        patch_stride=list(config.patch_strides), patch_padding=list(config.patch_paddings),
        patch_prenorm=list(config.patch_prenorm), embed_dim=list(config.embed_dims),
        num_heads=list(config.num_heads), num_groups=list(config.num_groups), window_size=config.window_size,
        drop_path_rate=config.drop_path_rate, mlp_ratio=config.mlp_ratio, qkv_bias=config.qkv_bias,
    )  # fmt: skip
    reference_config._attn_implementation = attention
    return without_init(lambda: Florence2VisionBackbone(reference_config))


def reference_for(model: DaViT, attention: str = "sdpa") -> torch.nn.Module:
    """The transformers tower loaded with `model`'s very state dict."""
    reference = transformers_backbone(model.config, attention)
    reference.load_state_dict(model.state_dict(), strict=True)  # native names: no mapping at all
    return reference


def model_and_reference(config: DaViTConfig, attention: str = "sdpa") -> tuple[DaViT, torch.nn.Module]:
    model = our_model(config)
    return model, reference_for(model, attention)


def max_difference(first: torch.Tensor, second: torch.Tensor) -> float:
    assert first.shape == second.shape, (first.shape, second.shape)
    return (first.float() - second.float()).abs().max().item()


# Test helper: the inverse key map, written from the remote code's module tree (`PreNorm(norm, fn)` wrappers,
# `dw` convolutions, `net` MLP) independently of the table in davit.py.
def native_to_remote_key(native_key: str) -> str:
    parts = native_key.split(".")
    if parts[0] == "convs":  # convs.<stage>.<conv|norm>.<tensor>
        return native_key.replace(".conv.", ".proj.")
    block, layer, tensor = ".".join(parts[:4]), ".".join(parts[4:-1]), parts[-1]
    attention = "window_attn" if parts[3] == "spatial_block" else "channel_attn"
    remote_layer = {
        "conv1": "conv1.fn.dw",
        "norm1": f"{attention}.norm",
        f"{attention}.qkv": f"{attention}.fn.qkv",
        f"{attention}.proj": f"{attention}.fn.proj",
        "conv2": "conv2.fn.dw",
        "norm2": "ffn.norm",
        "ffn.fc1": "ffn.fn.net.fc1",
        "ffn.fc2": "ffn.fn.net.fc2",
    }[layer]
    return f"{block}.{remote_layer}.{tensor}"


@pytest.fixture(scope="module")
def small_pair() -> tuple[DaViT, torch.nn.Module]:
    return model_and_reference(SMALL)


@pytest.fixture(scope="module")
def base_model() -> DaViT:
    return our_model(florence2_base_vision())


@pytest.mark.oracle
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("shape", [(2, 3, 64, 96), (1, 3, 200, 328), (1, 3, 37, 23)])
def test_matches_transformers_small(attention: str, shape: tuple[int, ...]) -> None:
    model, reference = model_and_reference(SMALL, attention)
    pixels = random_pixels(*shape)
    with torch.no_grad():
        expected = reference(pixels).last_hidden_state
        actual = model.forward_features(pixels)
    assert max_difference(actual, expected) <= TOLERANCE


@pytest.mark.oracle
@pytest.mark.parametrize(
    ("height", "width"),
    [
        # Grids 25x41, 13x21, 7x11 and 4x6: no stage is a multiple of the 12-token window.
        (100, 164),
        # The official input size (one forward: about 15 s on 2 cores).
        pytest.param(768, 768, marks=pytest.mark.slow),
    ],
)
def test_base_preset_matches_transformers(base_model: DaViT, height: int, width: int) -> None:
    reference = reference_for(base_model)
    pixels = random_pixels(1, 3, height, width)
    with torch.no_grad():
        expected = reference(pixels).last_hidden_state
        actual = base_model.forward_features(pixels)
    assert actual.shape == (1, 1024, -(-height // 32), -(-width // 32))
    assert max_difference(actual, expected) <= TOLERANCE


@pytest.mark.oracle
def test_intermediates_match_transformers_stage_outputs(small_pair: tuple[DaViT, torch.nn.Module]) -> None:
    model, reference = small_pair
    pixels = random_pixels(2, 3, 64, 96)
    with torch.no_grad():
        # hidden_states holds the first block's input, then every block's output.
        hidden_states = reference(pixels, output_hidden_states=True).hidden_states
        intermediates = model.forward_intermediates(pixels)
    stage_ends = list(itertools.accumulate(SMALL.depths))
    assert len(intermediates) == 4
    for intermediate, index in zip(intermediates, stage_ends):
        assert max_difference(intermediate, hidden_states[index]) <= TOLERANCE


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_transformers(dtype: torch.dtype) -> None:
    model, reference = model_and_reference(SMALL)
    model, reference = model.to(dtype), reference.to(dtype)
    pixels = random_pixels(1, 3, 48, 40)  # float32 in: both models cast to their weights' dtype
    with torch.no_grad():
        expected = reference(pixels).last_hidden_state
        actual = model.forward_features(pixels)
    assert actual.dtype == dtype
    # Same operations in the same order and memory layout, so the same rounding.
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


@pytest.mark.oracle
def test_training_mode_drop_path_matches_transformers(small_pair: tuple[DaViT, torch.nn.Module]) -> None:
    model, reference = small_pair
    model.train()
    reference.train()
    try:
        pixels = random_pixels(4, 3, 64, 96)
        torch.manual_seed(123)
        expected = reference(pixels).last_hidden_state
        torch.manual_seed(123)
        actual = model(pixels)
        torch.manual_seed(124)
        other_draw = model(pixels)
    finally:
        model.eval()
        reference.eval()
    assert max_difference(actual, expected) <= TOLERANCE
    assert max_difference(other_draw, actual) > 1e-3  # stochastic depth is really active in training


@pytest.mark.oracle
def test_drop_path_rates_match_transformers(small_pair: tuple[DaViT, torch.nn.Module]) -> None:
    model, reference = small_pair
    for ours_stage, theirs_stage in zip(model.blocks, reference.blocks, strict=True):
        for ours, theirs in zip(ours_stage, theirs_stage, strict=True):
            # The reference puts an Identity where the rate is 0.
            theirs_spatial = getattr(theirs.spatial_block.drop_path1, "drop_prob", 0.0)
            theirs_channel = getattr(theirs.channel_block.drop_path1, "drop_prob", 0.0)
            assert ours.spatial_block.drop_path.drop_rate == theirs_spatial
            assert ours.channel_block.drop_path.drop_rate == theirs_channel


def test_drop_path_schedule_is_linear_over_all_residual_blocks() -> None:
    schedule = drop_path_schedule(DaViTConfig(depths=(1, 1, 9, 1), drop_path_rate=0.1))
    flat = [rate for stage in schedule for block in stage for rate in block]
    assert [len(stage) for stage in schedule] == [1, 1, 9, 1]
    assert flat == pytest.approx([0.1 * index / 23 for index in range(24)], abs=1e-7)
    assert schedule[2][0] == pytest.approx((0.1 * 4 / 23, 0.1 * 5 / 23))


def test_eval_mode_is_deterministic_even_with_drop_path() -> None:
    model = DaViT(SMALL).eval()
    pixels = random_pixels(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(pixels), model(pixels))


@pytest.mark.oracle
def test_matches_timm_davit_base_fl(base_model: DaViT) -> None:
    import timm
    from timm.models.davit import checkpoint_filter_fn

    remote_state = {f"vision_tower.{native_to_remote_key(k)}": v for k, v in base_model.state_dict().items()}
    timm_model = without_init(lambda: timm.create_model("davit_base_fl", pretrained=False, num_classes=0))
    # timm's own remote-code -> timm conversion (`_convert_florence2`, reached through its checkpoint filter).
    incompatible = timm_model.load_state_dict(checkpoint_filter_fn(remote_state, timm_model), strict=False)
    # Florence-2 deletes the classifier head's norm; every other tensor must land.
    assert sorted(incompatible.missing_keys) == ["head.norm.bias", "head.norm.weight"]
    assert incompatible.unexpected_keys == []
    pixels = random_pixels(1, 3, 64, 96)
    with torch.no_grad():
        expected = timm_model.forward_features(pixels)
        actual = base_model.forward_features(pixels)
    assert max_difference(actual, expected) <= TOLERANCE


def test_remote_key_map_round_trips_exactly() -> None:
    native_state = DaViT(SMALL).state_dict()
    remote_state = {native_to_remote_key(key): tensor for key, tensor in native_state.items()}
    unchanged = set(remote_state) & set(native_state)
    assert unchanged and all(re.fullmatch(r"convs\.\d\.norm\.(weight|bias)", key) for key in unchanged)
    mapped = remote_code_to_native_vision_keys(remote_state)
    assert list(mapped) == list(native_state)
    assert all(mapped[key] is native_state[key] for key in native_state)


@pytest.mark.parametrize(
    ("remote_key", "native_key"),
    [  # pairs as in transformers' convert_florence2_original_pytorch_to_hf.py
        ("convs.0.proj.weight", "convs.0.conv.weight"),
        ("convs.3.norm.bias", "convs.3.norm.bias"),
        ("blocks.0.0.spatial_block.conv1.fn.dw.weight", "blocks.0.0.spatial_block.conv1.weight"),
        ("blocks.2.8.spatial_block.window_attn.norm.weight", "blocks.2.8.spatial_block.norm1.weight"),
        ("blocks.2.8.spatial_block.window_attn.fn.qkv.bias", "blocks.2.8.spatial_block.window_attn.qkv.bias"),
        ("blocks.0.0.spatial_block.window_attn.fn.proj.bias", "blocks.0.0.spatial_block.window_attn.proj.bias"),
        ("blocks.1.0.spatial_block.ffn.norm.bias", "blocks.1.0.spatial_block.norm2.bias"),
        ("blocks.1.0.spatial_block.ffn.fn.net.fc1.weight", "blocks.1.0.spatial_block.ffn.fc1.weight"),
        ("blocks.3.0.channel_block.channel_attn.norm.bias", "blocks.3.0.channel_block.norm1.bias"),
        ("blocks.3.0.channel_block.channel_attn.fn.qkv.bias",
         "blocks.3.0.channel_block.channel_attn.qkv.bias"),
        ("blocks.3.0.channel_block.channel_attn.fn.proj.weight",
         "blocks.3.0.channel_block.channel_attn.proj.weight"),
        ("blocks.3.0.channel_block.conv2.fn.dw.bias", "blocks.3.0.channel_block.conv2.bias"),
        ("blocks.3.0.channel_block.ffn.fn.net.fc2.bias", "blocks.3.0.channel_block.ffn.fc2.bias"),
    ],
)
def test_remote_key_map_follows_the_conversion_script(remote_key: str, native_key: str) -> None:
    tensor = torch.zeros(1)
    assert remote_code_to_native_vision_keys({remote_key: tensor}) == {native_key: tensor}


@pytest.mark.parametrize(
    "bad_key",
    [
        "vision_tower.convs.0.proj.weight",  # prefix not stripped
        "head.weight",  # the ImageNet head Florence-2 deletes
        "blocks.0.0.channel_block.window_attn.fn.qkv.weight",  # a channel block has no window attention
        "blocks.0.0.spatial_block.conv1.weight",  # already native
        "blocks.0.0.spatial_block.channel_attn.norm.weight",  # a spatial block has no channel attention
    ],
)
def test_remote_key_map_rejects_unknown_keys(bad_key: str) -> None:
    with pytest.raises(CheckpointError, match="unexpected key"):
        remote_code_to_native_vision_keys({bad_key: torch.zeros(1)})


@pytest.mark.oracle
def test_every_parameter_gets_the_reference_gradient(small_pair: tuple[DaViT, torch.nn.Module]) -> None:
    model, reference = small_pair
    pixels = random_pixels(2, 3, 64, 96)
    output_weights = random_pixels(2, 64, 2, 3, seed=7)  # an asymmetric loss reaches every output element
    for network in (model, reference):
        network.zero_grad()
        output = network(pixels)
        (getattr(output, "last_hidden_state", output) * output_weights).sum().backward()
    reference_parameters = dict(reference.named_parameters())
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        torch.testing.assert_close(parameter.grad, reference_parameters[name].grad, msg=name)


def test_grad_checkpointing_changes_nothing() -> None:
    model = DaViT(SMALL).train()  # drop path active: checkpointing must replay the same random draws
    randomize_(model)
    pixels = random_pixels(2, 3, 64, 96)
    results = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        torch.manual_seed(5)
        output = model(pixels)
        output.square().sum().backward()
        results.append((output.detach(), [parameter.grad.clone() for parameter in model.parameters()]))
    (plain_output, plain_grads), (checkpointed_output, checkpointed_grads) = results
    assert torch.equal(plain_output, checkpointed_output)
    for plain, checkpointed in zip(plain_grads, checkpointed_grads):
        torch.testing.assert_close(checkpointed, plain)


@pytest.mark.parametrize("preset", [florence2_base_vision, florence2_large_vision])
def test_encoder_contract_holds_for_every_preset(preset: Callable[[], DaViTConfig]) -> None:
    config = preset()
    with torch.device("meta"):  # shapes only: the large tower has 360M parameters
        model = DaViT(config)
        pixels = torch.empty(2, 3, 64, 96)
        features = model.forward_features(pixels)
        intermediates = model.forward_intermediates(pixels)
    assert model.num_features == config.embed_dims[-1]
    assert model.reduction == 32
    assert features.shape == (2, model.num_features, 2, 3)
    grids = [(16, 24), (8, 12), (4, 6), (2, 3)]  # 64x96 shrunk 4, 8, 16 and 32 times
    expected_shapes = [(2, dim, *grid) for dim, grid in zip(config.embed_dims, grids)]
    assert [tuple(x.shape) for x in intermediates] == expected_shapes


@pytest.mark.parametrize(
    ("indices", "stages"), [(None, [0, 1, 2, 3]), (2, [2, 3]), ([-1, 0], [0, 3]), ([1, 1], [1])]
)
def test_intermediate_indices_pick_stages_like_timm(
    small_pair: tuple[DaViT, torch.nn.Module], indices: int | list[int] | None, stages: list[int]
) -> None:
    model, _ = small_pair
    pixels = random_pixels(1, 3, 64, 96)
    with torch.no_grad():
        every_stage = model.forward_intermediates(pixels)
        chosen = model.forward_intermediates(pixels, indices=indices)
        assert torch.equal(every_stage[-1], model.forward_features(pixels))
    assert len(chosen) == len(stages)
    assert all(torch.equal(feature_map, every_stage[stage]) for feature_map, stage in zip(chosen, stages))


def test_presets_match_the_official_configs() -> None:
    from transformers import Florence2VisionConfig

    base, reference = florence2_base_vision(), Florence2VisionConfig()  # transformers' defaults are base's
    assert (base.embed_dims, base.depths) == (tuple(reference.embed_dim), tuple(reference.depths))
    assert (base.num_heads, base.num_groups) == (tuple(reference.num_heads), tuple(reference.num_groups))
    assert (base.patch_sizes, base.patch_strides, base.patch_paddings, base.patch_prenorm) == (
        tuple(reference.patch_size), tuple(reference.patch_stride), tuple(reference.patch_padding),
        tuple(reference.patch_prenorm),
    )
    assert (base.window_size, base.mlp_ratio, base.qkv_bias, base.drop_path_rate) == (12, 4.0, True, 0.1)
    # microsoft/Florence-2-large config.json, vision_config ("dim_embed" is the remote code's embed_dims).
    large = florence2_large_vision()
    assert large.embed_dims == (256, 512, 1024, 2048)
    assert large.depths == (1, 1, 9, 1)
    assert large.num_heads == large.num_groups == (8, 16, 32, 64)
    assert (large.patch_sizes, large.window_size, large.drop_path_rate) == ((7, 3, 3, 3), 12, 0.1)


def test_config_survives_a_json_round_trip() -> None:
    config = florence2_large_vision()
    assert DaViTConfig(**json.loads(json.dumps(asdict(config)))) == config


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (torch.zeros(3, 64, 64), "shape"),
        (torch.zeros(1, 4, 64, 64), "shape"),
        (torch.zeros(1, 3, 0, 64), "empty"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating-point"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_bad_pixels_raise_input_error(pixels: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        DaViT(SMALL)(pixels)  # type: ignore[arg-type]


@pytest.mark.parametrize("indices", [0, 5, [4], [-5], []])
def test_bad_intermediate_indices_raise_input_error(indices: object) -> None:
    with pytest.raises(InputError, match="indices"):
        DaViT(SMALL).forward_intermediates(random_pixels(1, 3, 32, 32), indices=indices)  # type: ignore


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"depths": (1, 1, 9)}, "one entry per stage"),
        ({"num_heads": (3, 8, 16, 32)}, "divisible"),
        ({"num_groups": (4, 8, 16, 30)}, "divisible"),
        ({"window_size": 0}, "window_size"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
    ],
)
def test_bad_config_raises_input_error(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        DaViTConfig(**overrides)  # type: ignore[arg-type]
