"""Per-pixel kernels of `~lsst.skyframes.statistics.stack_statistics`.

MEDIAN and MEANCLIP of stacks up to `_NETWORK_MAX_DEPTH` layers deep sort
every pixel's values with a sorting network (`_sorting_network`, Batcher's
odd-even merge sort) applied to `_STACK_LANES` pixels at once, so that each
comparator is a vector min/max, read the quartiles off the sorted values,
and run the clipping passes across the pixels too
(`_stack_network_kernel`). Each pixel sums its values there one after the
other in sorted order, not in the canonical order of `._sums`, so the last
bits can differ from `._group_kernels._reduce` of the same values. MEAN,
and deeper stacks, are reduced one pixel at a time by
`._group_kernels._reduce` (`_stack_kernel`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import prange

from ._group_kernels import _MEANCLIP, _MEDIAN, IQR_TO_SIGMA, _reduce, _workspace
from ._jit import njit
from ._sums import _LANES, _clipped_mean_var


@njit(cache=True, parallel=True)
def _stack_kernel(
    stack: np.ndarray,
    bad: np.ndarray,
    has_bad: bool,
    code: int,
    clip: float,
    n_iter: int,
    value: np.ndarray,
    error: np.ndarray,
    count: np.ndarray,
) -> None:
    """Fill ``value``, ``error`` and ``count`` (shape ``(H, W)``) with the
    statistic across the first axis of ``stack`` at each pixel, one pixel at
    a time (any depth, any statistic).
    """
    depth, height, width = stack.shape
    for y in prange(height):
        buf = np.empty(depth, dtype=stack.dtype)
        work = _workspace(depth, stack)
        for x in range(width):
            n = 0
            for k in range(depth):
                v = stack[k, y, x]
                if math.isfinite(v) and not (has_bad and bad[k, y, x]):
                    buf[n] = v
                    n += 1
            count[y, x] = n
            val, err = _reduce(buf, n, code, clip, n_iter, work)
            value[y, x] = val
            error[y, x] = err


_STACK_LANES = 64
"""Pixels processed together by `_stack_network_kernel`."""

_NETWORK_MAX_DEPTH = 128
"""Deepest stack sorted by a network; deeper ones use `_stack_kernel`."""


@functools.cache
def _sorting_network(depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the comparators ``(lo, hi)`` of a sorting network for ``depth``
    values: Batcher's odd-even merge sort for the next power of two, without
    the comparators that touch an index ``>= depth`` (padding with +inf
    values, which such comparators never move, makes that exact).
    """
    size = 1
    while size < depth:
        size *= 2
    lo: list[int] = []
    hi: list[int] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < depth:
                        lo.append(i + j)
                        hi.append(i + j + k)
            k //= 2
        p *= 2
    return np.array(lo, dtype=np.int64), np.array(hi, dtype=np.int64)


@njit(cache=True, nogil=True)
def _lanes_window_pass(
    buf: np.ndarray,
    n: np.ndarray,
    centre: np.ndarray,
    half_width: np.ndarray,
    shift: np.ndarray,
    kept: np.ndarray,
    total: np.ndarray,
) -> None:
    """For every lane (column of ``buf``), count and sum ``v - shift`` over
    its first ``n`` values with ``|v - centre| <= half_width``, in row order.

    The loop runs across lanes, so it vectorises while each lane still adds
    its values one after the other.
    """
    depth, lanes = buf.shape
    kept[:] = 0
    total[:] = 0.0
    for k in range(depth):
        for p in range(lanes):
            v = np.float64(buf[k, p])
            keep = (k < n[p]) & (abs(v - centre[p]) <= half_width[p])
            total[p] += (v - shift[p]) if keep else 0.0
            kept[p] += keep


@njit(cache=True, nogil=True)
def _lanes_squares_pass(
    buf: np.ndarray,
    n: np.ndarray,
    centre: np.ndarray,
    half_width: np.ndarray,
    mean: np.ndarray,
    out: np.ndarray,
) -> None:
    """For every lane, sum ``(v - mean)**2`` over the values `_lanes_window_pass` keeps."""
    depth, lanes = buf.shape
    out[:] = 0.0
    for k in range(depth):
        for p in range(lanes):
            v = np.float64(buf[k, p])
            keep = (k < n[p]) & (abs(v - centre[p]) <= half_width[p])
            d = v - mean[p]
            out[p] += d * d if keep else 0.0


