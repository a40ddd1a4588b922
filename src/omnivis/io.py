"""Atomic writes: a file or directory is either entirely the old version or entirely the new one.

Every writer stages its output beside the target (same directory, hence same file system), flushes
it to disk, and only then renames it over the target, which POSIX and Windows perform atomically. A
crash or an exception midway leaves the previous content untouched and removes the staging copy, so
readers never see a half-written checkpoint, JSON file or image.
"""

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Staging names start with a dot so directory listings and globs skip them.
_STAGING_TAG = ".omnivis-"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the complete new one.

    Missing parent directories are created. The new file gets the usual permissions for newly created
    files (0o666 minus the umask), like a plain `open(path, "wb")`.

    Args:
        path: The file to create or replace.
        data: The complete new content.

    Raises:
        OSError: The file cannot be written; the old file, if any, is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging, descriptor = _create_staging_file(target)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    _sync_directory(target.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically (see `atomic_write_bytes`).

    Args:
        path: The file to create or replace.
        text: The complete new content.
        encoding: The text encoding; newlines are written as given, never translated.
    """
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Write `obj` as UTF-8 JSON, followed by a newline, to `path` atomically.

    The object is serialised before anything touches the disk, so an unserialisable object leaves no
    trace. NaN and infinities are refused because they are not valid JSON.

    Args:
        path: The file to create or replace.
        obj: Any value the standard `json` module can serialise.
        indent: Spaces per nesting level, or None for a single line.

    Raises:
        TypeError: `obj` holds a value JSON cannot represent.
        ValueError: `obj` holds NaN or an infinity.
    """
    text = json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False)
    atomic_write_text(path, text + "\n")


@contextlib.contextmanager
def atomic_directory(final_path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory in a staging location and move it to `final_path` only if the block succeeds.

    An existing directory at `final_path` is replaced in three renames: the old one is moved aside,
    the new one moved in, and only then is the old one deleted. If the block raises, the staging
    directory is deleted and `final_path` is untouched.

    Example:
        with atomic_directory("checkpoints/model") as staging:
            atomic_write_json(staging / "config.json", config)

    Args:
        final_path: Where the finished directory should end up.

    Yields:
        The empty staging directory to fill, beside `final_path`.

    Raises:
        FileExistsError: `final_path` exists and is not a directory.
    """
    target = Path(final_path)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _unique_sibling(target, "new")
    staging.mkdir()
    try:
        yield staging
        _sync_tree(staging)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename `staging` to `target`, keeping the old `target` until the new one is in place."""
    if not target.exists():
        os.replace(staging, target)
        _sync_directory(target.parent)
        return
    retired = _unique_sibling(target, "old")
    os.replace(target, retired)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(retired, target)  # put the old version back before reporting the failure
        raise
    _sync_directory(target.parent)
    shutil.rmtree(retired, ignore_errors=True)


def _create_staging_file(target: Path) -> tuple[Path, int]:
    """Create a new, empty staging file beside `target` and return its path and open descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        staging = _unique_sibling(target, "tmp")
        try:
            # Mode 0o666 lets the kernel apply the umask, as for any freshly created file.
            return staging, os.open(staging, flags, 0o666)
        except FileExistsError:  # a 64-bit random collision: try another name
            continue


def _unique_sibling(target: Path, purpose: str) -> Path:
    """A name in `target`'s directory that no other writer will pick."""
    return target.with_name(f"{_STAGING_TAG}{target.name}.{purpose}-{secrets.token_hex(8)}")


def _sync_tree(root: Path) -> None:
    """Flush every file under `root`, and the directories holding them, to disk."""
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as stream:
                os.fsync(stream.fileno())
        _sync_directory(Path(directory))


def _sync_directory(directory: Path) -> None:
    """Flush a directory's entries so a completed rename survives a power cut (POSIX only)."""
    if os.name != "posix":  # Windows cannot open directories; its renames are journaled instead
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        # Some file systems (certain network and FUSE mounts) cannot sync a directory at all; the
        # rename itself has already happened, so there is nothing left to protect.
        if error.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(descriptor)
