"""Robust statistics of images, boxes and image stacks.

This module re-implements the parts of ``lsst.afw.math.Statistics`` that the
afw background model and ``statisticsStack`` rely on:

- `binned_statistics`: one statistic per rectangular bin of an image, the
  input of a binned background model;
- `box_statistic`: one statistic of one box of pixels;
- `labelled_statistics`: one statistic per group of pixels sharing a label,
  for bins that are not rectangles in the image (a rotated detector binned on
  a focal-plane grid);
- `stack_statistics`: one statistic per pixel across a stack of images.

Masked pixels and non-finite pixels (NaN, ±inf) are ignored everywhere. All
arithmetic is done in float64, whatever the input type.

The reductions are numba kernels, parallelised over tasks of neighbouring
bins (or over the passes of one bin too large to share out). Quantiles are
exact order statistics: a histogram over a range guessed from a sample finds
the few values around each wanted rank, which are then selected; per-pixel
stacks are sorted by a sorting network run across many pixels at once. Every
sum runs in a fixed order that the compiler can vectorise, so a group's
statistic depends only on its values in pixel order, whichever kernel
computes it.

This module holds the public face: the afw API objects, the bin layout, the
bad-pixel masks and the four reductions, which validate their input, lay out
the work and call the kernels. The kernels live in private modules, one idea
each:

- `._group_kernels`: the statistic of one group of values (`_reduce`, and
  MEANCLIP's clipping passes), the integer codes of the statistics;
- `._sums`: the canonical summation order (count, mean and variance of the
  values within a window);
- `._selection`: exact order statistics (selection, histogram of ranks);
- `._binned_kernels`: the kernels of `binned_statistics` (and
  `box_statistic`) and `labelled_statistics`, and how their groups are
  shared out among the threads;
- `._stack_kernels`: the kernels of `stack_statistics` (sorting network).

The MEANCLIP of one bin, for example, is `binned_statistics` ->
``_binned_kernels._binned_kernel`` -> ``_binned_task`` ->
``_group_kernels._reduce`` -> ``_iterate_clip`` ->
``_sums._clipped_mean_var``, its quartiles ``_selection._order_statistics``.

numba's cache (``cache=True``) is checked against the source of the kernel's
own module only, yet a cached kernel holds the code of the kernels it calls
from other modules: after editing a kernel module, delete the cached kernels
(the ``*.nbi`` and ``*.nbc`` files in ``__pycache__``, or in
``NUMBA_CACHE_DIR`` if set, or in the user cache directory of a read-only
installation, see `lsst.skyframes._jit`; ``make clean-numba-cache`` does
it), or callers in unchanged modules keep running the old code.
"""

from __future__ import annotations

__all__ = [
    "IQR_TO_SIGMA",
    "MAD_TO_SIGMA",
    "Property",
    "StatisticsControl",
    "StatsResult",
    "bad_pixel_mask",
    "bin_centres",
    "bin_edges",
    "binned_statistics",
    "box_statistic",
    "labelled_statistics",
    "stack_statistics",
    "stringToStatisticsProperty",
]

import enum
import logging
import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numba import get_num_threads, prange

from ._binned_kernels import (
    _bin_tasks,
    _binned_kernel,
    _gather_parallel,
    _group_tasks,
    _is_big,
    _label_counts,
    _label_scatter,
    _labelled_kernel,
    _schedule,
)
from ._group_kernels import _MEAN, _MEANCLIP, _MEDIAN, IQR_TO_SIGMA, MAD_TO_SIGMA, _reduce_parallel
from ._jit import njit
from ._stack_kernels import _NETWORK_MAX_DEPTH, _sorting_network, _stack_kernel, _stack_network_kernel
from .errors import BoxMismatchError, NoDataError, UnsupportedStyleError
from .mask_planes import LEGACY_PLANE_ALIASES

if TYPE_CHECKING:
    import numpy.typing as npt

    from lsst.images import Mask

_LOG = logging.getLogger(__name__)


class Property(enum.Enum):
    """Statistics that this module can compute, named as in
    ``lsst.afw.math.Property``.
    """

    MEAN = "MEAN"
    """Arithmetic mean of the good pixels."""

    MEDIAN = "MEDIAN"
    """Median of the good pixels (linear interpolation between order
    statistics).
    """

    MEANCLIP = "MEANCLIP"
    """Iteratively sigma-clipped mean, the first pass clipped around the
    median with a width set by the interquartile range.
    """


