"""`format_table` lays metrics out exactly; `write_report` writes a safe, self-contained page and drawings."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnivis.draw import PALETTE
from omnivis.errors import InputError
from omnivis.eval.report import METRIC_ORDER, GalleryItem, TaskGallery, format_table, write_report

GREY = (128, 128, 128)
NASTY_LABEL = '<b>&"x"'
NASTY_LABEL_ESCAPED = "&lt;b&gt;&amp;&quot;x&quot;"


def _png(width: int, height: int, colour: tuple[int, int, int] = GREY) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


class _Images(HTMLParser):
    """Collects every `src` and `href` the page references, as a browser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name == "src" and value is not None:
                self.sources.append(value)
            if name == "href" and value is not None:
                self.links.append(value)


def _item(
    task: str,
    image_id: str,
    image: bytes,
    prediction: object,
    truth: object,
    *,
    input: str | None = None,
    score: float | None = None,
) -> GalleryItem:
    return GalleryItem(task, image_id, input, score, image, prediction, truth)


def _single_item_page(out_dir: Path, item: GalleryItem, *, worst: bool = False) -> str:
    gallery = TaskGallery(best=[], worst=[item]) if worst else TaskGallery(best=[item], worst=[])
    return write_report(out_dir, {}, {}, {item.task: gallery}).read_text(encoding="utf-8")


def _parse(page: str) -> _Images:
    parser = _Images()
    parser.feed(page)
    parser.close()
    return parser


# ---------------------------------------------------------------------------------------------- format_table


def test_format_table_exact_layout() -> None:
    metrics = {
        "<OD>": {"CER": 0.123456, "AP50": 0.75, "AP": 0.5},
        "<CAPTION>": {"BLEU-4": None, "CIDEr": 1.25},
    }
    # Columns in METRIC_ORDER (AP, AP50, CIDEr, BLEU-4, CER), right-aligned, two spaces apart; the task column
    # is as wide as "<CAPTION>"; a missing cell is blank and trailing blanks are dropped.
    expected = "\n".join(
        [
            "task           AP    AP50   CIDEr  BLEU-4     CER",
            "-------------------------------------------------",
            "<OD>       0.5000  0.7500                  0.1235",
            "<CAPTION>                  1.2500     n/a",
        ]
    )
    assert format_table(metrics) == expected


def test_format_table_orders_known_metrics_first_then_unknown_sorted() -> None:
    metrics = {"t": {"zeta": 1.0, "CER": 0.1, "Alpha": 2.0, "AP": 0.3, "accuracy": 0.9, "WER": 0.2}}
    header = format_table(metrics).splitlines()[0].split()
    assert header == ["task", "AP", "CER", "WER", "accuracy", "Alpha", "zeta"]


def test_format_table_keeps_error_rates_and_rounds_to_four_decimals() -> None:
    table = format_table({"<OCR>": {"CER": 0.25, "WER": 2 / 3}, "<VQA>": {"accuracy": 1}})
    assert table.splitlines()[2].split() == ["<OCR>", "0.2500", "0.6667"]  # not inverted to 0.75 / 0.3333
    assert table.splitlines()[3].split() == ["<VQA>", "1.0000"]


def test_format_table_rows_keep_task_order_and_unicode() -> None:
    table = format_table({"<Z>": {"AP": 0.1}, "<Ä>": {"AP": 0.2}, "<A>": {"AP": None}})
    assert [line.split()[0] for line in table.splitlines()[2:]] == ["<Z>", "<Ä>", "<A>"]
    assert table.splitlines()[4] == "<A>      n/a"  # "task" sets the width: 4 + 2 + 6


def test_format_table_empty_and_metricless_tasks() -> None:
    assert format_table({}) == "task\n----"
    assert format_table({"<OD>": {}}) == "task\n----\n<OD>"


@pytest.mark.parametrize("value", ["0.5", True, [0.5]])
def test_format_table_rejects_non_numbers(value: object) -> None:
    with pytest.raises(InputError, match="real number"):
        format_table({"<OD>": {"AP": value}})  # type: ignore[dict-item]


