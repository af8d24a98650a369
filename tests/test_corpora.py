"""Named corpora: the union of two archives (issue 18's one model for both), and training an
entry on another corpus than its own."""

import json

import numpy as np
import pytest

from zoo.data.corpora import describe, load_corpus

MARKS = {"kind": "merchant_marks", "num_identities": 3, "instances_per_identity": 2, "seed": 0}
OTHER = {"kind": "merchant_marks", "num_identities": 2, "instances_per_identity": 3, "seed": 1}


def test_union_repeats_each_part_and_keeps_their_labels_apart():
    union = load_corpus({"kind": "union", "parts": [(MARKS, 2), (OTHER, 1)]})
    marks, other = load_corpus(MARKS), load_corpus(OTHER)
    assert len(union) == 2 * len(marks) + len(other)
    np.testing.assert_array_equal(union.images[:6], marks.images)
    np.testing.assert_array_equal(union.images[6:12], marks.images)
    np.testing.assert_array_equal(union.images[12:], other.images)
    # Same label within a part where the part's labels agree; never across parts.
    first, second = union.labels[:6], union.labels[12:]
    np.testing.assert_array_equal(first == first[:, None], marks.labels == marks.labels[:, None])
    np.testing.assert_array_equal(second == second[:, None], other.labels == other.labels[:, None])
    assert not set(first) & set(second)
    assert describe({"kind": "union", "parts": [(MARKS, 2), (OTHER, 1)]}) == (
        "procedural merchant marks: 3 identities x 2 instances, seed 0 (x2) and procedural "
        "merchant marks: 2 identities x 3 instances, seed 1")


@pytest.mark.parametrize("repeats", [0, 1.5, True])
def test_union_refuses_bad_repeats(repeats):
    with pytest.raises(ValueError, match="positive whole number of repeats"):
        load_corpus({"kind": "union", "parts": [(MARKS, repeats)]})


def test_the_registered_union_holds_both_archives():
    from zoo.registry import get_corpus

    spec = get_corpus("merchant_and_omniglot")
    assert [part for part, _ in spec["parts"]] == [get_corpus("merchant_train"),
                                                   get_corpus("omniglot_background_repeated")]


def test_a_run_on_another_corpus_records_it_and_is_not_published(tmp_path, monkeypatch):
    import zoo.registry
    from zoo.registry import CORPORA
    from zoo.training.run import publish, train_model

    monkeypatch.setitem(CORPORA, "tiny_marks", MARKS)
    changes = {"iterations": 2, "checkpoint_every": 2, "batch_size": 4, "lambda_gan": 0}
    train_model("sketch_gan_plus_merchant", str(tmp_path / "run"), recipe_changes=changes,
                progress=False, corpus="tiny_marks")
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["corpus"] == "tiny_marks"
    # Even with the registered recipe, a run on another corpus is not the entry's weights.
    entry = zoo.registry.get_entry("sketch_gan_plus_merchant")
    summary["recipe"] = entry.recipe.to_dict()
    json.dump(summary, open(tmp_path / "run" / "summary.json", "w"))
    with pytest.raises(ValueError, match="trained on 'tiny_marks'"):
        publish("sketch_gan_plus_merchant", str(tmp_path / "run"))


def test_an_ablation_run_with_an_entrys_recipe_and_corpus_is_published_as_that_entry(
        tmp_path, monkeypatch):
    """`zoo publish NAME RUN` takes a run of another entry when network, recipe and corpus are
    NAME's (an ablation row that became an entry): the weights are stored again as NAME's."""
    import h5py

    import zoo
    import zoo.registry
    import zoo.training.run as run
    from zoo.registry import REGISTRY, SKETCH_PLUS_ARCHITECTURE, ModelEntry, get_entry

    weights_dir = tmp_path / "weights"
    monkeypatch.setattr(zoo.registry, "PACKAGE_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setattr(run, "PACKAGE_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setattr(zoo.registry, "MANIFEST_PATH", str(weights_dir / "manifest.json"))
    marks = {**MARKS, "num_identities": 20, "instances_per_identity": 4}  # a 64-bit ITQ head
    monkeypatch.setitem(zoo.registry.CORPORA, "tiny_marks", marks)
    changes = {"iterations": 2, "checkpoint_every": 2, "batch_size": 4, "lambda_gan": 0.0}
    recipe = get_entry("sketch_gan_plus_merchant").recipe.replace(**changes)
    monkeypatch.setitem(REGISTRY, "tiny_contrastive", ModelEntry(
        name="tiny_contrastive", description="d", family="sketch_gan_plus",
        architecture=SKETCH_PLUS_ARCHITECTURE, corpus="tiny_marks", eval_corpus="tiny_marks",
        recipe=recipe, paper="p"))
    out = tmp_path / "run"
    run.train_model("sketch_gan_plus_merchant", str(out), recipe_changes=changes,
                    progress=False, corpus="tiny_marks")
    record = run.publish("tiny_contrastive", str(out), command="the ablation's command")
    assert record["trained_with"] == "the ablation's command"
    with h5py.File(weights_dir / "tiny_contrastive.weights.h5") as stored:
        assert stored.attrs["model"] == "tiny_contrastive"
        assert stored.attrs["trained_as"] == "sketch_gan_plus_merchant"
    images = load_corpus(MARKS).images
    published = zoo.load("tiny_contrastive", with_hash_head=False).encode(images)
    trained = zoo.load("tiny_contrastive", with_hash_head=False, weights_path=str(
        out / "sketch_gan_plus_merchant.weights.h5")).encode(images)
    np.testing.assert_array_equal(published, trained)
    # Another network is refused, whatever its recipe.
    monkeypatch.setitem(REGISTRY, "other_network", ModelEntry(
        name="other_network", description="d", family="sketch_gan_plus",
        architecture={**SKETCH_PLUS_ARCHITECTURE, "embedding_dim": 128}, corpus="tiny_marks",
        eval_corpus="tiny_marks", recipe=recipe, paper="p"))
    with pytest.raises(ValueError, match="not other_network's network"):
        run.publish("other_network", str(out))
