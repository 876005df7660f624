"""Kernels of `~lsst.skyframes.statistics.binned_statistics` (and so of
``box_statistic``) and of `~lsst.skyframes.statistics.labelled_statistics`:
gathering the good pixels of each group, reducing many groups in parallel,
and sharing the groups out among the threads.

Most groups are reduced one thread each, a task of neighbouring groups at a
time: `_binned_kernel` copies rectangular bins image row by image row,
`_labelled_kernel` reduces labels grouped by a parallel counting sort
(`_label_counts`, `_label_scatter`). `_bin_tasks` and `_group_tasks` cut the
groups into tasks and `_schedule` assigns the tasks to threads. Groups too
large to leave to one thread (`_is_big`) are reduced one at a time by all
threads (`_gather_parallel`, then `._group_kernels._reduce_parallel`), with
identical results.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
from numba import get_num_threads, prange

from ._group_kernels import _reduce, _workspace
from ._jit import njit

# --- Kernels ----------------------------------------------------------------


@njit(cache=True, parallel=True)
def _gather_parallel(
    array: np.ndarray, bad: np.ndarray, has_bad: bool, y0: int, y1: int, x0: int, x1: int
) -> np.ndarray:
    """Return the good pixels of ``array[y0:y1, x0:x1]`` in pixel order,
    rows counted and copied by all threads.
    """
    rows = y1 - y0
    offsets = np.zeros(rows + 1, dtype=np.int64)
    for r in prange(rows):
        y = y0 + r
        good = 0
        for x in range(x0, x1):
            good += math.isfinite(array[y, x]) and not (has_bad and bad[y, x])
        offsets[r + 1] = good
    for r in range(rows):
        offsets[r + 1] += offsets[r]
    buf = np.empty(offsets[rows], dtype=array.dtype)
    for r in prange(rows):
        y = y0 + r
        m = offsets[r]
        for x in range(x0, x1):
            v = array[y, x]
            if math.isfinite(v) and not (has_bad and bad[y, x]):
                buf[m] = v
                m += 1
    return buf


@njit(cache=True, nogil=True)
def _binned_task(
    array: np.ndarray,
    bad: np.ndarray,
    has_bad: bool,
    x_edges: np.ndarray,
    y_edges: np.ndarray,
    j: int,
    i0: int,
    i1: int,
    code: int,
    clip: float,
    n_iter: int,
    value: np.ndarray,
    error: np.ndarray,
    count: np.ndarray,
) -> None:
    """Reduce bins ``i0..i1-1`` of bin row ``j``.

    The good pixels of the bins are copied image row by image row (long
    contiguous reads, which the memory system streams), each bin's into its
    own part of one buffer; the bins are then reduced from that buffer while
    it is still in cache.
    """
    y0 = y_edges[j]
    y1 = y_edges[j + 1]
    height = y1 - y0
    fill = np.zeros(i1 - i0, dtype=np.int64)
    largest = 0
    for i in range(i0, i1):
        largest = max(largest, height * (x_edges[i + 1] - x_edges[i]))
    buf = np.empty(height * (x_edges[i1] - x_edges[i0]), dtype=array.dtype)
    for y in range(y0, y1):
        row = array[y]
        bad_row = bad[y] if has_bad else bad[0]
        for i in range(i0, i1):
            x0 = x_edges[i]
            x1 = x_edges[i + 1]
            # Every value is written and the fill advances only past good
            # ones: no branch to mispredict at the edges of masked objects.
            n = height * (x0 - x_edges[i0]) + fill[i - i0]
            start = n
            if has_bad:
                for x in range(x0, x1):
                    v = row[x]
                    buf[n] = v
                    n += math.isfinite(v) and not bad_row[x]
            else:
                for x in range(x0, x1):
                    v = row[x]
                    buf[n] = v
                    n += math.isfinite(v)
            fill[i - i0] += n - start
    work = _workspace(largest, array)
    for i in range(i0, i1):
        start = height * (x_edges[i] - x_edges[i0])
        n = fill[i - i0]
        count[j, i] = n
        val, err = _reduce(buf[start : start + n], n, code, clip, n_iter, work)
        value[j, i] = val
        error[j, i] = err


@njit(cache=True, parallel=True)
def _binned_kernel(
    array: np.ndarray,
    bad: np.ndarray,
    has_bad: bool,
    x_edges: np.ndarray,
    y_edges: np.ndarray,
    tasks: np.ndarray,
    schedule: np.ndarray,
    code: int,
    clip: float,
    n_iter: int,
    value: np.ndarray,
    error: np.ndarray,
    count: np.ndarray,
) -> None:
    """Fill ``value``, ``error`` and ``count`` (shape ``(ny, nx)``) for the
    bins of ``tasks``: row ``(j, i0, i1)`` is bins ``i0..i1-1`` of bin row
    ``j`` (see `_binned_task`). Row ``w`` of ``schedule`` lists the tasks of
    one thread (``-1`` pads).
    """
    for w in prange(schedule.shape[0]):
        for s in range(schedule.shape[1]):
            t = schedule[w, s]
            if t < 0:
                break
            _binned_task(
                array,
                bad,
                has_bad,
                x_edges,
                y_edges,
                tasks[t, 0],
                tasks[t, 1],
                tasks[t, 2],
                code,
                clip,
                n_iter,
                value,
                error,
                count,
            )


@njit(cache=True, parallel=True)
def _label_counts(
    array: np.ndarray, bad: np.ndarray, has_bad: bool, labels: np.ndarray, n_labels: int, n_chunks: int
) -> tuple[np.ndarray, int]:
    """Count the good values of each label in each of ``n_chunks`` equal
    chunks of the (flat) pixels, in parallel over chunks.

    Returns the ``(n_chunks, n_labels)`` counts and the largest label seen
    (``-1`` if none), so the caller can reject labels ``>= n_labels``, which
    are not counted.
    """
    size = array.shape[0]
    counts = np.zeros((n_chunks, n_labels), dtype=np.int64)
    largest = np.full(n_chunks, -1, dtype=np.int64)
    for c in prange(n_chunks):
        for p in range(c * size // n_chunks, (c + 1) * size // n_chunks):
            label = labels[p]
            if label < 0:
                continue
            if label > largest[c]:
                largest[c] = label
            if label >= n_labels:
                continue
            v = array[p]
            if math.isfinite(v) and not (has_bad and bad[p]):
                counts[c, label] += 1
    return counts, largest.max()


@njit(cache=True, parallel=True)
def _label_scatter(
    array: np.ndarray, bad: np.ndarray, has_bad: bool, labels: np.ndarray, starts: np.ndarray, total: int
) -> np.ndarray:
    """Return the good values grouped by label (a parallel counting sort),
    in the input's type.

    ``starts[c, k]`` is where chunk ``c`` writes its first value of label
    ``k``; chunks follow each other within a label, so every group keeps
    pixel order, the order in which `_binned_kernel` gathers a bin.
    """
    size = array.shape[0]
    n_chunks = starts.shape[0]
    buf = np.empty(total, dtype=array.dtype)
    for c in prange(n_chunks):
        fill = starts[c].copy()
        for p in range(c * size // n_chunks, (c + 1) * size // n_chunks):
            label = labels[p]
            if label < 0:
                continue
            v = array[p]
            if math.isfinite(v) and not (has_bad and bad[p]):
                buf[fill[label]] = v
                fill[label] += 1
    return buf


@njit(cache=True, parallel=True)
def _labelled_kernel(
    buf: np.ndarray,
    offsets: np.ndarray,
    groups: np.ndarray,
    tasks: np.ndarray,
    schedule: np.ndarray,
    code: int,
    clip: float,
    n_iter: int,
    value: np.ndarray,
    error: np.ndarray,
    count: np.ndarray,
) -> None:
    """Fill ``value``, ``error`` and ``count`` of the labels ``groups`` with
    the statistic of each label's values ``buf[offsets[k]:offsets[k + 1]]``.

    Task ``t`` is ``groups[tasks[t]:tasks[t + 1]]``; row ``w`` of
    ``schedule`` lists the tasks of one thread (``-1`` pads).
    """
    for w in prange(schedule.shape[0]):
        for s in range(schedule.shape[1]):
            t = schedule[w, s]
            if t < 0:
                break
            largest = 0
            for g in range(tasks[t], tasks[t + 1]):
                k = groups[g]
                largest = max(largest, offsets[k + 1] - offsets[k])
            work = _workspace(largest, buf)
            for g in range(tasks[t], tasks[t + 1]):
                k = groups[g]
                start = offsets[k]
                n = offsets[k + 1] - start
                count[k] = n
                val, err = _reduce(buf[start : start + n], n, code, clip, n_iter, work)
                value[k] = val
                error[k] = err


# --- Sharing the groups out among the threads -------------------------------

_BIG_GROUP = 1 << 18
"""Fewest values for a group to be reduced by all threads together (when it
is also a large share of the work)."""


def _is_big(sizes: np.ndarray, total: int) -> np.ndarray:
    """Return which groups (bins, labels) of ``sizes`` values are reduced by
    all threads together rather than one thread each: those larger than a
    thread's share of the ``total``, which would leave threads idle.
    Either way the results are identical.
    """
    threads = get_num_threads()
    if threads == 1:
        return np.zeros(sizes.shape, dtype=bool)
    return (sizes >= _BIG_GROUP) & (sizes > total / threads)


def _schedule(sizes: np.ndarray) -> np.ndarray:
    """Assign tasks of the given sizes to the threads.

    Returns ``(n_workers, k)`` task indices, ``-1`` padded: one row per
    thread. Tasks of similar size are split into contiguous runs (neighbours
    in the image stay together); otherwise the largest task goes to the
    least-loaded thread first (LPT), which keeps a few large bins of unequal
    size from leaving a thread idle.
    """
    n_tasks = sizes.size
    workers = max(1, min(get_num_threads(), n_tasks))
    if workers == 1 or sizes.max() <= 1.25 * max(sizes.min(), 1):
        parts = np.array_split(np.arange(n_tasks, dtype=np.int64), workers)
        assigned = [list(part) for part in parts]
    else:
        loads = [(0, w) for w in range(workers)]
        assigned = [[] for _ in range(workers)]
        for t in np.argsort(-sizes, kind="stable"):
            load, w = heapq.heappop(loads)
            assigned[w].append(int(t))
            heapq.heappush(loads, (load + int(sizes[t]), w))
    schedule = np.full((workers, max(len(a) for a in assigned)), -1, dtype=np.int64)
    for w, tasks in enumerate(assigned):
        schedule[w, : len(tasks)] = tasks
    return schedule


_TASK_PIXELS = 1 << 17
"""Pixels per task of the one-thread-per-bin kernels: a task's copy of its
bins (512 KiB of float32) stays in the core's cache while it reduces them.
"""


def _bin_tasks(sizes: np.ndarray, big: np.ndarray) -> np.ndarray:
    """Split the bins not in ``big`` into tasks of `_binned_kernel`: runs of
    neighbouring bins of one bin row holding about `_TASK_PIXELS` pixels.

    Returns ``(n_tasks, 3)`` rows ``(j, i0, i1)``.
    """
    small = ~big
    small_sizes = np.where(small, sizes, 0)
    # A run of small bins ends at a big bin or where the pixels before it
    # in the row cross a multiple of _TASK_PIXELS.
    segment = np.cumsum(big, axis=1)
    group = (np.cumsum(small_sizes, axis=1) - small_sizes) // _TASK_PIXELS
    new = np.ones(sizes.shape, dtype=bool)
    new[:, 1:] = big[:, :-1] | (segment[:, 1:] != segment[:, :-1]) | (group[:, 1:] != group[:, :-1])
    starts = small & new
    ends = np.zeros(sizes.shape, dtype=bool)
    ends[:, -1] = small[:, -1]
    ends[:, :-1] = small[:, :-1] & (big[:, 1:] | starts[:, 1:])
    j, i0 = np.nonzero(starts)
    _, last = np.nonzero(ends)
    return np.stack([j, i0, last + 1], axis=1).astype(np.int64)


def _group_tasks(sizes: np.ndarray) -> np.ndarray:
    """Split consecutive groups of ``sizes`` values into tasks of about
    `_TASK_PIXELS` values; returns the ``n_tasks + 1`` task boundaries.
    """
    ends = np.cumsum(sizes)
    cuts = np.searchsorted(ends, np.arange(_TASK_PIXELS, int(ends[-1]), _TASK_PIXELS), side="right")
    return np.unique(np.concatenate([[0], cuts, [sizes.size]])).astype(np.int64)
