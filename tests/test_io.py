"""Atomic writers: the target holds either the old or the complete new content, and nothing is left behind."""

import json
import os
import stat
from pathlib import Path

import pytest

from omnivis.io import atomic_directory, atomic_write_bytes, atomic_write_json, atomic_write_text


def _names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_bytes_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "blob.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"\x00second\xff")
    assert target.read_bytes() == b"\x00second\xff"
    assert _names(tmp_path) == ["blob.bin"]


def test_write_bytes_creates_missing_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.bin"
    atomic_write_bytes(str(target), b"x")
    assert target.read_bytes() == b"x"


def test_new_file_gets_umask_permissions_not_private_temp_ones(tmp_path: Path) -> None:
    target = tmp_path / "perm.txt"
    atomic_write_text(target, "hello")
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_current_umask()


def test_failed_write_keeps_old_content_and_removes_staging(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        # str instead of bytes: the write fails after the staging file was created.
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["data.bin"]


def test_failed_rename_over_a_directory_leaves_no_staging_file(tmp_path: Path) -> None:
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"data")
    assert (target / "keep.txt").read_text() == "keep"
    assert _names(tmp_path) == ["occupied"]


def test_write_text_is_utf8_and_keeps_newlines_verbatim(tmp_path: Path) -> None:
    target = tmp_path / "text.txt"
    atomic_write_text(target, "café\r\nline2\n")
    assert target.read_bytes() == "café\r\nline2\n".encode()


def test_write_json_round_trips_with_trailing_newline(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    payload = {"task": "<OD>", "labels": ["chat", "voiture"], "bboxes": [[1.5, 2.0, 3.0, 4.25]], "ok": True}
    atomic_write_json(target, payload)
    text = target.read_text(encoding="utf-8")
    assert json.loads(text) == payload
    assert text.endswith("}\n")


@pytest.mark.parametrize("bad", [{"value": float("nan")}, {"value": object()}])
def test_unserialisable_json_leaves_old_file(tmp_path: Path, bad: dict) -> None:
    target = tmp_path / "out.json"
    target.write_text('{"old": 1}')
    with pytest.raises((TypeError, ValueError)):
        atomic_write_json(target, bad)
    assert target.read_text() == '{"old": 1}'
    assert _names(tmp_path) == ["out.json"]


def test_atomic_directory_creates_new_directory(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint"
    with atomic_directory(target) as staging:
        assert staging.parent == tmp_path and staging != target
        assert not target.exists()  # nothing visible until the block finishes
        atomic_write_json(staging / "config.json", {"a": 1})
        (staging / "sub").mkdir()
        (staging / "sub" / "weights.bin").write_bytes(b"w")
    assert json.loads((target / "config.json").read_text()) == {"a": 1}
    assert (target / "sub" / "weights.bin").read_bytes() == b"w"
    assert _names(tmp_path) == ["checkpoint"]


def test_atomic_directory_replaces_existing_directory(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "stale.txt").write_text("stale")
    with atomic_directory(target) as staging:
        (staging / "fresh.txt").write_text("fresh")
        assert (target / "stale.txt").exists()  # the old version stays readable meanwhile
    assert _names(target) == ["fresh.txt"]
    assert _names(tmp_path) == ["checkpoint"]


def test_atomic_directory_failure_keeps_old_directory_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "model.bin").write_bytes(b"old weights")
    with pytest.raises(RuntimeError, match="midway"):
        with atomic_directory(target) as staging:
            (staging / "model.bin").write_bytes(b"half")
            raise RuntimeError("failed midway")
    assert (target / "model.bin").read_bytes() == b"old weights"
    assert _names(target) == ["model.bin"]
    assert _names(tmp_path) == ["checkpoint"]


def test_atomic_directory_failure_without_old_directory_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(tmp_path / "fresh") as staging:
            (staging / "part").write_text("x")
            raise KeyboardInterrupt
    assert _names(tmp_path) == []


def test_atomic_directory_refuses_a_file_target(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("content")
    with pytest.raises(FileExistsError):
        with atomic_directory(target):
            pass
    assert target.read_text() == "content"
    assert _names(tmp_path) == ["file.txt"]
