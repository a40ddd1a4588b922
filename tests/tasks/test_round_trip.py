"""Round trip of every task: serialize -> tokenize -> `post_process` gives back the example's answer.

Ids are built as generation returns them (decoder start `</s>`, `<s>`, the target's tokens, `</s>`) with the
bundled tokenizer, and parsed by `post_process`. The tolerance rule:

- text (labels, captions, answers, region-to-text answers with their echoed location tokens) comes back
  exactly;
- coordinates are compared at the bin level exactly: the bins the answer finders re-find in the decoded text
  equal `quantize` of the example's float coordinates, in order (polygon vertices keep their order);
- and in pixels: `post_process` returns int((bin + 0.5) * size / 1000), so a returned pixel lies within one
  bin of the true coordinate, plus up to 1 px more from the integer truncation (which matters for images
  smaller than 1,000 px, where a bin is under a pixel): |pixel - truth| <= size / 1000 + 1.

Records come from a hypothesis strategy (random boxes, polygons, quads, texts in a random image size) and from
the procedural world (`omnivis.world`).
"""

import functools
import io
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from omnivis.data.records import (
    CAPTION_LEVELS,
    Caption,
    GroundedPhrase,
    Grounding,
    Provenance,
    QuestionAnswer,
    Record,
    ReferringExpression,
    Region,
    TextLine,
)
from omnivis.loading import bundled_tokenizer
from omnivis.tasks import TASKS, Example, all_examples, build_prompt, post_process
from omnivis.tasks.answers import answer_text, find_boxes, find_polygons, find_text_lines
from omnivis.tasks.locations import NUM_BINS, format_box, quantize
from omnivis.tasks.parsing import BANNED_GROUNDING_PHRASES
from omnivis.tokenizer import Tokenizer

WORLD_RECORDS_PER_VARIANT = 200  # in the default run
SLOW_WORLD_RECORDS = 10_000  # in the slow run, over all variants together

SOURCE = Provenance("test")


@functools.cache
def tokenizer() -> Tokenizer:
    return bundled_tokenizer()


def generated_ids(target: str) -> list[int]:
    """The ids generation returns for a target: decoder start `</s>`, `<s>`, the target, `</s>`."""
    ids = tokenizer().encode(target)
    return [tokenizer().eos_token_id, tokenizer().bos_token_id, *ids, tokenizer().eos_token_id]


def assert_coordinates(
    pixels: list[list[int]], bins: list[list[int]], truth: list[list[float]], size: tuple[int, int]
) -> None:
    assert [len(item) for item in pixels] == [len(item) for item in bins] == [len(item) for item in truth]
    flat_truth = [value for item in truth for value in item]
    # One quantize call for all coordinates: x and y alternate throughout, as every item has an even length.
    assert [value for item in bins for value in item] == quantize(flat_truth, size)
    flat_pixels = [value for item in pixels for value in item]
    for index, (pixel, value) in enumerate(zip(flat_pixels, flat_truth, strict=True)):
        bin_size = size[index % 2] / NUM_BINS
        assert abs(pixel - value) <= bin_size + 1, (index, pixel, value, size)


