"""The search page in a real browser: headless Chromium (Debian's `chromium`) driven by
Playwright, against `zoo web`'s app over a small generated archive.

Screenshots are written to test-artifacts/web/ at the repository root (ZOO_TEST_ARTIFACTS
overrides the folder); the path is printed. The page is tested under its own Content Security
Policy, so waits use selectors rather than evaluated JavaScript strings. A region index of
small generated page photographs (test_web_api.build_page_index) is served too: page hits with
their boxes, a page opened large, a box drawn on it.
"""

import contextlib
import os
import time

import numpy as np
import pytest
from PIL import Image

from benchmarks.web_search import write_archive
from test_web_api import api, build_page_index, read

MODELS = ("sketch_gan_merchant", "thin_gan_merchant")
ARTIFACTS = os.environ.get("ZOO_TEST_ARTIFACTS") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test-artifacts", "web")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from zoo.apps.index import Index

    root = tmp_path_factory.mktemp("web_browser")
    paths = write_archive(str(root / "archive"), num_identities=8, instances_per_identity=4,
                          seed=3)
    index = Index.build(str(root / "archive.idx"), str(root / "archive"), models=MODELS,
                        progress=False)
    return {"root": root, "paths": paths, "index": index,
            "ids": {item.path: item.id for item in index.items()}}


@pytest.fixture(scope="module")
def server(archive):
    from zoo.apps.web.app import create_app, start_server

    base, stop = start_server(create_app(archive["index"], name="archive.idx",
                                         max_upload_bytes=256 * 1024))
    yield base
    stop()


@pytest.fixture(scope="module")
def browser():
    from zoo.apps.web.browser import launch_chromium

    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def page_archive(tmp_path_factory):
    """A region index of four small page photographs, with a query for each."""
    return build_page_index(tmp_path_factory.mktemp("web_browser_pages"))


@pytest.fixture(scope="module")
def page_server(page_archive):
    from zoo.apps.web.app import create_app, start_server

    base, stop = start_server(create_app(page_archive["index"], name="pages.idx"))
    yield base
    stop()


@contextlib.contextmanager
def search_tab(browser, base):
    """A fresh tab on the search page at `base`; the browser's errors are collected and must
    be none."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.errors = []
    tab.on("pageerror", lambda error: tab.errors.append(str(error)))
    tab.on("console", lambda message: message.type == "error" and not
           message.text.startswith("Failed to load resource") and tab.errors.append(message.text))
    tab.goto(base + "/")
    tab.wait_for_selector("#model-select option", state="attached")
    yield tab
    context.close()
    assert tab.errors == []


@pytest.fixture()
def page(browser, server):
    with search_tab(browser, server) as tab:
        yield tab


@pytest.fixture()
def pages_tab(browser, page_server):
    with search_tab(browser, page_server) as tab:
        yield tab


def screenshot(tab, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, f"{name}.png")
    tab.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}")
    return path


def wait_for_search(tab, count):
    """Wait until the page has drawn the results of its `count`-th request."""
    tab.wait_for_selector(f'body[data-search-done="{count}"]', state="attached", timeout=60_000)


def first_result(tab):
    return int(tab.get_attribute("#results li:first-child", "data-item-id"))


def wait_for_images(tab, selector, timeout=30.0):
    """Wait until every image matching `selector` has loaded; False if one never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tab.locator(selector).evaluate_all(
                "(images) => images.length > 0 && images.every("
                "(image) => image.complete && image.naturalWidth > 0)"):
            return True
        tab.wait_for_timeout(50)
    return False


