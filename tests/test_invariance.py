"""The invariance protocol on tiny settings: determinism, chance normalisation, baselines, files."""

import json
import os

import numpy as np
import pytest

from zoo.apps.evaluation import invariance, plots
from zoo.apps.evaluation.invariance import InvarianceProtocol, RawPixelEncoder, measure_invariance
from zoo.apps.evaluation.report import write_report

TINY = InvarianceProtocol(num_samples=4, num_chance_pairs=50, rotation_degrees=(-5.0, 0.0, 5.0),
                          scale_factors=(0.9, 1.0), shift_pixels=(-1, 0, 1), batch_size=8)


def test_full_protocol_has_the_paper_settings():
    protocol = InvarianceProtocol()
    assert len(protocol.settings("rotation")) == 41 and protocol.rotation_degrees[1] == -9.5
    assert len(protocol.settings("scale")) == 21 and protocol.scale_factors[-1] == 1.5
    assert len(protocol.settings("shift")) == 441 and protocol.settings("shift")[0] == (-10, -10)


def test_chance_normalisation():
    assert invariance.normalise(1.0, 0.2) == pytest.approx(1.0)
    assert invariance.normalise(0.2, 0.2) == pytest.approx(0.0)
    assert invariance.normalise(0.6, 0.2) == pytest.approx((0.6 - 0.2) / 0.8)
    with pytest.raises(ValueError):
        invariance.normalise(0.5, 1.0)


def test_same_seed_gives_identical_numbers(small_corpus):
    def run():
        encoders = {"raw": RawPixelEncoder(),
                    "untrained": invariance.untrained_encoder("thin_gan_merchant", seed=0)}
        return measure_invariance(encoders, small_corpus.images, TINY, seed=3)

    assert run() == run()


def test_raw_pixels_are_unchanged_at_the_identity(small_corpus):
    first = measure_invariance({"raw": RawPixelEncoder()}, small_corpus.images, TINY, seed=3)
    row = first["rows"]["raw"]
    assert row["rotation"]["mean"][1] == pytest.approx(1.0, abs=1e-6)
    assert row["scale"]["normalised"][1] == pytest.approx(1.0, abs=1e-6)
    assert row["shift"]["mean"][4] == pytest.approx(1.0, abs=1e-6)  # (dx, dy) = (0, 0)
    assert row["shift"]["settings"][4] == [0, 0]
    # Chance level by hand: the same seeded pairs of different images.
    samples, (a, b) = invariance.draw_samples(len(small_corpus.images), TINY, seed=3)
    assert np.all(a != b) and first["sample_indices"] == samples.tolist()
    vectors = RawPixelEncoder().encode(small_corpus.images)
    assert row["chance"] == pytest.approx(np.mean(np.sum(vectors[a] * vectors[b], axis=1)))
    assert row["summary"]["rotation"] == pytest.approx(
        invariance.normalise(np.mean(row["rotation"]["mean"]), row["chance"]))
    other = measure_invariance({"raw": RawPixelEncoder()}, small_corpus.images, TINY, seed=4)
    assert other["sample_indices"] != first["sample_indices"]


def test_untrained_encoder_is_reproducible(small_corpus):
    images = small_corpus.images[:3]
    first = invariance.untrained_encoder("thin_gan_merchant", seed=0).encode(images)
    second = invariance.untrained_encoder("thin_gan_merchant", seed=0).encode(images)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)


def test_figures_hold_the_returned_numbers(small_corpus, tmp_path):
    encoders = {"raw pixels": RawPixelEncoder(),
                "untrained thin_gan_merchant": invariance.untrained_encoder("thin_gan_merchant")}
    measured = measure_invariance(encoders, small_corpus.images, TINY, seed=0)
    measured["rows"]["raw pixels"]["kind"] = "raw pixels"
    measured["rows"]["untrained thin_gan_merchant"]["kind"] = "untrained"
    result = {"seed": 0, "protocol": TINY.to_dict(), "corpora": {"tiny": {
        "description": "tiny", "models": [], **measured}}}
    written = plots.save_invariance_figures(str(tmp_path), result)
    assert set(written) == {"rotation", "scale", "shift"}
    for transform, files in written.items():
        assert all(os.path.getsize(path) > 0 for path in files.values())
        with open(files["json"]) as handle:
            stored = json.load(handle)["corpora"]["tiny"]
        for label, row in measured["rows"].items():
            assert stored[label]["normalised"] == row[transform]["normalised"]
            assert stored[label]["summary"] == row["summary"][transform]
        with open(files["csv"]) as handle:
            lines = handle.read().splitlines()
        assert len(lines) == 1 + 2 * len(TINY.settings(transform))
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    result["summary"] = {"tiny": {label: row["summary"] for label, row in measured["rows"].items()}}
    result["figures"] = written
    report_path = write_report(str(tmp_path), {"invariance": result, "commands": ["zoo ..."]})
    with open(report_path) as handle:
        text = handle.read()
    assert "(invariance_shift.png)" in text and "(invariance_rotation.csv)" in text
    assert f"{measured['rows']['raw pixels']['summary']['scale']:.3f}" in text


