"""Check the fast statistics kernels against the reference semantics at
benchmark sizes (the unit tests do the same on small arrays).

The reference here is written straight from the definitions (sorted values,
quantiles by linear interpolation at rank ``f * (n - 1)``, MEANCLIP's first
pass at median +- clip x 0.741301 x IQR, then mean +- clip x sd (ddof 1)
over the original values, every sum exactly rounded with `math.fsum`). It
checks, on the 4096 x 4096 benchmark image and a 50 x 128 x 128 stack:

- counts equal, values within 1e-12 (relative, or 1e-12 of the data scale)
  and errors within 1e-9 of the reference, for 128-px bins, a sample of the
  32-px bins, the four large bins of a detector on the focal-plane grid,
  and every stack pixel;
- bit-identical results between the kernel that gives one bin to a thread
  and the one that spreads a bin over all threads, between
  `labelled_statistics` and `binned_statistics` on the same pixels, and
  between float32 input and the same values as float64.

Usage: ``.venv/bin/python benchmarks/verify_kernels.py``; exits 1 on any
mismatch. Not part of the test suite (it takes a minute).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import synthetic_image  # noqa: E402
from lsst.skyframes import _group_kernels  # noqa: E402
from lsst.skyframes import statistics as stats  # noqa: E402

IQR_TO_SIGMA = 0.741301109252802
FAILURES: list[str] = []


def reference(
    values: np.ndarray, statistic: str, clip: float = 3.0, n_iter: int = 3
) -> tuple[float, float, int]:
    """(value, error, count) of the finite ``values`` by the definitions."""
    v = values[np.isfinite(values)].astype(np.float64)
    n = v.size
    if n == 0:
        return math.nan, math.nan, 0
    s = np.sort(v)

    def quantile(f):
        pos = f * (n - 1)
        k = math.floor(pos)
        frac = pos - k
        return s[k] + (s[k + 1] - s[k]) * frac if frac > 0 else s[k]

    def mean(x):
        return math.fsum(x) / x.size

    def var(x):
        if x.size < 2:
            return math.nan
        m = mean(x)
        return math.fsum((x - m) ** 2) / (x.size - 1)

    if statistic == "MEAN":
        return mean(v), math.sqrt(var(v) / n), n
    if statistic == "MEDIAN":
        return quantile(0.5), math.sqrt(math.pi / 2 * var(v) / n), n
    if n == 1:
        return v[0], math.nan, 1
    kept = v
    for iteration in range(n_iter):
        if iteration == 0:
            centre = quantile(0.5)
            half_width = clip * IQR_TO_SIGMA * (quantile(0.75) - quantile(0.25))
        else:
            if kept.size < 2:
                break
            centre = mean(kept)
            half_width = clip * math.sqrt(var(kept))
        new = v[np.abs(v - centre) <= half_width]
        if new.size == 0:
            break
        kept = new
    return mean(kept), math.sqrt(var(kept) / kept.size), n


def compare(name: str, got: tuple[float, float, int], want: tuple[float, float, int], scale: float) -> None:
    value, error, count = (float(got[0]), float(got[1]), int(got[2]))
    ref_value, ref_error, ref_count = want
    ok = count == ref_count
    for a, b, rtol in ((value, ref_value, 1e-12), (error, ref_error, 1e-9)):
        if math.isnan(a) or math.isnan(b):
            ok &= math.isnan(a) and math.isnan(b)
        else:
            ok &= abs(a - b) <= max(rtol * abs(b), 1e-12 * scale)
    if not ok:
        FAILURES.append(f"{name}: got {got}, reference {want}")


def identical(name: str, a, b) -> None:
    for field in ("value", "error", "count"):
        x, y = np.asarray(getattr(a, field)), np.asarray(getattr(b, field))
        if not np.array_equal(x.ravel(), y.ravel(), equal_nan=True):
            FAILURES.append(f"{name}: {field} differs")


def check_binned(image, bad, x_edges, y_edges, label, sample=None, statistics=("MEANCLIP",)):
    rng = np.random.default_rng(1)
    scale = float(np.nanmax(np.abs(image)))
    for statistic in statistics:
        result = stats.binned_statistics(image, bad, x_edges, y_edges, statistic)
        bins = [(j, i) for j in range(len(y_edges) - 1) for i in range(len(x_edges) - 1)]
        if sample is not None and sample < len(bins):
            bins = [bins[k] for k in rng.choice(len(bins), sample, replace=False)]
        for j, i in bins:
            cut = (slice(y_edges[j], y_edges[j + 1]), slice(x_edges[i], x_edges[i + 1]))
            values = image[cut][~bad[cut]]
            got = (result.value[j, i], result.error[j, i], result.count[j, i])
            compare(f"{label} {statistic} bin ({j}, {i})", got, reference(values, statistic), scale)
        print(f"  {label} {statistic}: {len(bins)} bins checked", flush=True)


def main() -> None:
    image, bad = synthetic_image()
    print("binned_statistics against the reference:")
    coarse, fine = stats.bin_edges(4096, 32), stats.bin_edges(4096, 128)
    check_binned(image, bad, coarse, coarse, "128-px bins", None, ("MEANCLIP", "MEDIAN"))
    check_binned(image, bad, fine, fine, "32-px bins", 600)
    edges = np.array([0, 1984, 4096])
    check_binned(image, bad, edges, edges, "focal-plane bins", None, ("MEANCLIP", "MEAN", "MEDIAN"))

    print("one thread per bin vs all threads on a bin (bit for bit):")
    for statistic, code in (("MEAN", 0), ("MEDIAN", 1), ("MEANCLIP", 2)):
        for dtype in (np.float32, np.float64):
            values = image[:2048, :2048][~bad[:2048, :2048]].astype(dtype)
            values = values[np.isfinite(values)]
            spread = _group_kernels._reduce_parallel(values, values.size, code, 3.0, 3)
            work = _group_kernels._workspace(values.size, values)
            single = _group_kernels._reduce(values, values.size, code, 3.0, 3, work)
            if not np.array_equal(np.array(spread), np.array(single), equal_nan=True):
                FAILURES.append(f"parallel vs single {statistic} {dtype.__name__}: {spread} != {single}")
    print("  done")

    print("labelled vs binned, float32 vs float64 (bit for bit):")
    x_edges, y_edges = np.array([0, 1000, 4096]), np.array([0, 3000, 4096])
    column = np.searchsorted(x_edges, np.arange(4096), side="right") - 1
    row = np.searchsorted(y_edges, np.arange(4096), side="right") - 1
    labels = (row[:, np.newaxis] * 2 + column[np.newaxis, :]).astype(np.int32)
    for statistic in ("MEAN", "MEDIAN", "MEANCLIP"):
        binned = stats.binned_statistics(image, bad, x_edges, y_edges, statistic)
        labelled = stats.labelled_statistics(image, bad, labels, 4, statistic)
        identical(f"labelled {statistic}", labelled, binned)
        small = stats.bin_edges(4096, 32)
        identical(
            f"float32 vs float64 {statistic}",
            stats.binned_statistics(image, bad, small, small, statistic),
            stats.binned_statistics(image.astype(np.float64), bad, small, small, statistic),
        )
    print("  done")

    print("stack_statistics against the reference:")
    rng = np.random.default_rng(7)
    stack = (100.0 + 10.0 * rng.standard_normal((50, 128, 128))).astype(np.float32)
    hits = rng.random(stack.shape) < 0.02
    stack[hits] += rng.exponential(1000.0, size=int(hits.sum())).astype(np.float32)
    stack[rng.random(stack.shape) < 0.01] = np.nan
    stack_bad = rng.random(stack.shape) < 0.05
    for statistic in ("MEANCLIP", "MEDIAN", "MEAN"):
        result = stats.stack_statistics(stack, stack_bad, statistic)
        for y in range(stack.shape[1]):
            for x in range(stack.shape[2]):
                values = stack[:, y, x][~stack_bad[:, y, x]]
                got = (result.value[y, x], result.error[y, x], result.count[y, x])
                compare(f"stack {statistic} ({y}, {x})", got, reference(values, statistic), 1000.0)
        print(f"  {statistic}: {stack.shape[1] * stack.shape[2]} pixels checked", flush=True)

    if FAILURES:
        print(f"{len(FAILURES)} mismatches:")
        for line in FAILURES[:50]:
            print("  " + line)
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
