# This file is part of skyframes.
#
# Developed for the LSST Data Management System.
# Use of this source code is governed by a 3-clause BSD-style
# license that can be found in the LICENSE file.

"""Sky-frame bins from a per-pixel clipped stack of the inputs.

The reference combines its inputs bin by bin: each input's bin is a clipped
mean of its own pixels, and the bins are then combined with a clipped mean
across the inputs.  Two things go wrong on a detector whose response has
structure inside a bin (readout-channel steps, dark rows):

- clipping within a bin treats that structure as noise and removes its tails;
- the pixels an input's object masking leaves out are not random: detections
  fall where the response is high or changing, so each input's bin mean is
  biased by which pixels it lost.

Here the inputs are combined pixel by pixel first (the reference's clipped
mean across the stack, ignoring each input's masked pixels), and each bin is
then the plain mean of the combined pixels.  A pixel masked in one input is
filled by the others (the objects move between dithered exposures, the
response does not), and no pixel of the response is clipped against its
neighbours.

Object detection on a single exposure also finds compact features of the
response itself (dust spots, hot columns, channel edges), and finds them in
every exposure; such a pixel is masked in every input, and its bin's mean
leaves out exactly the structure the sky frame should hold.  With
``max_detected_fraction``, a pixel detected in more than that fraction of the
inputs that hold it is taken to be the detector's own structure: its
detection flags are ignored, and the few inputs in which an object really
falls on it are rejected by the values, first against the stack's median and
its absolute deviation (see `ignore_fixed_detections`), then by the clipped
mean across the stack.

`PixelStackBins` accumulates the bins over strips of rows, so a detector's
stack need never be in memory at once.
"""

from __future__ import annotations

__all__ = ("PixelStackBins", "ignore_fixed_detections", "strip_rows")

import numpy as np

from .errors import BoxMismatchError, NoDataError
from .statistics import MAD_TO_SIGMA, Property, StatsResult, stack_statistics


def ignore_fixed_detections(
    values: np.ndarray,
    bad: np.ndarray | None,
    detected: np.ndarray,
    max_fraction: float | None,
    clip: float = 3.0,
) -> np.ndarray:
    """Return the pixels to leave out of a stack, given its detection flags apart.

    Parameters
    ----------
    values : `numpy.ndarray`
        ``(n_inputs, ...)``: the stack; non-finite values are not held.
    bad : `numpy.ndarray` or `None`
        Boolean, as ``values``: pixels masked for reasons other than
        detection (never used).
    detected : `numpy.ndarray`
        Boolean, as ``values``: pixels flagged by object detection.
    max_fraction : `float` or `None`
        A pixel detected in more than this fraction of the inputs that hold
        it (finite and not ``bad``) is taken to be the detector's own
        structure; `None` leaves every detected pixel out.
    clip : `float`, optional
        At such a pixel, the inputs whose value lies further than ``clip``
        sigma from the median of the held values are left out, the sigma
        being the median absolute deviation times
        `~lsst.skyframes.statistics.MAD_TO_SIGMA`.

    Returns
    -------
    leave_out : `numpy.ndarray`
        Boolean, as ``values``.

    Notes
    -----
    At a pixel of the detector's own structure the detection flags say
    nothing about which inputs hold an object, so the values must.  The
    clipped mean across the stack starts from the interquartile range, which
    breaks down once more than a quarter of the inputs hold an object on the
    pixel (a crowded field puts a star on a given pixel in 5 of 20 exposures
    often enough); the median absolute deviation holds up to half.
    """
    if max_fraction is None:
        return detected if bad is None else bad | detected
    held = np.isfinite(values)
    if bad is not None:
        held &= ~bad
    n_held = held.sum(axis=0)
    n_detected = (detected & held).sum(axis=0)
    fixed = n_detected > max_fraction * n_held
    leave_out = detected & ~fixed
    if bad is not None:
        leave_out |= bad
    if fixed.any():
        at_fixed = np.where(held[:, fixed], values[:, fixed], np.nan)
        with np.errstate(invalid="ignore"):
            median = np.nanmedian(at_fixed, axis=0)
            deviation = np.abs(at_fixed - median)
            sigma = MAD_TO_SIGMA * np.nanmedian(deviation, axis=0)
            leave_out[:, fixed] |= deviation > clip * sigma
    return leave_out


