"""Locate: a known merchant mark pasted into a synthetic page is found, the heat map and its
PNG are drawn, bad input fails clearly."""

import os

import numpy as np
import pytest
from PIL import Image

import zoo
from zoo.apps.cli import main
from zoo.apps.locating import (NO_MATCH, box_iou, draw_locate, make_search_page,
                          non_max_suppression)


@pytest.fixture(scope="module")
def search_page():
    """A 360 x 480 page of six marks; the query is another drawing of mark 0's identity."""
    return make_search_page(height=360, width=480, num_marks=6, target=0, seed=0)


@pytest.fixture(scope="module")
def found(search_page):
    """The exhaustive sliding-grid search."""
    return zoo.locate(search_page.page, search_page.query, model="sketch_gan_merchant",
                      proposals="grid", progress=False)


@pytest.fixture(scope="module")
def found_ink(search_page):
    """The default search: the page's ink regions."""
    return zoo.locate(search_page.page, search_page.query, model="sketch_gan_merchant",
                      progress=False)


def test_ink_regions_find_the_mark_with_far_fewer_boxes(search_page, found, found_ink):
    assert found_ink.proposals == "ink" and found.proposals == "grid"
    best = found_ink.boxes[0]
    assert box_iou(best, search_page.truth) > 0.5, (best, search_page.truth)
    assert len(found_ink.scores) * 5 <= len(found.scores)
    assert all(box_iou(box, best) <= 0.3 for box in found_ink.boxes[1:])
    # The heat map paints each region's score over its box: highest on the found mark.
    x, y, w, h = best[:4]
    assert found_ink.heat[y + h // 2, x + w // 2] == pytest.approx(best.score)
    assert found_ink.heat.max() == pytest.approx(best.score)


def test_ink_regions_and_grid_options_do_not_mix(search_page):
    with pytest.raises(ValueError, match="pass proposals='grid'"):
        zoo.locate(search_page.page, search_page.query, proposals="ink", stride=0.5,
                   progress=False)
    with pytest.raises(ValueError, match="Expected proposals 'ink' or 'grid'"):
        zoo.locate(search_page.page, search_page.query, proposals="dense", progress=False)


def test_a_pasted_mark_is_found(search_page, found):
    best = found.boxes[0]
    assert box_iou(best, search_page.truth) > 0.5, (best, search_page.truth)
    # The other marks are on the page too, so the runner-up boxes are elsewhere.
    assert len(found.boxes) == 5
    assert all(box_iou(box, best) <= 0.3 for box in found.boxes[1:])
    assert [box.score for box in found.boxes] == sorted((b.score for b in found.boxes),
                                                        reverse=True)


def test_heat_map_peaks_on_the_mark_and_blank_paper_is_no_match(search_page, found):
    page_height, page_width = search_page.page.shape
    assert found.heat.shape == (page_height, page_width)
    peak_y, peak_x = np.unravel_index(np.argmax(found.heat), found.heat.shape)
    x, y, w, h = search_page.truth
    assert x - w // 2 <= peak_x <= x + w + w // 2 and y - h // 2 <= peak_y <= y + h + h // 2
    # Most windows of a sparse page hold no ink: they are not encoded and score -1 ...
    blank = found.scores == NO_MATCH
    assert 0.3 < blank.mean() < 0.95
    # ... and the windows with ink are scored by cosine similarity.
    assert np.all((found.scores[~blank] > -1) & (found.scores[~blank] <= 1 + 1e-5))
    assert found.windows.shape == found.ink_boxes.shape == (len(found.scores), 4)


def test_a_larger_stride_searches_fewer_boxes(search_page, found):
    coarse = zoo.locate(search_page.page, search_page.query, stride=0.5, progress=False)
    assert len(coarse.scores) < len(found.scores) / 3


def test_draw_locate_writes_a_png_atomically(search_page, found, tmp_path):
    path = draw_locate(search_page.page, found, str(tmp_path / "heat.png"))
    with Image.open(path) as image:
        assert image.height == search_page.page.shape[0]
        assert image.width > search_page.page.shape[1]  # the page plus the query panel
        pixels = np.asarray(image.convert("RGB"), np.int32)
    # The best box is outlined in green at its place.
    x, y = found.boxes[0].x, found.boxes[0].y
    assert tuple(pixels[y + found.boxes[0].h // 2, x]) == (40, 200, 80)
    assert os.listdir(tmp_path) == ["heat.png"]  # no temporary file left behind


def test_page_and_query_as_files_through_the_cli(search_page, tmp_path, capsys):
    page_path, query_path = tmp_path / "page.jpg", tmp_path / "query.png"
    assert main(["locate", str(page_path), str(query_path), "--proposals", "ink", "--stride",
                 "0.5"]) == 2  # grid options with ink regions: refused
    Image.fromarray((search_page.page * 255).astype(np.uint8)).save(page_path, quality=90)
    # The query as a scan would come: dark ink on light paper, another size.
    query = Image.fromarray((255 - search_page.query * 180).astype(np.uint8)).resize((90, 90))
    query.save(query_path)
    out = tmp_path / "heat.png"
    assert main(["locate", str(page_path), str(query_path), "--out", str(out),
                 "--scales", "64", "96", "128", "--top", "3"]) == 0
    printed = capsys.readouterr().out
    rows = [line.split() for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows[1:]] == ["1", "2", "3"]
    best = tuple(int(value) for value in rows[1][1:5])
    assert box_iou(best, search_page.truth) > 0.5
    assert out.exists()
    # The default: the page's ink regions.
    assert main(["locate", str(page_path), str(query_path), "--top", "2"]) == 0
    printed = capsys.readouterr().out
    assert "ink regions of the page encoded" in printed
    rows = [line.split() for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert box_iou(tuple(int(value) for value in rows[1][1:5]), search_page.truth) > 0.5


def test_a_blank_page_finds_nothing_without_crashing():
    rng = np.random.default_rng(0)
    paper = np.clip(0.85 + 0.03 * rng.standard_normal((200, 240)), 0, 1).astype(np.float32)
    found = zoo.locate(paper, make_search_page(120, 120, 1, seed=1).query, progress=False)
    assert found.boxes == []
    assert np.all(found.scores == NO_MATCH) and np.all(found.heat == NO_MATCH)


@pytest.mark.parametrize("page_shape, query, options, message", [
    ((300, 400), "blank", {}, "The query cannot be used: Image holds no visible ink"),
    ((100, 80), "mark", {"scales": (128,)}, "smaller than the box of 128x128 px"),
    ((12, 12), "mark", {}, "too small to search"),
    ((300, 400), "mark", {"scales": (4,)}, "at least 8 px"),
    ((300, 400), "mark", {"scales": (64.5,)}, "whole numbers"),
    ((300, 400), "mark", {"stride": 0}, "stride as a fraction of the box side"),
    ((300, 400), "mark", {"stride": 1.5}, "stride as a fraction of the box side"),
    ((300, 400), "mark", {"top": 0}, "top to be a positive integer"),
    ((300, 400), "mark", {"model": "no_such_model"}, "Unknown model 'no_such_model'"),
])
def test_bad_input_fails_clearly(page_shape, query, options, message):
    page = np.full(page_shape, 0.9, np.float32)
    page[page_shape[0] // 4 : page_shape[0] // 2, page_shape[1] // 3] = 0.1  # a stroke
    if query == "blank":
        query = np.full((64, 64), 0.8, np.float32)
    else:
        query = np.zeros((64, 64), np.float32)
        query[10:54, 30:34] = 1.0
    with pytest.raises(ValueError, match=message):
        zoo.locate(page, query, progress=False, **options)


def test_bad_page_arrays_and_files_fail_clearly(tmp_path):
    query = np.zeros((64, 64), np.float32)
    query[10:54, 30:34] = 1.0
    with pytest.raises(ValueError, match=r"Expected the page .* got float values in \[0, 255\]"):
        zoo.locate(np.linspace(0, 255, 100 * 120).reshape(100, 120), query, progress=False)
    with pytest.raises(ValueError, match="Expected the page .* got shape"):
        zoo.locate(np.zeros((2, 100, 120, 1), np.float32), query, progress=False)
    corrupt = tmp_path / "page.png"
    corrupt.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="Cannot decode image"):
        zoo.locate(str(corrupt), query, progress=False)
    assert main(["locate", str(corrupt), str(corrupt)]) == 2


def test_non_max_suppression_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 10, 10], [2, 0, 10, 10]])
    scores = np.array([0.5, 0.9, 0.7, 0.8])
    assert non_max_suppression(boxes, scores, top=5, iou_threshold=0.3) == [1, 2]
    assert non_max_suppression(boxes, scores, top=1, iou_threshold=0.3) == [1]
    assert non_max_suppression(boxes, scores, top=5, iou_threshold=0.99) == [1, 3, 2, 0]
