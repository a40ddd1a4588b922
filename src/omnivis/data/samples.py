"""Real photographs and text scans for smoke tests and the demo, from packages installed with omnivis.

Nothing is fetched: the images are files scikit-image ships inside its wheel (its `skimage/data` folder), read
from disk as they are. They have no annotations; they show a model on pictures unlike the procedural world.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from omnivis.data.records import Record
from omnivis.errors import DatasetError
from omnivis.images import load_image

SOURCE = "skimage"


@dataclass(frozen=True)
class SampleImage:
    """One bundled sample: its name, what it shows, and its file."""

    name: str
    description: str
    path: Path


# The scikit-image files worth showing a vision model: colour photographs, grey photographs and text scans.
_SKIMAGE_FILES = {
    "astronaut": ("astronaut.png", "portrait of an astronaut in a spacesuit with a flag"),
    "chelsea": ("chelsea.png", "a tabby cat"),
    "coffee": ("coffee.png", "a cup of coffee on a saucer with a spoon"),
    "rocket": ("rocket.jpg", "a rocket on its launch pad"),
    "motorcycle": ("motorcycle_left.png", "a motorcycle in a workshop"),
    "camera": ("camera.png", "a photographer with a camera on a tripod (greyscale)"),
    "coins": ("coins.png", "coins on a dark background (greyscale)"),
    "hubble": ("hubble_deep_field.jpg", "galaxies of the Hubble deep field"),
    "text": ("text.png", "printed and hand-written text on a page (greyscale)"),
    "page": ("page.png", "a scanned page of printed text (greyscale)"),
}


def _skimage_data_directory() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise DatasetError("the sample images come with scikit-image, which is not installed")
    return Path(spec.origin).parent / "data"


def sample_images(names: list[str] | None = None) -> list[SampleImage]:
    """The bundled sample images, all or those named.

    Args:
        names: Names to select (keys such as "astronaut", "page"); None for all, in a fixed order.

    Raises:
        DatasetError: An unknown name, or a sample file missing from the installed package.
    """
    chosen = list(_SKIMAGE_FILES) if names is None else names
    unknown = [name for name in chosen if name not in _SKIMAGE_FILES]
    if unknown:
        raise DatasetError(f"unknown sample images {unknown}; known: {', '.join(_SKIMAGE_FILES)}")
    directory = _skimage_data_directory()
    samples = []
    for name in chosen:
        file_name, description = _SKIMAGE_FILES[name]
        path = directory / file_name
        if not path.is_file():
            raise DatasetError(f"sample image {name!r} is missing: {path} does not exist")
        samples.append(SampleImage(name, description, path))
    return samples


def sample_records(names: list[str] | None = None) -> list[Record]:
    """The sample images as un-annotated records (image_id "skimage-<name>"), bytes exactly as shipped."""
    records = []
    for sample in sample_images(names):
        width, height = load_image(sample.path).size
        records.append(
            Record(
                image_id=f"{SOURCE}-{sample.name}",
                image=sample.path.read_bytes(),
                width=width,
                height=height,
                source=SOURCE,
                metadata={"description": sample.description, "file": sample.path.name},
            )
        )
    return records
