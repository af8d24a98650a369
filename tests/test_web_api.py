"""The search page's HTTP API (zoo/apps/web/app.py) over a real index, through a real server.

A small generated archive (8 merchant marks x 4 drawings, PNG files with a metadata.csv) is
indexed with sketch_gan_merchant and thin_gan_merchant; `create_app` is served by uvicorn on
a loopback port and every test talks HTTP to it. A region index of four small generated page
photographs (`write_pages`, also used by tests/test_web_browser.py) is served beside it.
"""

import hashlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from benchmarks.web_search import write_archive

MODELS = ("sketch_gan_merchant", "thin_gan_merchant")
MAX_UPLOAD = 256 * 1024
MAX_PIXELS = 4_000_000
PAGE_MODEL = "sketch_gan_plus_merchant"
# (seed, hidden mark) of zoo.apps.locating.make_search_page: 500 x 400 pages of 4 marks each
PAGES = ((20, 0), (21, 1), (23, 3), (25, 1))


def write_pages(folder):
    """Write the PAGES as page photographs (PNG, dark ink on grainy paper) in `folder`/pages
    and a query for each (another drawing of its hidden mark, dark on white) in `folder`:
    -> [(page path, query path, the hidden mark's ink box (x, y, w, h))]."""
    from zoo.apps.locating import make_search_page

    os.makedirs(os.path.join(folder, "pages"), exist_ok=True)
    written = []
    for seed, target in PAGES:
        found = make_search_page(height=400, width=500, num_marks=4, target=target, seed=seed)
        page_path = os.path.join(folder, "pages", f"page-{seed}.png")
        query_path = os.path.join(folder, f"query-{seed}.png")
        Image.fromarray((255 * found.page).round().astype(np.uint8)).save(page_path)
        Image.fromarray((255 * (1.0 - found.query)).round().astype(np.uint8)).save(query_path)
        written.append((page_path, query_path, found.truth))
    return written


def build_page_index(root):
    """write_pages in `root` and a region index of them: {"root", "index", "pages": [(page id,
    query path, truth box)]}."""
    from zoo.apps.index import Index

    written = write_pages(str(root))
    index = Index.build(str(root / "pages.idx"), str(root / "pages"), models=(PAGE_MODEL,),
                        regions=True, progress=False)
    ids = {item.path: item.id for item in index.items()}
    return {"root": root, "index": index,
            "pages": [(ids[page], query, truth) for page, query, truth in written]}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from zoo.apps.index import Index

    root = tmp_path_factory.mktemp("web_api")
    paths = write_archive(str(root / "archive"), num_identities=8, instances_per_identity=4,
                          seed=3)
    # one large scan in a format browsers do not show: served converted, thumbnailed
    mark = Image.open(paths[0]).resize((240, 240))
    scan = Image.new("L", (480, 360), 240)
    scan.paste(mark, (120, 60))
    scan.save(root / "archive" / "scan-large.tif")
    index = Index.build(str(root / "archive.idx"), str(root / "archive"), models=MODELS,
                        progress=False)
    return {"root": root, "paths": paths, "index": index,
            "ids": {item.path: item.id for item in index.items()}}


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """A region index of the PAGES: items are pages, rows their candidate regions."""
    return build_page_index(tmp_path_factory.mktemp("web_pages"))


@pytest.fixture(scope="module")
def page_server(pages):
    from zoo.apps.web.app import create_app, start_server

    base, stop = start_server(create_app(pages["index"], name="pages.idx", page_size=3))
    yield base
    stop()


@pytest.fixture(scope="module")
def server(archive):
    from zoo.apps.web.app import create_app, start_server

    app = create_app(archive["index"], name="archive.idx", max_upload_bytes=MAX_UPLOAD,
                     max_pixels=MAX_PIXELS, page_size=6)
    base, stop = start_server(app)
    yield base
    stop()