# Integer codes handed to the numba kernels, which cannot take enums.
_CODES = {Property.MEAN: _MEAN, Property.MEDIAN: _MEDIAN, Property.MEANCLIP: _MEANCLIP}


def stringToStatisticsProperty(name: str | Property) -> Property:
    """Convert a statistic name to a `Property`.

    Parameters
    ----------
    name : `str` or `Property`
        Statistic name, spelt as afw spells it (``"MEAN"``, ``"MEDIAN"``,
        ``"MEANCLIP"``), or a `Property`, which is returned unchanged.

    Returns
    -------
    property : `Property`
        The matching statistic.

    Raises
    ------
    UnsupportedStyleError
        Raised if ``name`` is not one of the supported statistics.
    """
    if isinstance(name, Property):
        return name
    if isinstance(name, str):
        try:
            return Property[name]
        except KeyError:
            pass
    allowed = ", ".join(p.name for p in Property)
    raise UnsupportedStyleError(f"Unsupported statistic {name!r}; use one of {allowed}.")


@dataclass(frozen=True)
class StatsResult:
    """Result of a statistics computation.

    The fields are arrays for `binned_statistics` and `stack_statistics` and
    scalars for `box_statistic`.
    """

    value: np.ndarray | float
    """The statistic (float64); NaN where there are no good pixels."""

    error: np.ndarray | float
    """Standard error of the statistic (float64); NaN where it is undefined
    (fewer than two values).
    """

    count: np.ndarray | int
    """Number of good (unmasked, finite) pixels before any clipping (int64),
    afw's ``NPOINT``.
    """


class StatisticsControl:
    """Clipping and mask settings of a statistic (afw's ``StatisticsControl``).

    Parameters
    ----------
    numSigmaClip : `float`, optional
        Clipping threshold of MEANCLIP, in sigma.
    numIter : `int`, optional
        Number of MEANCLIP passes.
    andMask : `str` or iterable of `str`, optional
        Names of the mask planes whose pixels are ignored (afw takes a bit
        mask; lsst.images masks are addressed by plane name).

    Notes
    -----
    Non-finite pixels are always ignored (afw's ``setNanSafe(True)``).
    """

    def __init__(
        self, numSigmaClip: float = 3.0, numIter: int = 3, andMask: str | Iterable[str] = ()
    ) -> None:
        self.setNumSigmaClip(numSigmaClip)
        self.setNumIter(numIter)
        self.setAndMask(andMask)

    def __repr__(self) -> str:
        return (
            f"StatisticsControl(numSigmaClip={self._clip}, numIter={self._n_iter}, "
            f"andMask={list(self._and_mask)})"
        )

    def getNumSigmaClip(self) -> float:
        return self._clip

    def setNumSigmaClip(self, clip: float) -> None:
        self._clip, _ = _check_clip(clip, 1)

    def getNumIter(self) -> int:
        return self._n_iter

    def setNumIter(self, n_iter: int) -> None:
        _, self._n_iter = _check_clip(3.0, n_iter)

    def getAndMask(self) -> tuple[str, ...]:
        return self._and_mask

    def setAndMask(self, planes: str | Iterable[str]) -> None:
        self._and_mask = (planes,) if isinstance(planes, str) else tuple(planes)


# ---------------------------------------------------------------------------
# Bin layout
# ---------------------------------------------------------------------------


