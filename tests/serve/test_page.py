"""The page at `/` in a real headless Chromium (Debian's package, driven by Playwright; no browser download)
against a live server over the committed checkpoint: every task run from the page, its answer checked against
`Predictor.run` and its overlay against the answer's shapes, a screenshot of each kept in test-artifacts/page/.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_server import live_server, settings

import omnivis
from omnivis.demo import DEFAULT_CHECKPOINT
from omnivis.predictor import Predictor
from omnivis.tasks import TASKS

pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("OMNIVIS_TEST_ARTIFACTS", "test-artifacts")) / "page"
TOKENS = 48  # the page's answers are the server's defaults: one beam, at most this many tokens
# Where the region tasks' box is dragged, in image pixels of the 256 x 256 scene (shown at scale 1).
DRAG = ((40, 30), (180, 200))


@pytest.fixture(scope="module")
def trained() -> Predictor:
    """The committed checkpoint: its answers hold boxes, quads and polygons for the overlay to show."""
    predictor = omnivis.load(DEFAULT_CHECKPOINT)
    predictor.model.eval()
    return predictor


@pytest.fixture(scope="module")
def page_url(trained: Predictor) -> Iterator[str]:
    serve_settings = settings()
    serve_settings = type(serve_settings)(
        **{**vars(serve_settings), "max_new_tokens": TOKENS, "max_tokens_limit": TOKENS}
    )
    with live_server(trained, serve_settings) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (make test installs it)")
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


def _shape_count(answer: Any) -> int:
    """Shapes the page draws for an answer: each box, each quad, each polygon part of >= 3 points."""
    if not isinstance(answer, dict):
        return 0
    parts = [part for polygon in answer.get("polygons", []) for part in polygon if len(part) >= 6]
    return len(answer.get("bboxes", [])) + len(answer.get("quad_boxes", [])) + len(parts)


def _extents(answer: Any) -> list[tuple[float, float, float, float]]:
    """The bounding rectangle (x0, y0, x1, y1) of every shape the page draws for an answer."""
    if not isinstance(answer, dict):
        return []
    flats = [list(box) for box in answer.get("bboxes", [])] + [
        list(quad) for quad in answer.get("quad_boxes", [])
    ]
    flats += [part for polygon in answer.get("polygons", []) for part in polygon if len(part) >= 6]
    return [(min(flat[0::2]), min(flat[1::2]), max(flat[0::2]), max(flat[1::2])) for flat in flats]


# Drawn (non-transparent) overlay pixels inside a rectangle, widened by the line's width.
COUNT_DRAWN = """([x0, y0, x1, y1]) => {
  const canvas = document.getElementById('overlay');
  const left = Math.max(0, Math.floor(x0) - 3), top = Math.max(0, Math.floor(y0) - 3);
  const right = Math.min(canvas.width, Math.ceil(x1) + 3), bottom = Math.min(canvas.height, Math.ceil(y1) + 3);
  const pixels = canvas.getContext('2d').getImageData(left, top, right - left, bottom - top).data;
  let drawn = 0;
  for (let k = 3; k < pixels.length; k += 4) if (pixels[k] > 0) drawn += 1;
  return drawn;
}"""


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_from_the_page(
    browser: Any, page_url: str, trained: Predictor, scene_png: Path, task: str
) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(page_url)
    page.wait_for_selector(f"#task option[value='{task}']", state="attached")
    page.set_input_files("#file", str(scene_png))
    page.wait_for_function("document.getElementById('picture').width > 0")
    page.select_option("#task", task)
    given: Any = None
    if TASKS[task].input == "text":
        given = "How many shapes are there?" if task == "<VQA>" else "the red circle"
        page.fill("#text", given)
    elif TASKS[task].input == "region":
        box = page.locator("#overlay").bounding_box()
        (x0, y0), (x1, y1) = DRAG
        page.mouse.move(box["x"] + x0, box["y"] + y0)
        page.mouse.down()
        page.mouse.move(box["x"] + x1, box["y"] + y1, steps=5)
        page.mouse.up()
        given = tuple(page.evaluate("state.region"))
    page.click("#run")
    page.wait_for_function("document.getElementById('status').textContent !== 'running…'")
    status = page.inner_text("#status")
    assert status == "done", status
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{task.strip('<>').lower()}.png"), full_page=True)
    result = json.loads(page.inner_text("#json"))
    assert result == trained.run(scene_png.read_bytes(), task, given, num_beams=1, max_new_tokens=TOKENS)
    answer = result[task]
    assert int(page.get_attribute("#overlay", "data-shapes")) == _shape_count(answer)
    for extent in _extents(answer):
        assert page.evaluate(COUNT_DRAWN, list(extent)) > 0, f"nothing drawn for the shape in {extent}"
    if isinstance(answer, str):
        assert page.inner_text("#answer-text").strip() == answer.strip()
    page.close()


def test_region_tasks_wait_for_a_box_and_bad_files_are_refused(
    browser: Any, page_url: str, tmp_path: Path
) -> None:
    page = browser.new_page()
    page.goto(page_url)
    page.wait_for_selector("#task option[value='<REGION_TO_OCR>']", state="attached")
    bogus = tmp_path / "notes.png"
    bogus.write_bytes(b"not an image at all")
    page.set_input_files("#file", str(bogus))
    page.wait_for_function("document.getElementById('status').textContent !== ''")
    assert "not an image" in page.inner_text("#status")
    assert page.is_disabled("#run")
    page.select_option("#task", "<REGION_TO_OCR>")
    assert page.is_visible("#region-row") and not page.is_visible("#text-row")
    page.select_option("#task", "<VQA>")
    assert page.is_visible("#text-row") and not page.is_visible("#region-row")
    page.close()
