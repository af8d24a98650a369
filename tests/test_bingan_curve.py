"""benchmarks.bingan_curve's scoring: the codes of every image from each code layer."""

import numpy as np
import pytest

from benchmarks.bingan_curve import code_bits
from zoo.loading import load_gan
from zoo.models import get_family
from zoo.registry import get_entry


@pytest.mark.parametrize("name, lengths", [("bingan_fashion_32", [32]),  # one code layer
                                           ("bingan_plus_fashion_32", [16, 32, 64])])
def test_code_bits_codes_every_image_with_every_head(name, lengths):
    entry = get_entry(name)
    _, discriminator = load_gan(name)
    images = np.random.default_rng(0).random((2100, 32, 32, 1)).astype(np.float32)
    heads = code_bits(discriminator.get_weights(), get_family(entry.family),
                      entry.architecture, images, images)
    assert sorted(heads) == lengths
    for length, (calibrated, sign) in heads.items():
        assert calibrated.shape == sign.shape == (len(images), length)
        assert set(np.unique(calibrated)) <= {0, 1}
        # Calibrated on these images: each bit is 1 on (about) half of them.
        np.testing.assert_allclose(calibrated.mean(axis=0), 0.5, atol=0.01)