def bin_edges(length: int, n_bins: int) -> np.ndarray:
    """Return the edges of the bins that afw's background uses along one axis.

    Parameters
    ----------
    length : `int`
        Number of pixels along the axis.
    n_bins : `int`
        Number of bins; ``1 <= n_bins <= length``.

    Returns
    -------
    edges : `numpy.ndarray`
        ``n_bins + 1`` int64 edges in local pixel indices: bin ``i`` covers
        ``edges[i]:edges[i + 1]``, ``edges[0] == 0`` and
        ``edges[-1] == length``.

    Raises
    ------
    NoDataError
        Raised if ``n_bins`` is less than one or larger than ``length``,
        which would leave bins without pixels.

    Notes
    -----
    Bin ``i`` ends at ``min(((i + 1) * length + n_bins // 2) // n_bins,
    length)`` and starts where bin ``i - 1`` ends, so bins differ in size by
    at most one pixel, exactly as in ``lsst.afw.math.BackgroundMI``.
    """
    length = operator.index(length)
    n_bins = operator.index(n_bins)
    if n_bins < 1 or n_bins > length:
        raise NoDataError(
            f"Cannot split {length} pixels into {n_bins} bins; the number of bins must be between 1 "
            f"and the number of pixels ({length}). Use fewer, larger bins."
        )
    ends = (np.arange(1, n_bins + 1, dtype=np.int64) * length + n_bins // 2) // n_bins
    edges = np.empty(n_bins + 1, dtype=np.int64)
    edges[0] = 0
    edges[1:] = np.minimum(ends, length)
    return edges


def bin_centres(length: int, n_bins: int) -> np.ndarray:
    """Return the centres of the bins laid out by `bin_edges`.

    Parameters
    ----------
    length : `int`
        Number of pixels along the axis.
    n_bins : `int`
        Number of bins.

    Returns
    -------
    centres : `numpy.ndarray`
        ``n_bins`` float64 centres in local pixel coordinates, in which pixel
        ``i`` is centred on ``i``: ``origin + size / 2 - 0.5``.
    """
    edges = bin_edges(length, n_bins)
    origin = edges[:-1]
    size = np.diff(edges)
    return origin + size / 2.0 - 0.5


# ---------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------


def bad_pixel_mask(mask: Mask, planes: str | Iterable[str]) -> np.ndarray:
    """Return where any of the given mask planes is set.

    Parameters
    ----------
    mask : `lsst.images.Mask`
        The mask; its ``array`` has shape ``(H, W, nbytes)``.
    planes : `str` or `~collections.abc.Iterable` [`str`]
        Names of the planes that make a pixel bad. An afw name missing from
        the schema falls back to its lsst.images spelling (``SAT`` ->
        ``SATURATED``, see `~lsst.skyframes.mask_planes.LEGACY_PLANE_ALIASES`);
        names still not found are ignored (and logged at DEBUG level), as afw
        does for a bad-mask list that names planes an image does not have.

    Returns
    -------
    bad : `numpy.ndarray`
        Boolean array of shape ``(H, W)``, True where at least one of the
        planes is set.
    """
    if isinstance(planes, str):
        planes = [planes]
    known_names = set(mask.schema.names)
    known: list[str] = []
    for name in planes:
        if name in known_names:
            known.append(name)
        elif LEGACY_PLANE_ALIASES.get(name) in known_names:
            # lsst.images visit images spell some afw planes differently (SAT -> SATURATED).
            known.append(LEGACY_PLANE_ALIASES[name])
        else:
            _LOG.debug("Mask plane %r is not in the mask schema %s; ignoring it.", name, sorted(known_names))
    array = mask.array
    if not known:
        return np.zeros(array.shape[:-1], dtype=bool)
    bitmask = np.asarray(mask.schema.bitmask(*known))
    n_bytes = array.shape[-1]
    if array.dtype == np.uint8 and n_bytes in (1, 2, 4, 8) and array.flags.c_contiguous:
        # Read each pixel's mask bytes as one integer (bytes in memory
        # order, so the bit mask is packed the same way): one fused
        # parallel test instead of strided byte-wise NumPy passes.
        word = np.dtype(f"u{n_bytes}")
        pixels = array.reshape(-1).view(word)
        bits = np.ascontiguousarray(bitmask, dtype=np.uint8).view(word)
        bad = np.empty(array.shape[:-1], dtype=bool)
        _mask_test(pixels, bits[0], bad.reshape(-1))
        return bad
    bad = np.zeros(array.shape[:-1], dtype=bool)
    # One vectorised test per mask element (at most a handful), so no
    # (H, W, nbytes) temporary is needed.
    for index in np.flatnonzero(bitmask):
        bad |= (array[..., index] & bitmask[index]) != 0
    return bad


@njit(cache=True, parallel=True)
def _mask_test(pixels: np.ndarray, bits: int, out: np.ndarray) -> None:
    """Set ``out[p]`` to whether ``pixels[p]`` has any of ``bits`` set, in
    parallel over chunks.
    """
    size = pixels.shape[0]
    n_chunks = max(1, min(256, size // 65536))
    for c in prange(n_chunks):
        lo = c * size // n_chunks
        hi = (c + 1) * size // n_chunks
        chunk = pixels[lo:hi]
        flags = out[lo:hi]
        for p in range(hi - lo):
            flags[p] = (chunk[p] & bits) != 0


# ---------------------------------------------------------------------------
# Public reductions
# ---------------------------------------------------------------------------


def _check_clip(clip: float, n_iter: int) -> tuple[float, int]:
    """Validate the clipping parameters and return them as kernel types."""
    clip = float(clip)
    n_iter = operator.index(n_iter)
    if not (math.isfinite(clip) and clip > 0.0):
        raise UnsupportedStyleError(
            f"Clipping threshold must be a positive finite number of sigma; got {clip}."
        )
    if n_iter < 1:
        raise UnsupportedStyleError(f"Number of clipping iterations must be at least 1; got {n_iter}.")
    return clip, n_iter


def _as_float_array(array: npt.ArrayLike, what: str) -> np.ndarray:
    """Return ``array`` as a float32 or float64 array without copying when it
    already is one.
    """
    array = np.asarray(array)
    if array.dtype in (np.float32, np.float64):
        return array
    if array.dtype.kind in "biuf":
        return array.astype(np.float64)
    raise TypeError(f"{what} must hold real numbers; got dtype {array.dtype}.")


def _dummy_bad(ndim: int) -> np.ndarray:
    """Return a tiny placeholder for an absent bad-pixel array, so the kernels
    need no separate compiled variant for "no mask".
    """
    return np.zeros((1,) * ndim, dtype=bool)


def _check_edges(edges: npt.ArrayLike, length: int, axis: str) -> np.ndarray:
    """Validate bin edges along one axis of an image of ``length`` pixels."""
    edges = np.asarray(edges)
    if edges.ndim != 1 or edges.size < 2:
        raise BoxMismatchError(
            f"{axis}_edges must be a 1-d array of at least two edges; got shape {edges.shape}."
        )
    if edges.dtype.kind not in "iu":
        raise TypeError(f"{axis}_edges must be integers (pixel indices); got dtype {edges.dtype}.")
    edges = edges.astype(np.int64)
    if edges[0] < 0 or edges[-1] > length or np.any(np.diff(edges) < 0):
        raise BoxMismatchError(
            f"{axis}_edges must be non-decreasing indices within [0, {length}] for an image {length} pixels "
            f"along {axis}; got {edges[0]}..{edges[-1]}."
        )
    return edges


def binned_statistics(
    array: npt.ArrayLike,
    bad: npt.ArrayLike | None,
    x_edges: npt.ArrayLike,
    y_edges: npt.ArrayLike,
    statistic: str | Property,
    clip: float = 3.0,
    n_iter: int = 3,
) -> StatsResult:
    """Compute a statistic in each rectangular bin of an image.

    Parameters
    ----------
    array : `numpy.ndarray`
        Image of shape ``(H, W)``, float32 or float64 (other real types are
        converted to float64).
    bad : `numpy.ndarray` or `None`
        Boolean array of shape ``(H, W)``, True for pixels to ignore; `None`
        if no pixel is masked. Non-finite pixels are always ignored.
    x_edges, y_edges : `numpy.ndarray`
        Integer bin edges along x (columns) and y (rows), as returned by
        `bin_edges`: bin ``(j, i)`` is
        ``array[y_edges[j]:y_edges[j + 1], x_edges[i]:x_edges[i + 1]]``.
    statistic : `str` or `Property`
        ``MEAN``, ``MEDIAN`` or ``MEANCLIP``.
    clip : `float`, optional
        Clipping threshold in standard deviations (``MEANCLIP`` only).
    n_iter : `int`, optional
        Number of clipping passes (``MEANCLIP`` only).

    Returns
    -------
    result : `StatsResult`
        Arrays of shape ``(ny, nx)``: ``value`` and ``error`` (float64, NaN
        for a bin without good pixels) and ``count`` (int64, good pixels
        before clipping).

    Raises
    ------
    BoxMismatchError
        Raised if ``array`` is not 2-d, ``bad`` has a different shape, or the
        edges do not fit the image.
    UnsupportedStyleError
        Raised for an unknown statistic or invalid clipping parameters.

    Notes
    -----
    With ``v`` the good values of a bin and ``n`` their number:

    - ``MEAN``: mean of ``v``; error ``sqrt(var(v) / n)``.
    - ``MEDIAN``: the 0.5 quantile (linear interpolation at rank
      ``0.5 * (n - 1)``); error ``sqrt(pi / 2 * var(v) / n)``.
    - ``MEANCLIP``: the first pass keeps ``|v - median| <= clip * 0.7413 *
      IQR``; each further pass keeps the values of ``v`` within ``clip``
      standard deviations of the mean of the previous pass's survivors. After
      ``n_iter`` passes (fewer if a pass would keep nothing or only one value
      survived) the value is the mean of the survivors and the error
      ``sqrt(var / n_kept)``.

    Variances use ``ddof=1``; errors are NaN for fewer than two values.
    """
    prop = stringToStatisticsProperty(statistic)
    clip, n_iter = _check_clip(clip, n_iter)
    array = _as_float_array(array, "array")
    if array.ndim != 2:
        raise BoxMismatchError(f"array must be 2-d (H, W); got shape {array.shape}.")
    height, width = array.shape
    has_bad = bad is not None
    if has_bad:
        bad = np.asarray(bad, dtype=bool)
        if bad.shape != array.shape:
            raise BoxMismatchError(f"bad has shape {bad.shape} but array has shape {array.shape}.")
    else:
        bad = _dummy_bad(2)
    x_edges = _check_edges(x_edges, width, "x")
    y_edges = _check_edges(y_edges, height, "y")
    shape = (y_edges.size - 1, x_edges.size - 1)
    value = np.empty(shape, dtype=np.float64)
    error = np.empty(shape, dtype=np.float64)
    count = np.empty(shape, dtype=np.int64)
    sizes = (np.diff(y_edges)[:, np.newaxis] * np.diff(x_edges)[np.newaxis, :]).ravel()
    big = _is_big(sizes, array.size)
    code = _CODES[prop]
    tasks = _bin_tasks(sizes.reshape(shape), big.reshape(shape))
    if tasks.size:
        widths = x_edges[tasks[:, 2]] - x_edges[tasks[:, 1]]
        heights = y_edges[tasks[:, 0] + 1] - y_edges[tasks[:, 0]]
        schedule = _schedule(widths * heights)
        _binned_kernel(
            array, bad, has_bad, x_edges, y_edges, tasks, schedule, code, clip, n_iter, value, error, count
        )
    for b in np.flatnonzero(big):
        # Too few bins to keep every thread busy: all threads work on each.
        j, i = divmod(int(b), shape[1])
        buf = _gather_parallel(array, bad, has_bad, y_edges[j], y_edges[j + 1], x_edges[i], x_edges[i + 1])
        count[j, i] = buf.size
        value[j, i], error[j, i] = _reduce_parallel(buf, buf.size, code, clip, n_iter)
    return StatsResult(value=value, error=error, count=count)


def box_statistic(
    array: npt.ArrayLike,
    bad: npt.ArrayLike | None,
    statistic: str | Property,
    clip: float = 3.0,
    n_iter: int = 3,
) -> StatsResult:
    """Compute a statistic of all the good pixels of one box.

    Parameters
    ----------
    array : `numpy.ndarray`
        Pixels of the box, of any shape.
    bad : `numpy.ndarray` or `None`
        Boolean array of the same shape, True for pixels to ignore; `None` if
        no pixel is masked.
    statistic : `str` or `Property`
        ``MEAN``, ``MEDIAN`` or ``MEANCLIP``.
    clip : `float`, optional
        Clipping threshold in standard deviations (``MEANCLIP`` only).
    n_iter : `int`, optional
        Number of clipping passes (``MEANCLIP`` only).

    Returns
    -------
    result : `StatsResult`
        Scalars: ``value`` and ``error`` (`numpy.float64`) and ``count``
        (`numpy.int64`). See `binned_statistics` for the definitions.

    Raises
    ------
    BoxMismatchError
        Raised if ``bad`` does not have the shape of ``array``.
    """
    array = _as_float_array(array, "array")
    if bad is not None:
        bad = np.asarray(bad, dtype=bool)
        if bad.shape != array.shape:
            raise BoxMismatchError(f"bad has shape {bad.shape} but array has shape {array.shape}.")
        bad = bad.reshape(1, -1)
    flat = array.reshape(1, -1)
    edges_x = np.array([0, flat.shape[1]], dtype=np.int64)
    edges_y = np.array([0, 1], dtype=np.int64)
    result = binned_statistics(flat, bad, edges_x, edges_y, statistic, clip=clip, n_iter=n_iter)
    return StatsResult(value=result.value[0, 0], error=result.error[0, 0], count=result.count[0, 0])


def labelled_statistics(
    array: npt.ArrayLike,
    bad: npt.ArrayLike | None,
    labels: npt.ArrayLike,
    n_labels: int,
    statistic: str | Property,
    clip: float = 3.0,
    n_iter: int = 3,
) -> StatsResult:
    """Compute a statistic of each group of pixels that share a label.

    Parameters
    ----------
    array : `numpy.ndarray`
        Pixels, of any shape; float32 or float64 (other real types are
        converted to float64).
    bad : `numpy.ndarray` or `None`
        Boolean array of the same shape, True for pixels to ignore; `None` if
        no pixel is masked. Non-finite pixels are always ignored.
    labels : `numpy.ndarray`
        Integer array of the same shape: the group of each pixel, in
        ``[0, n_labels)``; a negative label leaves the pixel out.
    n_labels : `int`
        Number of groups.
    statistic : `str` or `Property`
        ``MEAN``, ``MEDIAN`` or ``MEANCLIP``.
    clip : `float`, optional
        Clipping threshold in standard deviations (``MEANCLIP`` only).
    n_iter : `int`, optional
        Number of clipping passes (``MEANCLIP`` only).

    Returns
    -------
    result : `StatsResult`
        Arrays of shape ``(n_labels,)``: ``value`` and ``error`` (float64,
        NaN for a group without good pixels) and ``count`` (int64, good
        pixels before clipping). The definitions are those of
        `binned_statistics`; a group holding exactly the pixels of a
        rectangular bin gives the same numbers as that bin there.

    Raises
    ------
    BoxMismatchError
        Raised if ``bad`` or ``labels`` differ in shape from ``array``.
    ValueError
        Raised if ``n_labels`` is negative or a label is ``>= n_labels``.
    TypeError
        Raised if ``labels`` is not an integer array.
    UnsupportedStyleError
        Raised for an unknown statistic or invalid clipping parameters.

    Notes
    -----
    The good values are grouped by a counting sort (two parallel passes
    over the pixels, each group kept in pixel order), then the groups are
    reduced in parallel.
    """
    prop = stringToStatisticsProperty(statistic)
    clip, n_iter = _check_clip(clip, n_iter)
    n_labels = operator.index(n_labels)
    if n_labels < 0:
        raise ValueError(f"n_labels must be non-negative; got {n_labels}.")
    array = _as_float_array(array, "array")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers; got dtype {labels.dtype}.")
    if labels.shape != array.shape:
        raise BoxMismatchError(f"labels has shape {labels.shape} but array has shape {array.shape}.")
    has_bad = bad is not None
    if has_bad:
        bad = np.asarray(bad, dtype=bool)
        if bad.shape != array.shape:
            raise BoxMismatchError(f"bad has shape {bad.shape} but array has shape {array.shape}.")
        bad = bad.reshape(-1)
    else:
        bad = _dummy_bad(1)
    if labels.dtype not in (np.int32, np.int64):
        labels = labels.astype(np.int64)
    array = array.reshape(-1)
    labels = labels.reshape(-1)
    # One chunk per thread: the per-chunk counts cost n_chunks * n_labels.
    n_chunks = max(1, min(get_num_threads(), array.size))
    counts, largest = _label_counts(array, bad, has_bad, labels, n_labels, n_chunks)
    if largest >= n_labels:
        raise ValueError(f"labels must be below n_labels={n_labels}; found label {largest}.")
    offsets = np.zeros(n_labels + 1, dtype=np.int64)
    np.cumsum(counts.sum(axis=0), out=offsets[1:])
    starts = offsets[:-1] + np.cumsum(counts, axis=0) - counts
    buf = _label_scatter(array, bad, has_bad, labels, starts, int(offsets[-1]))
    value = np.empty(n_labels, dtype=np.float64)
    error = np.empty(n_labels, dtype=np.float64)
    count = np.empty(n_labels, dtype=np.int64)
    code = _CODES[prop]
    big = _is_big(np.diff(offsets), buf.size)
    small = np.flatnonzero(~big)
    if small.size:
        tasks = _group_tasks(np.diff(offsets)[small])
        task_sizes = offsets[small[tasks[1:] - 1] + 1] - offsets[small[tasks[:-1]]]
        schedule = _schedule(task_sizes)
        _labelled_kernel(buf, offsets, small, tasks, schedule, code, clip, n_iter, value, error, count)
    for k in np.flatnonzero(big):
        group = buf[offsets[k] : offsets[k + 1]]
        count[k] = group.size
        value[k], error[k] = _reduce_parallel(group, group.size, code, clip, n_iter)
    return StatsResult(value=value, error=error, count=count)


def _as_stack(images: npt.ArrayLike | Sequence[npt.ArrayLike], what: str) -> np.ndarray:
    """Return a ``(k, H, W)`` array from a 3-d array or a sequence of
    equal-shape 2-d arrays.
    """
    if isinstance(images, np.ndarray):
        stack = images
    else:
        layers = [np.asarray(layer) for layer in images]
        if not layers:
            raise NoDataError(f"{what} is empty; at least one image is needed.")
        for index, layer in enumerate(layers):
            if layer.ndim != 2:
                raise BoxMismatchError(f"{what}[{index}] must be 2-d (H, W); got shape {layer.shape}.")
            if layer.shape != layers[0].shape:
                raise BoxMismatchError(
                    f"{what}[{index}] has shape {layer.shape} but {what}[0] has shape {layers[0].shape}; "
                    "all images of a stack must have the same shape."
                )
        stack = np.stack(layers)
    if stack.ndim != 3:
        raise BoxMismatchError(f"{what} must be 3-d (k, H, W); got shape {stack.shape}.")
    if stack.shape[0] == 0:
        raise NoDataError(f"{what} is empty; at least one image is needed.")
    return stack


def stack_statistics(
    stack: npt.ArrayLike | Sequence[npt.ArrayLike],
    bad: npt.ArrayLike | Sequence[npt.ArrayLike] | None,
    statistic: str | Property,
    clip: float = 3.0,
    n_iter: int = 3,
) -> StatsResult:
    """Compute a statistic across a stack of images at each pixel.

    Parameters
    ----------
    stack : `numpy.ndarray` or `~collections.abc.Sequence` [`numpy.ndarray`]
        Array of shape ``(k, H, W)`` or a sequence of ``k`` 2-d arrays of the
        same shape.
    bad : `numpy.ndarray`, `~collections.abc.Sequence` [`numpy.ndarray`] or `None`
        Boolean array(s) of the same shape as ``stack``, True for pixels to
        ignore; `None` if no pixel is masked.
    statistic : `str` or `Property`
        ``MEAN``, ``MEDIAN`` or ``MEANCLIP``.
    clip : `float`, optional
        Clipping threshold in standard deviations (``MEANCLIP`` only).
    n_iter : `int`, optional
        Number of clipping passes (``MEANCLIP`` only).

    Returns
    -------
    result : `StatsResult`
        Arrays of shape ``(H, W)``: ``value`` and ``error`` (float64, NaN
        where no layer is good) and ``count`` (int64, good layers before
        clipping). See `binned_statistics` for the definitions.

    Raises
    ------
    NoDataError
        Raised if the stack is empty.
    BoxMismatchError
        Raised if the images differ in shape or ``bad`` does not match them.
    UnsupportedStyleError
        Raised for an unknown statistic or invalid clipping parameters.
    """
    prop = stringToStatisticsProperty(statistic)
    clip, n_iter = _check_clip(clip, n_iter)
    stack = _as_float_array(_as_stack(stack, "stack"), "stack")
    has_bad = bad is not None
    if has_bad:
        bad = _as_stack(bad, "bad").astype(bool, copy=False)
        if bad.shape != stack.shape:
            raise BoxMismatchError(f"bad has shape {bad.shape} but stack has shape {stack.shape}.")
    else:
        bad = _dummy_bad(3)
    shape = stack.shape[1:]
    value = np.empty(shape, dtype=np.float64)
    error = np.empty(shape, dtype=np.float64)
    count = np.empty(shape, dtype=np.int64)
    code = _CODES[prop]
    depth = stack.shape[0]
    if code != _MEAN and depth <= _NETWORK_MAX_DEPTH:
        net_lo, net_hi = _sorting_network(depth)
        _stack_network_kernel(stack, bad, has_bad, net_lo, net_hi, code, clip, n_iter, value, error, count)
    else:
        _stack_kernel(stack, bad, has_bad, code, clip, n_iter, value, error, count)
    return StatsResult(value=value, error=error, count=count)
