"""The answer finders, on hand-written answer text (the reference comparison is in test_parsing.py)."""

from omnivis.tasks.answers import (
    FoundBox,
    FoundPolygons,
    FoundTextLine,
    answer_text,
    find_boxes,
    find_polygons,
    find_text_lines,
    shoelace_area,
)


def locations(*bins: int) -> str:
    return "".join(f"<loc_{b}>" for b in bins)


def test_answer_text_removes_markers_in_order() -> None:
    assert answer_text("</s><s>car<pad><pad>") == "car"
    # "<s>" goes first: removing it can assemble a "</s>", removed next; the reverse survives.
    assert answer_text("<<s>/s>x") == "x"
    assert answer_text("<</s>s>x") == "<s>x"


def test_find_boxes_labels_spans_and_groups() -> None:
    text = f"car{locations(1, 2, 3, 4, 5, 6, 7, 8, 9)} dog {locations(10, 11, 12, 13)}"
    found = find_boxes(text, labelled=True)
    assert found == [
        FoundBox("car", (1, 2, 3, 4), (3, 3 + len(locations(1, 2, 3, 4)))),
        FoundBox(
            "car", (5, 6, 7, 8), (3 + len(locations(1, 2, 3, 4)), 3 + len(locations(1, 2, 3, 4, 5, 6, 7, 8)))
        ),
        FoundBox("dog", (10, 11, 12, 13), (text.index("<loc_10>"), len(text))),
    ]
    for box in found:
        assert text[box.span[0] : box.span[1]] == locations(*box.bins)


def test_find_boxes_quirks() -> None:
    # A label with a newline inside is dropped with its boxes; a leading newline is fine.
    assert find_boxes(f"a\nb{locations(1, 2, 3, 4)}", labelled=True) == []
    assert [box.label for box in find_boxes(f"\nab{locations(1, 2, 3, 4)}", labelled=True)] == ["ab"]
    # Non-ASCII characters leave labels; banned labels are compared before that.
    assert find_boxes(f"café{locations(1, 2, 3, 4)}", labelled=True)[0].label == "caf"
    assert find_boxes(f"it{locations(1, 2, 3, 4)}", labelled=True, banned_labels=frozenset({"it"})) == []
    # Fewer than four locations make no box; without labels, text is ignored.
    assert find_boxes(f"car{locations(1, 2, 3)}", labelled=True) == []
    assert [box.label for box in find_boxes(f"car{locations(1, 2, 3, 4)}", labelled=False)] == [""]


def test_find_polygons() -> None:
    two_polygons = f"{locations(1, 2, 3, 4, 5, 6)}<sep>{locations(7, 8, 9, 10, 11)}"
    assert find_polygons(two_polygons, labelled=False) == [
        FoundPolygons("", [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10]])
    ]
    bracketed = f"cat<poly>{locations(1, 2, 3, 4)}</poly><poly>{locations(5, 6, 7, 8)}</poly>"
    assert find_polygons(bracketed, labelled=True) == [
        FoundPolygons("cat", [[1, 2, 3, 4]]),
        FoundPolygons("cat", [[5, 6, 7, 8]]),
    ]
    # The label runs up to the first location or <poly>, so a <sep> before them stays in it.
    assert find_polygons(f"cat<sep>{locations(1, 2, 3, 4)}", labelled=True)[0].label == "cat<sep>"


def test_find_text_lines() -> None:
    quad = locations(1, 2, 3, 4, 5, 6, 7, 8)
    assert find_text_lines(f" Hello {quad}World{quad}") == [
        FoundTextLine("Hello", [1, 2, 3, 4, 5, 6, 7, 8]),
        FoundTextLine("World", [1, 2, 3, 4, 5, 6, 7, 8]),
    ]
    # The text of a line cannot cross a newline: only the part after it is kept.
    assert [line.text for line in find_text_lines(f"one\ntwo{quad}")] == ["two"]


def test_shoelace_area_leaves_out_the_closing_edge() -> None:
    # Unit square at the origin: the closing edge's term is zero, so the area is right.
    assert shoelace_area([0, 0, 1, 0, 1, 1, 0, 1]) == 1.0
    # The same square moved right by one: the omitted term (1*0 - 1*1 = -1) makes it 1.5, not 1.
    assert shoelace_area([1, 0, 2, 0, 2, 1, 1, 1]) == 1.5