def assert_round_trip(example: Example, size: tuple[int, int]) -> None:
    """`post_process` of the example's target gives back its answer, under the tolerance rule above; and the
    example's input is one `build_prompt` takes."""
    prompt = build_prompt(example.task, example.input, image_size=size)
    if TASKS[example.task].input == "region":
        region = format_box(example.input, size)
        assert region in prompt
        if TASKS[example.task].parse_type == "pure_text":  # region-to-text answers echo the region
            assert example.target.endswith(region)
    ids = generated_ids(example.target)
    parsed = post_process(example.task, ids, tokenizer(), size)[example.task]
    parse_type = TASKS[example.task].parse_type
    text = answer_text(tokenizer().decode(ids))
    answer = example.answer
    if parse_type == "pure_text":
        assert parsed == answer
    elif parse_type == "ocr":
        assert parsed["labels"] == answer["labels"]
        found = [line.bins for line in find_text_lines(text)]
        assert_coordinates(parsed["quad_boxes"], found, answer["quad_boxes"], size)
    elif parse_type == "polygons":
        assert parsed["labels"] == answer["labels"] == [""]
        (found,) = find_polygons(text, labelled=False)
        (returned,), (true,) = parsed["polygons"], answer["polygons"]
        assert_coordinates(returned, found.polygons, true, size)
    else:
        labels = "bboxes_labels" if parse_type == "description_with_bboxes_or_polygons" else "labels"
        assert parsed[labels] == answer[labels]
        banned = frozenset(BANNED_GROUNDING_PHRASES) if parse_type == "phrase_grounding" else frozenset()
        found = [box.bins for box in find_boxes(text, labelled=parse_type != "bboxes", banned_labels=banned)]
        assert_coordinates(parsed["bboxes"], found, answer["bboxes"], size)
        assert set(parsed) == set(answer)
        if labels == "bboxes_labels":
            assert parsed["polygons"] == answer["polygons"] == []


def expected_counts(record: Record) -> Counter:
    """Examples each task should give for a record, stated from the annotations alone (the serializers'
    documented rules): crowd regions are no object; segmentation needs polygons; a region-to-description
    needs a description; open-vocabulary detection asks once per category and once per referring
    expression."""
    objects = [region for region in record.regions if not region.is_crowd]
    referred = [
        referring
        for referring in record.referring
        if not 0 <= referring.region < len(record.regions) or record.regions[referring.region].polygons
    ]
    levels = Counter(caption.level for caption in record.captions)
    categories = len({region.category for region in objects})
    return Counter(
        {
            "<OCR>": int(bool(record.text_lines)),
            "<OCR_WITH_REGION>": int(bool(record.text_lines)),
            "<CAPTION>": levels["brief"],
            "<DETAILED_CAPTION>": levels["detailed"],
            "<MORE_DETAILED_CAPTION>": levels["more_detailed"],
            "<OD>": int(bool(objects)),
            "<DENSE_REGION_CAPTION>": int(any(region.phrase for region in objects)),
            "<REGION_PROPOSAL>": int(bool(objects)),
            "<CAPTION_TO_PHRASE_GROUNDING>": len(record.groundings),
            "<REFERRING_EXPRESSION_SEGMENTATION>": len(referred),
            "<REGION_TO_SEGMENTATION>": sum(1 for region in objects if region.polygons),
            "<OPEN_VOCABULARY_DETECTION>": categories + len(record.referring),
            "<REGION_TO_CATEGORY>": len(objects),
            "<REGION_TO_DESCRIPTION>": sum(1 for region in objects if region.description),
            "<REGION_TO_OCR>": len(record.text_lines),
            "<VQA>": len(record.questions),
        }
    )


def check_record(record: Record) -> tuple[Counter, Counter]:
    """Round-trip every example of a record; check that every expected example was made or reported.

    Returns:
        Examples made per task, and refusals reported per task.
    """
    made, refused = all_examples(record)
    for example in made:
        assert_round_trip(example, record.image_size)
    assert all(item.image_id == record.image_id and item.reason for item in refused)
    made_counts = Counter(example.task for example in made)
    refused_counts = Counter(item.task for item in refused)
    for task, expected in expected_counts(record).items():
        missing = expected - made_counts[task]
        # Nothing is dropped silently: an example is made, or its absence is reported.
        assert missing >= 0 and (missing == 0) == (refused_counts[task] == 0), (task, expected, made, refused)
    return made_counts, refused_counts


# --- why the serializers refuse what they refuse ---------------------------------------------------------


def loc(*bins: int) -> str:
    return "".join(f"<loc_{b}>" for b in bins)


BOX, OTHER_BOX = loc(600, 200, 700, 401), loc(300, 40, 400, 160)