def test_upload_finds_the_item_first_then_hamming_then_open(page, archive):
    path = archive["paths"][13]
    page.set_input_files("#file-input", path)
    wait_for_search(page, 1)
    assert first_result(page) == archive["ids"][path]
    assert "similarity 1.000" in page.inner_text("#results li:first-child")
    assert page.locator("#results li").count() == 24
    assert wait_for_images(page, "#results img")
    screenshot(page, "1-embedding-results")

    page.check('input[name="mode"][value="hamming"]')
    wait_for_search(page, 2)
    assert "Hamming" in page.inner_text("#results-status")
    assert "Hamming distance 0 / 64 bits" in page.inner_text("#results li:first-child")
    zero = [int(card.get_attribute("data-item-id")) for card in page.locator("#results li").all()
            if "Hamming distance 0 /" in card.inner_text()]
    assert archive["ids"][path] in zero

    page.select_option("#model-select", "thin_gan_merchant")
    wait_for_search(page, 3)
    assert "thin_gan_merchant" in page.inner_text("#results-status")
    screenshot(page, "2-hamming-results")

    page.click("#results li:first-child button.open")
    viewer = page.locator("#viewer")
    viewer.wait_for(state="visible")
    assert wait_for_images(page, "#viewer img")
    assert page.get_attribute("#viewer-item", "alt").startswith("Archive item ")
    assert "Match 1" in page.inner_text("#viewer-title")
    screenshot(page, "3-viewer")
    page.keyboard.press("Escape")
    viewer.wait_for(state="hidden")

    page.click("#next-page")
    wait_for_search(page, 4)
    assert page.inner_text("#results li:first-child .rank") == "#25"
    assert page.locator("#results li").count() == 32 - 24


def test_bad_uploads_show_a_message_and_the_page_keeps_working(page, archive, tmp_path):
    not_image = tmp_path / "letter.png"
    not_image.write_text("Dear archivist, this is a letter, not a scan.\n" * 10)
    good = archive["paths"][6]
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(good, "rb").read()[:700])
    huge = tmp_path / "huge.png"
    huge.write_bytes(open(good, "rb").read() + bytes(300 * 1024))

    message = page.locator("#message")
    page.set_input_files("#file-input", str(not_image))
    message.wait_for(state="visible")
    assert "not an image" in message.inner_text()
    screenshot(page, "4-bad-upload")

    page.set_input_files("#file-input", str(truncated))
    page.wait_for_selector("#message:has-text('truncated')")
    page.set_input_files("#file-input", str(huge))
    page.wait_for_selector("#message:has-text('largest upload accepted')")

    page.set_input_files("#file-input", good)
    message.wait_for(state="hidden")
    page.wait_for_selector(f'#results li:first-child[data-item-id="{archive["ids"][good]}"]')


def test_browse_by_keyboard_and_search_with_an_archive_item(page, archive):
    page.focus("body")
    reached = []
    for _ in range(12):  # the controls are reachable with Tab, in reading order
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id || document.activeElement.name"))
    for control in ("file-input", "model-select", "mode", "page-size", "browse"):
        assert control in reached, reached
    page.focus("#browse")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results li[data-item-id='0']")
    assert "Archive items 1–24 of 32" in page.inner_text("#results-status")
    card = page.locator("#results li[data-item-id='9'] button.open")
    card.focus()
    page.keyboard.press("Enter")
    wait_for_search(page, 1)
    assert first_result(page) == 9
    assert "archive item 9" in page.inner_text("#query-caption")
    assert page.locator("img:not([alt]), img[alt='']").count() == 0  # every image has alt text


def test_narrow_screen_has_no_sideways_scrolling(browser, server, archive):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    tab = context.new_page()
    tab.goto(server + "/")
    tab.wait_for_selector("#model-select option", state="attached")
    tab.set_input_files("#file-input", archive["paths"][2])
    wait_for_search(tab, 1)
    width = tab.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], width
    columns = tab.evaluate(
        "getComputedStyle(document.getElementById('results')).gridTemplateColumns.split(' ')")
    assert len(columns) == 2
    screenshot(tab, "5-narrow")
    context.close()