def request(base, path, data=None, method=None):
    """(status, headers, body bytes) of one HTTP request; errors are answers, not raises."""
    req = urllib.request.Request(base + path, data=data, method=method or (
        "POST" if data is not None else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def api(base, path, data=None, method=None):
    status, _, body = request(base, path, data, method)
    return status, json.loads(body)


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def test_page_and_static_files_are_self_contained(server):
    status, headers, body = request(server, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page
        status, _, text = request(server, asset)
        assert status == 200
        # nothing is loaded from another host: the page works offline
        assert "http://" not in text.decode() and "https://" not in text.decode()
    assert "http://" not in page and "https://" not in page
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_info_names_the_models_and_limits(server, archive):
    status, info = api(server, "/api/info")
    assert status == 200
    assert info["items"] == len(archive["index"]) == 33 and info["kind"] == "images"
    assert "pages" not in info and "regions" not in info
    assert info["models"] == list(MODELS)
    assert info["max_upload_bytes"] == MAX_UPLOAD and info["read_only"] is True
    assert info["locate"] is True and info["page_size"] == 6


def test_upload_finds_the_item_itself_first_in_both_modes_and_models(server, archive):
    path = archive["paths"][13]
    expected = archive["ids"][path]
    for model in MODELS:
        status, answer = api(server, f"/api/search?model={model}&k=5", read(path))
        assert status == 200, answer
        first = answer["hits"][0]
        assert first["id"] == expected and first["rank"] == 1
        assert first["score"] == pytest.approx(1.0, abs=1e-4)
        assert first["name"] == os.path.basename(path)
        assert first["metadata"]["user"]["place"]  # the archive's metadata.csv
        scores = [hit["score"] for hit in answer["hits"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 5
        # the same identity's other drawings rank high: 13 is identity 3's second drawing
        assert {hit["id"] for hit in answer["hits"][:4]} & {archive["ids"][archive["paths"][i]]
                                                          for i in (12, 14, 15)}

        status, answer = api(server, f"/api/search?model={model}&mode=hamming&k=5", read(path))
        assert status == 200 and answer["mode"] == "hamming" and answer["bits"] == 64
        assert answer["hits"][0]["score"] == 0
        assert expected in [hit["id"] for hit in answer["hits"] if hit["score"] == 0]
        distances = [hit["score"] for hit in answer["hits"]]
        assert distances == sorted(distances)


def test_results_page_without_overlap_and_match_the_library(server, archive):
    data = read(archive["paths"][5])
    pages = [api(server, f"/api/search?k=6&offset={offset}", data)[1] for offset in (0, 6, 30)]
    ids = [hit["id"] for page in pages[:2] for hit in page["hits"]]
    assert len(ids) == len(set(ids)) == 12
    assert [hit["rank"] for hit in pages[1]["hits"]] == list(range(7, 13))
    assert pages[0]["has_more"] and pages[1]["has_more"]
    assert len(pages[2]["hits"]) == 3 and not pages[2]["has_more"]  # items 31-33 of 33
    library = archive["index"].search(archive["paths"][5], k=12)
    assert ids == [hit.id for hit in library]
    np.testing.assert_allclose([hit["score"] for page in pages[:2] for hit in page["hits"]],
                               [hit.score for hit in library], atol=1e-5)


def test_an_archive_item_as_the_query(server, archive):
    status, answer = api(server, "/api/search?item=21&mode=hamming&model=thin_gan_merchant")
    assert status == 200 and answer["hits"][0]["score"] == 0
    assert 21 in [hit["id"] for hit in answer["hits"] if hit["score"] == 0]
    status, answer = api(server, "/api/search?item=21")
    assert answer["hits"][0]["id"] == 21 and len(answer["hits"]) == 6  # the page size
    assert api(server, "/api/search?item=33")[0] == 404
    assert api(server, "/api/search?item=abc")[0] == 400
    assert api(server, "/api/search")[0] == 400
    status, answer = api(server, "/api/search?item=21&box=0,0,30,30")  # boxes are for pages
    assert status == 400 and "POST the cropped image" in answer["error"]
    assert "box" not in api(server, "/api/search?item=21&k=2")[1]["hits"][0]


def test_a_box_on_a_page_photograph_is_the_query(server, archive):
    mark = np.asarray(Image.open(archive["paths"][9]).convert("L"))
    page = np.full((300, 400), 235, np.uint8)
    page[120:184, 200:264] = mark
    page[20:84, 30:94] = np.asarray(Image.open(archive["paths"][30]).convert("L"))
    status, answer = api(server, "/api/search?k=3&box=190,110,84,84", png_bytes(page))
    assert status == 200, answer
    assert answer["hits"][0]["id"] == archive["ids"][archive["paths"][9]]
    status, answer = api(server, "/api/search?k=3&box=20,10,84,84", png_bytes(page))
    assert answer["hits"][0]["id"] == archive["ids"][archive["paths"][30]]
    status, answer = api(server, "/api/search?box=500,500,10,10", png_bytes(page))
    assert status == 400 and "holds no part" in answer["error"]
    status, answer = api(server, "/api/search?box=1,2,3", png_bytes(page))
    assert status == 400 and "x,y,width,height" in answer["error"]


def test_bad_uploads_get_clear_messages_and_the_server_keeps_serving(server, archive):
    good = read(archive["paths"][0])
    cases = {
        "empty": (b"", 400, "empty"),
        "text": (b"Dear archivist, this is a letter, not a scan.\n" * 20, 415, "not an image"),
        "truncated": (good[: len(good) // 2], 400, "cannot be decoded"),
        "corrupt": (good[:40] + bytes(200) + good[240:], 400, "cannot be decoded"),
        "huge": (good + bytes(MAX_UPLOAD), 413, "largest accepted"),
        "too many pixels": (png_bytes(np.zeros((2500, 2000), np.uint8)), 413, "megapixels"),
        "blank": (png_bytes(np.full((80, 80), 255, np.uint8)), 400, "ink"),
    }
    for name, (data, status, message) in cases.items():
        got, answer = api(server, "/api/search", data, method="POST")
        assert got == status, (name, answer)
        assert message in answer["error"], (name, answer["error"])
    assert "truncated" in api(server, "/api/search", good[: len(good) // 2])[1]["error"]
    status, answer = api(server, "/api/search?k=1", good)
    assert status == 200 and answer["hits"][0]["id"] == archive["ids"][archive["paths"][0]]


def test_bad_parameters_are_refused_by_name(server, archive):
    data = read(archive["paths"][0])
    for query, words in (("model=nope", "Unknown model"), ("mode=cosine", "Unknown mode"),
                         ("k=0", "k"), ("k=1000", "k"), ("offset=-1", "offset"),
                         ("k=two", "integer")):
        status, answer = api(server, f"/api/search?{query}", data)
        assert status == 400 and words in answer["error"], (query, answer)
    assert api(server, "/api/items?limit=0")[0] == 400


def test_items_thumbnails_and_images_by_id(server, archive):
    status, listing = api(server, "/api/items?offset=30&limit=10")
    assert status == 200 and listing["total"] == 33
    assert [item["id"] for item in listing["items"]] == [30, 31, 32]
    item = listing["items"][0]
    assert "path" not in item and not os.path.isabs(item["name"])  # no server paths shown
    status, headers, body = request(server, item["thumbnail"])
    assert status == 200 and headers["content-type"] == "image/png"
    thumbnail = Image.open(io.BytesIO(body))
    assert max(thumbnail.size) <= 160
    status, headers, body = request(server, item["image"])
    assert status == 200 and body == read(archive["index"].item(30).path)
    assert api(server, "/api/items/30")[1]["name"] == item["name"]

    scan = listing["items"][2]
    assert scan["name"] == "scan-large.tif" and scan["metadata"]["width"] == 480
    status, headers, body = request(server, scan["image"])
    assert status == 200 and headers["content-type"] == "image/png"  # TIFF, converted
    assert Image.open(io.BytesIO(body)).size == (480, 360)
    status, headers, body = request(server, scan["thumbnail"])
    assert status == 200 and Image.open(io.BytesIO(body)).size == (160, 120)
    status, answer = api(server, "/api/search?k=1", read(archive["index"].item(32).path))
    assert answer["hits"][0]["id"] == 32

    for missing in ("/api/items/33/thumbnail", "/api/items/-1/image", "/api/items/99999"):
        assert request(server, missing)[0] == 404


def test_no_path_traversal(server, archive):
    secret = archive["root"] / "secret.txt"
    secret.write_text("not for the web")
    attempts = ["/api/items/..%2F..%2Fsecret.txt/image", "/api/items/../../secret.txt",
                "/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e/%2e%2e/secret.txt",
                "/api/items/%2Fetc%2Fpasswd/image", "/static/../../../../etc/passwd",
                "/" + str(secret)]
    for path in attempts:
        status, _, body = request(server, path)
        assert status in (400, 404), path
        assert b"not for the web" not in body and b"root:" not in body and b"import" not in body


def test_locate_finds_an_archive_item_and_a_boxed_mark_on_a_page(server, archive, monkeypatch):
    import zoo.apps.web.app

    # a 480 x 360 photograph, searched at half size (as a large one is at LOCATE_MAX_SIDE)
    monkeypatch.setattr(zoo.apps.web.app, "LOCATE_MAX_SIDE", 240)
    mark = np.asarray(Image.open(archive["paths"][17]).convert("L").resize((128, 128)))
    page = np.full((360, 480), 232, np.uint8)
    page += np.random.default_rng(0).integers(0, 12, page.shape, dtype=np.uint8)
    page[200:328, 300:428] = np.minimum(page[200:328, 300:428], mark)
    data = png_bytes(page)

    def inside(box):  # the found box lies on the pasted mark, in the photograph's pixels
        centre_x, centre_y = box["x"] + box["w"] / 2, box["y"] + box["h"] / 2
        return 300 <= centre_x <= 428 and 200 <= centre_y <= 328 and box["w"] > 40

    status, answer = api(server, f"/api/locate?item={archive['ids'][archive['paths'][17]]}", data)
    assert status == 200, answer
    assert (answer["width"], answer["height"]) == (480, 360)
    assert answer["searched_at_scale"] == 0.5
    assert inside(answer["boxes"][0]) and answer["boxes"][0]["score"] > 0.8
    assert answer["heatmap"].startswith("data:image/png;base64,")
    status, answer = api(server, "/api/locate?box=290,190,150,150", data)
    assert status == 200 and inside(answer["boxes"][0])
    assert api(server, "/api/locate", data)[0] == 400
    assert api(server, "/api/locate?item=3", b"not an image at all")[0] == 415


def test_serving_writes_nothing(server, archive):
    def snapshot():
        files = {}
        for folder in (archive["root"] / "archive", archive["root"] / "archive.idx"):
            for name in sorted(os.listdir(folder)):
                path = folder / name
                if path.is_file():
                    files[str(path)] = (path.stat().st_mtime_ns,
                                        hashlib.sha256(path.read_bytes()).hexdigest())
        return files

    before = snapshot()
    api(server, "/api/search?k=3", read(archive["paths"][2]))
    api(server, "/api/search?item=4&mode=hamming")
    request(server, "/api/items/4/thumbnail")
    for method in ("PUT", "DELETE"):
        assert request(server, "/api/items/4", b"x", method=method)[0] == 405
    assert snapshot() == before


def test_zoo_web_command_serves_the_index_on_loopback(archive):
    from serving.launch import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "zoo", "web",
                                str(archive["root"] / "archive.idx"), "--port", str(port),
                                "--page-size", "10"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status, info = api(f"http://127.0.0.1:{port}", "/api/info")
                break
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.25)
        assert status == 200 and info["items"] == 33 and info["page_size"] == 10
        assert info["name"] == "archive.idx"
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=60)
    assert f"http://127.0.0.1:{port}/" in output  # bound to loopback, said where

    bad = subprocess.run([sys.executable, "-m", "zoo", "web", str(archive["root"] / "archive")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a zoo index" in bad.stderr


# -- a region index of page photographs --------------------------------------------------------


def inside_page(box, hit):
    x, y, w, h = box[:4]
    return 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= hit["width"] and \
        y + h <= hit["height"]


def test_region_index_info_and_pages(page_server, pages):
    status, info = api(page_server, "/api/info")
    assert status == 200 and info["kind"] == "regions" and info["name"] == "pages.idx"
    assert info["pages"] == info["items"] == 4
    assert info["regions"] == pages["index"].region_count > 4
    assert info["models"] == [PAGE_MODEL]
    status, listing = api(page_server, "/api/items?limit=10")
    assert listing["total"] == 4 and len(listing["items"]) == 4
    assert all((item["width"], item["height"]) == (500, 400) for item in listing["items"])
    status, headers, body = request(page_server, listing["items"][0]["thumbnail"])
    assert status == 200 and Image.open(io.BytesIO(body)).size == (320, 256)  # the whole page


def test_a_mark_finds_its_page_first_with_its_box(page_server, pages):
    from zoo.apps.proposals import box_iou

    for page_id, query, truth in pages["pages"]:
        status, answer = api(page_server, "/api/search?k=4", read(query))
        assert status == 200, answer
        hits = answer["hits"]
        assert [hit["rank"] for hit in hits] == [1, 2, 3, 4] and not answer["has_more"]
        first = hits[0]
        assert first["id"] == page_id and box_iou(first["box"], truth) > 0.5, (first, truth)
        assert first["name"] == os.path.basename(pages["index"].item(page_id).path)
        assert first["thumbnail"] == f"/api/items/{page_id}/thumbnail"
        for hit in hits:
            assert (hit["width"], hit["height"]) == (500, 400)
            assert hit["boxes"][0] == [*hit["box"], hit["score"]]
            assert all(inside_page(box, hit) for box in hit["boxes"])
            scores = [box[4] for box in hit["boxes"]]
            assert scores == sorted(scores, reverse=True)
        assert [hit["score"] for hit in hits] == sorted((hit["score"] for hit in hits),
                                                        reverse=True)
        library = pages["index"].search(query, k=4)
        assert [hit["id"] for hit in hits] == [hit.id for hit in library]
        assert [hit["box"] for hit in hits] == [list(hit.box) for hit in library]

    page_id, query, truth = pages["pages"][1]
    status, answer = api(page_server, "/api/search?k=2&mode=hamming", read(query))
    assert status == 200 and answer["hits"][0]["id"] == page_id and answer["has_more"]
    assert all(isinstance(box[4], int) for hit in answer["hits"] for box in hit["boxes"])
    assert answer["hits"][0]["score"] < answer["hits"][1]["score"]  # distances, nearest first


def test_a_box_on_an_uploaded_page_photograph_finds_that_page(page_server, pages):
    page_id, query, truth = pages["pages"][2]
    x, y, w, h = truth
    photograph = read(pages["index"].item(page_id).path)
    status, answer = api(page_server, f"/api/search?k=2&box={x - 6},{y - 6},{w + 12},{h + 12}",
                         photograph)
    assert status == 200 and answer["hits"][0]["id"] == page_id
    status, answer = api(page_server, "/api/search?box=600,500,10,10", photograph)
    assert status == 400 and "holds no part" in answer["error"]


def test_a_box_drawn_on_an_indexed_page_finds_that_page_first(page_server, pages):
    from zoo.apps.proposals import box_iou

    for page_id, query, _ in pages["pages"]:
        box = pages["index"].search(query, k=1)[0].box
        status, answer = api(page_server, f"/api/search?item={page_id}&box="
                                          f"{','.join(str(value) for value in box)}")
        assert status == 200, answer
        assert answer["query_box"] == list(box) and len(answer["hits"]) == 3  # the page size
        first = answer["hits"][0]
        assert first["id"] == page_id and box_iou(first["box"], box) > 0.5
        assert first["score"] > 0.8 and inside_page(first["box"], first)
        library = pages["index"].search_box(page_id, box, k=3)
        assert [hit["id"] for hit in answer["hits"]] == [hit.id for hit in library]

    # the box is clipped to the page; the next page of results follows on
    status, answer = api(page_server, "/api/search?item=0&box=-20,-20,270,220&offset=3&k=3")
    assert status == 200 and answer["query_box"] == [0, 0, 250, 200]
    assert [hit["rank"] for hit in answer["hits"]] == [4] and not answer["has_more"]


def test_a_page_without_a_box_or_a_bad_box_gets_a_clear_400(page_server, pages):
    status, answer = api(page_server, "/api/search?item=1")
    assert status == 400 and "whole page" in answer["error"] and "box=x,y,w,h" in answer["error"]
    status, answer = api(page_server, "/api/search?item=1&box=")
    assert status == 400 and "whole page" in answer["error"]
    for box, words in (("600,500,10,10", "holds no part"), ("1,2,3", "x,y,width,height"),
                       ("10,10,inf,5", "x,y,width,height"), ("10,10,3,3", "at least 4 x 4")):
        status, answer = api(page_server, f"/api/search?item=1&box={box}")
        assert status == 400 and words in answer["error"], (box, answer)
    assert api(page_server, "/api/search?item=4&box=0,0,50,50")[0] == 404
    status, answer = api(page_server, "/api/search?item=1&box=0,0,50,50&mode=cosine")
    assert status == 400 and "Unknown mode" in answer["error"]