def strip_rows(n_inputs: int, width: int, height: int, max_bytes: int) -> int:
    """Return how many rows of a stack of ``n_inputs`` images fit in ``max_bytes``.

    Parameters
    ----------
    n_inputs, width, height : `int`
        The stack: inputs, and each image's width and height (pixels).
    max_bytes : `int`
        Memory a strip may take: 6 bytes per input pixel (float32 values,
        the bad-pixel and the detection flags), plus 64 bytes per row pixel
        for the per-pixel results.

    Returns
    -------
    rows : `int`
        Between 1 and ``height``.
    """
    per_row = width * (6 * max(n_inputs, 1) + 64)
    return int(min(max(max_bytes // per_row, 1), height))


class PixelStackBins:
    """Bins of the per-pixel clipped mean of a stack, accumulated over strips of rows.

    Parameters
    ----------
    x_edges, y_edges : `numpy.ndarray`
        Integer bin edges along x (columns) and y (rows) of the images, from 0
        to the width and height (e.g. from
        `~lsst.skyframes.bin_size.measurement_bin_edges`).
    clip : `float`, optional
        Clipping threshold (sigma) of the per-pixel clipped mean.
    n_iter : `int`, optional
        Clipping passes of the per-pixel clipped mean.
    max_detected_fraction : `float`, optional
        With detection flags given to `add`: a pixel detected in more than
        this fraction (0 < f < 1) of the inputs that hold it keeps the values
        of all of them (see the module's docstring).  `None` (the default)
        leaves every detected pixel out.

    Raises
    ------
    ValueError
        Raised if ``max_detected_fraction`` is not in (0, 1).

    Notes
    -----
    Each pixel is the clipped mean (`~lsst.skyframes.statistics.Property.MEANCLIP`,
    as `~lsst.skyframes.sky_measurement.SkyMeasurementTask.averageBackgrounds`
    combines bins) of its good values across the inputs; a pixel no input
    holds is left out.  A bin's value is the mean of its combined pixels and
    its error the error of that mean from the per-pixel errors (independent
    pixels; a pixel that only one input holds has no error of its own and is
    given the mean variance of the bin's other pixels).  Because a bin's mean
    is a sum over pixels, strips need not follow bin edges.
    """

    def __init__(
        self,
        x_edges: np.ndarray,
        y_edges: np.ndarray,
        clip: float = 3.0,
        n_iter: int = 3,
        max_detected_fraction: float | None = None,
    ) -> None:
        if max_detected_fraction is not None and not 0.0 < max_detected_fraction < 1.0:
            raise ValueError(
                f"PixelStackBins: max_detected_fraction = {max_detected_fraction} is not in (0, 1); give the "
                "fraction of the inputs above which a detected pixel is taken as the detector's own "
                "structure (e.g. 0.5), or None to leave every detected pixel out."
            )
        self._max_detected_fraction = max_detected_fraction
        self._x_edges = np.asarray(x_edges, dtype=np.int64)
        self._y_edges = np.asarray(y_edges, dtype=np.int64)
        self._clip = clip
        self._n_iter = n_iter
        shape = (len(self._y_edges) - 1, len(self._x_edges) - 1)
        self._sum = np.zeros(shape)
        self._variance_sum = np.zeros(shape)
        self._count = np.zeros(shape, dtype=np.int64)
        self._variance_count = np.zeros(shape, dtype=np.int64)
        self._rows_done = np.zeros(int(self._y_edges[-1]), dtype=bool)

    @property
    def x_edges(self) -> np.ndarray:
        """Bin edges along x (columns)."""
        return self._x_edges

    @property
    def y_edges(self) -> np.ndarray:
        """Bin edges along y (rows)."""
        return self._y_edges

    @property
    def width(self) -> int:
        """Width of the images (pixels)."""
        return int(self._x_edges[-1])

    @property
    def height(self) -> int:
        """Height of the images (pixels)."""
        return int(self._y_edges[-1])

    def add(
        self, y0: int, values: np.ndarray, bad: np.ndarray | None, detected: np.ndarray | None = None
    ) -> None:
        """Combine one strip of rows of every input and add it to the bins.

        Parameters
        ----------
        y0 : `int`
            First row of the strip (0-based, in the images' array rows).
        values : `numpy.ndarray`
            ``(n_inputs, rows, width)``: the strip of each input.
        bad : `numpy.ndarray` or `None`
            Boolean, as ``values``: pixels to leave out (masked); non-finite
            values are always left out.
        detected : `numpy.ndarray`, optional
            Boolean, as ``values``: pixels flagged by object detection, left
            out as ``bad`` is unless ``max_detected_fraction`` takes them for
            the detector's own structure.

        Raises
        ------
        lsst.skyframes.errors.BoxMismatchError
            Raised if the strip is not as wide as the images, runs past their
            last row, or repeats rows already added.
        """
        values = np.asarray(values)
        if values.ndim != 3 or values.shape[2] != self.width:
            raise BoxMismatchError(
                f"PixelStackBins.add: the strip has shape {values.shape}, but (inputs, rows, {self.width}) "
                "is needed: every input's rows, as wide as the bins' images."
            )
        rows = values.shape[1]
        if y0 < 0 or y0 + rows > self.height:
            raise BoxMismatchError(
                f"PixelStackBins.add: rows {y0}-{y0 + rows - 1} are outside the images' {self.height} rows."
            )
        if self._rows_done[y0 : y0 + rows].any():
            raise BoxMismatchError(
                f"PixelStackBins.add: rows {y0}-{y0 + rows - 1} overlap rows already added; add each row "
                "once."
            )
        if detected is not None:
            detected = np.asarray(detected, dtype=bool)
            if detected.shape != values.shape:
                raise BoxMismatchError(
                    f"PixelStackBins.add: the detection flags have shape {detected.shape}, but the strip "
                    f"{values.shape}; give one flag per value."
                )
            bad = ignore_fixed_detections(values, bad, detected, self._max_detected_fraction, self._clip)
        combined = stack_statistics(values, bad, Property.MEANCLIP, self._clip, self._n_iter)
        good = np.isfinite(combined.value)
        has_error = good & np.isfinite(combined.error)
        value = np.where(good, combined.value, 0.0)
        variance = np.where(has_error, combined.error**2, 0.0)
        # Sum each row's pixels into its x bins, then the rows into their y bins.
        starts = self._x_edges[:-1]
        row_bin = np.searchsorted(self._y_edges, np.arange(y0, y0 + rows), side="right") - 1
        for target, per_pixel in (
            (self._sum, value),
            (self._variance_sum, variance),
            (self._count, good),
            (self._variance_count, has_error),
        ):
            per_row = np.add.reduceat(per_pixel, starts, axis=1)
            np.add.at(target, row_bin, per_row)
        self._rows_done[y0 : y0 + rows] = True

    def result(self) -> StatsResult:
        """Return the bins.

        Returns
        -------
        result : `~lsst.skyframes.statistics.StatsResult`
            ``(ny, nx)`` arrays: ``value`` (mean of the combined pixels, NaN
            for a bin with none), ``error`` (its error) and ``count`` (the
            combined pixels).

        Raises
        ------
        lsst.skyframes.errors.NoDataError
            Raised if some rows were never added.
        """
        if not self._rows_done.all():
            missing = np.flatnonzero(~self._rows_done)
            raise NoDataError(
                f"PixelStackBins.result: {missing.size} rows (first {int(missing[0])}) were never added; "
                "add every row of the images before taking the bins."
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(self._count > 0, self._sum / self._count, np.nan)
            # Var(mean of n pixels) = mean per-pixel variance / n.
            mean_variance = self._variance_sum / self._variance_count
            error = np.where(self._variance_count > 0, np.sqrt(mean_variance / self._count), np.nan)
        return StatsResult(value=value, error=error, count=self._count.copy())
