"""zoo.apps.evaluation.results, the one writer of measured results: declared kinds, validation,
atomic replacement, and the lock that keeps two recording commands from losing each other's
records."""

import json
import os
import subprocess
import sys

import pytest

from zoo.apps.evaluation import results, speed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def oneshot(subject, error, baseline=False):
    return {"subject": subject, "baseline": baseline, "mean_error": error, "runs": 20}


def test_records_round_trip_by_key_and_replace_only_their_own_key(results_dir):
    path = results.record("oneshot", oneshot("sketch_gan_merchant", 0.4),
                          oneshot("MHD", 0.39, baseline=True))
    assert path == str(results_dir / "oneshot.json")
    assert results.read("oneshot") == {"MHD": oneshot("MHD", 0.39, baseline=True),
                                       "sketch_gan_merchant": oneshot("sketch_gan_merchant", 0.4)}
    results.record("oneshot", oneshot("sketch_gan_merchant", 0.3))
    assert results.read("oneshot")["sketch_gan_merchant"]["mean_error"] == 0.3
    assert results.read("oneshot")["MHD"]["mean_error"] == 0.39
    # Keys join the key fields; the file is sorted JSON, one object a kind.
    results.record("retrieval", {"corpus": "merchant_eval", "subject": "raw pixels",
                                 "baseline": True, "rows": {"raw pixels": {"P@8": 0.4}}})
    text = (results_dir / "retrieval.json").read_text()
    assert json.loads(text) == {"merchant_eval/raw pixels": {
        "baseline": True, "corpus": "merchant_eval", "rows": {"raw pixels": {"P@8": 0.4}},
        "subject": "raw pixels"}}
    assert text.index('"baseline"') < text.index('"corpus"') < text.index('"rows"')
    assert results.read("invariance") == {}  # nothing recorded yet


def test_speed_reports_go_through_the_same_writer(results_dir):
    path = speed.record("index_build", {"images_per_s": 900.0}, "python -m benchmarks.x")
    assert path == str(results_dir / "speed.json")
    report = results.read("speed")["index_build"]
    assert report["images_per_s"] == 900.0 and report["command"] == "python -m benchmarks.x"
    assert report["machine"] and report["date"]
    with pytest.raises(ValueError, match="speed report name of letters, digits and _"):
        speed.record("../escape", {}, "c")


def test_unknown_kinds_and_missing_fields_are_refused_before_anything_is_written(results_dir):
    with pytest.raises(ValueError, match=r"Unknown result kind 'oneshots'; expected one of "
                                         r"ablation, bingan_curve, .*, transfer\."):
        results.record("oneshots", oneshot("x", 0.1))
    with pytest.raises(ValueError, match="A 'oneshot' record needs the fields subject, baseline, "
                                         "mean_error, runs; it lacks mean_error, runs"):
        results.record("oneshot", oneshot("a", 0.1), {"subject": "b", "baseline": False})
    with pytest.raises(ValueError, match="key field 'subject' as a non-empty string; got 7"):
        results.record("oneshot", {**oneshot("a", 0.1), "subject": 7})
    with pytest.raises(ValueError, match="Expected a 'oneshot' record as a dict; got list"):
        results.record("oneshot", [0.1])
    # The valid record beside the bad one was not written either.
    assert results.read("oneshot") == {}
    assert not os.path.exists(results_dir / "oneshot.json")


def test_a_failed_write_leaves_the_previous_file_and_no_partial_one(results_dir):
    results.record("oneshot", oneshot("a", 0.1), oneshot("b", 0.2))
    before = (results_dir / "oneshot.json").read_bytes()
    # Sorted last, so the temporary file holds every other record when serialisation fails.
    with pytest.raises(ValueError, match="'oneshot' record is not JSON-serialisable .* unchanged"):
        results.record("oneshot", {**oneshot("zz", 0.3), "runs": object()})
    assert (results_dir / "oneshot.json").read_bytes() == before
    assert sorted(os.listdir(results_dir)) == [".lock", "oneshot.json"]


WRITER = """
import sys
from zoo.apps.evaluation import results
name, count, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for index in range(count):
    results.record("oneshot", {"subject": f"{name}{index:03d}", "baseline": True,
                               "mean_error": index / count, "runs": index}, directory=folder)
"""


def test_two_recording_processes_do_not_lose_each_others_records(results_dir):
    # Each process reads, updates and rewrites the one file a record at a time: without the
    # lock, one's rewrite drops what the other added between its read and its write.
    count = 60
    environment = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH",
                                                                                   "")}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, name, str(count),
                                 str(results_dir)], env=environment, stderr=subprocess.PIPE,
                                text=True) for name in ("first", "second")]
    for writer in writers:
        _, errors = writer.communicate(timeout=120)
        assert writer.returncode == 0, errors
    recorded = results.read("oneshot")
    assert len(recorded) == 2 * count
    assert recorded["second059"]["runs"] == 59 and recorded["first000"]["mean_error"] == 0.0


def test_the_committed_results_are_valid_records_under_their_keys():
    names = set(os.listdir(results.RESULTS_DIR)) - {results.LOCK_NAME}
    assert names <= {f"{kind}.json" for kind in results.KINDS}, "a file of no declared kind"
    for kind in results.KINDS:
        for key, record in results.read(kind).items():
            assert results.key_of(kind, record) == key, (kind, key)