def test_paper_claims_compare_sketch_and_thin_on_the_same_corpus():
    from zoo.apps.evaluation.report import paper_claims

    summary = {"merchant_train": {
        "sketch_gan_merchant": {"rotation": 0.8, "scale": 0.3, "shift": 0.2},
        "thin_gan_merchant": {"rotation": 0.7, "scale": 0.4, "shift": 0.2},
        "raw pixels": {"rotation": 0.9, "scale": 0.9, "shift": 0.9}}}
    claims = paper_claims({"summary": summary})
    assert claims["rotation"]["verdict"] == "confirmed"
    assert claims["rotation"]["sketch"] == ["sketch_gan_merchant", 0.8]
    assert "0.800" in claims["rotation"]["text"] and "0.700" in claims["rotation"]["text"]
    assert claims["scale"]["verdict"] == "not confirmed"
    assert claims["shift"]["verdict"] == "not confirmed"  # equal is not "more invariant"
    thin = summary["merchant_train"]["thin_gan_merchant"]
    only_thin = {"merchant_train": {"thin_gan_merchant": thin},
                 "omniglot_background": {"sketch_gan_omniglot": {"rotation": 0.9}}}
    assert paper_claims(only_thin)["rotation"]["verdict"] == "not tested"


def test_numbers_are_recorded_as_results_not_in_the_manifest(tmp_path, monkeypatch,
                                                            results_dir):
    import zoo.registry
    from zoo.apps.evaluation import results
    from zoo.apps.evaluation.report import record_invariance, record_oneshot

    monkeypatch.setattr(zoo.registry, "MANIFEST_PATH", str(tmp_path / "manifest.json"))
    shipped = {"models": {"thin_gan_merchant": {"sha256": "x"}}}
    zoo.registry.write_manifest(shipped)
    row = {"chance": 0.5, "summary": {"rotation": 0.7, "scale": 0.3, "shift": 0.1}}
    rows = {"thin_gan_merchant": {**row, "kind": "model"},
            "raw pixels": {**row, "kind": "raw pixels"}}
    record_invariance({"seed": 0, "corpora": {
        "merchant_train": {"sample_indices": [1, 2], "rows": rows}}})
    record_oneshot({"models": ["thin_gan_merchant"], "runs": ["run01", "run02"],
                    "mean_error": {"thin_gan_merchant": 0.4, "raw pixels": 0.5, "MHD": 0.39}})
    invariance_records = results.read("invariance")
    model = invariance_records["merchant_train/thin_gan_merchant"]
    assert model["rotation"] == 0.7 and model["num_samples"] == 2 and not model["baseline"]
    assert invariance_records["merchant_train/raw pixels"]["baseline"]
    assert invariance_records["merchant_train/raw pixels"]["chance"] == 0.5
    oneshot_records = results.read("oneshot")
    assert oneshot_records["thin_gan_merchant"]["mean_error"] == 0.4
    assert oneshot_records["MHD"] == {"subject": "MHD", "baseline": True, "mean_error": 0.39,
                                      "runs": 2}
    assert zoo.registry.read_manifest() == shipped  # nothing measured went into it
    # A model row is recorded only for a model that ships weights; nothing is written then.
    with pytest.raises(ValueError, match="'sketch_gan_merchant' has no shipped weights"):
        record_oneshot({"models": ["sketch_gan_merchant"], "runs": ["run01"],
                        "mean_error": {"sketch_gan_merchant": 0.1, "MHD": 0.2}})
    assert results.read("oneshot") == oneshot_records