def test_metric_order_lists_the_documented_names() -> None:
    assert METRIC_ORDER[:3] == ("AP", "AP50", "AP75") and METRIC_ORDER[-1] == "accuracy"
    assert METRIC_ORDER.index("CIDEr") < METRIC_ORDER.index("BLEU-4") < METRIC_ORDER.index("CER")


# ---------------------------------------------------------------------------------------------- write_report

OD_METRICS = {"AP": 0.4321, "AP50": 0.8765, "APs": None, "custom": 12.5}
CAPTION_METRICS = {"CIDEr": 0.9012, "BLEU-4": 0.3456}


def _od_item(image_id: str, prediction: object, score: float | None = 0.75) -> GalleryItem:
    truth = {"bboxes": [[10.0, 10.0, 50.0, 40.0]], "labels": [NASTY_LABEL]}
    return _item("<OD>", image_id, _png(64, 48), prediction, truth, score=score)


def _caption_item(image_id: str, prediction: str | None, input_text: str | None) -> GalleryItem:
    image = _png(40, 30, (20, 90, 160))
    return _item("<CAPTION>", image_id, image, prediction, "a cat & a dog", input=input_text)


def _write_two_tasks(out_dir: Path) -> Path:
    od_prediction = {"bboxes": [[5.0, 5.0, 30.0, 30.0]], "labels": ["cat"], "scores": [0.9]}
    galleries = {
        "<OD>": TaskGallery(
            best=[_od_item("图像-ünï<1>", od_prediction)],
            worst=[_od_item("plain-id", None, score=None)],
        ),
        "<CAPTION>": TaskGallery(
            best=[_caption_item("cap-1", f"a caption {NASTY_LABEL}", input_text="what & why <now>?")],
            worst=[],
        ),
    }
    details = {
        "<OD>": {
            "queries": 40,
            "scored": 38,
            "missing": 2,
            "skipped": {"unknown image id": 3, "bad <box>": 1},
            "rules": ["detections ranked by box scores", "crowd boxes ignored"],
            "seconds": 1.5,
        },
        "<CAPTION>": {"skipped": {}, "rules": []},
    }
    metrics = {"<OD>": OD_METRICS, "<CAPTION>": CAPTION_METRICS}
    return write_report(out_dir, metrics, details, galleries, title="eval <run> & co")


def test_write_report_files_metrics_and_details(tmp_path: Path) -> None:
    report = _write_two_tasks(tmp_path / "out")
    assert report == tmp_path / "out" / "report.html"
    page = report.read_text(encoding="utf-8")
    for text in ["0.4321", "0.8765", "12.5000", "n/a", "0.9012", "0.3456", "custom", "CIDEr", "BLEU-4"]:
        assert text in page
    details = ["queries", ">40<", ">38<", "unknown image id: 3", "bad &lt;box&gt;: 1", "crowd boxes ignored"]
    for text in [*details, "1.5000"]:
        assert text in page
    assert "eval &lt;run&gt; &amp; co" in page and "<run>" not in page
    assert page.index("&lt;OD&gt;") < page.index("&lt;CAPTION&gt;")


def test_write_report_escapes_every_text(tmp_path: Path) -> None:
    page = _write_two_tasks(tmp_path).read_text(encoding="utf-8")
    assert NASTY_LABEL not in page
    assert NASTY_LABEL_ESCAPED in page  # the truth label and the caption prediction, as text
    assert "图像-ünï&lt;1&gt;" in page and "<1>" not in page
    assert "what &amp; why &lt;now&gt;?" in page
    assert "a cat &amp; a dog" in page
    # Only the page's own markup: no data text turned into tags.
    allowed = "html head meta title style body h1 h2 h3 table tr th td p section dl dt dd ul li div article"
    assert _parse(page).tags <= set(f"{allowed} code q figure figcaption img pre".split())


