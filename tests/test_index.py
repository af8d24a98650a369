"""The archive index (zoo.apps.index): search equal to brute force, build / add / resume, crash
safety, refusal of corrupt and foreign indexes, the CLI, encoding through a server."""

import _thread
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from PIL import Image

from zoo.apps.index import Index
from zoo.apps.index import store
from zoo.apps.index.preprocess import preprocess_numpy
from zoo.apps.index.search import (ApproximateHamming, ApproximateInnerProduct, ExactHamming,
                              ExactInnerProduct, numpy_hamming_search,
                              numpy_inner_product_search, recall_at_k)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "thin_gan_merchant"  # the fastest shipped encoder
SECOND_MODEL = "sketch_gan_merchant"


def write_archive(folder, corpus, start=0, count=None, scale=(80, 96)):
    """Write corpus images as scans: dark ink on light paper, not square, not 64 x 64."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    images = corpus.images[start : start + count if count else None]
    for offset, image in enumerate(images):
        ink = (255 - image[..., 0] * 230).astype(np.uint8)
        path = os.path.join(folder, f"mark_{start + offset:03d}.png")
        Image.fromarray(ink).resize(scale, Image.BILINEAR).save(path)
        paths.append(path)
    return paths


def run_python(code, timeout=180):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env)


# ----------------------------------------------------------------------------- preprocessing


def test_numpy_preprocessing_matches_the_tensorflow_ops(small_corpus):
    from zoo.data import preprocess_tf
    from zoo.data.images import preprocess
    from zoo.apps.index import preprocess as numpy_preprocess

    assert numpy_preprocess.MIN_INK == preprocess_tf.MIN_INK
    assert numpy_preprocess.NO_INK_MESSAGE == preprocess_tf.NO_INK_MESSAGE
    rng = np.random.default_rng(1)
    cases = []
    for index, image in enumerate(small_corpus.images[:12]):
        gray = image[..., 0]
        if index % 2:
            gray = 1.0 - 0.9 * gray  # dark ink on light paper: inverted
        size = [(17, 23), (64, 64), (150, 90), (301, 211)][index % 4]  # enlarge and shrink
        resized = Image.fromarray((gray * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
        cases.append(np.asarray(resized, np.float32) / 255.0)
    cases.append(rng.random((40, 70)).astype(np.float32))
    cases.append(np.pad(np.ones((1, 1), np.float32), 5))  # a single dot: 1 x 1 crop
    for gray in cases:
        for size in (64, 32):
            np.testing.assert_allclose(preprocess_numpy(gray, size=size),
                                       preprocess(gray, size=size), atol=1e-5)
    with pytest.raises(ValueError, match="no visible ink"):
        preprocess_numpy(np.full((20, 20), 0.7, np.float32))


# ----------------------------------------------------------------------------- search


def test_exact_search_equals_a_numpy_scan_ties_included(rng):
    codes = rng.integers(0, 256, size=(3000, 8), dtype=np.uint8)
    codes[1000:1400] = codes[:400]  # duplicates: many exact ties
    codes[2000:2600, :6] = 0  # a cluster: ties at every distance
    queries = np.concatenate([codes[:5], codes[2000:2005],
                              rng.integers(0, 256, size=(10, 8), dtype=np.uint8)])
    exact = ExactHamming(codes)
    for k in (1, 10, 50):
        distances, ids = exact.search(queries, k)
        reference_distances, reference_ids = numpy_hamming_search(codes, queries, k)
        np.testing.assert_array_equal(distances, reference_distances)
        np.testing.assert_array_equal(ids, reference_ids)  # ties broken by id, as numpy's
    distances, ids = exact.search(queries[:2], 5000)  # k > N: everything, ordered
    assert ids.shape == (2, 3000) and sorted(ids[0]) == list(range(3000))

    vectors = rng.standard_normal((2000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = np.concatenate([vectors[:3], rng.standard_normal((7, 32)).astype(np.float32)])
    blocks = [vectors[:700], vectors[700:]]  # segments, added one after the other
    scores, ids = ExactInnerProduct(blocks).search(queries, 10)
    reference_scores, reference_ids = numpy_inner_product_search(vectors, queries, 10)
    np.testing.assert_array_equal(ids, reference_ids)
    np.testing.assert_allclose(scores, reference_scores, atol=1e-5)


def test_approximate_search_recall_is_measured_against_exact(rng):
    centres = rng.integers(0, 256, size=(40, 8), dtype=np.uint8)
    noise = np.packbits(rng.random((4000, 64)) < 0.08, axis=1)
    codes = centres[rng.integers(0, 40, 4000)] ^ noise
    queries = codes[:50] ^ np.packbits(rng.random((50, 64)) < 0.05, axis=1)
    exact_distances, _ = ExactHamming(codes).search(queries, 10)
    distances, ids = ApproximateHamming(codes).search(queries, 10)
    assert recall_at_k(exact_distances, distances, ids, higher_is_better=False) >= 0.9
    # Whatever it returns is real: the true distances of those ids, best first.
    true = numpy_hamming_search(codes, queries, len(codes))
    for row in range(len(queries)):
        lookup = dict(zip(true[1][row], true[0][row]))
        assert [lookup[i] for i in ids[row]] == list(distances[row])
        assert list(distances[row]) == sorted(distances[row])
    # A random approximate answer scores low: the measure can fail.
    shuffled = rng.permutation(ids.ravel()).reshape(ids.shape)
    assert recall_at_k(exact_distances, distances[::-1] + 20, shuffled, False) < 0.5

    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    exact_scores, _ = ExactInnerProduct(vectors).search(vectors[:30], 10)
    scores, ids = ApproximateInnerProduct(vectors).search(vectors[:30], 10)
    assert recall_at_k(exact_scores, scores, ids, higher_is_better=True) >= 0.9


# ----------------------------------------------------------------------------- an index


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from zoo.data.merchant_marks import make_corpus

    corpus = make_corpus(num_identities=10, instances_per_identity=3, seed=11)
    folder = tmp_path_factory.mktemp("archive")
    paths = write_archive(str(folder / "box_1"), corpus, 0, 16)
    paths += write_archive(str(folder / "box_2"), corpus, 16, 8, scale=(40, 50))
    with open(folder / "box_1" / "broken.png", "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n not really")
    Image.new("L", (30, 30), 255).save(folder / "box_2" / "blank.png")
    with open(paths[0] + ".json", "w") as handle:
        json.dump({"shelfmark": "HCA 30/1", "year": 1672}, handle)
    with open(folder / "metadata.csv", "w") as handle:
        handle.write("path,collection\nbox_2/mark_016.png,Prize Papers\n")
    return {"folder": str(folder), "paths": paths, "corpus": corpus}


@pytest.fixture(scope="module")
def built(archive, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("indexes") / "archive.idx")
    index = Index.build(out, archive["folder"], models=(MODEL, SECOND_MODEL), progress=False,
                        metadata={"archive": "test archive"}, chunk_size=10)
    return index


def test_build_holds_items_metadata_and_reports_unusable_files(built, archive):
    assert len(built) == 24 and built.models == [MODEL, SECOND_MODEL]
    assert built.metadata == {"archive": "test archive"}
    assert [item.path for item in built.items()] == archive["paths"]
    assert [item.id for item in built.items(offset=20, limit=10)] == [20, 21, 22, 23]
    skipped = dict(built.report.skipped)
    assert set(skipped) == {os.path.join(archive["folder"], "box_1", "broken.png"),
                            os.path.join(archive["folder"], "box_2", "blank.png")}
    assert "no visible ink" in skipped[os.path.join(archive["folder"], "box_2", "blank.png")]
    first = built.item(0)
    assert first.metadata["relative_path"] == "box_1/mark_000.png"
    assert (first.metadata["width"], first.metadata["height"]) == (80, 96)
    assert first.metadata["file_size"] == os.path.getsize(first.path)
    assert first.metadata["user"] == {"shelfmark": "HCA 30/1", "year": 1672}
    assert built.item(16).metadata["user"] == {"collection": "Prize Papers"}
    assert "user" not in built.item(1).metadata
    with pytest.raises(ValueError, match="item id"):
        built.item(24)


def test_stored_encodings_are_the_encoders_own(built, archive):
    import zoo
    from zoo.data.images import load_image

    images = np.stack([load_image(path) for path in archive["paths"]])  # the zoo's TF path
    for name in (MODEL, SECOND_MODEL):
        encoder = zoo.load(name)
        np.testing.assert_allclose(built.embeddings(name), encoder.encode(images), atol=1e-4)
        np.testing.assert_array_equal(built.codes(name), encoder.hash(images).packed)


def test_search_equals_brute_force_and_accepts_every_query_form(built, archive):
    from zoo.data.images import decode_image, load_image

    query = archive["paths"][5]
    for name in (MODEL, SECOND_MODEL):
        embedding, bits = built.encode_query(query, name)
        hits = built.search(query, k=6, model=name)
        scores = built.embeddings(name) @ embedding
        order = np.argsort(-scores, kind="stable")[:6]
        assert [hit.id for hit in hits] == list(order) and hits[0].id == 5
        np.testing.assert_allclose([hit.score for hit in hits], scores[order], atol=1e-5)
        assert [hit.rank for hit in hits] == [1, 2, 3, 4, 5, 6]
        assert hits[2].path == archive["paths"][hits[2].id] and hits[2].metadata

        hits = built.search(query, k=6, model=name, mode="hamming")
        distances = numpy_hamming_search(built.codes(name), np.packbits(bits)[None], 6)
        assert [hit.id for hit in hits] == list(distances[1][0])
        assert [hit.score for hit in hits] == list(distances[0][0]) and hits[0].score == 0

    # Paging: offset continues the same ranking.
    everything = built.search(query, k=10)
    assert built.search(query, k=4, offset=6) == everything[6:10]
    assert built.search(query, k=4, offset=30) == []
    approximate = built.search(query, k=10, approximate=True)
    assert {hit.id for hit in approximate} == {hit.id for hit in everything}  # 24 items
    # The HNSW graph is kept beside the index and loaded, not rebuilt, by the next reader.
    (graph,) = glob.glob(os.path.join(built.path, f"{MODEL}.embeddings-hnsw-*.faiss"))
    saved = os.stat(graph).st_mtime_ns
    reopened = Index.open(built.path)
    assert reopened.search(query, k=10, approximate=True) == approximate
    assert os.stat(graph).st_mtime_ns == saved
    with open(graph, "r+b") as handle:  # a damaged graph fails its sha256: built again
        handle.write(b"junk")
    assert Index.open(built.path).search(query, k=10, approximate=True) == approximate
    assert os.stat(graph).st_mtime_ns != saved

    # One query, five forms: path, bytes, decoded gray, decoded RGB, already preprocessed.
    with open(query, "rb") as handle:
        data = handle.read()
    gray = decode_image(query)
    rgb = np.repeat((gray * 255).round().astype(np.uint8)[..., None], 3, axis=-1)
    reference, _ = built.encode_query(query)
    for form in (data, gray, rgb, load_image(query), load_image(query)[..., 0]):
        np.testing.assert_allclose(built.encode_query(form)[0], reference, atol=1e-4)
    for bad, message in ((np.zeros((5, 5, 7)), "query image array"), ("nope.png", "not exist"),
                         (b"junk", "Cannot decode"), (np.full((9, 9), 3.0), r"\[0, 1\]")):
        with pytest.raises(ValueError, match=message):
            built.search(bad)
    with pytest.raises(ValueError, match="holds no model"):
        built.search(query, model="sketch_gan_omniglot")
    with pytest.raises(ValueError, match="mode"):
        built.search(query, mode="cosine")
    similar = built.similar(5, k=3)
    assert [hit.id for hit in similar] == [hit.id for hit in built.search(query, k=3)]


def test_add_is_incremental_with_stable_ids(archive, tmp_path):
    corpus = archive["corpus"]
    folder = str(tmp_path / "scans")
    first = write_archive(folder, corpus, 0, 6)
    index = Index.build(str(tmp_path / "a.idx"), folder, models=MODEL, progress=False)
    before = index.embeddings().copy()
    more = write_archive(folder, corpus, 6, 4)  # the folder grows
    with open(os.path.join(folder, "torn.jpg"), "wb") as handle:
        handle.write(b"\xff\xd8\xff\xe0 torn")
    report = index.add(folder, progress=False)
    assert (report.added, report.already_indexed, report.resumed) == (4, 6, 0)
    assert [path for path, _ in report.skipped] == [os.path.join(folder, "torn.jpg")]
    assert len(index) == 10
    assert [item.path for item in index.items()] == first + more  # old ids unchanged
    np.testing.assert_array_equal(index.embeddings()[:6], before)
    assert index.search(more[2], k=1)[0].id == 8
    reopened = Index.open(str(tmp_path / "a.idx"))
    assert [item.path for item in reopened.items()] == first + more
    np.testing.assert_array_equal(reopened.embeddings(), index.embeddings())
    assert len(reopened.manifest["segments"]) == 2
    assert index.add(folder, progress=False).added == 0  # nothing new: nothing written
    assert len(Index.open(str(tmp_path / "a.idx")).manifest["segments"]) == 2
    with pytest.raises(ValueError, match="already holds an index"):
        Index.build(str(tmp_path / "a.idx"), folder, models=MODEL)


# ----------------------------------------------------------------------------- interruptions


def test_an_interrupted_build_resumes_to_the_uninterrupted_result(archive, tmp_path):
    folder = str(tmp_path / "scans")
    write_archive(folder, archive["corpus"], 0, 30, scale=(64, 64))
    out = str(tmp_path / "resumed.idx")

    def press_ctrl_c_after_two_chunks():  # like a user stopping `zoo index build`
        while len(glob.glob(os.path.join(out, ".pending", "chunk-*.npz"))) < 2:
            time.sleep(0.001)
        _thread.interrupt_main()

    threading.Thread(target=press_ctrl_c_after_two_chunks, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        Index.build(out, folder, models=MODEL, progress=False, chunk_size=2)
    chunks = len(store.pending_chunk_files(out))
    assert 2 <= chunks < 15
    with pytest.raises(ValueError, match="interrupted `zoo index build`"):
        Index.open(out)

    resumed = Index.build(out, folder, models=MODEL, progress=False, chunk_size=2)
    assert resumed.report.resumed == 2 * chunks and resumed.report.added == 30
    assert not os.path.exists(store.pending_dir(out))
    reference = Index.build(str(tmp_path / "reference.idx"), folder, models=MODEL,
                            progress=False, chunk_size=7)
    assert [item.path for item in resumed.items()] == [item.path for item in reference.items()]
    np.testing.assert_allclose(resumed.embeddings(), reference.embeddings(), atol=1e-6)
    np.testing.assert_array_equal(resumed.codes(), reference.codes())


def test_a_write_killed_before_the_manifest_leaves_the_previous_index(archive, tmp_path):
    folder = str(tmp_path / "scans")
    write_archive(folder, archive["corpus"], 0, 5)
    out = str(tmp_path / "safe.idx")
    index = Index.build(out, folder, models=MODEL, progress=False)
    write_archive(folder, archive["corpus"], 5, 3)
    # An add killed at its last step: every new file written, the manifest not yet replaced.
    result = run_python(f"""
        import os, signal
        real_replace = os.replace
        def replace(source, destination):
            if str(destination).endswith("manifest.json"):
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(source, destination)
        os.replace = replace
        from zoo.apps.index import Index
        Index.open({out!r}).add({folder!r}, progress=False)
    """)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert any(name.startswith(f"{MODEL}.embeddings-000002") for name in os.listdir(out))
    survivor = Index.open(out)
    assert len(survivor) == 5
    np.testing.assert_array_equal(survivor.embeddings(), index.embeddings())

    # The next add commits what the killed one encoded and removes its leftovers.
    report = survivor.add(folder, progress=False)
    assert (report.added, report.resumed) == (3, 3) and len(survivor) == 8
    assert sorted(name for name in os.listdir(out) if name.endswith(".npy")) == [
        f"{MODEL}.{kind}-{number:06d}.npy" for kind in ("codes", "embeddings")
        for number in (1, 3)]
    assert len(Index.open(out)) == 8


# ----------------------------------------------------------------------------- refusals


def test_corrupt_and_foreign_indexes_are_refused(built, tmp_path):
    copy = str(tmp_path / "copy.idx")
    shutil.copytree(built.path, copy)
    assert len(Index.open(copy)) == 24

    def damaged(edit):
        target = str(tmp_path / f"damaged_{len(os.listdir(tmp_path))}.idx")
        shutil.copytree(copy, target)
        edit(target)
        return target

    def flip_byte(path):
        def edit(target):
            with open(os.path.join(target, path), "r+b") as handle:
                handle.seek(-3, os.SEEK_END)
                value = handle.read(1)
                handle.seek(-3, os.SEEK_END)
                handle.write(bytes([value[0] ^ 0xFF]))
        return edit

    def rewrite_manifest(change):
        def edit(target):
            path = os.path.join(target, store.MANIFEST)
            with open(path) as handle:
                manifest = json.load(handle)
            change(manifest)
            with open(path, "w") as handle:
                json.dump(manifest, handle)
        return edit

    cases = [
        (flip_byte(f"{MODEL}.embeddings-000001.npy"), "does not match its sha256"),
        (flip_byte("items-000001.json"), "does not match its sha256"),
        (lambda t: os.remove(os.path.join(t, f"{SECOND_MODEL}.codes-000001.npy")),
         "codes-000001.npy is missing"),
        (lambda t: open(os.path.join(t, store.MANIFEST), "w").write('{"format": "gan-enc'),
         "manifest .* is corrupt"),
        (rewrite_manifest(lambda m: m.update(format="something-else")), "not a zoo index"),
        (rewrite_manifest(lambda m: m.update(format_version=99)), "format version 99"),
        (rewrite_manifest(lambda m: m.update(count=25)), "segments hold 24 items"),
        (rewrite_manifest(lambda m: m["models"][0].pop("num_bits")), "missing or bad field"),
        (rewrite_manifest(lambda m: m["segments"][0]["files"]["items"].update(
            name="../outside.json")), "bad file"),
    ]
    for edit, message in cases:
        with pytest.raises(ValueError, match=message):
            Index.open(damaged(edit))

    elsewhere = tmp_path / "just_a_folder"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a zoo index: it has no manifest.json"):
        Index.open(str(elsewhere))
    with pytest.raises(ValueError, match="is a file"):
        Index.open(str(elsewhere / "notes.txt"))
    with pytest.raises(ValueError, match="does not exist"):
        Index.open(str(tmp_path / "missing.idx"))
    with pytest.raises(ValueError, match="exists and is not an index"):
        Index.build(str(elsewhere), str(elsewhere), models=MODEL)


# ----------------------------------------------------------------------------- CLI, server


def test_cli_build_add_search_and_grid(archive, tmp_path, capsys):
    from zoo.apps.cli import main

    folder = str(tmp_path / "scans")
    paths = write_archive(folder, archive["corpus"], 0, 6)
    out = str(tmp_path / "cli.idx")
    assert main(["index", "build", folder, "--model", MODEL, "--out", out, "--meta",
                 "archive=Prize Papers", "--chunk-size", "4"]) == 0
    assert "added 6 items" in capsys.readouterr().out
    from zoo.precision import resolve

    assert Index.open(out).model_info()["precision"] == resolve("auto")  # the CLI's default
    write_archive(folder, archive["corpus"], 6, 2)
    assert main(["index", "add", out, folder]) == 0
    assert "added 2 items; 6 files already in the index" in capsys.readouterr().out

    grid = str(tmp_path / "result.png")
    assert main(["search", out, paths[3], "-k", "3", "--grid", grid]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "cosine", "id", "path"]
    assert lines[1].split()[0::2] == ["1", "3"] and lines[1].split()[3] == paths[3]
    assert len(lines) == 5 and lines[-1] == f"grid: {grid}"
    with Image.open(grid) as picture:
        assert picture.size[0] > 4 * 64 and picture.size[1] >= 64  # query + 3 tiles
        query_tile = np.asarray(picture.convert("L"))[7:7 + 96, 7:7 + 96]
    # The query and hits are the scans as they are (dark ink on light paper), not the
    # preprocessed negatives; the 80 x 96 scan is padded with white to the square.
    expected = np.asarray(Image.open(paths[3]).convert("L").resize((80, 96)))
    assert np.median(query_tile) > 200 and query_tile.min() < 100
    assert abs(float(query_tile[:, 8:-8].mean()) - float(expected.mean())) < 12
    assert main(["search", out, paths[3], "--hamming", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[1] == "distance" and lines[1].split()[:3] == ["1", "0", "3"]
    assert Index.open(out).metadata == {"archive": "Prize Papers"}

    assert main(["search", str(tmp_path), paths[0]]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_encoding_through_a_running_server_matches_in_process(archive, tmp_path, built,
                                                              zoo_server):
    server = zoo_server(MODEL)
    index = Index.build(str(tmp_path / "served.idx"), archive["folder"], models=MODEL,
                        server=server.target, progress=False)
    assert [item.path for item in index.items()] == archive["paths"]
    np.testing.assert_allclose(index.embeddings(), built.embeddings(MODEL), atol=1e-4)
    agreement = np.mean(np.unpackbits(index.codes()) == np.unpackbits(built.codes(MODEL)))
    assert agreement > 0.995
    assert index.manifest["segments"][0]["encoded_by"] == server.target
    served = Index.open(index.path, server=server.target)
    hits = served.search(archive["paths"][7], k=3)
    assert hits[0].id == 7 and hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_an_index_of_another_hash_head_is_refused_until_rebuilt(built, archive, tmp_path):
    """Codes from a replaced hash head (e.g. ITQ before a learned head shipped) cannot be
    compared with the installed head's: searching or adding says to rebuild."""
    stale = str(tmp_path / "stale.idx")
    shutil.copytree(built.path, stale)
    path = os.path.join(stale, store.MANIFEST)
    with open(path) as handle:
        manifest = json.load(handle)
    manifest["models"][0]["hash_head_sha256"] = "0" * 64
    with open(path, "w") as handle:
        json.dump(manifest, handle)
    index = Index.open(stale)  # the files themselves are intact
    with pytest.raises(ValueError, match="another hash head of .*rebuild the index"):
        index.search(archive["paths"][0], k=3)
    newcomer = tmp_path / "newcomer"
    newcomer.mkdir()
    shutil.copy(archive["paths"][1], newcomer / "new_mark.png")
    with pytest.raises(ValueError, match="another hash head of .*rebuild the index"):
        index.add(str(newcomer), progress=False)
