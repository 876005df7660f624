"""Canonical sums of a group of values: the count, mean and variance of the
values within a window, always added in the same order.

Every sum over a group runs over its values (in pixel order) in one fixed
order, whichever kernel asks for it: blocks of `_BLOCK` values, each summed
in `_LANES` interleaved partial sums added in lane order, the block sums
added in block order. Independent partial sums let the compiler vectorise
the loop without reassociating anything (a single running sum waits for
each add in turn), and fixed blocks let a large group be summed by many
threads with bit-identical results (`_clipped_mean_var_parallel`).

Used by the reductions of one group in `._group_kernels` (so by
`~lsst.skyframes.statistics.binned_statistics`, ``box_statistic`` and
``labelled_statistics``) and by `._stack_kernels`
(`~lsst.skyframes.statistics.stack_statistics`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._jit import njit

_BLOCK = 1 << 16
"""Values per block of the canonical summation order."""

_LANES = 32
"""Partial sums per block in the canonical summation order."""


@njit(cache=True, nogil=True)
def _block_window_sum(
    a: np.ndarray,
    start: int,
    stop: int,
    centre: float,
    half_width: float,
    shift: float,
    acc: np.ndarray,
    cnt: np.ndarray,
) -> tuple[int, float]:
    """Return the number of the values of ``a[start:stop]`` with
    ``|v - centre| <= half_width`` and the sum of their ``v - shift``, in the
    canonical order: value ``start + r * _LANES + l`` goes to partial sum
    ``l``, and the partial sums are added in lane order.

    ``acc`` and ``cnt`` are `_LANES`-long scratch arrays (float64, int64).
    The loop over lanes has no dependency from one lane to the next, so it
    vectorises without reassociating any sum.
    """
    acc[:] = 0.0
    cnt[:] = 0
    rows = (stop - start) // _LANES
    for r in range(rows):
        row = a[start + r * _LANES : start + (r + 1) * _LANES]
        for lane in range(_LANES):
            v = np.float64(row[lane])
            keep = abs(v - centre) <= half_width
            acc[lane] += (v - shift) if keep else 0.0
            cnt[lane] += keep
    tail = a[start + rows * _LANES : stop]
    for lane in range(tail.shape[0]):
        v = np.float64(tail[lane])
        keep = abs(v - centre) <= half_width
        acc[lane] += (v - shift) if keep else 0.0
        cnt[lane] += keep
    kept = 0
    total = 0.0
    for lane in range(_LANES):
        kept += cnt[lane]
        total += acc[lane]
    return kept, total


@njit(cache=True, nogil=True)
def _block_window_squares(
    a: np.ndarray, start: int, stop: int, centre: float, half_width: float, mean: float, acc: np.ndarray
) -> float:
    """Return the sum of ``(v - mean)**2`` over the values of ``a[start:stop]``
    with ``|v - centre| <= half_width``, in the canonical order (see
    `_block_window_sum`).
    """
    acc[:] = 0.0
    rows = (stop - start) // _LANES
    for r in range(rows):
        row = a[start + r * _LANES : start + (r + 1) * _LANES]
        for lane in range(_LANES):
            v = np.float64(row[lane])
            d = v - mean
            acc[lane] += d * d if abs(v - centre) <= half_width else 0.0
    tail = a[start + rows * _LANES : stop]
    for lane in range(tail.shape[0]):
        v = np.float64(tail[lane])
        d = v - mean
        acc[lane] += d * d if abs(v - centre) <= half_width else 0.0
    total = 0.0
    for lane in range(_LANES):
        total += acc[lane]
    return total


@njit(cache=True, nogil=True)
def _clipped_mean_var(
    a: np.ndarray, n: int, centre: float, half_width: float, shift: float, acc: np.ndarray, cnt: np.ndarray
) -> tuple[int, float, float]:
    """Return the number, mean and (ddof=1) variance of the values of
    ``a[:n]`` with ``|v - centre| <= half_width``.

    Sums are of deviations from ``shift`` (a value near the mean), which keeps
    precision for data with a large offset and makes the mean of identical
    values exactly that value. ``acc`` and ``cnt`` are lane scratch.
    """
    kept = 0
    total = 0.0
    for start in range(0, n, _BLOCK):
        k, t = _block_window_sum(a, start, min(start + _BLOCK, n), centre, half_width, shift, acc, cnt)
        kept += k
        total += t
    if kept == 0:
        return 0, math.nan, math.nan
    mean = shift + total / kept
    if kept < 2:
        return kept, mean, math.nan
    squares = 0.0
    for start in range(0, n, _BLOCK):
        squares += _block_window_squares(a, start, min(start + _BLOCK, n), centre, half_width, mean, acc)
    return kept, mean, squares / (kept - 1)


@njit(cache=True, parallel=True)
def _clipped_mean_var_parallel(
    a: np.ndarray, n: int, centre: float, half_width: float, shift: float
) -> tuple[int, float, float]:
    """`_clipped_mean_var` with the blocks summed by all threads (identical
    results: the block sums are added in the same order).
    """
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    kept_of = np.empty(n_blocks, dtype=np.int64)
    total_of = np.empty(n_blocks, dtype=np.float64)
    for b in prange(n_blocks):
        acc = np.empty(_LANES, dtype=np.float64)
        cnt = np.empty(_LANES, dtype=np.int64)
        start = b * _BLOCK
        k, t = _block_window_sum(a, start, min(start + _BLOCK, n), centre, half_width, shift, acc, cnt)
        kept_of[b] = k
        total_of[b] = t
    kept = 0
    total = 0.0
    for b in range(n_blocks):
        kept += kept_of[b]
        total += total_of[b]
    if kept == 0:
        return 0, math.nan, math.nan
    mean = shift + total / kept
    if kept < 2:
        return kept, mean, math.nan
    for b in prange(n_blocks):
        acc = np.empty(_LANES, dtype=np.float64)
        start = b * _BLOCK
        total_of[b] = _block_window_squares(a, start, min(start + _BLOCK, n), centre, half_width, mean, acc)
    squares = 0.0
    for b in range(n_blocks):
        squares += total_of[b]
    return kept, mean, squares / (kept - 1)