def test_page_photograph_box_search_and_locate(page, archive, tmp_path):
    from zoo.apps.locating import synthetic_page

    chosen = (1, 9, 22)
    marks = [1.0 - np.asarray(Image.open(archive["paths"][i]), np.float32) / 255 for i in chosen]
    places = [(40, 50, 90, 90), (210, 150, 100, 100), (340, 40, 90, 90)]
    photo = synthetic_page(marks, places, height=300, width=460, seed=1)
    photo_path = tmp_path / "page.png"
    Image.fromarray((photo * 255).astype(np.uint8)).save(photo_path)

    page.set_input_files("#file-input", str(photo_path))
    wait_for_search(page, 1)
    canvas = page.locator("#query-canvas").bounding_box()
    scale = canvas["width"] / 460
    x, y, w, h = places[1]
    page.mouse.move(canvas["x"] + (x - 5) * scale, canvas["y"] + (y - 5) * scale)
    page.mouse.down()
    page.mouse.move(canvas["x"] + (x + w + 5) * scale, canvas["y"] + (y + h + 5) * scale, steps=4)
    page.mouse.up()
    wait_for_search(page, 2)
    assert first_result(page) == archive["ids"][archive["paths"][9]]

    page.click("#locate-box")
    page.wait_for_selector("#clear-overlay:visible", timeout=90_000)
    caption = page.inner_text("#query-caption")
    assert "candidate place" in caption
    best_x, best_y = (int(value) for value in
                      caption.split(" at x ")[1].split(" (")[0].replace(" y ", "").split(","))
    assert x <= best_x + 10 and best_x <= x + w and y <= best_y + 10 and best_y <= y + h
    screenshot(page, "6-locate")

    # the box can be drawn with the keyboard too: arrows make and move it, Enter searches
    page.focus("#query-canvas")
    page.keyboard.press("Escape")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowDown")
    page.keyboard.press("Enter")
    wait_for_search(page, 3)
    assert page.locator("#results li").count() == 24


# -- a region index of page photographs --------------------------------------------------------


def inside(inner, outer, slack=1.0):
    """Whether bounding box `inner` lies inside `outer` (Playwright's x, y, width, height)."""
    return outer["x"] - slack <= inner["x"] and outer["y"] - slack <= inner["y"] and \
        inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack and \
        inner["y"] + inner["height"] <= outer["y"] + outer["height"] + slack


def assert_boxes_drawn(frame, hit, count):
    """The first `count` of `hit`'s boxes are drawn over the page shown in `frame` (a
    Locator), where the API placed them, inside the page's image."""
    image = frame.locator("img").bounding_box()
    drawn = frame.locator(".hit-box")
    assert drawn.count() == count and frame.locator(".hit-box.best").count() == 1
    scale = image["width"] / hit["width"]
    for element, (x, y, w, h, _) in zip(drawn.all(), hit["boxes"]):
        box = element.bounding_box()
        assert inside(box, image), (box, image)
        assert abs(box["x"] - (image["x"] + x * scale)) < 2 and \
            abs(box["width"] - w * scale) < 2, (box, image, hit["box"])


def test_page_hits_show_their_boxes_and_open_with_every_box(pages_tab, page_archive,
                                                             page_server):
    tab = pages_tab
    page_id, query, _ = page_archive["pages"][0]
    assert "4 pages (" in tab.inner_text("#summary") and "marked regions" in tab.inner_text(
        "#summary")
    tab.set_input_files("#file-input", query)
    wait_for_search(tab, 1)
    assert first_result(tab) == page_id
    assert "Pages 1–4" in tab.inner_text("#results-status")
    _, answer = api(page_server, "/api/search?k=24", read(query))
    hits = answer["hits"]
    assert [int(card.get_attribute("data-item-id")) for card in tab.locator("#results li").all()] \
        == [hit["id"] for hit in hits]
    assert wait_for_images(tab, "#results img")
    for card, hit in zip(tab.locator("#results li").all(), hits):
        assert_boxes_drawn(card.locator(".frame"), hit, 1)  # the best box, on the thumbnail
        assert f"similarity {hit['score']:.3f}" in card.inner_text()
    assert tab.locator("img:not([alt]), img[alt='']").count() == 0
    screenshot(tab, "7-page-hits")

    # the hit with the most matching places, opened: the page large, every box numbered
    number = max(range(len(hits)), key=lambda index: len(hits[index]["boxes"]))
    hit = hits[number]
    assert len(hit["boxes"]) > 1
    tab.click(f"#results li:nth-child({number + 1}) button.open")
    tab.locator("#viewer").wait_for(state="visible")
    assert wait_for_images(tab, "#viewer img")
    assert_boxes_drawn(tab.locator("#viewer-frame"), hit, len(hit["boxes"]))
    labels = tab.locator("#viewer-frame .hit-box .label").all_inner_texts()
    assert labels == [f"{index + 1}: {box[4]:.2f}" for index, box in enumerate(hit["boxes"])]
    assert tab.locator("#viewer-box-list li").count() == len(hit["boxes"])
    assert tab.locator("#viewer-query").is_visible()  # the query beside the page
    assert tab.get_attribute("#viewer-item", "alt").startswith(f"Archive page {hit['id']}: ")
    assert tab.locator("#viewer-use").is_hidden() and tab.locator("#viewer-locate").is_hidden()
    assert tab.locator("#viewer-search-box").is_disabled()
    screenshot(tab, "8-page-viewer")
    tab.keyboard.press("Escape")
    tab.locator("#viewer").wait_for(state="hidden")

    # a hit's best box searches again, as a box drawn on that page
    tab.click("#results li:first-child button.use")
    wait_for_search(tab, 2)
    assert first_result(tab) == page_id
    assert f"(page {page_id})" in tab.inner_text("#query-caption")


