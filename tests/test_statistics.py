"""Tests of lsst.skyframes.statistics against a slow pure-Python reference."""

from __future__ import annotations

import logging
import math

import lsst.images
import numpy as np
import pytest

from lsst.skyframes._selection import _select, _select_with_budget
from lsst.skyframes.errors import BoxMismatchError, NoDataError, UnsupportedStyleError
from lsst.skyframes.statistics import (
    IQR_TO_SIGMA,
    Property,
    StatsResult,
    bad_pixel_mask,
    bin_centres,
    bin_edges,
    binned_statistics,
    box_statistic,
    stack_statistics,
    stringToStatisticsProperty,
)

STATISTICS = ["MEAN", "MEDIAN", "MEANCLIP"]

# ---------------------------------------------------------------------------
# Slow reference, written straight from the definitions with lists and loops.
# ---------------------------------------------------------------------------


def ref_quantile(values, f):
    """Quantile by linear interpolation between order statistics at rank
    f * (n - 1).
    """
    s = sorted(values)
    pos = f * (len(s) - 1)
    k = math.floor(pos)
    frac = pos - k
    if frac > 0:
        return s[k] + (s[k + 1] - s[k]) * frac
    return s[k]


def ref_mean(values):
    return math.fsum(values) / len(values)


def ref_var(values):
    if len(values) < 2:
        return math.nan
    m = ref_mean(values)
    return math.fsum((x - m) ** 2 for x in values) / (len(values) - 1)


def ref_statistic(values, statistic, clip=3.0, n_iter=3):
    """Return (value, error, count) of the finite entries of ``values``."""
    v = [float(x) for x in values if math.isfinite(x)]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    if statistic == "MEAN":
        return ref_mean(v), math.sqrt(ref_var(v) / n), n
    if statistic == "MEDIAN":
        return ref_quantile(v, 0.5), math.sqrt(math.pi / 2 * ref_var(v) / n), n
    assert statistic == "MEANCLIP"
    if n == 1:
        return v[0], math.nan, 1
    kept = v  # the "previous pass" of the first pass is the unclipped data
    for iteration in range(n_iter):
        if iteration == 0:
            centre = ref_quantile(v, 0.5)
            half_width = clip * IQR_TO_SIGMA * (ref_quantile(v, 0.75) - ref_quantile(v, 0.25))
        else:
            if len(kept) < 2:
                break
            centre = ref_mean(kept)
            half_width = clip * math.sqrt(ref_var(kept))
        new = [x for x in v if abs(x - centre) <= half_width]
        if not new:
            break
        kept = new
    return ref_mean(kept), math.sqrt(ref_var(kept) / len(kept)), n


def ref_binned(array, bad, x_edges, y_edges, statistic, clip=3.0, n_iter=3):
    ny, nx = len(y_edges) - 1, len(x_edges) - 1
    value = np.zeros((ny, nx))
    error = np.zeros((ny, nx))
    count = np.zeros((ny, nx), dtype=int)
    for j in range(ny):
        for i in range(nx):
            values = []
            for y in range(y_edges[j], y_edges[j + 1]):
                for x in range(x_edges[i], x_edges[i + 1]):
                    if bad is None or not bad[y, x]:
                        values.append(float(array[y, x]))
                value[j, i], error[j, i], count[j, i] = ref_statistic(values, statistic, clip, n_iter)
    return value, error, count


def ref_stack(stack, bad, statistic, clip=3.0, n_iter=3):
    k, h, w = stack.shape
    value = np.zeros((h, w))
    error = np.zeros((h, w))
    count = np.zeros((h, w), dtype=int)
    for y in range(h):
        for x in range(w):
            values = [float(stack[i, y, x]) for i in range(k) if bad is None or not bad[i, y, x]]
            value[y, x], error[y, x], count[y, x] = ref_statistic(values, statistic, clip, n_iter)
    return value, error, count


def assert_matches(result, expected, scale=1.0):
    value, error, count = expected
    np.testing.assert_array_equal(result.count, count)
    np.testing.assert_allclose(result.value, value, rtol=1e-10, atol=1e-12 * scale, equal_nan=True)
    np.testing.assert_allclose(result.error, error, rtol=1e-8, atol=1e-12 * scale, equal_nan=True)


