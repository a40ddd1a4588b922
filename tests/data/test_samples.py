"""The bundled sample photographs: present, decodable, and exactly the shipped bytes."""

import pytest
from PIL import Image

from omnivis.data.samples import sample_images, sample_records
from omnivis.errors import DatasetError


def test_every_sample_decodes_at_its_recorded_size() -> None:
    records = sample_records()
    assert len(records) == len(sample_images()) >= 10
    for record, sample in zip(records, sample_images(), strict=True):
        record.validate()
        assert record.image == sample.path.read_bytes()
        with Image.open(sample.path) as image:
            assert (record.width, record.height) == image.size
        assert record.image_id == f"skimage-{sample.name}"


def test_samples_include_photographs_and_text_scans() -> None:
    names = {sample.name for sample in sample_images()}
    assert {"astronaut", "coffee", "page", "text"} <= names


def test_selection_keeps_the_order_asked_for() -> None:
    assert [s.name for s in sample_images(["page", "astronaut"])] == ["page", "astronaut"]


def test_unknown_sample_is_named() -> None:
    with pytest.raises(DatasetError, match="lena"):
        sample_images(["lena"])
