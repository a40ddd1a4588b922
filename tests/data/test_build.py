"""Datasets built on disk: the world written by any number of workers, COCO export of the world and back, and
the per-task statistics with drawn samples a person can look at."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from omnivis.data.build import export_coco_dataset, import_coco_dataset, make_world_dataset, world_records
from omnivis.data.parquet import open_dataset
from omnivis.data.stats import dataset_stats
from omnivis.errors import InputError
from omnivis.tasks import TASKS
from omnivis.world import generate_record

SCENES = 70  # more than two chunks of the process pool, so the parallel path really runs


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("world") / "set"
    make_world_dataset(directory, SCENES, seed=5, records_per_shard=32, workers=2, progress=False)
    return directory


def test_workers_do_not_change_a_byte(world: Path, tmp_path: Path) -> None:
    alone = tmp_path / "alone"
    make_world_dataset(alone, SCENES, seed=5, records_per_shard=32, workers=1, progress=False)
    names = sorted(path.name for path in world.iterdir())
    assert names == sorted(path.name for path in alone.iterdir()) == [
        "manifest.json", "shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet",
    ]  # fmt: skip
    for name in names:
        assert (world / name).read_bytes() == (alone / name).read_bytes(), name


def test_records_are_the_generator_s_own_in_index_order(world: Path) -> None:
    dataset = open_dataset(world, verify=True, check_images=True)
    assert len(dataset) == SCENES
    for index in (0, 31, 32, SCENES - 1):
        assert dataset[index] == generate_record(index, 5)


def test_another_seed_gives_other_scenes() -> None:
    first = [record.image for record in world_records(5, seed=1, workers=1)]
    second = [record.image for record in world_records(5, seed=2, workers=1)]
    assert not set(first) & set(second)


def test_unknown_variant_and_negative_count_are_refused() -> None:
    with pytest.raises(InputError, match="unknown world variant 'medium'"):
        next(world_records(1, seed=0, variant="medium"))
    with pytest.raises(InputError, match=">= 0"):
        next(world_records(-1, seed=0))


def test_world_to_coco_to_pycocotools_and_back(world: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "coco" / "instances.json"
    out_json.parent.mkdir()
    export_coco_dataset(world, out_json)
    coco = COCO(str(out_json))
    assert len(coco.getImgIds()) == SCENES
    originals = list(open_dataset(world))
    regions = sum(len(record.regions) for record in originals)
    assert len(coco.getAnnIds()) == regions
    for annotation in coco.loadAnns(coco.getAnnIds()[:50]):
        mask = coco.annToMask(annotation)
        x, y, w, h = annotation["bbox"]
        rows, columns = mask.nonzero()
        # The mask of the polygons lies inside the box (pycocotools rounds edges to whole pixels).
        assert columns.min() >= int(x) - 1 and columns.max() <= x + w + 1
        assert rows.min() >= int(y) - 1 and rows.max() <= y + h + 1
    images_dir = out_json.parent / "instances_images"
    manifest, skipped = import_coco_dataset(out_json, images_dir, tmp_path / "reimported")
    assert skipped == [] and manifest.total_records == SCENES
    assert list(open_dataset(tmp_path / "reimported")) == originals


def test_stats_count_every_task_and_draw_samples(world: Path, artifacts_dir: Path) -> None:
    out = artifacts_dir / "world-samples"
    stats = dataset_stats(world, out, samples_per_task=2)
    manifest = open_dataset(world).manifest
    assert stats.records == SCENES and stats.unrepresentable == {} and stats.problems == []
    assert dict(stats.categories) == manifest.categories
    # Every task the manifest says a record supports gives that record examples, and no other record does.
    assert {task: stats.records_per_task[task] for task in TASKS} == manifest.tasks
    assert all(stats.examples[task] > 0 for task in TASKS)
    drawn = {path.name for path in stats.drawn}
    assert len(drawn) == 2 * len(TASKS)
    assert all((out / name).stat().st_size > 0 for name in drawn)
    saved = json.loads((out / "stats.json").read_text())
    assert saved["records"] == SCENES and saved["examples"]["<OD>"] == SCENES
