"""Tests of lsst.skyframes.statistics.labelled_statistics.

A group of pixels is reduced exactly as `binned_statistics` reduces a bin and
`box_statistic` a box, so those (themselves tested against a pure-Python
reference in test_statistics.py) are the truth here, compared bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from lsst.skyframes.errors import BoxMismatchError, UnsupportedStyleError
from lsst.skyframes.statistics import bin_edges, binned_statistics, box_statistic, labelled_statistics

STATISTICS = ["MEAN", "MEDIAN", "MEANCLIP"]


def noisy_image(shape, seed=1, dtype=np.float32):
    rng = np.random.default_rng(seed)
    array = rng.normal(100.0, 5.0, shape).astype(dtype)
    # Outliers for the clipping, and non-finite pixels that must be ignored.
    array[rng.random(shape) < 0.02] = 1e4
    array[rng.random(shape) < 0.01] = np.nan
    array[rng.random(shape) < 0.005] = np.inf
    bad = rng.random(shape) < 0.05
    return array, bad


@pytest.mark.parametrize("statistic", STATISTICS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rectangular_labels_match_binned_statistics(statistic, dtype):
    array, bad = noisy_image((97, 131), dtype=dtype)
    x_edges, y_edges = bin_edges(131, 7), bin_edges(97, 5)
    column = np.searchsorted(x_edges, np.arange(131), side="right") - 1
    row = np.searchsorted(y_edges, np.arange(97), side="right") - 1
    labels = row[:, np.newaxis] * 7 + column[np.newaxis, :]
    expected = binned_statistics(array, bad, x_edges, y_edges, statistic)
    result = labelled_statistics(array, bad, labels, 35, statistic)
    # Same values in the same (pixel) order: identical results, not just close.
    np.testing.assert_array_equal(result.value, expected.value.ravel())
    np.testing.assert_array_equal(result.error, expected.error.ravel())
    np.testing.assert_array_equal(result.count, expected.count.ravel())


@pytest.mark.parametrize("statistic", STATISTICS)
def test_scattered_groups_match_box_statistic(statistic):
    array, bad = noisy_image((64, 80), seed=3)
    rng = np.random.default_rng(4)
    labels = rng.integers(-1, 9, size=array.shape)  # -1: left out
    result = labelled_statistics(array, bad, labels, 10, statistic, clip=2.5, n_iter=4)
    for k in range(10):
        members = labels == k
        expected = box_statistic(array[members], bad[members], statistic, clip=2.5, n_iter=4)
        assert result.count[k] == expected.count
        np.testing.assert_array_equal(result.value[k], expected.value)
        np.testing.assert_array_equal(result.error[k], expected.error)
    # Label 9 has no pixel: NaN and a zero count.
    assert result.count[9] == 0
    assert np.isnan(result.value[9]) and np.isnan(result.error[9])


def test_count_is_good_pixels_before_clipping_and_any_shape_is_accepted():
    array = np.full((2, 3, 4), 5.0)
    array[0, 0, 0] = 1e9  # clipped, but counted
    array[1, 0, 0] = np.nan  # not counted
    labels = np.zeros(array.shape, dtype=np.int32)
    labels[1] = 1
    bad = np.zeros(array.shape, dtype=bool)
    bad[1, 2, 3] = True  # not counted
    result = labelled_statistics(array, bad, labels, 2, "MEANCLIP")
    np.testing.assert_array_equal(result.count, [12, 10])
    np.testing.assert_array_equal(result.value, [5.0, 5.0])
    unmasked = labelled_statistics(array, None, labels, 2, "MEAN")
    np.testing.assert_array_equal(unmasked.count, [12, 11])


def test_labels_out_of_range_and_bad_inputs_raise():
    array = np.ones((4, 4))
    labels = np.zeros((4, 4), dtype=np.int64)
    labels[3, 3] = 5
    with pytest.raises(ValueError, match="found label 5"):
        labelled_statistics(array, None, labels, 5, "MEAN")
    with pytest.raises(BoxMismatchError, match="labels has shape"):
        labelled_statistics(array, None, labels[:2], 6, "MEAN")
    with pytest.raises(BoxMismatchError, match="bad has shape"):
        labelled_statistics(array, np.zeros((2, 2), bool), labels, 6, "MEAN")
    with pytest.raises(TypeError, match="integers"):
        labelled_statistics(array, None, labels.astype(float), 6, "MEAN")
    with pytest.raises(ValueError, match="non-negative"):
        labelled_statistics(array, None, labels, -1, "MEAN")
    with pytest.raises(UnsupportedStyleError):
        labelled_statistics(array, None, labels, 6, "MODE")


def test_no_labels_and_no_pixels():
    empty = labelled_statistics(np.ones((3, 3)), None, np.full((3, 3), -1), 0, "MEANCLIP")
    assert empty.value.shape == (0,) and empty.count.shape == (0,)
    none = labelled_statistics(np.empty((0, 5)), None, np.empty((0, 5), dtype=np.int64), 2, "MEDIAN")
    np.testing.assert_array_equal(none.count, [0, 0])
    assert np.isnan(none.value).all()