# The target a naive serializer would write for an annotation the serializers refuse, and what
# `post_process` makes of it on a 1000 x 500 image: never the annotation.
NAIVE_TARGETS = [
    ("<OD>", "red\nstar" + BOX, {"bboxes": [], "labels": []}),  # cut at the newline: the box is lost
    ("<OD>", "étoile" + BOX, {"bboxes": [[600, 100, 700, 200]], "labels": ["toile"]}),
    ("<OD>", " star" + BOX, {"bboxes": [[600, 100, 700, 200]], "labels": ["star"]}),
    # An empty label: its box joins the label before it.
    (
        "<OD>",
        "star" + BOX + OTHER_BOX,
        {"bboxes": [[600, 100, 700, 200], [300, 20, 400, 80]], "labels": ["star"] * 2},
    ),
    ("<CAPTION_TO_PHRASE_GROUNDING>", "it" + BOX, {"bboxes": [], "labels": []}),
    (
        "<OCR_WITH_REGION>",
        "OPEN" + loc(*[100] * 8) + loc(*[200] * 8),
        {"quad_boxes": [[100, 50] * 4], "labels": ["OPEN"]},
    ),
    ("<CAPTION>", "A star.\n", "A star."),
    ("<REGION_TO_DESCRIPTION>", "a star <s>", "a star"),
]


@pytest.mark.parametrize(("task", "target", "parsed"), NAIVE_TARGETS)
def test_what_refused_annotations_would_parse_to(task: str, target: str, parsed: object) -> None:
    assert post_process(task, generated_ids(target), tokenizer(), (1000, 500))[task] == parsed


# --- random records ---------------------------------------------------------------------------------------

IMAGE = io.BytesIO()
Image.new("RGB", (4, 4)).save(IMAGE, format="PNG")
# Serializers never decode the image, so every random record carries the same small PNG.
PNG = IMAGE.getvalue()

WORD = st.from_regex(r"[A-Za-z][a-z0-9]{0,7}", fullmatch=True)
# Labels every task can write: ASCII words, no banned grounding phrase.
CLEAN_LABEL = (
    st.lists(WORD, min_size=1, max_size=3)
    .map(" ".join)
    .filter(lambda text: text not in BANNED_GROUNDING_PHRASES)
)
# Plain text: any characters but "<", line breaks inside, nothing around.
CLEAN_TEXT = (
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="<"), min_size=1, max_size=30)
    .map(str.strip)
    .filter(bool)
)
# Text lines: plain text on one line.
CLEAN_LINE = CLEAN_TEXT.map(lambda text: " ".join(text.split())).filter(bool)
# Anything, and the troublemakers: special tokens, banned phrases, newlines, padding, non-ASCII, emptiness.
ANY_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["it", "a", "the image", " x", "x ", "<s>", "a<loc_5>", "</s>x", "é", "x\ny", "\n", "", "<pad>"]
    ),
    CLEAN_LABEL,
)


def coordinate(limit: int) -> st.SearchStrategy[float]:
    return st.one_of(st.floats(0, limit, allow_nan=False), st.integers(0, limit).map(float))


