"""Exact order statistics of a group of values: selection, and the values at
a few wanted ranks found through a histogram.

`_select` is an introselect: a three-way quickselect (ninther pivots on
large ranges), an insertion sort for short ranges, and a sort when the
pivots are being defeated. `_order_statistics` returns the values of a few
ranks of a group without changing it: a histogram over a range guessed from
a sample finds the bins that hold the wanted ranks, and only their values
are copied and selected in; `_order_statistics_parallel` does the same with
all threads on one large group. The values are exact whatever the guess.

Used by `._group_kernels` for the quartiles of MEDIAN and MEANCLIP (so by
`~lsst.skyframes.statistics.binned_statistics`, ``box_statistic``,
``labelled_statistics``, and ``stack_statistics`` of stacks too deep for a
sorting network).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._jit import njit
from ._sums import _BLOCK

# Below this many elements, selection finishes with an insertion sort: it is
# faster than partitioning such short ranges any further.
_INSERTION_THRESHOLD = 16

_HIST_MIN = 256
"""Fewest values for which order statistics come from a histogram; smaller
groups are copied and selected in place.
"""

_HIST_MAX_BINS = 4096
"""Most histogram bins (int32 counts: 16 KiB, well inside L1)."""

_SORT_UNION = 64
"""Largest set of candidate values sorted whole rather than selected in."""


# --- Selection --------------------------------------------------------------


@njit(cache=True, nogil=True)
def _median_of_3(x: float, y: float, z: float) -> float:
    """Return the median of three values."""
    if x < y:
        if y < z:
            return y
        return z if x < z else x
    if x < z:
        return x
    return z if y < z else y


@njit(cache=True, nogil=True)
def _partition_below(a: np.ndarray, lo: int, hi: int, pivot: float, inclusive: bool) -> int:
    """Move the values of ``a[lo:hi]`` below ``pivot`` (or not above it, if
    ``inclusive``) to the front and return where the rest starts.

    The loop has no data-dependent branch: every element is swapped with the
    boundary slot and the boundary advances by the comparison result. Branch
    mispredictions otherwise dominate partitioning of noisy pixel values.
    """
    store = lo
    if inclusive:
        for i in range(lo, hi):
            x = a[i]
            a[i] = a[store]
            a[store] = x
            store += x <= pivot
    else:
        for i in range(lo, hi):
            x = a[i]
            a[i] = a[store]
            a[store] = x
            store += x < pivot
    return store


@njit(cache=True, nogil=True)
def _select(a: np.ndarray, lo: int, hi: int, k: int) -> None:
    """Partially order ``a[lo:hi]`` in place so that ``a[k]`` holds the value
    that would be there if the slice were sorted, with no larger value before
    it and no smaller value after it.
    """
    # Quickselect partitions about log2(n) times; past a generous budget the
    # pivots are being defeated (adversarial order) and a sort bounds the
    # cost, as in introselect.
    _select_with_budget(a, lo, hi, k, 2 * int(math.log2(hi - lo + 1)) + 8)


@njit(cache=True, nogil=True)
def _select_with_budget(a: np.ndarray, lo: int, hi: int, k: int, budget: int) -> None:
    """Do `_select` with at most ``budget`` partitioning steps before falling
    back to sorting what is left.
    """
    while hi - lo > _INSERTION_THRESHOLD:
        if budget == 0:
            a[lo:hi].sort()
            return
        budget -= 1
        n = hi - lo
        if n > 256:
            # Tukey's ninther: a better pivot is worth it on large ranges.
            step = n // 8
            pivot = _median_of_3(
                _median_of_3(a[lo], a[lo + step], a[lo + 2 * step]),
                _median_of_3(a[lo + 3 * step], a[lo + 4 * step], a[lo + 5 * step]),
                _median_of_3(a[lo + 6 * step], a[lo + 7 * step], a[hi - 1]),
            )
        else:
            pivot = _median_of_3(a[lo], a[(lo + hi) >> 1], a[hi - 1])
        # Three-way split in two passes: [< pivot][== pivot][> pivot]. The
        # pivot is one of the values, so each step strictly shrinks the range
        # even when most values are equal (constant or saturated bins).
        below = _partition_below(a, lo, hi, pivot, False)
        if k < below:
            hi = below
            continue
        not_above = _partition_below(a, below, hi, pivot, True)
        if k < not_above:
            return
        lo = not_above
    for i in range(lo + 1, hi):
        value = a[i]
        j = i - 1
        while j >= lo and a[j] > value:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = value


@njit(cache=True, nogil=True)
def _quantile_from(a: np.ndarray, lo: int, n: int, f: float) -> tuple[float, int]:
    """Return the ``f`` quantile of ``a[:n]`` (linear interpolation at rank
    ``f * (n - 1)``) and the lower rank used.

    ``a[lo:n]`` must already hold exactly the order statistics ``lo..n-1``
    (as left by a previous call that returned rank ``lo``), and the rank must
    be at least ``lo``; this lets successive quantiles reuse the work of the
    earlier selections.
    """
    pos = f * (n - 1)
    k = int(math.floor(pos))
    _select(a, lo, n, k)
    value = np.float64(a[k])
    frac = pos - k
    if frac > 0.0:
        # The next order statistic is the smallest value above rank k.
        upper = a[k + 1]
        for i in range(k + 2, n):
            if a[i] < upper:
                upper = a[i]
        value = value + (np.float64(upper) - value) * frac
    return value, k


# --- Values at a few ranks, through a histogram -----------------------------


@njit(cache=True, nogil=True)
def _histogram_range(a: np.ndarray, n: int) -> tuple[float, float, int]:
    """Choose the histogram that brackets the quartiles of ``a[:n]``.

    Returns ``(low, scale, n_bins)``: value ``v`` falls in bin `_bin_of`;
    ``n_bins == 0`` if a sample shows no spread (heavily tied data), where a
    histogram would not split the values.

    The range, from the quartiles of a small strided sample, is only a guess
    that keeps the bins holding the wanted ranks small: the order statistics
    found through it are exact whatever the guess.
    """
    size = 16 if n < 2048 else 32 if n < 8192 else 64
    stride = n // size
    sample = np.empty(size, dtype=np.float64)
    for i in range(size):
        value = np.float64(a[i * stride + stride // 2])
        j = i - 1
        while j >= 0 and sample[j] > value:
            sample[j + 1] = sample[j]
            j -= 1
        sample[j + 1] = value
    q1 = sample[size // 4]
    q3 = sample[size - 1 - size // 4]
    spread = q3 - q1
    n_bins = min(max(n // 8, 16), _HIST_MAX_BINS)
    low = q1 - spread
    scale = n_bins / (3.0 * spread) if spread > 0.0 else 0.0
    if not (spread > 0.0 and math.isfinite(low) and math.isfinite(scale) and scale > 0.0):
        return 0.0, 0.0, 0
    return low, scale, n_bins


@njit(cache=True, nogil=True)
def _bin_indices(a: np.ndarray, n: int, low: float, scale: float, n_bins: int, idx: np.ndarray) -> None:
    """Put in ``idx[:n]`` the histogram bin of each value of ``a[:n]``: 0
    below the range, ``n_bins + 1`` above it.

    The bin is a non-decreasing function of the value, so every bin holds
    consecutive ranks.
    """
    top = np.float64(n_bins)
    for i in range(n):
        t = (np.float64(a[i]) - low) * scale
        t = min(max(t, -1.0), top)
        idx[i] = np.int32(t + 1.0)


@njit(cache=True, nogil=True)
def _plan_union(
    hist: np.ndarray,
    n_bins: int,
    ranks: np.ndarray,
    flag: np.ndarray,
    bin_of_rank: np.ndarray,
    before: np.ndarray,
    union_rank: np.ndarray,
) -> int:
    """From the counts per bin, find the bin of each wanted rank and flag it.

    Fills ``union_rank`` with the rank of each wanted rank among the values
    of the flagged bins (their "union", in value order bin after bin) and
    returns the union's size. ``bin_of_rank`` receives the bins, so the
    caller can clear the flags afterwards; ``before`` is scratch.
    """
    n_ranks = ranks.shape[0]
    cum = 0
    t = 0
    for b in range(n_bins + 2):
        nxt = cum + hist[b]
        while t < n_ranks and ranks[t] < nxt:
            bin_of_rank[t] = b
            before[t] = cum
            t += 1
        if t == n_ranks:
            break
        cum = nxt
    size = 0
    for t in range(n_ranks):
        b = bin_of_rank[t]
        if not flag[b]:
            flag[b] = 1
            size += hist[b]
    for t in range(n_ranks):
        # Flagged values below this rank's bin, then the rank within its bin.
        below = 0
        for s in range(n_ranks):
            b = bin_of_rank[s]
            if b < bin_of_rank[t] and (s == 0 or b != bin_of_rank[s - 1]):
                below += hist[b]
        union_rank[t] = below + ranks[t] - before[t]
    return size


@njit(cache=True, nogil=True)
def _select_ranks(u: np.ndarray, size: int, union_rank: np.ndarray, values: np.ndarray) -> None:
    """Put in ``values`` the values of the ``union_rank`` ranks of
    ``u[:size]``, reordering ``u``.
    """
    if size <= _SORT_UNION:
        # A few dozen values: one insertion sort beats repeated selection.
        for i in range(1, size):
            v = u[i]
            j = i - 1
            while j >= 0 and u[j] > v:
                u[j + 1] = u[j]
                j -= 1
            u[j + 1] = v
        for t in range(union_rank.shape[0]):
            values[t] = np.float64(u[union_rank[t]])
        return
    lo = 0
    for t in range(union_rank.shape[0]):
        r = union_rank[t]
        if t > 0 and r == union_rank[t - 1]:
            values[t] = values[t - 1]
            continue
        if r < lo:
            # Only tiny groups have ranks out of order (n = 2: k25 + 1 > k50).
            lo = 0
        _select(u, lo, size, r)
        values[t] = np.float64(u[r])
        lo = r


@njit(cache=True, nogil=True)
def _order_statistics(
    a: np.ndarray,
    n: int,
    ranks: np.ndarray,
    values: np.ndarray,
    idx: np.ndarray,
    hist: np.ndarray,
    flag: np.ndarray,
    u: np.ndarray,
    ints: np.ndarray,
) -> None:
    """Put in ``values`` the values of the ``ranks`` of ``a[:n]`` without
    changing ``a``.

    Large groups are histogrammed over a guessed range, and only the values
    in the bins holding the wanted ranks (a few per cent) are copied and
    selected; small or heavily tied groups are copied whole and selected.
    Either way the values are exact. Scratch: ``idx`` (int32, ``n``),
    ``hist`` (int32) and ``flag`` (uint8, all zero; left so) of
    ``_HIST_MAX_BINS + 2``, ``u`` (``n + 1``, the type of ``a``), ``ints``
    (int64, 32).
    """
    n_ranks = ranks.shape[0]
    values = values[:n_ranks]
    n_bins = 0
    if n >= _HIST_MIN:
        low, scale, n_bins = _histogram_range(a, n)
    if n_bins == 0:
        u[:n] = a[:n]
        _select_ranks(u, n, ranks, values)
        return
    _bin_indices(a, n, low, scale, n_bins, idx)
    hist[: n_bins + 2] = 0
    for i in range(n):
        hist[idx[i]] += 1
    bin_of_rank = ints[:n_ranks]
    union_rank = ints[8 : 8 + n_ranks]
    size = _plan_union(hist, n_bins, ranks, flag, bin_of_rank, ints[16 : 16 + n_ranks], union_rank)
    m = 0
    for i in range(n):
        u[m] = a[i]  # a slot past the flagged values takes the rest
        m += flag[idx[i]]
    for t in range(ranks.shape[0]):
        flag[bin_of_rank[t]] = 0
    _select_ranks(u, size, union_rank, values)


@njit(cache=True, parallel=True)
def _order_statistics_parallel(a: np.ndarray, n: int, ranks: np.ndarray) -> np.ndarray:
    """`_order_statistics` of a large group, histogram and copy done by all
    threads (same values: they are exact).
    """
    values = np.empty(ranks.shape[0], dtype=np.float64)
    low, scale, n_bins = _histogram_range(a, n)
    if n_bins == 0:
        scratch = a[:n].copy()
        _select_ranks(scratch, n, ranks, values)
        return values
    n_chunks = max(1, min(64, n // _BLOCK))
    idx = np.empty(n, dtype=np.int32)
    hists = np.zeros((n_chunks, n_bins + 2), dtype=np.int64)
    for c in prange(n_chunks):
        lo = c * n // n_chunks
        hi = (c + 1) * n // n_chunks
        _bin_indices(a[lo:hi], hi - lo, low, scale, n_bins, idx[lo:hi])
        for i in range(lo, hi):
            hists[c, idx[i]] += 1
    hist = np.zeros(n_bins + 2, dtype=np.int64)
    for c in range(n_chunks):
        hist += hists[c]
    flag = np.zeros(n_bins + 2, dtype=np.uint8)
    bin_of_rank = np.empty(ranks.shape[0], dtype=np.int64)
    union_rank = np.empty(ranks.shape[0], dtype=np.int64)
    before = np.empty(ranks.shape[0], dtype=np.int64)
    size = _plan_union(hist, n_bins, ranks, flag, bin_of_rank, before, union_rank)
    offsets = np.zeros(n_chunks + 1, dtype=np.int64)
    for c in range(n_chunks):
        flagged = 0
        for t in range(ranks.shape[0]):
            b = bin_of_rank[t]
            if t == 0 or b != bin_of_rank[t - 1]:
                flagged += hists[c, b]
        offsets[c + 1] = offsets[c] + flagged
    u = np.empty(size, dtype=a.dtype)
    for c in prange(n_chunks):
        m = offsets[c]
        for i in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            if flag[idx[i]]:
                u[m] = a[i]
                m += 1
    _select_ranks(u, size, union_rank, values)
    return values