def test_write_report_is_self_contained_and_its_drawings_open(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    page = _write_two_tasks(out_dir).read_text(encoding="utf-8")
    parsed = _parse(page)
    assert "<script" not in page and "://" not in page and not parsed.links
    # 3 samples drawn, each as prediction and truth.
    assert len(parsed.sources) == 6 and len(set(parsed.sources)) == 6
    for source in parsed.sources:
        assert source.startswith("gallery/")
        name = source.removeprefix("gallery/")
        assert re.fullmatch(r"[A-Za-z0-9-]+\.png", name), name
        assert "plain" not in name and "cap" not in name  # never derived from the image id
        with Image.open(out_dir / source) as image:
            assert image.format == "PNG"
            image.load()
    assert sorted(path.name for path in (out_dir / "gallery").iterdir()) == sorted(
        source.removeprefix("gallery/") for source in parsed.sources
    )


def test_none_prediction_draws_the_bare_image_with_a_note(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    page = _single_item_page(out_dir, _od_item("no-answer", None, score=None))
    assert "no answer" in page
    sources = _parse(page).sources
    prediction_source = next(source for source in sources if "prediction" in source)
    truth_source = next(source for source in sources if "truth" in source)
    prediction = np.asarray(Image.open(out_dir / prediction_source).convert("RGB"))
    assert prediction.shape == (48, 64, 3) and (prediction == GREY).all()
    truth = np.asarray(Image.open(out_dir / truth_source).convert("RGB"))
    assert tuple(truth[25, 10]) == PALETTE[0]  # left edge of the truth box 10,10..50,40


def test_large_images_are_shrunk_with_their_boxes(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    answer = {"bboxes": [[100.0, 50.0, 200.0, 250.0]], "labels": [""]}
    page = _single_item_page(out_dir, _item("<OD>", "big", _png(1024, 512), answer, answer, score=1.0))
    source = _parse(page).sources[0]
    drawing = np.asarray(Image.open(out_dir / source).convert("RGB"))
    assert drawing.shape == (256, 512, 3)  # long side 512, aspect kept
    # The box is drawn at half its coordinates: left edge x=50 for y in 25..125.
    assert tuple(drawing[75, 50]) == PALETTE[0]
    assert tuple(drawing[150, 100]) == GREY  # where the unscaled left edge would have been
    assert tuple(drawing[200, 400]) == GREY


def test_unknown_answer_shape_and_text_answers(tmp_path: Path) -> None:
    odd = _item("<OD>", "odd", _png(32, 32), {"foo": 1}, ["not", "an", "answer"], input="0,0,5,5", score=0.1)
    page = _single_item_page(tmp_path, odd, worst=True)
    assert "cannot draw this answer" in page and "foo: 1" in page
    assert "0.1000" in page and "0,0,5,5" in page
    assert ">none<" in page  # the empty "best" list


def test_rerun_replaces_earlier_drawings(tmp_path: Path) -> None:
    _write_two_tasks(tmp_path)
    assert len(list((tmp_path / "gallery").iterdir())) == 6
    page = write_report(tmp_path, {"<OD>": {"AP": 0.5}}, {}, {}).read_text(encoding="utf-8")
    assert list((tmp_path / "gallery").iterdir()) == []
    assert "0.5000" in page and "0.4321" not in page


def test_task_tokens_without_letters_still_get_safe_unique_names(tmp_path: Path) -> None:
    items = {
        "<>": TaskGallery(best=[_caption_item("a", "x", None)], worst=[]),
        "<<>>": TaskGallery(best=[_caption_item("b", "y", None)], worst=[]),
    }
    page = write_report(tmp_path, {}, {}, items).read_text(encoding="utf-8")
    sources = _parse(page).sources
    assert len(set(sources)) == 4
    assert all(re.fullmatch(r"gallery/[A-Za-z0-9-]+\.png", source) for source in sources)


def test_undecodable_image_names_the_sample(tmp_path: Path) -> None:
    broken = _item("<OD>", "broken-1", b"not an image", None, None)
    with pytest.raises(InputError, match="broken-1"):
        _single_item_page(tmp_path, broken)
    assert not (tmp_path / "report.html").exists()
