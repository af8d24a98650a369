"""The synthetic page archive: deterministic pages, hidden queries with tight boxes, and a
resumable, atomic writer. Pages are small (400 x 500, 3 marks) to keep the file fast."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from zoo.data.page_archive import (
    QUERY_SIZE,
    PageArchiveSpec,
    hidden_pages,
    query_identity,
    render_page,
    render_query,
    write_page_archive,
)

SMALL = dict(height=400, width=500, marks_per_page=3, characters_per_page=4)


def small_spec(**overrides):
    options = dict(num_pages=6, num_queries=4, pages_per_query=3, **SMALL)
    options.update(overrides)
    return PageArchiveSpec(**options)


@pytest.fixture(scope="module")
def pages():
    """(spec, every page of a 6-page archive of 4 queries x 3 pages)."""
    spec = small_spec()
    return spec, [render_page(spec, i) for i in range(spec.num_pages)]


def iou(first, second):
    ax, ay, aw, ah = first
    bx, by, bw, bh = second
    overlap = max(0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0, min(ay + ah, by + bh) - max(ay, by))
    return overlap / float(aw * ah + bw * bh - overlap)


def test_pages_are_deterministic_and_do_not_depend_on_the_archive_size(pages):
    spec, rendered = pages
    again = render_page(spec, 2)
    assert np.array_equal(again.image, rendered[2].image)
    assert again.marks == rendered[2].marks and again.hidden == rendered[2].hidden
    assert rendered[2].image.dtype == np.float32 and rendered[2].image.shape == (400, 500)

    # With the queries hidden among the same first pages, page i is the same whether the
    # archive has 5 or 20 pages, truth included.
    five, twenty = small_spec(num_pages=5, hide_among=5), small_spec(num_pages=20, hide_among=5)
    for i in (0, 3):
        a, b = render_page(five, i), render_page(twenty, i)
        assert np.array_equal(a.image, b.image) and a.marks == b.marks and a.hidden == b.hidden
    assert [hidden_pages(five, q) for q in range(4)] == [hidden_pages(twenty, q) for q in range(4)]

    # Hidden among all the pages, only the hidden marks move: a page without any is the same,
    # and on every page each distractor keeps its identity and its box.
    twenty_all = small_spec(num_pages=20)
    hidden_in_20 = {p for q in range(4) for p in hidden_pages(twenty_all, q)}
    hidden_in_6 = {p for q in range(4) for p in hidden_pages(spec, q)}
    free = sorted(set(range(6)) - hidden_in_20 - hidden_in_6)
    assert free, "expected a page without hidden marks in both archives"
    assert np.array_equal(render_page(twenty_all, free[0]).image, rendered[free[0]].image)
    queries = {query_identity(spec, q) for q in range(4)}
    for i in range(3):
        # Hidden marks take a page's mark places in a fixed order, so the page with fewer
        # hidden marks holds the other's distractors and more.
        in_20 = {m for m in render_page(twenty_all, i).marks if m[0] not in queries}
        in_6 = {m for m in rendered[i].marks if m[0] not in queries}
        assert in_20 <= in_6 or in_6 <= in_20
    assert not np.array_equal(rendered[0].image, rendered[1].image)


def test_every_query_is_hidden_on_pages_per_query_distinct_pages(pages):
    spec, rendered = pages
    found = {q: [] for q in range(spec.num_queries)}
    queries = {query_identity(spec, q): q for q in range(spec.num_queries)}
    for index, page in enumerate(rendered):
        assert len(page.marks) == spec.marks_per_page
        for query, (x, y, w, h) in page.hidden:
            found[query].append(index)
            assert 0 <= x and 0 <= y and w > 8 and h > 8 and x + w <= 500 and y + h <= 400
            assert (query_identity(spec, query), (x, y, w, h)) in page.marks
        # Every other mark is a distractor, never a query identity.
        assert sum(identity in queries for identity, _ in page.marks) == len(page.hidden)
    for query, on in found.items():
        assert len(on) == len(set(on)) == spec.pages_per_query
        assert tuple(on) == hidden_pages(spec, query)
    assert len({query_identity(spec, q) for q in range(4)}) == 4


def test_hiding_fills_every_mark_place_when_it_must():
    # 4 queries x 3 pages on 4 pages of 3 marks: every mark is a hidden query.
    spec = small_spec(num_pages=4, num_queries=4, pages_per_query=3)
    on = [p for q in range(4) for p in hidden_pages(spec, q)]
    assert sorted(on) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert all(len(set(hidden_pages(spec, q))) == 3 for q in range(4))


def test_truth_boxes_are_tight_around_the_ink(pages):
    _, rendered = pages
    checked = 0
    for page in rendered:
        image = page.image
        for _, (x, y, w, h) in page.marks:
            around = image[max(0, y - 30):y + h + 30, max(0, x - 30):x + w + 30]
            paper = float(np.median(around))
            inside = image[y:y + h, x:x + w]
            assert inside.min() < paper - 0.25  # strokes well darker than the paper
            # Tight: ink reaches every side of the box ...
            for edge in (inside[:2], inside[-2:], inside[:, :2], inside[:, -2:]):
                assert edge.min() < paper - 0.12
            # ... and just outside it there is (almost) only paper.
            ring = [image[max(0, y - 4):y - 1, x:x + w], image[y + h + 1:y + h + 4, x:x + w],
                    image[y:y + h, max(0, x - 4):x - 1], image[y:y + h, x + w + 1:x + w + 4]]
            ring = np.concatenate([r.ravel() for r in ring])
            assert np.mean(ring < paper - 0.12) < 0.03
            checked += 1
    assert checked == 18


def test_hidden_marks_do_not_overlap_other_marks(pages):
    _, rendered = pages
    for page in rendered:
        boxes = [box for _, box in page.marks]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                assert iou(boxes[i], boxes[j]) == 0.0


def test_query_is_another_drawing_dark_on_light_paper():
    spec = small_spec()
    query = render_query(spec, 1)
    assert query.shape == (QUERY_SIZE, QUERY_SIZE) and query.dtype == np.float32
    assert np.median(query) > 0.7 and query.min() < 0.4
    assert np.array_equal(query, render_query(spec, 1))
    assert not np.array_equal(query, render_query(spec, 2))


def test_write_page_archive_is_atomic_resumable_and_refuses_another_spec(tmp_path):
    spec = small_spec(num_pages=4, num_queries=2, pages_per_query=2)
    out = str(tmp_path / "archive")
    truth = write_page_archive(spec, out, progress=False, workers=1)
    with open(os.path.join(out, "truth.json")) as stream:
        assert json.load(stream) == truth
    assert truth["pages"] == [f"pages/page-{i:06d}.jpg" for i in range(4)]
    for i, name in enumerate(truth["pages"]):
        with Image.open(os.path.join(out, name)) as image:
            assert image.format == "JPEG" and image.size == (500, 400) and image.mode == "L"
            decoded = np.asarray(image, np.float32) / 255
        assert np.abs(decoded - render_page(spec, i).image).mean() < 0.02
    for q, entry in enumerate(truth["queries"]):
        assert entry["path"] == f"queries/query-{q:03d}.png"
        assert entry["identity"] == query_identity(spec, q)
        with Image.open(os.path.join(out, entry["path"])) as image:
            assert image.size == (QUERY_SIZE, QUERY_SIZE)
        assert [h["page"] for h in entry["hidden"]] == list(hidden_pages(spec, q))
        for hidden in entry["hidden"]:
            assert (q, tuple(hidden["box"])) in render_page(spec, hidden["page"]).hidden

    # Resume: two pages gone and stray temporary files of a killed run; the rerun (in worker
    # processes) writes exactly the same bytes back and ignores the strays.
    originals = {name: open(os.path.join(out, name), "rb").read() for name in truth["pages"]}
    os.remove(os.path.join(out, truth["pages"][1]))
    os.remove(os.path.join(out, truth["pages"][3]))
    for stray in (".page-000001.jpg.x1y2.tmp", "page-000003.jpg.tmp"):
        with open(os.path.join(out, "pages", stray), "wb") as stream:
            stream.write(b"half a jpeg")
    assert write_page_archive(spec, out, progress=False, workers=2) == truth
    for name, content in originals.items():
        assert open(os.path.join(out, name), "rb").read() == content

    with pytest.raises(ValueError, match="another page archive"):
        write_page_archive(small_spec(num_pages=4, num_queries=2, pages_per_query=2, seed=1), out,
                           progress=False, workers=1)
    # Pages without a record of their spec (not this module's doing) are refused too.
    os.remove(os.path.join(out, "truth.json"))
    os.remove(os.path.join(out, "spec.json"))
    with pytest.raises(ValueError, match="no spec.json"):
        write_page_archive(spec, out, progress=False, workers=1)


def test_missing_omniglot_folder_says_where_it_looked(tmp_path):
    spec = small_spec(omniglot_dir=str(tmp_path))
    with pytest.raises(ValueError, match="ZOO_OMNIGLOT_DIR") as error:
        render_page(spec, 0)
    assert str(tmp_path) in str(error.value) and "omniglot_dir" in str(error.value)
    out = tmp_path / "archive"
    with pytest.raises(ValueError, match="ZOO_OMNIGLOT_DIR"):
        write_page_archive(spec, str(out), progress=False, workers=1)
    assert not out.exists()  # nothing written
    # Pages without handwriting need no Omniglot.
    assert render_page(small_spec(omniglot_dir=str(tmp_path), characters_per_page=0), 0).image.shape == (400, 500)


@pytest.mark.parametrize("options, message", [
    (dict(num_pages=2, pages_per_query=3), "pages_per_query"),
    (dict(num_pages=2, num_queries=7, pages_per_query=1), "do not fit"),
    (dict(num_pages=10, hide_among=2, pages_per_query=3), "pages_per_query"),
    (dict(hide_among=7), "hide_among"),
    (dict(height=150), "too small"),
    (dict(marks_per_page=12), "do not fit"),
    (dict(num_queries=0), "num_queries"),
    (dict(seed=-1), "seed"),
    (dict(width=500.0), "width must be an integer"),
])
def test_spec_checks_its_arguments(options, message):
    with pytest.raises(ValueError, match=message):
        small_spec(**options)


def test_indices_are_checked():
    spec = small_spec()
    with pytest.raises(ValueError, match="page_index"):
        render_page(spec, 6)
    with pytest.raises(ValueError, match="query_index"):
        render_query(spec, 4)
