"""Strict reading of COCO-family JSON files: loading, typed field access, and the triage of bad items.

COCO instance, caption and RefCOCO files are read by `omnivis.data.coco` and `omnivis.data.refcoco`; both
check every field with `field_of`, whose errors carry the bare reason, and hand each bad item to a `Triage`,
which either raises a `DatasetError` naming the file and the item or, under `skip_bad`, lists it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnivis.errors import DatasetError


@dataclass(frozen=True)
class SkippedItem:
    """One item an import left out under `skip_bad=True`.

    Attributes:
        file: The JSON file the item is in.
        what: The item, e.g. "image 42", "annotation 7", "caption annotation 12", "ref 3", or
            "image #5" (its position in the list) when it has no usable id.
        reason: What is wrong with it.
    """

    file: str
    what: str
    reason: str


@dataclass
class Triage:
    """Routes each bad item: raise `DatasetError` (the default) or, under `skip_bad`, list it as skipped.

    Attributes:
        skip_bad: List bad items instead of raising.
        skipped: The items listed so far, in the order met.
    """

    skip_bad: bool
    skipped: list[SkippedItem] = field(default_factory=list)

    def reject(self, file: Path, what: str, reason: str) -> None:
        """Report a bad item.

        Raises:
            DatasetError: "<file>: <what>: <reason>", unless `skip_bad` is set.
        """
        if not self.skip_bad:
            raise DatasetError(f"{file}: {what}: {reason}")
        self.skipped.append(SkippedItem(str(file), what, reason))


def load_json(path: Path) -> Any:
    """Parse a JSON file (UTF-8, -16 or -32, as `json.loads` detects).

    Raises:
        DatasetError: The file cannot be read or is not valid JSON, naming the file and the position.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"{path}: cannot be read ({error.strerror or error})") from error
    try:
        return json.loads(data)
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from error
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON text ({error})") from error


def top_level_list(document: Any, key: str, path: Path, *, required: bool = True) -> list[Any]:
    """`document[key]`, which must be a list; an empty list when absent and not `required`.

    Raises:
        DatasetError: The document is not an object, or the key is missing or not a list.
    """
    if not isinstance(document, dict):
        raise DatasetError(f"{path}: the top level must be a JSON object, got {type(document).__name__}")
    if key not in document:
        if required:
            raise DatasetError(f"{path}: missing the top-level {key!r} list")
        return []
    value = document[key]
    if not isinstance(value, list):
        raise DatasetError(f"{path}: top-level {key!r} must be a list, got {type(value).__name__}")
    return value


def is_int(value: object) -> bool:
    """An integer, and not a bool (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An int or float, and not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


# Each kind `field_of` can require, by the words its error message uses.
_KINDS: dict[str, Callable[[object], bool]] = {
    "an integer": is_int,
    "a number": is_number,
    "a number or null": lambda value: value is None or is_number(value),
    "a string": lambda value: isinstance(value, str),
    "a list": lambda value: isinstance(value, list),
    "an object": lambda value: isinstance(value, dict),
}

# Marks "no default": the field is required.
_REQUIRED: Any = object()


def field_of(entry: Any, key: str, kind: str, *, default: Any = _REQUIRED) -> Any:
    """`entry[key]`, checked to be of `kind` (a key of `_KINDS`, e.g. "an integer").

    Args:
        entry: A JSON object.
        key: The field.
        kind: What the value must be; a JSON null only passes as "a number or null".
        default: Returned when the field is absent (or null); without one the field is required.

    Raises:
        DatasetError: With the bare reason; the caller adds the file and the item.
    """
    if not isinstance(entry, dict):
        raise DatasetError(f"expected a JSON object holding {key!r}, got {type(entry).__name__}")
    if entry.get(key) is None and default is not _REQUIRED:
        return default
    if key not in entry:
        raise DatasetError(f"missing {key!r}")
    value = entry[key]
    if not _KINDS[kind](value):
        raise DatasetError(f"{key!r} must be {kind}, got {value!r:.60}")
    return value


def numbers_of(values: list[Any], what: str, *, count: int | None = None) -> tuple[float, ...]:
    """A JSON list of numbers as floats; `count`, when given, is the exact length required.

    Raises:
        DatasetError: An element is not a number, or the length is wrong.
    """
    if count is not None and len(values) != count:
        raise DatasetError(f"{what} needs {count} numbers, got {len(values)}")
    if not all(is_number(value) for value in values):
        raise DatasetError(f"{what} must hold only numbers, got {values!r:.80}")
    return tuple(float(value) for value in values)
