"""The knobs of the procedural world: what a scene may hold and how it looks, and the named variants.

A `WorldConfig` is a frozen value: the generator's output is a function of the config, the seed and the index
alone. `VARIANTS` holds the configs others train and evaluate on: "default" (a handful of well-separated
objects, upright text) and "hard" (more and smaller objects, more occlusion, rotated text, busier
backgrounds).

Colours are (name, (r, g, b)) pairs: the name is what captions, phrases and answers say, so names within one
vocabulary are distinct single concepts ("light gray", not "grayish").
"""

from __future__ import annotations

from dataclasses import dataclass

from omnivis.errors import InputError
from omnivis.world.geometry import UNIT_OUTLINES

RGB = tuple[int, int, int]
NamedColour = tuple[str, RGB]
# (name, smallest radius, largest radius), radii as fractions of the image's shorter side.
SizeClass = tuple[str, float, float]

SHAPES: tuple[str, ...] = ("circle", "ellipse", "square", "rectangle", "triangle", "star", "hexagon", "cross")
PATTERNS: tuple[str, ...] = ("stripes", "dots", "checker")
BACKGROUND_KINDS: tuple[str, ...] = ("flat", "gradient", "noise", "texture")

# Saturated or dark colours: they stand out against every background colour below.
SHAPE_COLOURS: tuple[NamedColour, ...] = (
    ("red", (215, 40, 40)),
    ("orange", (240, 135, 20)),
    ("yellow", (235, 200, 20)),
    ("green", (40, 150, 60)),
    ("cyan", (20, 175, 200)),
    ("blue", (35, 75, 215)),
    ("purple", (125, 55, 185)),
    ("pink", (235, 105, 175)),
    ("brown", (125, 75, 35)),
    ("gray", (115, 115, 115)),
    ("black", (25, 25, 25)),
)

# Light, barely saturated colours: backgrounds never compete with the objects on them.
BACKGROUND_COLOURS: tuple[NamedColour, ...] = (
    ("white", (242, 242, 238)),
    ("cream", (240, 232, 210)),
    ("beige", (222, 212, 188)),
    ("light gray", (205, 205, 205)),
    ("pale blue", (205, 220, 236)),
    ("pale green", (210, 228, 205)),
    ("pale pink", (238, 214, 220)),
)

TEXT_COLOURS: tuple[NamedColour, ...] = (
    ("black", (20, 20, 20)),
    ("white", (250, 250, 250)),
    ("red", (200, 30, 30)),
    ("blue", (30, 60, 190)),
    ("green", (25, 120, 45)),
    ("brown", (110, 65, 30)),
)

PLATE_COLOURS: tuple[NamedColour, ...] = (
    ("white", (248, 248, 248)),
    ("yellow", (250, 215, 60)),
    ("orange", (245, 150, 40)),
    ("light blue", (150, 200, 240)),
    ("black", (30, 30, 30)),
    ("red", (200, 35, 35)),
    ("blue", (40, 70, 190)),
    ("green", (40, 130, 60)),
)

# Neither colour nor shape words, so a quoted word never reads as an attribute; no double quotes, no "<".
WORDS: tuple[str, ...] = (
    "apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "robot", "candle", "garden",
    "rocket", "planet", "window", "basket", "pepper", "island", "forest", "dragon", "castle", "bridge",
    "anchor", "violin", "jungle", "marble", "falcon", "harbor", "meadow", "orbit", "pixel", "quartz",
    "saddle", "tulip", "walrus", "zebra", "mango", "otter", "kettle", "lantern", "summit", "velvet",
    "STOP", "EXIT", "OPEN", "SALE", "HOTEL", "TAXI", "CAFE", "PARK", "Paris", "Tokyo",
    "Oslo", "Lima", "42", "2024", "B12", "7th", "No. 5", "A-4", "x9", "OK",
)  # fmt: skip

