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
                                                   get_corpus("omniglot_background")]


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
