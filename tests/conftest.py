import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest


@pytest.fixture(scope="session")
def small_corpus():
    """A small merchant-mark corpus: 12 identities x 4 drawings."""
    from zoo.data.merchant_marks import make_corpus

    return make_corpus(num_identities=12, instances_per_identity=4, seed=5)


@pytest.fixture()
def rng():
    return np.random.default_rng(0)


@pytest.fixture()
def results_dir(tmp_path, monkeypatch):
    """An empty results folder for the test: every `zoo.apps.evaluation.results` record and read
    (MODELS.md's rendering included) goes there instead of reports/results/."""
    from zoo.apps.evaluation import results

    folder = tmp_path / "results"
    monkeypatch.setattr(results, "RESULTS_DIR", str(folder))
    return folder


@pytest.fixture()
def zoo_server(tmp_path):
    """start(name) -> a running `zoo serve` (serving.launch) of the shipped model `name`,
    exported as version 1 under tmp_path; stopped when the test ends."""
    from serving.launch import start_server

    import zoo

    servers = []

    def start(name):
        base = str(tmp_path / "models")
        zoo.load(name).export(base, 1)
        config = tmp_path / "models.config"
        config.write_text(f'model_config_list {{ config {{ name: "{name}" base_path: '
                          f'"{os.path.join(base, name)}" model_platform: "tensorflow" }} }}\n')
        servers.append(start_server("python", str(config), {name: [1]}, log_dir=str(tmp_path)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a paper-sized or long case (kept in the suite; "
                                       "`-m 'not slow'` leaves it out)")