def test_the_speed_section_renders_each_encoding_path_that_was_measured(results_dir):
    from zoo.apps import model_cards

    peaks = {"matmul": {"float32": 200.0, "bfloat16": 400.0},
             "conv": {"float32": 200.0, "bfloat16": 390.0, "int8": 580.0}}

    def model(rates, **extra):
        return {"multiply_adds": 44_600_000, "images_per_s": rates,
                "gflops": {key: 2 * 44.6e6 * rate / 1e9 for key, rate in rates.items()},
                "speedup": rates["bfloat16"] / rates["float32"], **extra}

    plus = model({"float32": 2000.0, "bfloat16": 3700.0, "int8": 4400.0, "tflite_int8": 3500.0},
                 int8_speedup=2.2, tflite_int8_speedup=1.75, int8_roofline_fraction=0.66,
                 equal_hash_bits={"bfloat16": 0.998, "int8": 0.96, "tflite_int8": 0.977},
                 saved_model_images_per_s={"float32": 2000.0, "bfloat16": 3600.0,
                                           "int8": 4200.0},
                 retrieval={"corpus": "merchant_eval", "min_cosine": {
                     "bfloat16": 0.9999, "int8": 0.97, "tflite_int8": 0.98},
                     "scores": {key: {"P@8": 0.84, "R@1": 0.98} for key in (
                         "float32", "bfloat16", "int8", "tflite_int8")}})
    thin = model({"float32": 25000.0, "bfloat16": 28000.0},
                 equal_hash_bits={"bfloat16": 0.999})
    speed.record("encode", {"peaks": peaks, "batch_size": 256, "images": 4000,
                            "models": {"sketch_gan_plus_merchant": plus,
                                       "thin_gan_merchant": thin}},
                 "python -m benchmarks.encode_speed")
    text = "\n".join(model_cards._speed_section())
    assert ("| sketch_gan_plus_merchant | 44.6 | 2,000 | 3,700 | 1.85x | 4,400 | 2.20x | "
            "89% | 85% | 66% | bfloat16 99.8%, int8 96.0% |") in text
    assert "| thin_gan_merchant | 44.6 | 25,000 | 28,000 | 1.12x | - | - |" in text
    assert "% | - | bfloat16 99.9% |" in text  # thin-GAN has no int8 path, so no roofline
    assert ("in-process): float32 2,000 img/s, bfloat16 3,600 img/s (1.80x), int8 4,200 img/s "
            "(2.10x).") in text
    assert "sketch_gan_plus_merchant 3,500 img/s (1.75x float32; hash bits equal" in text
    assert "| int8 P@8 | tflite_int8 P@8 |" in text and "smallest cosine, int8 to float32" in text


def test_the_speed_section_renders_served_throughput_under_load(results_dir):
    """A serving_throughput record with several clients gets its own heading, its clients in the
    description and the note on what concurrent clients measure; one with one client keeps the
    ceiling note."""
    from benchmarks.common import markdown_table
    from benchmarks.serving_throughput import _table, clients_in_words
    from zoo.apps import model_cards

    rows = [(1, 1250.0, 750.0, 2760.0), (64, 2255.0, 2189.0, 140400.0)]
    for clients in (1, 4):
        header, table = _table(rows, clients)
        speed.record(f"serving_m_clients{clients}", {
            "model": "m", "precision": "float32", "server": "python", "batching": "b.config",
            "keep_memory": True, "images": "uint8 images (encode_pixels)", "clients": clients,
            "idle_ms": 100 if clients == 1 else 0,
            "transport": f"{clients_in_words(clients)} on loopback",
            "table": markdown_table(header, table),
            "latency": "single 64x64 image: p50 1.9 ms"}, "python -m benchmarks.x")
    text = "\n".join(model_cards._speed_section())
    assert "### Serving m, uint8 images, 4 concurrent clients\n" in text
    assert "### Serving m, uint8 images, one-image calls 100 ms apart\n" in text
    assert "4 concurrent gRPC clients (sequential calls each) on loopback, uint8" in text
    assert "| 64 | 2,255 | 2,189 | 0.97 | 140,400 |" in text  # no-model img/s, no ceiling
    assert "| 64 | 2,255 | 2,189 | 0.97 | 0.46 | 0.98 |" in text  # round trip ms, ceiling
    assert model_cards.SERVING_LOAD_NOTE in text and model_cards.SERVING_CEILING_NOTE in text
    assert model_cards.SERVING_IDLE_NOTE in text
    assert "### Python gRPC alone" not in text  # nothing recorded by benchmarks.grpc_floor yet
    speed.record("grpc_floor", {"setting": "Python gRPC 1.0, raw bytes", "table": [
        "| request bytes | mean ms |", "|---|---|", "| 262,144 | 0.713 |"]},
        "python -m benchmarks.grpc_floor --record")
    text = "\n".join(model_cards._speed_section())
    assert ("### Python gRPC alone\n\nCommand: `python -m benchmarks.grpc_floor --record` "
            in text)
    assert "Python gRPC 1.0, raw bytes.\n\n| request bytes | mean ms |" in text
    assert "| 262,144 | 0.713 |\n\n" + model_cards.GRPC_FLOOR_NOTE in text
