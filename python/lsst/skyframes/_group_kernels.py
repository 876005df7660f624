"""The statistic of one group of values: MEAN, MEDIAN or MEANCLIP.

A group is the good (unmasked, finite) values of a bin, a label, a box or a
stack pixel, gathered in pixel order into a buffer that keeps the input's
type (float32 or float64); all arithmetic is done in float64. Every
statistic of a group is a function of that sequence alone, whichever way
the group was gathered (a rectangular bin, a label, a box, a stack pixel)
and whether one thread reduces it or all threads do: order statistics are
exact values (`._selection`) and every sum runs in the canonical order
(`._sums`).

`_reduce` is what one thread runs on one group, with scratch from
`_workspace`; `_reduce_parallel` spreads every pass over one large group
across all threads, with identical results. MEANCLIP's clipping passes are
`_iterate_clip` and `_iterate_clip_parallel`.

Used by the kernels of `._binned_kernels` and `._stack_kernels`, and
directly by `~lsst.skyframes.statistics.binned_statistics` and
``labelled_statistics`` for their large groups.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import njit
from ._selection import _HIST_MAX_BINS, _order_statistics, _order_statistics_parallel
from ._sums import _LANES, _clipped_mean_var, _clipped_mean_var_parallel

MAD_TO_SIGMA = 1.482602218505602
"""Ratio of the standard deviation of a Gaussian to its median absolute
deviation; public as `lsst.skyframes.statistics.MAD_TO_SIGMA`.
"""

IQR_TO_SIGMA = 0.741301109252802
"""Ratio of the standard deviation of a Gaussian to its interquartile range
(afw's ``IQ_TO_STDEV``); public as `lsst.skyframes.statistics.IQR_TO_SIGMA`.
"""

# Integer codes of the statistics handed to the numba kernels, which cannot
# take enums; `lsst.skyframes.statistics` maps its `Property` to them.
_MEAN, _MEDIAN, _MEANCLIP = 0, 1, 2


@njit(cache=True, nogil=True)
def _ranks_of(n: int, code: int, ranks: np.ndarray) -> np.ndarray:
    """Return the ranks whose values a statistic of ``n`` values needs: the
    order statistics below and above each quantile (rank
    ``floor(f * (n - 1))`` and the next one, or the same one twice when the
    quantile falls on it). MEDIAN needs two, MEANCLIP six (increasing, but
    for n = 2). They are written to the start of ``ranks``; the returned
    array is that part of it.
    """
    count = 2 if code == _MEDIAN else 6
    first = 1 if code == _MEDIAN else 0
    ranks = ranks[:count]
    for q in range(count // 2):
        pos = (first + q + 1) * 0.25 * (n - 1)
        k = int(math.floor(pos))
        ranks[2 * q] = k
        ranks[2 * q + 1] = k + 1 if pos - k > 0.0 else k
    return ranks


@njit(cache=True, nogil=True)
def _interpolate_quantile(values: np.ndarray, q: int, n: int, f: float) -> float:
    """Return the ``f`` quantile from the two order statistics that
    `_ranks_of` put at ``values[2 * q]`` and ``values[2 * q + 1]``.
    """
    pos = f * (n - 1)
    frac = pos - math.floor(pos)
    value = values[2 * q]
    if frac > 0.0:
        value = value + (values[2 * q + 1] - value) * frac
    return value


@njit(cache=True, nogil=True)
def _workspace(size: int, like: np.ndarray) -> tuple:
    """Return the scratch arrays `_reduce` needs for groups of up to
    ``size`` values of the type of ``like``, allocated once per task rather
    than once per group.
    """
    return (
        np.empty(size, dtype=np.int32),
        np.empty(_HIST_MAX_BINS + 2, dtype=np.int32),
        np.zeros(_HIST_MAX_BINS + 2, dtype=np.uint8),
        np.empty(size + 1, dtype=like.dtype),
        np.empty(_LANES, dtype=np.float64),
        np.empty(_LANES, dtype=np.int64),
        np.empty(32, dtype=np.int64),
        np.empty(8, dtype=np.float64),
    )


@njit(cache=True, nogil=True)
def _iterate_clip(
    a: np.ndarray, n: int, values: np.ndarray, clip: float, n_iter: int, acc: np.ndarray, cnt: np.ndarray
) -> tuple[float, float]:
    """Return MEANCLIP's value and error from the quartile order statistics
    ``values`` (see `_ranks_of`).
    """
    q25 = _interpolate_quantile(values, 0, n, 0.25)
    median = _interpolate_quantile(values, 1, n, 0.5)
    q75 = _interpolate_quantile(values, 2, n, 0.75)
    centre = median
    half_width = clip * IQR_TO_SIGMA * (q75 - q25)
    kept = 0
    mean = math.nan
    var = math.nan
    for iteration in range(n_iter):
        if iteration > 0:
            if kept < 2:
                # A single survivor has no scatter to clip with.
                break
            centre = mean
            half_width = clip * math.sqrt(var)
        new_kept, new_mean, new_var = _clipped_mean_var(a, n, centre, half_width, median, acc, cnt)
        if new_kept == 0:
            if iteration == 0:
                # The first pass has no predecessor but the unclipped data.
                kept, mean, var = _clipped_mean_var(a, n, 0.0, math.inf, median, acc, cnt)
            break
        kept, mean, var = new_kept, new_mean, new_var
    return mean, math.sqrt(var / kept)


@njit(cache=True)
def _iterate_clip_parallel(
    a: np.ndarray, n: int, values: np.ndarray, clip: float, n_iter: int
) -> tuple[float, float]:
    """`_iterate_clip` with the sums spread over all threads (same results)."""
    q25 = _interpolate_quantile(values, 0, n, 0.25)
    median = _interpolate_quantile(values, 1, n, 0.5)
    q75 = _interpolate_quantile(values, 2, n, 0.75)
    centre = median
    half_width = clip * IQR_TO_SIGMA * (q75 - q25)
    kept = 0
    mean = math.nan
    var = math.nan
    for iteration in range(n_iter):
        if iteration > 0:
            if kept < 2:
                break
            centre = mean
            half_width = clip * math.sqrt(var)
        new_kept, new_mean, new_var = _clipped_mean_var_parallel(a, n, centre, half_width, median)
        if new_kept == 0:
            if iteration == 0:
                kept, mean, var = _clipped_mean_var_parallel(a, n, 0.0, math.inf, median)
            break
        kept, mean, var = new_kept, new_mean, new_var
    return mean, math.sqrt(var / kept)


@njit(cache=True, nogil=True)
def _reduce(a: np.ndarray, n: int, code: int, clip: float, n_iter: int, work: tuple) -> tuple[float, float]:
    """Return the statistic and its error for the ``n`` good values in
    ``a[:n]`` (in pixel order, left unchanged); ``work`` is a `_workspace`.
    """
    idx, hist, flag, u, acc, cnt, ints, values = work
    if n == 0:
        return math.nan, math.nan
    if code == _MEAN:
        _, mean, var = _clipped_mean_var(a, n, 0.0, math.inf, np.float64(a[0]), acc, cnt)
        return mean, math.sqrt(var / n)
    if code == _MEANCLIP and n == 1:
        return np.float64(a[0]), math.nan
    ranks = _ranks_of(n, code, ints[24:32])
    _order_statistics(a, n, ranks, values, idx, hist, flag, u, ints)
    if code == _MEDIAN:
        median = _interpolate_quantile(values, 0, n, 0.5)
        _, _, var = _clipped_mean_var(a, n, 0.0, math.inf, median, acc, cnt)
        return median, math.sqrt(0.5 * math.pi * var / n)
    return _iterate_clip(a, n, values, clip, n_iter, acc, cnt)


@njit(cache=True)
def _reduce_parallel(a: np.ndarray, n: int, code: int, clip: float, n_iter: int) -> tuple[float, float]:
    """`_reduce` of one large group with every pass spread over all threads;
    the results are identical.
    """
    if n == 0:
        return math.nan, math.nan
    if code == _MEAN:
        _, mean, var = _clipped_mean_var_parallel(a, n, 0.0, math.inf, np.float64(a[0]))
        return mean, math.sqrt(var / n)
    if code == _MEANCLIP and n == 1:
        return np.float64(a[0]), math.nan
    values = _order_statistics_parallel(a, n, _ranks_of(n, code, np.empty(8, dtype=np.int64)))
    if code == _MEDIAN:
        median = _interpolate_quantile(values, 0, n, 0.5)
        _, _, var = _clipped_mean_var_parallel(a, n, 0.0, math.inf, median)
        return median, math.sqrt(0.5 * math.pi * var / n)
    return _iterate_clip_parallel(a, n, values, clip, n_iter)
