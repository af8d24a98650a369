"""`zoo beam regions` on the DirectRunner: a real exported SavedModel encodes the candidate
regions of page photographs into shards equal to `Index.build(..., regions=True)`'s regions; bad
pages land in the errors; `zoo index build --from-shards` turns the shards into an index that
searches like the in-process one, and refuses shards of another model."""

import contextlib
import io
import json
import os
import shutil

import apache_beam  # noqa: F401  (the [beam] extra)
import numpy as np
import pytest
from PIL import Image

import zoo
from zoo.apps.beam_pipeline import (SHARD_PREFIX, _ProposeRegions, load_shards, read_errors,
                               read_region_shards, write_shard)
from zoo.apps.cli import main
from zoo.apps.index import Index
from zoo.apps.index import regions as region_search
from zoo.apps.locating import make_search_page
from zoo.apps.proposals import ProposalSettings, box_iou

MODEL = "sketch_gan_plus_merchant"
PAGES = 3


def _png(path, gray):
    Image.fromarray((np.clip(gray, 0, 1) * 255).astype(np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """The exported model; three pages, a corrupt file and a blank page; each page's query."""
    root = tmp_path_factory.mktemp("beam_regions")
    model_dir = zoo.load(MODEL).export(str(root / "models"), 1)
    folder = root / "pages"
    folder.mkdir()
    pages = []
    for number in range(PAGES):
        page = make_search_page(400, 500, num_marks=4, target=number, seed=40 + number)
        pages.append({"path": _png(folder / f"page_{number}.png", page.page),
                      # the query as a person crops it: dark ink on light paper
                      "query": _png(root / f"query_{number}.png", 1.0 - 0.8 * page.query),
                      "truth": page.truth})
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    Image.new("L", (300, 200), 225).save(folder / "blank.png")
    return {"root": root, "model_dir": model_dir, "folder": str(folder), "pages": pages}


@pytest.fixture(scope="module")
def shards(archive):
    """`zoo beam regions` over the folder: shards of two pages, RunInference batches of two
    pages, model calls of 3 crops (so a page's crops span calls); -> (output, printed)."""
    output = str(archive["root"] / "shards")
    settings = json.dumps(ProposalSettings().to_json())
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["beam", "regions", "--model-dir", archive["model_dir"],
                     "--input", archive["folder"], "--output", output, "--proposals", settings,
                     "--shard-size", "2", "--pages-per-batch", "2", "--batch-size", "3",
                     "--runner=DirectRunner", "--direct_num_workers=1"]) == 0
    return output, printed.getvalue()


@pytest.fixture(scope="module")
def in_process(archive):
    return Index.build(str(archive["root"] / "in_process.idx"), archive["folder"], models=MODEL,
                       regions=True, progress=False)


def test_region_shards_equal_the_in_process_region_index(archive, shards, in_process):
    output, printed = shards
    assert "DONE: 3 pages encoded" in printed and "2 files failed" in printed
    encoded = read_region_shards(output)
    assert len([name for name in os.listdir(output) if name.startswith("regions-")]) >= 2
    assert list(encoded.paths) == [item.path for item in in_process.items()]
    table = in_process.regions()
    np.testing.assert_array_equal(encoded.page, table[:, 0])
    np.testing.assert_array_equal(encoded.boxes, table[:, 1:])
    np.testing.assert_allclose(encoded.embeddings, in_process.embeddings(), atol=1e-4)
    bits = np.unpackbits(in_process.codes(), axis=1)[:, :64]
    assert encoded.bits.shape == bits.shape and np.mean(encoded.bits == bits) >= 0.995
    assert encoded.model == f"{MODEL}/1" and encoded.image_size == 64
    assert encoded.proposals == ProposalSettings().to_json()
    assert encoded.pages == [{"width": 500, "height": 400, "file_size": os.path.getsize(path)}
                             for path in encoded.paths]


def test_corrupt_and_blank_pages_land_in_the_errors(archive, shards):
    output, _ = shards
    errors = {os.path.basename(error["path"]): error["error"] for error in read_errors(output)}
    assert set(errors) == {"corrupt.png", "blank.png"}
    assert errors["corrupt.png"].startswith("Cannot decode image: cannot identify image file "
                                            f"'{archive['folder']}/corrupt.png'")
    assert errors["blank.png"] == "no ink regions found (a blank page?)"
    assert not [name for name in os.listdir(output) if name.startswith(".")]  # no temporaries


def test_an_oversized_page_is_an_error_not_decoded(archive, monkeypatch):
    path = archive["pages"][0]["path"]
    monkeypatch.setattr(region_search, "MAX_PAGE_PIXELS", 100_000)  # 500 x 400 is over it
    (output,) = _ProposeRegions(64, ProposalSettings()).process((path, open(path, "rb").read()))
    assert output.tag == "errors" and "megapixel limit" in output.value["error"]


def test_an_index_from_the_shards_searches_like_the_in_process_one(archive, shards, in_process,
                                                                    tmp_path, capsys):
    output, _ = shards
    out = str(tmp_path / "from_shards.idx")
    assert main(["index", "build", "--from-shards", output, "--out", out, "--model", MODEL]) == 0
    printed = capsys.readouterr().out
    assert f"{PAGES} pages" in printed and "corrupt.png" in printed and "blank.png" in printed
    index = Index.open(out)
    assert index.is_region_index and index.proposals == ProposalSettings()
    np.testing.assert_array_equal(index.regions(), in_process.regions())
    info = index.model_info()
    assert (info["name"], info["embedding_dim"], info["num_bits"], info["image_size"]) == \
        (MODEL, 256, 64, 64)
    assert info["encoded_from"] == f"{MODEL}/1"
    for item, page in zip(index.items(), archive["pages"]):
        assert item.path == page["path"]
        assert {key: item.metadata[key] for key in ("relative_path", "width", "height",
                                                    "regions")} == \
            {"relative_path": os.path.basename(page["path"]), "width": 500, "height": 400,
             "regions": len(index.page_regions(item.id))}
    for number, page in enumerate(archive["pages"]):
        hits = index.search(page["query"], k=PAGES)
        reference = in_process.search(page["query"], k=PAGES)
        assert (hits[0].path, hits[0].box) == (reference[0].path, reference[0].box)
        assert [hit.id for hit in hits] == [hit.id for hit in reference]
        np.testing.assert_allclose([hit.score for hit in hits],
                                   [hit.score for hit in reference], atol=1e-3)
        assert hits[0].id == number  # the page that bears the mark
        assert box_iou(hits[0].box, page["truth"]) > 0.5
    assert "already holds an index" in _error(main, ["index", "build", "--from-shards", output,
                                                     "--out", out], capsys)


def test_an_interrupted_ingestion_resumes(shards, in_process, tmp_path, monkeypatch):
    from zoo.apps.index import store

    output, _ = shards
    out = str(tmp_path / "resumed.idx")
    write_chunk, written = store.write_chunk, []

    def killed_after_one_chunk(*args, **kwargs):
        if written:
            raise KeyboardInterrupt
        written.append(write_chunk(*args, **kwargs))

    monkeypatch.setattr(store, "write_chunk", killed_after_one_chunk)
    with pytest.raises(KeyboardInterrupt):
        Index.build_from_shards(out, output, progress=False, chunk_size=1)
    monkeypatch.undo()
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    with pytest.raises(ValueError, match="interrupted build of"):
        Index.build_from_shards(out, os.path.join(output, "regions-*.npz"), progress=False)
    index = Index.build_from_shards(out, output, progress=False, chunk_size=1)
    assert (index.report.resumed, index.report.added, len(index.report.skipped)) == (1, 3, 2)
    np.testing.assert_array_equal(index.regions(), in_process.regions())
    np.testing.assert_array_equal(index.codes(),
                                  np.packbits(read_region_shards(output).bits, axis=1))


def _error(run, argv, capsys):
    assert run(argv) == 2
    return capsys.readouterr().err


def test_shards_of_another_model_are_refused(shards, tmp_path, capsys):
    output, _ = shards
    with pytest.raises(ValueError, match=r"encoded by sketch_gan_plus_merchant/1, not by "
                                         r"'sketch_gan_merchant'"):
        Index.build_from_shards(str(tmp_path / "a.idx"), output, model="sketch_gan_merchant")
    assert not os.path.exists(tmp_path / "a.idx" / "manifest.json")
    # Shards that say they are thin_gan_merchant's: 256-d embeddings are not its 1024-d ones.
    other = tmp_path / "other"
    shutil.copytree(output, other)
    _rewrite_shards(other, model=np.array("thin_gan_merchant/1"))
    with pytest.raises(ValueError, match=r"do not fit the registered model 'thin_gan_merchant'"
                                         r": they hold embedding_dim 256"):
        Index.build_from_shards(str(tmp_path / "b.idx"), str(other))
    _rewrite_shards(other, model=np.array("my_own_model/3"))
    assert "'my_own_model' is not a registered zoo model" in _error(
        main, ["index", "build", "--from-shards", str(other), "--out", str(tmp_path / "c.idx")],
        capsys)
    # One shard's regions proposed another way: refused when read.
    first = sorted(name for name in os.listdir(other) if name.startswith("regions-"))[:1]
    _rewrite_shards(other, first, proposals=np.array(json.dumps(
        ProposalSettings(max_regions=5).to_json())))
    with pytest.raises(ValueError, match="different proposal settings"):
        read_region_shards(str(other))


def _rewrite_shards(folder, names=None, **changes):
    for name in names or [name for name in os.listdir(folder) if name.startswith("regions-")]:
        with np.load(folder / name) as shard:
            arrays = dict(shard)
        arrays.update(changes)
        np.savez(folder / name, **arrays)


def test_embedding_shards_become_an_index_of_images(archive, in_process, tmp_path):
    """`zoo beam encode`'s shard format (written here by its own shard writer) -> an ordinary
    index: each page, as one image, found by its own encoding."""
    from zoo.apps.index.encoding import LocalEncoder, prepare_query

    encoder = LocalEncoder(MODEL)
    paths = [page["path"] for page in archive["pages"]]
    images = np.stack([prepare_query(path, 64) for path in paths])
    embeddings, packed = encoder(images)
    output = tmp_path / "encoded"
    output.mkdir()
    write_shard(str(output), SHARD_PREFIX, paths, paths=np.array(paths, dtype=str),
                embedding=embeddings, bits=np.unpackbits(packed, axis=1)[:, :64],
                model=np.array(f"{MODEL}/1"))
    assert load_shards(str(output)).kind == "images"
    index = Index.build_from_shards(str(tmp_path / "images.idx"), str(output / "*.npz"),
                                    progress=False)
    assert not index.is_region_index and [item.path for item in index.items()] == paths
    assert index.item(1).metadata == {"relative_path": "page_1.png"}
    assert index.search(paths[1], k=1)[0].id == 1
