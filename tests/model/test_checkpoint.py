"""Checkpoint key maps, strict loading with named problems, and safe reading of untrusted files."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from oracle_names import native_to_remote_code
from safetensors.torch import save_file

from omnivis.errors import CheckpointError
from omnivis.model import checkpoint
from omnivis.model.florence import Florence2
from omnivis.model.presets import preset_config


@pytest.fixture(scope="module")
def model() -> Florence2:
    torch.manual_seed(0)
    return Florence2(preset_config("tiny", vocab_size=300)).eval()


def _native(model: Florence2) -> dict[str, torch.Tensor]:
    """The model's tensors under transformers-native names, tied aliases included as the native files store them."""
    state = {("lm_head.weight" if k == "lm_head.weight" else f"model.{k}"): v for k, v in model.state_dict().items()}
    return state


def test_native_and_remote_maps_recover_every_tensor(model: Florence2) -> None:
    expected = model.state_dict()
    for mapped in (checkpoint.native_to_omnivis(_native(model)), checkpoint.remote_code_to_omnivis(native_to_remote_code(_native(model)))):
        state = checkpoint.untie(mapped)
        checkpoint.check_state(state, checkpoint.expected_tensors(model), "test")
        for name, tensor in state.items():
            assert torch.equal(tensor, expected[name]), name


def test_remote_image_projection_is_transposed(model: Florence2) -> None:
    remote = native_to_remote_code(_native(model))
    weight = model.multi_modal_projector.image_projection.weight  # (projection_dim, vision_dim)
    assert remote["image_projection"].shape == weight.shape[::-1]
    mapped = checkpoint.remote_code_to_omnivis(remote)
    assert torch.equal(mapped["multi_modal_projector.image_projection.weight"], weight)


def test_nonzero_final_logits_bias_is_refused(model: Florence2) -> None:
    remote = native_to_remote_code(_native(model))
    remote["language_model.final_logits_bias"][0, 3] = 1.0
    with pytest.raises(CheckpointError, match="final_logits_bias"):
        checkpoint.remote_code_to_omnivis(remote)


@pytest.mark.parametrize(
    "stored", [("language_model.shared.weight",), ("lm_head.weight",), ("language_model.decoder.embed_tokens.weight", "lm_head.weight")]
)
def test_any_subset_of_tied_embeddings_is_accepted(model: Florence2, stored: tuple[str, ...]) -> None:
    state = {k: v for k, v in model.state_dict().items() if k not in (checkpoint.SHARED, *checkpoint.TIED_ALIASES)}
    for name in stored:
        state[name] = model.language_model.shared.weight.clone()
    fresh = Florence2(model.config)
    checkpoint.load_state_into(fresh, state, "test")
    assert fresh.lm_head.weight is fresh.language_model.shared.weight
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)


def test_differing_tied_embeddings_are_refused(model: Florence2) -> None:
    state = dict(model.state_dict())
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    with pytest.raises(CheckpointError, match="differs"):
        checkpoint.untie(state)


def test_missing_extra_and_misshaped_tensors_are_named(model: Florence2) -> None:
    state = checkpoint.untie(dict(model.state_dict()))
    del state["vision_tower.convs.0.conv.weight"]
    state["language_model.encoder.layers.9.fc1.weight"] = torch.zeros(1)
    state["multi_modal_projector.image_proj_norm.weight"] = torch.zeros(7)
    with pytest.raises(CheckpointError) as error:
        checkpoint.check_state(state, checkpoint.expected_tensors(model), "ckpt")
    message = str(error.value)
    assert "vision_tower.convs.0.conv.weight" in message
    assert "language_model.encoder.layers.9.fc1.weight" in message
    assert "multi_modal_projector.image_proj_norm.weight has shape (7,), the model expects (256,)" in message


def test_lying_safetensors_header_is_refused(tmp_path: Path) -> None:
    save_file({"x": torch.zeros(4)}, str(tmp_path / "model.safetensors"))
    raw = (tmp_path / "model.safetensors").read_bytes()
    header_length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_length])
    header["x"]["data_offsets"] = [0, 4096]  # claims far more bytes than the file holds
    new_header = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(new_header)) + new_header + raw[8 + header_length :])
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        checkpoint.read_weights(tmp_path)


class _Trap:
    def __reduce__(self):  # runs os.system on unpickling with weights_only=False
        return (os.system, (f"touch {_Trap.marker}",))

    marker = ""


def test_booby_trapped_pickle_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _Trap.marker = str(marker)
    with open(tmp_path / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"weight": _Trap()}, handle)
    with pytest.raises(CheckpointError, match="not a weights-only PyTorch checkpoint"):
        checkpoint.read_weights(tmp_path)
    assert not marker.exists()


def test_safetensors_comes_first_and_is_never_replaced_by_a_pickle(tmp_path: Path) -> None:
    torch.save({"a": torch.ones(2)}, tmp_path / "pytorch_model.bin")
    save_file({"b": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    state, source = checkpoint.read_weights(tmp_path)
    assert set(state) == {"b"} and source.name == "model.safetensors"
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        checkpoint.read_weights(tmp_path)


def test_empty_directory_names_the_expected_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="model.safetensors or pytorch_model.bin"):
        checkpoint.read_weights(tmp_path)
