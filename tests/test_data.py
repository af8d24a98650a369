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


def _omniglot_zip(path, subset, drawings):
    """A zip laid out as Omniglot's: subset/alphabet/characterNN/IIII_DD.png, one stroke each."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for alphabet, character, drawer, column in drawings:
            page = np.full((105, 105), 255, np.uint8)
            page[20:80, column:column + 6] = 0
            stream = io.BytesIO()
            Image.fromarray(page).save(stream, format="PNG")
            archive.writestr(f"{subset}/{alphabet}/character{character:02d}/"
                             f"{1000 + character:04d}_{drawer:02d}.png", stream.getvalue())


def test_omniglot_reads_a_drawing_in_two_zips_once_with_one_label(tmp_path):
    # Like images_background_small1 and small2, which both hold Greek and Latin.
    _omniglot_zip(tmp_path / "first.zip", "first", [("Greek", 1, 1, 10), ("Greek", 1, 2, 20),
                                                    ("Korean", 1, 1, 30)])
    _omniglot_zip(tmp_path / "second.zip", "second", [("Greek", 1, 1, 10), ("Greek", 1, 2, 20),
                                                      ("Greek", 1, 3, 40), ("Tagalog", 1, 1, 50)])
    omniglot = load_omniglot(str(tmp_path), subsets=("first", "second"))
    assert [name.split("/", 1)[1] for name in omniglot.names] == [
        "Greek/character01/1001_01.png", "Greek/character01/1001_02.png",
        "Korean/character01/1001_01.png", "Greek/character01/1001_03.png",
        "Tagalog/character01/1001_01.png"]
    # Greek character 1 is one character, whichever zip a drawing came from.
    assert omniglot.characters.tolist() == [0, 0, 1, 0, 2]
    repeated = load_omniglot(str(tmp_path), subsets=("first", "second"), repeats=True)
    assert len(repeated) == 7 and repeated.characters.tolist() == [0, 0, 1, 0, 0, 0, 2]
    np.testing.assert_array_equal(repeated.images[3], repeated.images[0])


def test_the_omniglot_background_corpus_is_242_characters_by_20_drawers():
    from zoo.data.corpora import load_corpus
    from zoo.registry import get_corpus

    corpus = load_corpus(get_corpus("omniglot_background"))
    assert corpus.images.shape == (4840, 64, 64, 1)
    assert np.bincount(corpus.labels).tolist() == [20] * 242
    assert len(load_corpus(get_corpus("omniglot_background_repeated"))) == 5840


def test_omniglot_missing_folder_says_where_to_point(tmp_path):
    with pytest.raises(ValueError, match="ZOO_OMNIGLOT_DIR") as error:
        load_omniglot(str(tmp_path))
    assert str(tmp_path) in str(error.value) and "github.com/brendenlake/omniglot" in str(error.value)