LINES: tuple[str, ...] = (
    "open daily", "fresh bread", "keep left", "no parking", "gate 12", "room 204", "Main Street",
    "Hello World", "Welcome Home", "Exit Only", "Fast Lane", "Quiet Zone", "Free Wifi", "Bus Stop",
    "Sale Today", "Platform 9", "Dock 7", "Lot B", "North Gate", "Coffee Bar", "Since 1987", "Push to open",
)  # fmt: skip

FONTS: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
)

# Characters that would break target text: "<" starts a special token, quotes delimit the written text.
_FORBIDDEN_IN_TEXT = ('"', "<", "\n", "\r")


@dataclass(frozen=True)
class WorldConfig:
    """Everything a scene of the world may contain, as knobs.

    Ranges are inclusive (low, high) pairs. Angles are degrees counter-clockwise on screen, drawn uniformly
    from [-range, range]. Pixel sizes refer to the image as rendered (width x height).
    """

    name: str = "default"  # the variant's name; part of every image_id and of the random stream
    width: int = 256  # image width in pixels
    height: int = 256  # image height in pixels
    object_count: tuple[int, int] = (3, 7)  # how many shapes a scene asks for (placement may drop a few)
    shapes: tuple[str, ...] = SHAPES  # shape vocabulary, each a key of geometry.UNIT_OUTLINES
    colours: tuple[NamedColour, ...] = SHAPE_COLOURS  # shape colours, >= 2
    size_classes: tuple[SizeClass, ...] = (  # radius ranges per size word, disjoint and increasing
        ("small", 0.05, 0.065),
        ("medium", 0.08, 0.10),
        ("large", 0.12, 0.15),
    )
    aspect_range: tuple[float, float] = (0.5, 0.7)  # short / long side of ellipses and rectangles
    pattern_probability: float = 0.25  # chance a shape is filled with a pattern instead of flat colour
    patterns: tuple[str, ...] = PATTERNS  # pattern vocabulary
    rotation_range: float = 45.0  # shapes turn by up to this many degrees either way
    allow_occlusion: bool = True  # shapes of different colours may overlap (later ones in front)
    min_visible_fraction: float = 0.7  # an occluded shape keeps at least this share of its area visible
    text_probability: float = 0.5  # chance a scene holds any text
    text_count: tuple[int, int] = (1, 2)  # how many text objects a scene with text asks for
    line_probability: float = 0.35  # chance a text object is a short line rather than one word
    words: tuple[str, ...] = WORDS  # single words
    lines: tuple[str, ...] = LINES  # short lines of several words
    fonts: tuple[str, ...] = FONTS  # file names in matplotlib's DejaVu font folder
    text_sizes: tuple[int, ...] = (14, 18, 22, 28)  # font sizes in pixels
    text_rotation_range: float = 8.0  # text turns by up to this many degrees either way
    text_colours: tuple[NamedColour, ...] = (
        TEXT_COLOURS  # ink colours, picked to contrast with what is behind
    )
    plate_probability: float = 0.5  # chance text sits on a coloured plate rather than on the background
    plate_colours: tuple[NamedColour, ...] = PLATE_COLOURS  # plate colours
    backgrounds: tuple[str, ...] = BACKGROUND_KINDS  # background kinds to draw from
    background_colours: tuple[NamedColour, ...] = BACKGROUND_COLOURS  # light background colours
    background_amplitude: int = 14  # strength (grey levels) of noise and texture backgrounds
    clutter: tuple[int, int] = (0, 4)  # unannotated faint marks drawn into the background
    clutter_contrast: int = 18  # how far (grey levels) clutter marks stray from the background
    placement_attempts: int = 30  # positions tried per object before it is left out

    def __post_init__(self) -> None:
        problems = list(_config_problems(self))
        if problems:
            raise InputError(f"world config {self.name!r}: " + "; ".join(problems))