def test_browse_pages_draw_a_box_on_one_and_search_with_it(pages_tab, page_archive):
    tab = pages_tab
    page_id, _, (x, y, w, h) = page_archive["pages"][2]
    tab.click("#browse")
    tab.wait_for_selector(f"#results li[data-item-id='{page_id}']")
    assert "Pages 1–4 of 4" in tab.inner_text("#results-status")
    assert tab.locator("#results .hit-box").count() == 0
    assert tab.locator("#results button.use").count() == 0  # a page is opened, then boxed
    tab.click(f"#results li[data-item-id='{page_id}'] button.open")
    tab.locator("#viewer").wait_for(state="visible")
    assert wait_for_images(tab, "#viewer-frame img")
    assert tab.locator("#viewer-query-figure").is_hidden()
    assert tab.locator("#viewer-search-box").is_disabled()
    # the opened page has the focus: arrows make a box, Escape clears it (the page stays open)
    assert tab.evaluate("document.activeElement.id") == "viewer-frame"
    tab.keyboard.press("ArrowRight")
    assert tab.locator("#viewer-frame .drawn-box").count() == 1
    assert tab.locator("#viewer-search-box").is_enabled()
    tab.keyboard.press("Escape")
    assert tab.locator("#viewer-frame .drawn-box").count() == 0
    assert tab.locator("#viewer").is_visible()

    frame = tab.locator("#viewer-frame").bounding_box()  # 1 px border around the page
    scale = (frame["width"] - 2) / 500
    left, top = frame["x"] + 1, frame["y"] + 1
    tab.mouse.move(left + (x - 8) * scale, top + (y - 8) * scale)
    tab.mouse.down()
    tab.mouse.move(left + (x + w + 8) * scale, top + (y + h + 8) * scale, steps=4)
    tab.mouse.up()
    drawn = tab.locator("#viewer-frame .drawn-box").bounding_box()
    assert abs(drawn["x"] - (left + (x - 8) * scale)) < 3
    assert abs(drawn["width"] - (w + 16) * scale) < 3
    assert tab.locator("#viewer-search-box").is_enabled()
    screenshot(tab, "9-page-box-drawn")

    tab.click("#viewer-search-box")
    wait_for_search(tab, 1)
    assert first_result(tab) == page_id
    assert f"(page {page_id})" in tab.inner_text("#query-caption")
    assert tab.locator("#whole-image").is_hidden()  # a page is searched by a box, not whole
    screenshot(tab, "10-page-box-search")

    # the box on the query page can be moved with the keyboard; Enter searches again
    tab.focus("#query-canvas")
    tab.keyboard.press("ArrowRight")
    tab.keyboard.press("Enter")
    wait_for_search(tab, 2)
    assert tab.locator("#results li").count() == 4
    assert tab.locator("img:not([alt]), img[alt='']").count() == 0