# ---------------------------------------------------------------------------
# Test data
# ---------------------------------------------------------------------------


def make_image(seed, height=50, width=103, dtype=np.float64):
    """Noisy sky with stars, NaN/inf pixels and a mask, plus special bins.

    With 7 x 4 bins from ``bin_edges``: bin (0, 0) is fully masked, bin
    (1, 1) has one good pixel, bin (2, 3) is constant and bin (3, 5) is all
    NaN.
    """
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 20.0, size=(height, width))
    stars = rng.integers(0, image.size, size=image.size // 40)
    image.flat[stars] += rng.exponential(5000.0, size=stars.size)
    image.flat[rng.integers(0, image.size, size=30)] = np.nan
    image.flat[rng.integers(0, image.size, size=10)] = np.inf
    image.flat[rng.integers(0, image.size, size=10)] = -np.inf
    bad = rng.random((height, width)) < 0.1
    xe = bin_edges(width, 7)
    ye = bin_edges(height, 4)
    bad[ye[0] : ye[1], xe[0] : xe[1]] = True
    bad[ye[1] : ye[2], xe[1] : xe[2]] = True
    bad[ye[1] + 3, xe[1] + 5] = False
    image[ye[1] + 3, xe[1] + 5] = 1234.5
    image[ye[2] : ye[3], xe[3] : xe[4]] = 987.25
    bad[ye[2] : ye[3], xe[3] : xe[4]] = False
    image[ye[3] : ye[4], xe[5] : xe[6]] = np.nan
    return image.astype(dtype), bad, xe, ye


# ---------------------------------------------------------------------------
# Property
# ---------------------------------------------------------------------------


def test_string_to_property():
    """Names convert to members, members pass through, values are names."""
    for name in STATISTICS:
        prop = stringToStatisticsProperty(name)
        assert prop is Property[name]
        assert prop.value == name
        assert stringToStatisticsProperty(prop) is prop


@pytest.mark.parametrize("name", ["MEANSQUARE", "mean", "", 3])
def test_string_to_property_unknown(name):
    """Unknown names raise UnsupportedStyleError naming the value and the
    allowed names.
    """
    with pytest.raises(UnsupportedStyleError, match="MEANCLIP") as info:
        stringToStatisticsProperty(name)
    assert repr(name) in str(info.value)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------
# Bins
# ---------------------------------------------------------------------------


def test_bin_edges_formula():
    """Edges follow afw's formula and tile [0, length] with near-equal bins."""
    for length in [*range(1, 60), 103, 127, 128, 129, 1000, 2048, 4000, 4096, 4097]:
        for n in sorted(
            {1, 2, 3, 4, 7, 16, 31, length // 3 + 1, length - 1, length} & set(range(1, length + 1))
        ):
            edges = bin_edges(length, n)
            expected = [0]
            for i in range(n):
                expected.append(min(((i + 1) * length + n // 2) // n, length))
            assert edges.dtype == np.int64
            assert edges.tolist() == expected
            sizes = np.diff(edges)
            assert edges[0] == 0 and edges[-1] == length
            assert sizes.min() >= 1
            assert sizes.max() - sizes.min() <= 1


@pytest.mark.parametrize(("length", "n"), [(10, 0), (10, -1), (10, 11), (0, 1)])
def test_bin_edges_invalid(length, n):
    """Too few or too many bins is a clear ValueError."""
    with pytest.raises(NoDataError, match="bins"):
        bin_edges(length, n)
    with pytest.raises(ValueError):
        bin_edges(length, n)


def test_bin_centres():
    """Centres are origin + size / 2 - 0.5 in pixel-centred coordinates."""
    assert bin_centres(4, 1).tolist() == [1.5]
    assert bin_centres(4, 4).tolist() == [0.0, 1.0, 2.0, 3.0]
    for length, n in [(103, 7), (50, 4), (4096, 32)]:
        edges = bin_edges(length, n)
        expected = [edges[i] + (edges[i + 1] - edges[i]) / 2 - 0.5 for i in range(n)]
        centres = bin_centres(length, n)
        assert centres.dtype == np.float64
        np.testing.assert_array_equal(centres, expected)


# ---------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------


def make_mask(n_planes, shape, seed):
    names = [f"P{i}" for i in range(n_planes)]
    names[:3] = ["BAD", "SAT", "CR"][: min(3, n_planes)]
    schema = lsst.images.MaskSchema([lsst.images.MaskPlane(name, f"plane {name}") for name in names])
    mask = lsst.images.Mask(schema=schema, shape=shape)
    rng = np.random.default_rng(seed)
    truth = {}
    for name in names:
        truth[name] = rng.random(shape) < 0.2
        mask.set(name, truth[name])
    return mask, truth


def test_bad_pixel_mask_union():
    """The result is the union of the requested planes only."""
    mask, truth = make_mask(4, (13, 17), seed=1)
    bad = bad_pixel_mask(mask, ["BAD", "CR"])
    assert bad.shape == (13, 17) and bad.dtype == bool
    np.testing.assert_array_equal(bad, truth["BAD"] | truth["CR"])
    np.testing.assert_array_equal(bad_pixel_mask(mask, "SAT"), truth["SAT"])
    np.testing.assert_array_equal(bad_pixel_mask(mask, []), np.zeros((13, 17), bool))


def test_bad_pixel_mask_unknown_plane(caplog):
    """Planes missing from the schema are ignored and logged at DEBUG."""
    mask, truth = make_mask(3, (8, 9), seed=2)
    with caplog.at_level(logging.DEBUG, logger="lsst.skyframes.statistics"):
        bad = bad_pixel_mask(mask, ["NO_DATA", "SAT", "SUSPECT"])
    np.testing.assert_array_equal(bad, truth["SAT"])
    messages = [r.getMessage() for r in caplog.records if r.name == "lsst.skyframes.statistics"]
    assert any("NO_DATA" in m for m in messages)
    assert any("SUSPECT" in m for m in messages)
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "lsst.skyframes.statistics")
    np.testing.assert_array_equal(bad_pixel_mask(mask, ["NOPE"]), np.zeros((8, 9), bool))


def test_bad_pixel_mask_multibyte():
    """Planes in the second byte of a > 8-plane schema are found."""
    mask, truth = make_mask(12, (10, 11), seed=3)
    assert mask.array.shape == (10, 11, 2)
    for planes in (["P9"], ["BAD", "P10"], ["P7", "P8"], list(truth)):
        expected = np.zeros((10, 11), bool)
        for name in planes:
            expected |= truth[name]
        np.testing.assert_array_equal(bad_pixel_mask(mask, planes), expected)


# ---------------------------------------------------------------------------
# The reference itself
# ---------------------------------------------------------------------------


def test_reference_quantile_matches_numpy():
    """The reference quantile is numpy's default ("linear") percentile."""
    rng = np.random.default_rng(4)
    for n in [1, 2, 3, 4, 5, 10, 17, 100]:
        v = rng.normal(size=n).tolist()
        for f in (0.25, 0.5, 0.75):
            assert ref_quantile(v, f) == pytest.approx(np.percentile(v, 100 * f), rel=1e-14, abs=1e-15)


@pytest.mark.parametrize("budget", [None, 0, 1, 3])
def test_selection(budget):
    """The in-place selection puts the rank-k value at k with nothing larger
    before it and nothing smaller after it, for random, tied, sorted,
    reverse-sorted and constant data, also when it falls back to sorting.
    """
    rng = np.random.default_rng(5)
    makers = [
        lambda n: rng.normal(size=n),
        lambda n: rng.integers(0, 3, size=n).astype(float),
        lambda n: np.arange(n, dtype=float),
        lambda n: np.arange(n, dtype=float)[::-1].copy(),
        lambda n: np.full(n, 2.5),
        lambda n: np.where(rng.random(n) < 0.9, 1.0, rng.normal(size=n)),
    ]
    for trial in range(600):
        n = int(rng.integers(1, 2000)) if trial % 3 else int(rng.integers(1, 40))
        values = makers[trial % len(makers)](n)
        lo = int(rng.integers(0, n))
        hi = int(rng.integers(lo + 1, n + 1))
        k = int(rng.integers(lo, hi))
        a = values.copy()
        if budget is None:
            _select(a, lo, hi, k)
        else:
            _select_with_budget(a, lo, hi, k, budget)
        assert a[k] == np.sort(values[lo:hi])[k - lo]
        assert (a[lo:k] <= a[k]).all() and (a[k + 1 : hi] >= a[k]).all()
        np.testing.assert_array_equal(np.sort(a[lo:hi]), np.sort(values[lo:hi]))
        np.testing.assert_array_equal(a[:lo], values[:lo])
        np.testing.assert_array_equal(a[hi:], values[hi:])


# ---------------------------------------------------------------------------
# binned_statistics
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("statistic", STATISTICS)
def test_binned_matches_reference(statistic, dtype):
    """Unequal bins with NaN, inf, masked pixels and stars, plus a fully
    masked bin, an all-NaN bin, a one-pixel bin and a constant bin.
    """
    image, bad, xe, ye = make_image(10, dtype=dtype)
    result = binned_statistics(image, bad, xe, ye, statistic)
    assert isinstance(result, StatsResult)
    assert result.value.shape == result.error.shape == result.count.shape == (4, 7)
    assert result.value.dtype == result.error.dtype == np.float64
    assert result.count.dtype == np.int64
    assert_matches(result, ref_binned(image, bad, xe, ye, statistic), scale=1000.0)
    # The special bins described in make_image.
    for j, i in [(0, 0), (3, 5)]:
        assert result.count[j, i] == 0
        assert np.isnan(result.value[j, i]) and np.isnan(result.error[j, i])
    assert result.count[1, 1] == 1
    assert result.value[1, 1] == 1234.5 and np.isnan(result.error[1, 1])
    assert result.value[2, 3] == 987.25 and result.error[2, 3] == 0.0


@pytest.mark.parametrize("statistic", STATISTICS)
def test_binned_without_mask(statistic):
    """bad=None is the same as an all-False mask; only non-finite pixels are
    dropped.
    """
    image, _, xe, ye = make_image(11)
    result = binned_statistics(image, None, xe, ye, statistic)
    assert_matches(result, ref_binned(image, None, xe, ye, statistic), scale=1000.0)
    explicit = binned_statistics(image, np.zeros(image.shape, bool), xe, ye, statistic)
    np.testing.assert_array_equal(result.value, explicit.value)
    np.testing.assert_array_equal(result.count, explicit.count)


@pytest.mark.parametrize(("clip", "n_iter"), [(3.0, 1), (3.0, 2), (2.5, 5), (1.5, 3), (5.0, 10), (0.5, 4)])
def test_binned_meanclip_parameters(clip, n_iter):
    """MEANCLIP matches the reference for other thresholds and pass counts."""
    image, bad, xe, ye = make_image(12)
    result = binned_statistics(image, bad, xe, ye, "MEANCLIP", clip=clip, n_iter=n_iter)
    assert_matches(result, ref_binned(image, bad, xe, ye, "MEANCLIP", clip, n_iter), scale=1000.0)


@pytest.mark.parametrize("statistic", STATISTICS)
def test_binned_ties_and_sizes(statistic):
    """Heavily tied integer data, sorted and reverse-sorted runs and bins of
    every small size exercise the selection against a full sort.
    """
    rng = np.random.default_rng(13)
    for width in [1, 2, 3, 5, 16, 17, 18, 33, 64, 257]:
        image = rng.poisson(3.0, size=(6, width)).astype(np.float64)
        image[1] = np.arange(width)
        image[2] = np.arange(width)[::-1]
        image[3] = rng.integers(0, 2, size=width)
        image[4, : width // 2] = 7.0
        xe = np.array([0, width])
        ye = np.arange(7)
        result = binned_statistics(image, None, xe, ye, statistic, clip=2.0)
        assert_matches(result, ref_binned(image, None, xe, ye, statistic, clip=2.0), scale=10.0)
        # Whole image as one bin, too.
        whole = binned_statistics(image, None, xe, np.array([0, 6]), statistic)
        assert_matches(whole, ref_binned(image, None, xe, [0, 6], statistic), scale=10.0)


@pytest.mark.parametrize("statistic", STATISTICS)
def test_binned_constant_bins_exact(statistic):
    """A constant bin returns the constant exactly with zero error, even for
    values that are not exactly summable.
    """
    image = np.empty((40, 30), dtype=np.float32)
    constants = [0.1, 3.7, -1e-3, 12345.678, 1e30]
    for i, c in enumerate(constants):
        image[:, 6 * i : 6 * i + 6] = c
    result = binned_statistics(image, None, bin_edges(30, 5), bin_edges(40, 2), statistic)
    for i, c in enumerate(constants):
        np.testing.assert_array_equal(result.value[:, i], np.float64(np.float32(c)))
        np.testing.assert_array_equal(result.error[:, i], 0.0)
        np.testing.assert_array_equal(result.count[:, i], 120)


def test_binned_float32_accumulates_in_float64():
    """float32 input gives exactly the float64 answer for the same values
    (no float32 accumulation), even with a large offset.
    """
    rng = np.random.default_rng(14)
    image = (rng.normal(0.0, 1.0, size=(64, 64)) + 30000.0).astype(np.float32)
    xe, ye = bin_edges(64, 2), bin_edges(64, 2)
    for statistic in STATISTICS:
        single = binned_statistics(image, None, xe, ye, statistic)
        double = binned_statistics(image.astype(np.float64), None, xe, ye, statistic)
        np.testing.assert_array_equal(single.value, double.value)
        np.testing.assert_array_equal(single.error, double.error)
        assert_matches(single, ref_binned(image, None, xe, ye, statistic), scale=30000.0)


def test_binned_non_contiguous_and_empty_bins():
    """Views of larger arrays work, and zero-width bins give NaN and 0."""
    image, bad, _, _ = make_image(15, height=60, width=120)
    view, view_bad = image[5:55:2, 3:110], bad[5:55:2, 3:110]
    xe = np.array([0, 10, 10, 50, 107])
    ye = np.array([0, 7, 25])
    result = binned_statistics(view, view_bad, xe, ye, "MEANCLIP")
    assert_matches(result, ref_binned(view, view_bad, xe, ye, "MEANCLIP"), scale=1000.0)
    assert (result.count[:, 1] == 0).all() and np.isnan(result.value[:, 1]).all()


def test_binned_other_dtypes():
    """Integer and big-endian (FITS-style) images are converted to float64;
    read-only arrays are accepted.
    """
    image = np.arange(100, dtype=np.int32).reshape(10, 10)
    result = binned_statistics(image, None, [0, 10], [0, 10], "MEAN")
    assert result.value[0, 0] == 49.5
    native, bad, xe, ye = make_image(18, dtype=np.float32)
    expected = binned_statistics(native, bad, xe, ye, "MEANCLIP")
    big_endian = native.astype(">f4")
    big_endian.flags.writeable = False
    result = binned_statistics(big_endian, bad, xe, ye, "MEANCLIP")
    np.testing.assert_array_equal(result.value, expected.value)
    np.testing.assert_array_equal(result.count, expected.count)
    stacked = stack_statistics(np.stack([big_endian, big_endian]), None, "MEDIAN")
    np.testing.assert_array_equal(stacked.value, np.where(np.isfinite(native), native, np.nan))


def test_binned_errors():
    """Bad shapes, edges, statistics and clipping parameters are rejected."""
    image = np.zeros((10, 12))
    xe, ye = bin_edges(12, 3), bin_edges(10, 2)
    with pytest.raises(BoxMismatchError, match=r"\(10, 11\)"):
        binned_statistics(image, np.zeros((10, 11), bool), xe, ye, "MEAN")
    with pytest.raises(BoxMismatchError, match="2-d"):
        binned_statistics(np.zeros((2, 10, 12)), None, xe, ye, "MEAN")
    with pytest.raises(BoxMismatchError, match="x_edges"):
        binned_statistics(image, None, bin_edges(13, 3), ye, "MEAN")
    with pytest.raises(BoxMismatchError, match="y_edges"):
        binned_statistics(image, None, xe, [0, 6, 4, 10], "MEAN")
    with pytest.raises(TypeError, match="integers"):
        binned_statistics(image, None, xe.astype(float), ye, "MEAN")
    with pytest.raises(UnsupportedStyleError, match="MEANSQ"):
        binned_statistics(image, None, xe, ye, "MEANSQ")
    with pytest.raises(UnsupportedStyleError, match="sigma"):
        binned_statistics(image, None, xe, ye, "MEANCLIP", clip=0.0)
    with pytest.raises(UnsupportedStyleError, match="sigma"):
        binned_statistics(image, None, xe, ye, "MEANCLIP", clip=np.nan)
    with pytest.raises(UnsupportedStyleError, match="iterations"):
        binned_statistics(image, None, xe, ye, "MEANCLIP", n_iter=0)


# ---------------------------------------------------------------------------
# MEANCLIP corner cases
# ---------------------------------------------------------------------------


def test_meanclip_first_pass_keeps_nothing():
    """If the first pass would keep nothing, the unclipped mean is used."""
    result = box_statistic(np.array([0.0, 1.0, 2.0, 3.0]), None, "MEANCLIP", clip=1e-6)
    assert result.value == 1.5
    assert result.error == pytest.approx(math.sqrt(ref_var([0, 1, 2, 3]) / 4))
    assert result.value == ref_statistic([0, 1, 2, 3], "MEANCLIP", clip=1e-6)[0]


def test_meanclip_single_survivor():
    """A pass that leaves one value stops the iteration: value, NaN error."""
    values = np.array([0.0, 5.0, 100.0])
    result = box_statistic(values, None, "MEANCLIP", clip=0.01)
    assert result.value == 5.0 and np.isnan(result.error) and result.count == 3
    assert ref_statistic(values.tolist(), "MEANCLIP", clip=0.01)[0] == 5.0


def test_meanclip_small_counts():
    """n = 0, 1 and 2 behave as specified."""
    empty = box_statistic(np.array([np.nan, np.inf]), None, "MEANCLIP")
    assert np.isnan(empty.value) and np.isnan(empty.error) and empty.count == 0
    one = box_statistic(np.array([np.nan, 4.25]), None, "MEANCLIP")
    assert one.value == 4.25 and np.isnan(one.error) and one.count == 1
    for statistic in STATISTICS:
        r = box_statistic(np.array([1.0, 3.0]), None, statistic)
        expected = ref_statistic([1.0, 3.0], statistic)
        assert (r.value, r.count) == (expected[0], 2)
        assert r.error == pytest.approx(expected[1])


def test_meanclip_rejects_outliers():
    """MEANCLIP of Gaussian noise plus 5% bright outliers stays within three
    standard errors of the true mean; the plain mean does not.
    """
    rng = np.random.default_rng(16)
    n = 20000
    values = rng.normal(100.0, 5.0, size=n)
    outliers = rng.choice(n, size=n // 20, replace=False)
    values[outliers] += rng.uniform(50.0, 500.0, size=outliers.size)
    standard_error = 5.0 / math.sqrt(n)
    clipped = box_statistic(values.reshape(100, 200), None, "MEANCLIP")
    mean = box_statistic(values.reshape(100, 200), None, "MEAN")
    assert abs(clipped.value - 100.0) < 3 * standard_error
    assert abs(mean.value - 100.0) > 3 * standard_error
    # The clipped error estimates the standard error of the clean sample.
    assert clipped.error == pytest.approx(standard_error, rel=0.1)


# ---------------------------------------------------------------------------
# box_statistic
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("statistic", STATISTICS)
def test_box_statistic(statistic):
    """One box of any shape gives scalars matching the reference."""
    image, bad, _, _ = make_image(17, height=21, width=33, dtype=np.float32)
    result = box_statistic(image, bad, statistic, clip=2.5, n_iter=4)
    expected = ref_statistic(image[~bad].tolist(), statistic, clip=2.5, n_iter=4)
    assert np.ndim(result.value) == np.ndim(result.error) == np.ndim(result.count) == 0
    assert result.count == expected[2]
    assert result.value == pytest.approx(expected[0], rel=1e-12)
    assert result.error == pytest.approx(expected[1], rel=1e-9)
    cube = box_statistic(image.reshape(3, 7, 33), bad.reshape(3, 7, 33), statistic, clip=2.5, n_iter=4)
    assert cube == result
    with pytest.raises(BoxMismatchError):
        box_statistic(image, bad[:-1], statistic)


# ---------------------------------------------------------------------------
# stack_statistics
# ---------------------------------------------------------------------------


def make_stack(k, seed, height=9, width=11, dtype=np.float64):
    """k layers with outliers, NaN/inf, masked pixels, a fully bad pixel, a
    NaN layer and a fully masked layer (for k >= 3).
    """
    rng = np.random.default_rng(seed)
    stack = rng.normal(50.0, 3.0, size=(k, height, width))
    hot = rng.random(stack.shape) < 0.05
    stack[hot] += rng.exponential(300.0, size=hot.sum())
    stack[rng.random(stack.shape) < 0.03] = np.nan
    stack[rng.random(stack.shape) < 0.01] = np.inf
    bad = rng.random(stack.shape) < 0.1
    bad[:, 0, 0] = True  # every layer masked
    stack[:, 0, 1] = np.nan  # every layer NaN
    stack[:, 1, 1] = 42.5  # constant
    bad[:, 1, 1] = False
    if k >= 3:
        stack[1] = np.nan
        bad[2] = True
    return stack.astype(dtype), bad


@pytest.mark.parametrize("k", [1, 2, 5, 20])
@pytest.mark.parametrize("statistic", STATISTICS)
def test_stack_matches_reference(statistic, k):
    """Per-pixel statistics across k layers match the reference."""
    stack, bad = make_stack(k, seed=20 + k)
    result = stack_statistics(stack, bad, statistic)
    assert result.value.shape == result.error.shape == result.count.shape == (9, 11)
    assert result.count.dtype == np.int64
    assert_matches(result, ref_stack(stack, bad, statistic), scale=50.0)
    for y, x in [(0, 0), (0, 1)]:
        assert result.count[y, x] == 0 and np.isnan(result.value[y, x]) and np.isnan(result.error[y, x])
    assert result.value[1, 1] == 42.5
    # Without a mask only non-finite values are dropped.
    unmasked = stack_statistics(stack, None, statistic)
    assert_matches(unmasked, ref_stack(stack, None, statistic), scale=50.0)


@pytest.mark.parametrize(("clip", "n_iter"), [(2.0, 1), (2.5, 5), (1.0, 3)])
def test_stack_meanclip_parameters(clip, n_iter):
    """Stack MEANCLIP matches the reference for other clipping settings,
    with float32 input given as a list of layers.
    """
    stack, bad = make_stack(20, seed=30, dtype=np.float32)
    result = stack_statistics(list(stack), list(bad), "MEANCLIP", clip=clip, n_iter=n_iter)
    assert_matches(result, ref_stack(stack, bad, "MEANCLIP", clip, n_iter), scale=50.0)


def test_stack_errors():
    """Empty stacks and mismatched shapes are reported with the culprit."""
    with pytest.raises(NoDataError, match="empty"):
        stack_statistics([], None, "MEAN")
    with pytest.raises(NoDataError, match="empty"):
        stack_statistics(np.zeros((0, 3, 4)), None, "MEAN")
    layers = [np.zeros((3, 4)), np.zeros((3, 4)), np.zeros((4, 3))]
    with pytest.raises(BoxMismatchError, match=r"stack\[2\].*\(4, 3\).*\(3, 4\)"):
        stack_statistics(layers, None, "MEAN")
    with pytest.raises(BoxMismatchError, match="2-d"):
        stack_statistics([np.zeros(3)], None, "MEAN")
    with pytest.raises(BoxMismatchError, match="bad"):
        stack_statistics(np.zeros((2, 3, 4)), np.zeros((3, 3, 4), bool), "MEAN")
    with pytest.raises(BoxMismatchError, match=r"bad\[1\]"):
        stack_statistics(np.zeros((2, 3, 4)), [np.zeros((3, 4), bool), np.zeros((3, 5), bool)], "MEAN")
    with pytest.raises(UnsupportedStyleError):
        stack_statistics(np.zeros((2, 3, 4)), None, "MAX")