def _config_problems(config: WorldConfig) -> list[str]:
    """Every knob that makes the config unusable, as short messages."""
    problems = []
    if not config.name or not config.name.replace("_", "").replace("-", "").isalnum():
        problems.append("name must be non-empty letters, digits, '-' or '_'")
    if config.width < 64 or config.height < 64:
        problems.append(f"image must be at least 64x64, got {config.width}x{config.height}")
    for knob in ("object_count", "text_count", "clutter", "aspect_range"):
        low, high = getattr(config, knob)
        if not 0 <= low <= high:
            problems.append(f"{knob} must be a range 0 <= low <= high, got {(low, high)}")
    unknown = [shape for shape in config.shapes if shape not in UNIT_OUTLINES]
    if unknown or not config.shapes:
        problems.append(f"unknown shapes {unknown}; known: {sorted(UNIT_OUTLINES)}")
    if len(config.colours) < 2:
        problems.append("colours needs at least two entries (overlapping shapes differ in colour)")
    bounds = [bound for _, low, high in config.size_classes for bound in (low, high)]
    if not config.size_classes or bounds != sorted(bounds) or bounds[0] <= 0 or bounds[-1] > 0.3:
        problems.append("size_classes must be disjoint, increasing radius ranges within (0, 0.3]")
    unknown = [kind for kind in config.backgrounds if kind not in BACKGROUND_KINDS]
    if unknown or not config.backgrounds:
        problems.append(f"unknown backgrounds {unknown}; known: {BACKGROUND_KINDS}")
    unknown = [pattern for pattern in config.patterns if pattern not in PATTERNS]
    if unknown:
        problems.append(f"unknown patterns {unknown}; known: {PATTERNS}")
    if not 0 < config.min_visible_fraction <= 1:
        problems.append("min_visible_fraction must be in (0, 1]")
    chances = ("pattern_probability", "text_probability", "line_probability", "plate_probability")
    problems += [f"{knob} must be in [0, 1]" for knob in chances if not 0 <= getattr(config, knob) <= 1]
    if config.placement_attempts < 1 or not config.text_colours:
        problems.append("placement_attempts must be >= 1 and text_colours non-empty")
    texts = config.words + config.lines
    if len(set(texts)) < config.text_count[1] or not config.fonts or not config.text_sizes:
        problems.append("words/lines, fonts and text_sizes must offer enough distinct choices")
    for text in texts:
        if not text.isascii() or any(mark in text for mark in _FORBIDDEN_IN_TEXT) or text != text.strip():
            problems.append(f"text {text!r} must be stripped ASCII without quotes, '<' or newlines")
    return problems


_HARD_SIZES: tuple[SizeClass, ...] = (
    ("small", 0.045, 0.055),
    ("medium", 0.065, 0.08),
    ("large", 0.095, 0.115),
)

# The named worlds. "default": 3-7 shapes, upright text; "hard": 7-14 smaller shapes, more occlusion, text
# turned up to 35 degrees, busier backgrounds; "easy": the first lesson of a curriculum, 1-3 flat-coloured
# shapes apart on a flat background and sometimes one large upright word, so that a model learning from
# scratch finds what in the image its answers depend on before the default world's clutter.
VARIANTS: dict[str, WorldConfig] = {
    "default": WorldConfig(),
    "easy": WorldConfig(
        name="easy",
        object_count=(1, 3),
        pattern_probability=0.0,
        patterns=(),
        rotation_range=15.0,
        allow_occlusion=False,
        text_probability=0.3,
        text_count=(1, 1),
        line_probability=0.0,
        text_sizes=(22, 28),
        text_rotation_range=0.0,
        backgrounds=("flat",),
        clutter=(0, 0),
    ),
    "hard": WorldConfig(
        name="hard",
        object_count=(7, 14),
        size_classes=_HARD_SIZES,
        pattern_probability=0.35,
        rotation_range=180.0,
        min_visible_fraction=0.5,
        text_probability=0.7,
        text_count=(1, 3),
        line_probability=0.5,
        text_sizes=(12, 14, 18, 22),
        text_rotation_range=35.0,
        background_amplitude=24,
        clutter=(6, 14),
        clutter_contrast=24,
    ),
}
