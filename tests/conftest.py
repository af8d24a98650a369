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
