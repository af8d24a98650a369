"""Region indexes of page photographs: proposals from the page's ink, one query finds the page
bearing a mark and the mark's box; add, resume, corrupt, blank and large pages; the CLI; a
model server."""

import _thread
import glob
import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from zoo.apps.cli import main
from zoo.apps.index import Index, store
from zoo.apps.index import regions as region_search
from zoo.apps.locating import make_search_page
from zoo.apps.proposals import ProposalSettings, box_iou, propose_regions, region_crops

MODEL = "sketch_gan_plus_merchant"
PAGES = 4


def write_page(path, page):
    Image.fromarray((page * 255).astype(np.uint8)).save(path)
    return str(path)


def write_query(path, query):
    """A query as a person crops it: dark ink on light paper, another size."""
    Image.fromarray((255 - query * 200).astype(np.uint8)).resize((80, 80)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Four 400 x 500 pages of five marks; query i is page i's mark number i, drawn at another
    size and contrast, as a person would crop it from another copy of the page. (Another
    hand's drawing of the mark is what benchmarks.page_archive_bench measures.)"""
    from zoo.data.merchant_marks import make_corpus

    root = tmp_path_factory.mktemp("pages")
    os.makedirs(root / "pages")
    found = []
    for number in range(PAGES):
        page = make_search_page(400, 500, num_marks=5, target=number, seed=20 + number)
        drawing = make_corpus(5, 2, seed=20 + number).images[2 * number, :, :, 0]
        found.append({"path": write_page(root / "pages" / f"page_{number}.png", page.page),
                      "query": write_query(root / f"query_{number}.png", drawing),
                      "truth": page.truth, "page": page})
    return {"root": root, "folder": str(root / "pages"), "pages": found}


@pytest.fixture(scope="module")
def built(pages):
    return Index.build(str(pages["root"] / "pages.idx"), pages["folder"], models=MODEL,
                       regions=True, progress=False)


# ----------------------------------------------------------------------------- proposals


def _page_with(strokes, height=300, width=400, light=True):
    """A grainy page with uneven lighting and the given dark strokes (y0, y1, x0, x1)."""
    rng = np.random.default_rng(1)
    page = 0.85 + 0.02 * rng.standard_normal((height, width)) + 0.08 * np.linspace(
        -1, 1, width)[None, :]
    for y0, y1, x0, x1 in strokes:
        page[y0:y1, x0:x1] = 0.2
    page = np.clip(page, 0, 1).astype(np.float32)
    return page if light else 1.0 - page


def test_proposals_box_each_mark_merge_broken_strokes_and_skip_lines():
    strokes = [(40, 100, 60, 64), (40, 44, 40, 90),            # a cross: one component
               (150, 180, 200, 204), (186, 220, 200, 204),     # a staff broken in two,
               (216, 220, 200, 230),                           # with a foot
               (260, 264, 20, 380)]                            # a line of "text": too long
    for light in (True, False):
        regions = propose_regions(_page_with(strokes, light=light))
        boxes = [tuple(box) for box in regions.boxes]
        assert any(box_iou(box, (40, 40, 50, 60)) > 0.8 for box in boxes), boxes
        assert any(box_iou(box, (200, 150, 30, 70)) > 0.8 for box in boxes), boxes
        assert not any(box[2] > 200 for box in boxes)  # the 360 px line is no region
        # Lighting and grain alone make no region: every box holds a stroke.
        assert all(any(box_iou(box, (x0, y0, x1 - x0, y1 - y0)) > 0 for y0, y1, x0, x1
                       in strokes) for box in boxes)


def test_region_crops_keep_only_their_own_ink():
    # Two marks whose boxes overlap: an L (staff and foot) and a small cross inside its box.
    page = _page_with([(50, 150, 100, 104), (146, 150, 100, 140),
                       (70, 90, 124, 127), (79, 82, 115, 135)])
    regions = propose_regions(page, ProposalSettings(merge_fractions=(0.0,)))
    boxes = [tuple(box) for box in regions.boxes]
    ell = next(i for i, box in enumerate(boxes) if box_iou(box, (100, 50, 40, 100)) > 0.8)
    cross = next(i for i, box in enumerate(boxes) if box_iou(box, (115, 70, 20, 20)) > 0.8)
    crops = region_crops(regions)
    x, y = boxes[ell][:2]
    pad = regions.pad[ell]
    # The L's crop holds the L but none of the cross's ink ...
    assert crops[ell][150 - y + pad - 2, 120 - x + pad] > 0.3
    assert crops[ell][70 - y + pad : 90 - y + pad, 115 - x + pad : 135 - x + pad].max() == 0
    # ... and the cross's crop none of the L's.
    x, y = boxes[cross][:2]
    pad = regions.pad[cross]
    assert crops[cross][80 - y + pad, 125 - x + pad] > 0.3
    assert crops[cross].sum() < 0.5 * crops[ell].sum()


def test_proposal_budget_and_settings():
    strokes = [(20 + 35 * (i // 10), 32 + 35 * (i // 10), 20 + 35 * (i % 10),
                32 + 35 * (i % 10)) for i in range(60)]  # 60 blots of 12 x 12 px
    page = _page_with(strokes)
    assert len(propose_regions(page, ProposalSettings(merge_fractions=(0.0,)))) == 60
    assert len(propose_regions(page, ProposalSettings(max_regions=7))) == 7
    settings = ProposalSettings(max_regions=50)
    assert ProposalSettings.from_json(settings.to_json()) == settings
    with pytest.raises(ValueError, match="merge_fractions"):
        ProposalSettings(merge_fractions=(0.7,))
    with pytest.raises(ValueError, match="proposal settings with fields"):
        ProposalSettings.from_json({"radius": 3})


def test_group_by_page_ranks_pages_by_their_best_region():
    table = np.array([[0, 0, 0, 10, 10], [0, 20, 0, 10, 10], [1, 0, 0, 10, 10],
                      [2, 0, 0, 10, 10], [2, 50, 50, 10, 10]])
    rows = np.array([0, 1, 2, 3, 4])
    scores = np.array([0.5, 0.9, 0.9, 0.2, 0.95])
    grouped = region_search.group_by_page(rows, scores, table, True, k=3)
    assert [page for page, _ in grouped] == [2, 0, 1]  # 0.95; then 0.9 and 0.9, page id first
    assert [row for row, _ in grouped[0][1]] == [4, 3]
    assert [page for page, _ in region_search.group_by_page(rows, scores, table, True, k=2,
                                                            offset=1)] == [0, 1]
    distances = np.array([3, 1, 7, 2, 9])
    assert [page for page, _ in region_search.group_by_page(rows, distances, table, False,
                                                            k=3)] == [0, 2, 1]


# ----------------------------------------------------------------------------- the index


def test_each_query_finds_its_page_first_with_the_marks_box(built, pages):
    assert built.is_region_index and len(built) == PAGES
    assert built.region_count == len(built.regions()) > PAGES * 5 - 1
    for number, page in enumerate(pages["pages"]):
        hits = built.search(page["query"], k=PAGES)
        assert [hit.rank for hit in hits] == list(range(1, PAGES + 1))
        assert sorted(hit.id for hit in hits) == list(range(PAGES))  # one hit a page
        best = hits[0]
        assert best.id == number and best.path == page["path"], (number, hits)
        assert box_iou(best.box, page["truth"]) > 0.5, (best.box, page["truth"])
        assert best.boxes[0][:4] == best.box and best.boxes[0][4] == best.score
        assert all(best.score - score <= region_search.COSINE_MARGIN
                   for *_, score in best.boxes)
        assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
        # Every region a candidate: the two stages equal an exact scan of the embeddings.
        exact = built.search(page["query"], k=PAGES, candidates=None)
        assert [(h.id, h.box) for h in exact] == [(h.id, h.box) for h in hits]
        np.testing.assert_allclose([h.score for h in exact], [h.score for h in hits],
                                   atol=1e-5)


def test_hamming_mode_paging_and_box_queries(built, pages):
    hits = built.search(pages["pages"][1]["query"], k=2, mode="hamming")
    assert all(isinstance(hit.score, int) for hit in hits)
    assert hits[0].score <= hits[1].score
    second = built.search(pages["pages"][1]["query"], k=1, offset=1)
    assert second[0].rank == 2 and second[0].id == built.search(
        pages["pages"][1]["query"], k=2)[1].id
    # A box drawn around the mark on page 2 finds page 2 and that box first.
    truth = pages["pages"][2]["truth"]
    box = (truth[0] - 4, truth[1] - 4, truth[2] + 8, truth[3] + 8)
    found = built.search_box(2, box, k=2)
    assert found[0].id == 2 and box_iou(found[0].box, truth) > 0.5
    assert found[0].score > 0.9
    with pytest.raises(ValueError, match="inside the 500x400 page"):
        built.search_box(2, (450, 10, 100, 100))
    with pytest.raises(ValueError, match="search with a box"):
        built.similar(0)
    with pytest.raises(ValueError, match="candidates"):
        built.search(pages["pages"][0]["query"], candidates=-1)
    assert len(built.page_regions(0)) == int(built.item(0).metadata["regions"])


def test_corrupt_blank_and_oversized_pages_are_reported_and_skipped(pages, tmp_path,
                                                                    monkeypatch):
    folder = tmp_path / "mixed"
    os.makedirs(folder)
    good = write_page(folder / "good.png", pages["pages"][0]["page"].page)
    (folder / "corrupt.png").write_bytes(b"\x89PNG not really")
    Image.new("L", (300, 200), 225).save(folder / "blank.png")
    write_page(folder / "huge.png", make_search_page(500, 600, 4, seed=3).page)
    monkeypatch.setattr(region_search, "MAX_PAGE_PIXELS", 250_000)  # 500 x 600 is over it
    index = Index.build(str(tmp_path / "mixed.idx"), str(folder), models=MODEL, regions=True,
                        progress=False)
    assert [item.path for item in index.items()] == [good]
    reasons = dict(index.report.skipped)
    assert "Cannot decode image" in reasons[str(folder / "corrupt.png")]
    assert "no ink regions" in reasons[str(folder / "blank.png")]
    assert "megapixel limit" in reasons[str(folder / "huge.png")]


def test_a_large_page_is_searched_downscaled_with_boxes_in_page_pixels(pages, tmp_path,
                                                                       monkeypatch):
    import zoo.apps.proposals

    page = pages["pages"][3]
    monkeypatch.setattr(zoo.apps.proposals, "MAX_WORKING_SIDE", 300)  # the 500 px page is "large"
    index = Index.build(str(tmp_path / "large.idx"), [page["path"]], models=MODEL,
                        regions=True, progress=False)
    best = index.search(page["query"], k=1)[0]
    assert box_iou(best.box, page["truth"]) > 0.5, (best.box, page["truth"])
    boxes = index.page_regions(0)
    assert boxes[:, 0].max() > 300 and np.all(boxes[:, 0] + boxes[:, 2] <= 500)


def test_add_pages_incrementally_with_stable_ids(pages, built, tmp_path):
    paths = [page["path"] for page in pages["pages"]]
    index = Index.build(str(tmp_path / "grow.idx"), paths[:2], models=MODEL, regions=True,
                        progress=False)
    report = index.add(pages["folder"], progress=False)
    assert (report.added, report.already_indexed) == (2, 2)
    assert [item.path for item in index.items()] == paths
    np.testing.assert_array_equal(index.regions(), built.regions())
    hits = index.search(pages["pages"][3]["query"], k=1)
    assert hits[0].id == 3 and box_iou(hits[0].box, pages["pages"][3]["truth"]) > 0.5
    reopened = Index.open(index.path)
    assert reopened.proposals == ProposalSettings() and reopened.manifest["pages"] == 4


def test_an_interrupted_region_build_resumes_to_the_uninterrupted_result(pages, built,
                                                                          tmp_path):
    out = str(tmp_path / "resumed.idx")

    def press_ctrl_c_after_two_chunks():
        while len(glob.glob(os.path.join(out, ".pending", "chunk-*.npz"))) < 2:
            time.sleep(0.001)
        _thread.interrupt_main()

    threading.Thread(target=press_ctrl_c_after_two_chunks, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        Index.build(out, pages["folder"], models=MODEL, regions=True, progress=False,
                    chunk_size=1)
    assert 2 <= len(store.pending_chunk_files(out)) < PAGES
    with pytest.raises(ValueError, match="with region settings"):
        Index.build(out, pages["folder"], models=MODEL, regions=True, progress=False,
                    chunk_size=1, proposals=ProposalSettings(max_regions=5))
    resumed = Index.build(out, pages["folder"], models=MODEL, regions=True, progress=False,
                          chunk_size=1)
    assert resumed.report.resumed >= 2 and resumed.report.added == PAGES
    np.testing.assert_array_equal(resumed.regions(), built.regions())
    np.testing.assert_allclose(resumed.embeddings(), built.embeddings(), atol=1e-5)


def test_cli_builds_and_searches_a_page_archive(pages, tmp_path, capsys):
    out = str(tmp_path / "cli.idx")
    assert main(["index", "build", pages["folder"], "--regions", "--out", out]) == 0
    assert f"{PAGES} pages" in capsys.readouterr().out
    grid = str(tmp_path / "hits.png")
    assert main(["search", out, pages["pages"][0]["query"], "-k", "3", "--grid", grid]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]
            if line.strip()[:1].isdigit()]
    assert rows[0][2] == "0" and rows[0][-1] == pages["pages"][0]["path"]
    box = tuple(int(value) for value in rows[0][3:7])
    assert box_iou(box, pages["pages"][0]["truth"]) > 0.5
    with Image.open(grid) as image:
        assert image.width > 3 * 256
    # A box of a page photograph as the query.
    x, y, w, h = pages["pages"][1]["truth"]
    assert main(["search", out, pages["pages"][1]["path"], "--box", f"{x},{y},{w},{h}",
                 "-k", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[2] == "1"


def test_region_search_through_a_running_server_equals_in_process(pages, built, tmp_path,
                                                                  zoo_server):
    server = zoo_server(MODEL)
    index = Index.build(str(tmp_path / "served.idx"), pages["folder"], models=MODEL,
                        regions=True, server=server.target, progress=False)
    np.testing.assert_array_equal(index.regions(), built.regions())
    np.testing.assert_allclose(index.embeddings(), built.embeddings(), atol=1e-4)
    served = Index.open(index.path, server=server.target)
    for page in pages["pages"]:
        remote = served.search(page["query"], k=PAGES)
        local = built.search(page["query"], k=PAGES)
        assert [(h.id, h.box) for h in remote] == [(h.id, h.box) for h in local]
        np.testing.assert_allclose([h.score for h in remote], [h.score for h in local],
                                   atol=1e-4)


def test_the_hamming_candidates_equal_a_numpy_scan(rng):
    from zoo.hashing import hamming_distances

    codes = rng.integers(0, 256, (3000, 8), dtype=np.uint8)
    codes[100:140] = codes[7]  # ties at distance 0
    query = codes[7:8]
    rows, distances = region_search.nearest_codes(region_search.code_words(codes),
                                                  region_search.code_words(query)[0], 60)
    reference = hamming_distances(query, codes)[0]
    order = np.argsort(reference, kind="stable")[:60]
    np.testing.assert_array_equal(rows, order)
    np.testing.assert_array_equal(distances, reference[order])
    # Codes of a length that is not a multiple of 64 bits are zero-padded.
    short = codes[:, :3]
    rows, distances = region_search.nearest_codes(region_search.code_words(short),
                                                  region_search.code_words(short[7:8])[0], 5)
    np.testing.assert_array_equal(distances, np.sort(hamming_distances(short[7:8], short)[0])[:5])