@st.composite
def records(
    draw: st.DrawFn, label: st.SearchStrategy[str], text: st.SearchStrategy[str], line: st.SearchStrategy[str]
) -> Record:
    width, height = draw(st.integers(1, 1600)), draw(st.integers(1, 1600))

    def box() -> tuple[float, float, float, float]:
        x0, x1 = sorted(draw(coordinate(width)) for _ in range(2))
        y0, y1 = sorted(draw(coordinate(height)) for _ in range(2))
        return x0, y0, x1, y1

    def points(count: int) -> tuple[float, ...]:
        return tuple(draw(coordinate(width if index % 2 == 0 else height)) for index in range(2 * count))

    # Dense region captions need a phrase for every region or none (one missing among others is refused).
    phrases = label if draw(st.booleans()) else st.just("")
    regions = tuple(
        Region(
            box(),
            draw(label),
            SOURCE,
            phrase=draw(phrases),
            description=draw(st.one_of(st.just(""), text)),
            polygons=tuple(points(draw(st.integers(3, 6))) for _ in range(draw(st.integers(0, 2)))),
            is_crowd=draw(st.booleans()) and draw(st.booleans()),
        )
        for _ in range(draw(st.integers(0, 5)))
    )
    return Record(
        image_id=f"random-{width}x{height}",
        image=PNG,
        width=width,
        height=height,
        source="test",
        captions=tuple(
            Caption(draw(st.sampled_from(CAPTION_LEVELS)), draw(text), SOURCE)
            for _ in range(draw(st.integers(0, 3)))
        ),
        regions=regions,
        text_lines=tuple(TextLine(draw(line), points(4), SOURCE) for _ in range(draw(st.integers(0, 3)))),
        groundings=tuple(grounding(draw, label, box) for _ in range(draw(st.integers(0, 2)))),
        referring=tuple(
            ReferringExpression(draw(label), draw(st.integers(0, len(regions) - 1)), SOURCE)
            for _ in range(draw(st.integers(0, 2) if regions else st.just(0)))
        ),
        questions=tuple(
            QuestionAnswer(draw(label) + "?", draw(text), "other", SOURCE)
            for _ in range(draw(st.integers(0, 2)))
        ),
    )


def grounding(draw: st.DrawFn, label: st.SearchStrategy[str], box) -> Grounding:
    """A caption of phrases joined by " and ", each grounded to 0-2 boxes (the first to at least one)."""
    phrases, caption = [], ""
    for index in range(draw(st.integers(1, 3))):
        caption += " and " if index else ""
        phrase = draw(label)
        boxes = tuple(box() for _ in range(draw(st.integers(0 if index else 1, 2))))
        phrases.append(GroundedPhrase(phrase, len(caption), len(caption) + len(phrase), boxes))
        caption += phrase
    return Grounding(caption, tuple(reversed(phrases)), SOURCE)


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(records(CLEAN_LABEL, CLEAN_TEXT, CLEAN_LINE))
def test_clean_random_records_write_every_annotation_and_parse_back(record: Record) -> None:
    record.validate()
    made, refused = check_record(record)
    assert sum(refused.values()) == 0
    assert made == +expected_counts(record)


@SETTINGS
@given(records(ANY_TEXT, ANY_TEXT, ANY_TEXT))
def test_every_example_written_parses_back_and_every_refusal_is_reported(record: Record) -> None:
    check_record(record)


# --- the procedural world ---------------------------------------------------------------------------------


def world_records(variant: str, count: int, seed: int) -> Iterator[Record]:
    # Imported here, not at the top, so that the random-record tests above run without the world.
    from omnivis.world import VARIANTS, generate

    return generate(count, seed, VARIANTS[variant])


def world_variants() -> list[str]:
    from omnivis.world import VARIANTS

    return list(VARIANTS)


@pytest.mark.parametrize("variant", ["default", "hard"])
def test_world_records_round_trip(variant: str) -> None:
    made: Counter = Counter()
    for record in world_records(variant, WORLD_RECORDS_PER_VARIANT, seed=3):
        record_made, record_refused = check_record(record.validate())
        # The world writes exact truth in representable text: nothing may be refused.
        assert not record_refused, all_examples(record)[1]
        made += record_made
    # It holds every annotation type, so every task gets examples.
    assert set(made) == set(TASKS)


@pytest.mark.slow
def test_world_at_scale_drops_nothing_silently() -> None:
    made: Counter = Counter()
    refused: Counter = Counter()
    variants = world_variants()
    for variant in variants:
        for record in world_records(variant, SLOW_WORLD_RECORDS // len(variants), seed=11):
            record_made, record_refused = check_record(record)
            made += record_made
            refused += record_refused
    print("\nexamples per task:", dict(made), "\nunrepresentable per task:", dict(refused))
    assert not refused
    assert set(made) == set(TASKS)
