"""Shipped weights: present, verified, golden outputs; tampering refused; MODELS.md in sync."""

import shutil

import numpy as np
import pytest

import zoo
from zoo import registry
from zoo.apps import model_cards
from zoo.registry import REGISTRY, shipped_names
from zoo.training.run import golden_path


@pytest.mark.parametrize("name", shipped_names())
def test_every_entry_ships_verified_weights_with_golden_outputs(name):
    record = REGISTRY[name].published
    assert record, f"{name} has no weights in the manifest"
    encoder = zoo.load(name)  # verifies the sha256 before reading
    golden = np.load(golden_path(name))
    embeddings = encoder.encode(golden["images"])
    np.testing.assert_allclose(embeddings, golden["embeddings"], atol=1e-4)
    np.testing.assert_array_equal(encoder.hash(golden["images"]).bits, golden["bits"])
    assert not np.allclose(embeddings[0], embeddings[1], atol=1e-3)  # weights discriminate


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_or_truncated_weights_are_refused(damage, tmp_path, monkeypatch):
    name = "sketch_gan_merchant"
    copy = tmp_path / f"{name}.weights.h5"
    shutil.copyfile(REGISTRY[name].weights_file, copy)
    data = bytearray(copy.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 3]
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(registry, "PACKAGE_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="failed verification"):
        zoo.load(name)


def test_an_unreadable_user_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "mine.weights.h5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        zoo.load("thin_gan_merchant", weights_path=str(path))


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(ValueError, match="sketch_gan_merchant"):
        zoo.load("sketch_gan_marchant")


def test_list_models_matches_the_registry():
    listed = zoo.list_models()
    assert set(listed) == set(REGISTRY)
    assert all(description for description in listed.values())


def test_models_md_is_generated_from_the_registry():
    with open(model_cards.MODELS_MD) as handle:
        committed = handle.read()
    assert committed == model_cards.render(), "MODELS.md is stale: run `zoo models-md`"
    for name in REGISTRY:
        assert f"### {name}" in committed


def test_the_manifest_holds_only_the_shipped_weights_and_refuses_results(tmp_path,
                                                                         monkeypatch):
    manifest = registry.read_manifest()
    assert set(manifest) == {"models"}
    for name, record in manifest["models"].items():
        assert set(record) == set(registry.SHIPPED_FIELDS), name
    monkeypatch.setattr(registry, "MANIFEST_PATH", str(tmp_path / "manifest.json"))
    measured = {"models": {"thin_gan_merchant": {"sha256": "x", "metrics": {}}}, "ablation": {}}
    with pytest.raises(ValueError, match="got ablation, models.thin_gan_merchant.metrics. "
                                         "Measured results are recorded with"):
        registry.write_manifest(measured)
    assert not (tmp_path / "manifest.json").exists()


def test_neighbour_entries_rank_with_a_shipped_entry_whose_training_they_continue():
    """`zoo train` of an entry with neighbour partners repeats its source entry's training, then
    ranks the neighbours with that source's shipped weights: the source must be shipped, on the
    same corpus, and its recipe the first `neighbours_after` steps of this one."""
    entries = [entry for entry in REGISTRY.values()
               if entry.family == "sketch_gan_plus" and entry.recipe.neighbours > 0]
    assert entries
    for entry in entries:
        source = REGISTRY[entry.recipe.neighbours_from]
        assert source.name in shipped_names() and source.corpus == entry.corpus
        assert (source.family, source.architecture) == (entry.family, entry.architecture)
        assert entry.recipe.neighbours_after == source.recipe.iterations < entry.recipe.iterations
        assert entry.recipe.replace(
            iterations=source.recipe.iterations, neighbours=0.0, neighbours_from="",
            neighbours_after=0) == source.recipe