@njit(cache=True, parallel=True)
def _stack_network_kernel(
    stack: np.ndarray,
    bad: np.ndarray,
    has_bad: bool,
    net_lo: np.ndarray,
    net_hi: np.ndarray,
    code: int,
    clip: float,
    n_iter: int,
    value: np.ndarray,
    error: np.ndarray,
    count: np.ndarray,
) -> None:
    """MEDIAN or MEANCLIP across the first axis of ``stack``, `_STACK_LANES`
    pixels of a row at a time.

    Each pixel's good values are sorted by the network ``(net_lo, net_hi)``
    (bad ones become +inf and sort last), applied to all the pixels of a
    chunk at once so that every comparator is a vector min/max; quartiles
    are then read off directly. The clipping passes also run across pixels,
    each pixel summing its values in sorted order.
    """
    depth, height, width = stack.shape
    lanes = _STACK_LANES
    n_chunks = (width + lanes - 1) // lanes
    n_comparators = net_lo.shape[0]
    for task in prange(height * n_chunks):
        y = task // n_chunks
        x0 = (task - y * n_chunks) * lanes
        w = min(lanes, width - x0)
        buf = np.empty((depth, lanes), dtype=stack.dtype)
        n = np.zeros(lanes, dtype=np.int64)
        for k in range(depth):
            for p in range(w):
                v = stack[k, y, x0 + p]
                good = math.isfinite(v) and not (has_bad and bad[k, y, x0 + p])
                buf[k, p] = v if good else np.inf
                n[p] += good
            for p in range(w, lanes):
                buf[k, p] = np.inf
        for c in range(n_comparators):
            lo = net_lo[c]
            hi = net_hi[c]
            for p in range(lanes):
                u = buf[lo, p]
                v = buf[hi, p]
                buf[lo, p] = min(u, v)
                buf[hi, p] = max(u, v)
        centre = np.zeros(lanes)
        half_width = np.full(lanes, -1.0)  # keeps nothing: lanes already done
        median = np.zeros(lanes)
        kept = np.zeros(lanes, dtype=np.int64)
        mean = np.full(lanes, math.nan)
        var = np.full(lanes, math.nan)
        new_kept = np.zeros(lanes, dtype=np.int64)
        total = np.zeros(lanes)
        new_mean = np.zeros(lanes)
        squares = np.zeros(lanes)
        active = np.zeros(lanes, dtype=np.bool_)
        acc = np.empty(_LANES, dtype=np.float64)
        cnt = np.empty(_LANES, dtype=np.int64)
        for p in range(w):
            m = n[p]
            count[y, x0 + p] = m
            if m == 0:
                value[y, x0 + p] = math.nan
                error[y, x0 + p] = math.nan
                continue
            if code == _MEANCLIP and m == 1:
                value[y, x0 + p] = np.float64(buf[0, p])
                error[y, x0 + p] = math.nan
                continue
            pos = 0.5 * (m - 1)
            k = int(math.floor(pos))
            med = np.float64(buf[k, p])
            if pos - k > 0.0:
                med = med + (np.float64(buf[k + 1, p]) - med) * (pos - k)
            median[p] = med
            active[p] = True
            if code == _MEDIAN:
                half_width[p] = math.inf
                continue
            pos = 0.25 * (m - 1)
            k = int(math.floor(pos))
            q25 = np.float64(buf[k, p])
            if pos - k > 0.0:
                q25 = q25 + (np.float64(buf[k + 1, p]) - q25) * (pos - k)
            pos = 0.75 * (m - 1)
            k = int(math.floor(pos))
            q75 = np.float64(buf[k, p])
            if pos - k > 0.0:
                q75 = q75 + (np.float64(buf[k + 1, p]) - q75) * (pos - k)
            centre[p] = med
            half_width[p] = clip * IQR_TO_SIGMA * (q75 - q25)
        passes = 1 if code == _MEDIAN else n_iter
        for iteration in range(passes):
            _lanes_window_pass(buf, n, centre, half_width, median, new_kept, total)
            for p in range(w):
                if active[p] and new_kept[p] > 0:
                    new_mean[p] = median[p] + total[p] / new_kept[p]
            _lanes_squares_pass(buf, n, centre, half_width, new_mean, squares)
            for p in range(w):
                if not active[p]:
                    continue
                if new_kept[p] == 0:
                    if iteration == 0:
                        # The first pass keeps nothing: unclipped statistics.
                        kept[p], mean[p], var[p] = _clipped_mean_var(
                            buf[:, p], n[p], 0.0, math.inf, median[p], acc, cnt
                        )
                    active[p] = False
                    half_width[p] = -1.0
                    continue
                kept[p] = new_kept[p]
                mean[p] = new_mean[p]
                var[p] = squares[p] / (new_kept[p] - 1) if new_kept[p] > 1 else math.nan
                if new_kept[p] < 2:
                    # A single survivor has no scatter to clip with.
                    active[p] = False
                    half_width[p] = -1.0
                else:
                    centre[p] = mean[p]
                    half_width[p] = clip * math.sqrt(var[p])
        for p in range(w):
            m = n[p]
            if code == _MEDIAN and m > 0:
                value[y, x0 + p] = median[p]
                error[y, x0 + p] = math.sqrt(0.5 * math.pi * var[p] / m)
            elif m > 1:
                value[y, x0 + p] = mean[p]
                error[y, x0 + p] = math.sqrt(var[p] / kept[p])
