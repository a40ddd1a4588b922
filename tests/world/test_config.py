"""The world's knobs: the named variants, the vocabularies, and refusal of unusable configs."""

import dataclasses

import pytest

from omnivis.errors import InputError
from omnivis.world.config import VARIANTS, WorldConfig
from omnivis.world.fonts import FONT_DIRECTORY

REQUIRED_SHAPES = {"circle", "ellipse", "square", "rectangle", "triangle", "star", "hexagon", "cross"}


def test_variants_are_named_after_their_keys() -> None:
    assert {"default", "hard"} <= set(VARIANTS)
    for name, config in VARIANTS.items():
        assert config.name == name


def test_hard_is_harder_than_default() -> None:
    default, hard = VARIANTS["default"], VARIANTS["hard"]
    assert (
        hard.object_count[0] > default.object_count[1] - 1 and hard.object_count[1] > default.object_count[1]
    )
    # Smaller objects: every size class shrinks.
    for (name, low, high), (hard_name, hard_low, hard_high) in zip(
        default.size_classes, hard.size_classes, strict=True
    ):
        assert name == hard_name and hard_low < low and hard_high < high
    assert hard.min_visible_fraction < default.min_visible_fraction  # more occlusion allowed
    assert hard.text_rotation_range > default.text_rotation_range
    assert hard.clutter[1] > default.clutter[1] and hard.background_amplitude > default.background_amplitude


def test_vocabularies_cover_the_issue() -> None:
    config = VARIANTS["default"]
    assert set(config.shapes) >= REQUIRED_SHAPES
    names = [name for name, _ in config.colours]
    assert len(names) >= 8 and len(set(names)) == len(names)
    assert len({rgb for _, rgb in config.colours}) == len(names)
    assert [name for name, _, _ in config.size_classes] == ["small", "medium", "large"]
    assert {"stripes", "dots", "checker"} <= set(config.patterns)
    assert {"flat", "gradient", "noise", "texture"} == set(config.backgrounds)
    assert len(config.text_sizes) >= 3 and len(config.text_colours) >= 3


def test_fonts_are_dejavu_files_shipped_with_matplotlib() -> None:
    for config in VARIANTS.values():
        for font in config.fonts:
            assert font.startswith("DejaVu") and (FONT_DIRECTORY / font).is_file()
    styles = " ".join(VARIANTS["default"].fonts)
    assert all(style in styles for style in ("Sans", "Serif", "Mono", "Bold", "Oblique"))


def test_config_is_frozen_and_hashable() -> None:
    config = VARIANTS["default"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.width = 10  # type: ignore[misc]
    assert hash(config) == hash(WorldConfig())


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"object_count": (5, 2)}, "object_count"),
        ({"shapes": ("circle", "blob")}, "unknown shapes"),
        ({"backgrounds": ("plasma",)}, "unknown backgrounds"),
        ({"words": ('say "hi"',)}, "quotes"),
        ({"lines": ("a <b>",)}, "quotes"),
        ({"size_classes": (("small", 0.1, 0.2), ("large", 0.15, 0.3))}, "size_classes"),
        ({"colours": (("red", (255, 0, 0)),)}, "colours"),
        ({"width": 10}, "at least 64x64"),
        ({"name": "has space"}, "name"),
        ({"text_probability": 1.5}, "text_probability"),
    ],
)
def test_unusable_configs_are_refused_with_the_reason(change: dict[str, object], complaint: str) -> None:
    with pytest.raises(InputError, match=complaint) as raised:
        WorldConfig(name="broken", **change) if "name" not in change else WorldConfig(**change)  # type: ignore[arg-type]
    assert "world config" in str(raised.value)
