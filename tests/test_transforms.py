"""Rotation, scale and shift of the invariance protocol, checked on impulses and known patterns."""

import numpy as np
import pytest

from zoo.apps.evaluation.transforms import rotate, scale, shift


def impulse(row, column, size=64):
    image = np.zeros((1, size, size, 1), np.float32)
    image[0, row, column, 0] = 1.0
    return image


def test_zero_settings_are_the_identity(rng):
    images = rng.random((3, 64, 64, 1)).astype(np.float32)
    np.testing.assert_array_equal(rotate(images, 0), images)
    np.testing.assert_array_equal(scale(images, 1.0), images)
    np.testing.assert_array_equal(shift(images, 0, 0), images)
    assert rotate(images[..., 0], 0).shape == (3, 64, 64)


def test_rotation_is_counter_clockwise_as_displayed():
    # Centre (31.5, 31.5). A pixel 18.5 px right of the centre (row 31 = 0.5 above it) lands,
    # after +90 degrees, 18.5 px above the centre and 0.5 px left of it: (13, 31).
    rotated = rotate(impulse(31, 50), 90)[0, ..., 0]
    assert rotated[13, 31] == pytest.approx(1.0, abs=1e-5)
    assert rotated.sum() == pytest.approx(1.0, abs=1e-5)
    # A small positive angle moves ink right of the centre upwards (smaller row).
    rows, _ = np.nonzero(rotate(impulse(31, 50), 10)[0, ..., 0] > 0)
    assert rows.max() < 31
    # -90 degrees moves it below the centre.
    assert rotate(impulse(31, 50), -90)[0, 50, 32] == pytest.approx(1.0, abs=1e-5)


def test_rotation_fills_with_zeros():
    ones = np.ones((1, 64, 64), np.float32)
    rotated = rotate(ones, 45)
    assert rotated[0, 0, 0] == 0.0 and rotated[0, 32, 32] == pytest.approx(1.0)


def test_scale_pads_below_one_and_crops_above():
    ones = np.ones((1, 64, 64, 1), np.float32)
    shrunk = scale(ones, 0.5)[0, ..., 0]
    np.testing.assert_allclose(shrunk[16:48, 16:48], 1.0, atol=1e-6)
    assert shrunk.sum() == pytest.approx(32 * 32, abs=1e-3)
    block = np.zeros((1, 64, 64), np.float32)
    block[0, 16:48, 16:48] = 1.0
    enlarged = scale(block, 2.0)[0]
    np.testing.assert_allclose(enlarged[2:-2, 2:-2], 1.0, atol=1e-6)
    # Ink near the border falls off when enlarging.
    assert scale(impulse(1, 1), 1.5).sum() == 0.0


def test_shift_is_exact_with_zero_fill():
    image = impulse(10, 20)
    moved = shift(image, 3, -4)[0, ..., 0]
    assert moved[6, 23] == 1.0 and moved.sum() == 1.0
    # No wrap-around: ink pushed off the edge is gone.
    assert shift(impulse(0, 63), 1, 0).sum() == 0.0
    assert shift(impulse(63, 0), 0, 1).sum() == 0.0
    assert shift(image, 100, 0).sum() == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="integer"):
        shift(impulse(1, 1), 0.5, 0)
    with pytest.raises(ValueError, match="positive"):
        scale(impulse(1, 1), 0)
    with pytest.raises(ValueError, match="shape"):
        rotate(np.zeros((64, 64)), 5)
