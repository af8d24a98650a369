"""Image preprocessing and the folder and Omniglot loaders."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from zoo.data.images import load_image, load_image_folder, preprocess
from zoo.data.omniglot import load_omniglot


def scan_of(mark, size=(150, 110), light=True, colour=False):
    """A mark pasted into a larger page: dark ink on light paper (or the reverse)."""
    page = np.zeros(size[::-1], np.float32)
    page[20:84, 30:94] = mark
    page = 1.0 - page if light else page
    pixels = (page * 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    return image.convert("RGB") if colour else image


def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_light_scan_equals_its_dark_twin(small_corpus):
    mark = small_corpus.images[0, ..., 0]
    light = load_image(png_bytes(scan_of(mark, light=True, colour=True)))
    dark = load_image(png_bytes(scan_of(mark, light=False)))
    np.testing.assert_allclose(light, dark, atol=1 / 255 + 1e-6)


def test_preprocess_crops_tight_and_centres():
    page = np.ones((200, 300), np.float32)
    page[50:70, 100:180] = 0.0  # a dark bar, 80 wide and 20 high, off-centre on white paper
    out = preprocess(page, size=64, margin=3)
    ink_rows = np.flatnonzero(out.max(axis=1) > 0.5)
    ink_cols = np.flatnonzero(out.max(axis=0) > 0.5)
    assert ink_cols[0] == 3 and ink_cols[-1] == 60  # 58 = 64 - 2 * 3 columns wide
    assert abs((ink_rows[0] + ink_rows[-1]) / 2 - 31.5) <= 1  # centred vertically
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_blank_image_is_refused():
    with pytest.raises(ValueError, match="no visible ink"):
        preprocess(np.ones((50, 50), np.float32))
    with pytest.raises(ValueError, match="shape"):
        preprocess(np.ones((50, 50, 3), np.float32))


def test_folder_with_corrupt_files_loads_the_rest(tmp_path, small_corpus):
    for index in range(3):
        scan_of(small_corpus.images[index, ..., 0]).save(tmp_path / f"mark_{index}.png")
    (tmp_path / "sub").mkdir()
    scan_of(small_corpus.images[3, ..., 0]).save(tmp_path / "sub" / "mark_3.jpg")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    full = png_bytes(scan_of(small_corpus.images[4, ..., 0]))
    (tmp_path / "truncated.png").write_bytes(full[: len(full) // 2])
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    (tmp_path / "notes.txt").write_text("not an image")

    folder = load_image_folder(str(tmp_path), progress=False)
    assert len(folder) == 4 and folder.images.shape == (4, 64, 64, 1)
    assert sorted(os.path.basename(p) for p in folder.paths) == [
        "mark_0.png", "mark_1.png", "mark_2.png", "mark_3.jpg"]
    assert sorted(os.path.basename(p) for p, _ in folder.errors) == [
        "blank.png", "broken.png", "truncated.png"]
    assert all(reason for _, reason in folder.errors)


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        load_image_folder(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="No image files"):
        load_image_folder(str(tmp_path))
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="None of the 1 image files"):
        load_image_folder(str(tmp_path), progress=False)


def test_omniglot_reads_the_official_zips():
    omniglot = load_omniglot(subsets=("images_background_small1",), limit=3)
    assert omniglot.images.shape == (60, 64, 64, 1)  # 3 characters x 20 drawers
    assert sorted(set(omniglot.drawers.tolist())) == list(range(1, 21))
    assert np.bincount(omniglot.characters).tolist() == [20, 20, 20]
    # Black ink on white paper becomes white strokes on black, cropped tight.
    assert omniglot.images.mean() < 0.35
    assert np.all(omniglot.images[:, :3].max(axis=(1, 2, 3)) < 0.5)


def test_omniglot_missing_folder_says_where_to_point(tmp_path):
    with pytest.raises(ValueError, match="ZOO_OMNIGLOT_DIR") as error:
        load_omniglot(str(tmp_path))
    assert str(tmp_path) in str(error.value) and "github.com/brendenlake/omniglot" in str(error.value)
