# This file is part of skyframes.
#
# Developed for the LSST Data Management System.
# Use of this source code is governed by a 3-clause BSD-style
# license that can be found in the LICENSE file.

"""Object masks from detection on the build's exposures stacked on the sky.

Detection on one exposure misses the faint sources and wings of a crowded
field.  That light is small in each exposure, but it lifts every exposure's
large-scale background, and the sky frame, which is the residual from it,
takes the opposite tilt (benchmarks/README.md, the real-data case).  The
exposures of a sky-frame build are dithered, so registered on the sky they
stack to an image ``sqrt(N)`` times deeper, in which the same sources
stand out:

1. `response_residuals`: each exposure of one detector minus its sky level
   times the detector's response, estimated as the per-pixel median of the
   exposures divided by their levels.  What is left is object light and
   noise; the response (and any feature of it that detection on one exposure
   would find) is gone, because it does not move with the dithers.
2. `stack_detections`: the residuals, placed at their offsets on a common
   grid, averaged; smoothed by the PSF and thresholded in signal to noise;
   each exposure's window of the mask returned.

These are the building blocks; the pipelines do not call them yet (the
ingested ``post_isr_image`` carries no sky projection to register exposures
by).
"""

from __future__ import annotations

__all__ = ("response_residuals", "stack_detections")

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .errors import BoxMismatchError, NoDataError


def response_residuals(
    images: Sequence[np.ndarray], levels: Sequence[float], bad: Sequence[np.ndarray] | None = None
) -> list[np.ndarray]:
    """Return each exposure of one detector minus its level times the detector's response.

    Parameters
    ----------
    images : sequence of `numpy.ndarray`
        The exposures of one detector (electrons), all of one shape.
    levels : sequence of `float`
        Each exposure's sky level (electrons; finite, positive).
    bad : sequence of `numpy.ndarray`, optional
        Boolean, as ``images``: pixels to leave out (they come back NaN).

    Returns
    -------
    residuals : `list` [`numpy.ndarray`]
        float64, ``image - level x response``, with the response the
        per-pixel median over the exposures of ``image / level``; NaN where
        ``bad``, where the image is not finite, or where no exposure holds
        the pixel.

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised for no image, or for fewer than 3 (a median of two holds each
        object at half its brightness).
    lsst.skyframes.errors.BoxMismatchError
        Raised if the shapes or the lengths differ.
    ValueError
        Raised if a level is not finite and positive.
    """
    if len(images) < 3:
        raise NoDataError(
            f"response_residuals needs at least 3 exposures of the detector (the response is their per-pixel "
            f"median, which keeps no object only if most exposures do not hold it); got {len(images)}."
        )
    if len(levels) != len(images) or (bad is not None and len(bad) != len(images)):
        raise BoxMismatchError(
            f"response_residuals: {len(images)} images, {len(levels)} levels and "
            f"{'no' if bad is None else len(bad)} bad-pixel arrays; give one of each per exposure."
        )
    shape = np.shape(images[0])
    stack = np.empty((len(images), *shape))
    for index, image in enumerate(images):
        if np.shape(image) != shape or (bad is not None and np.shape(bad[index]) != shape):
            raise BoxMismatchError(
                f"response_residuals: exposure {index} (or its bad pixels) has shape {np.shape(image)}, "
                f"but exposure 0 {shape}; give the exposures of one detector."
            )
        level = float(levels[index])
        if not np.isfinite(level) or level <= 0.0:
            raise ValueError(f"response_residuals: exposure {index} has sky level {level}; it must be > 0.")
        stack[index] = np.asarray(image, dtype=np.float64) / level
        if bad is not None:
            stack[index][np.asarray(bad[index], dtype=bool)] = np.nan
    with warnings.catch_warnings():
        # A pixel no exposure holds has a NaN median, as documented.
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        response = np.nanmedian(stack, axis=0)
    return [(values - response) * float(level) for values, level in zip(stack, levels, strict=True)]


def stack_detections(
    residuals: Sequence[np.ndarray],
    variances: Sequence[np.ndarray],
    offsets: Sequence[tuple[int, int]],
    *,
    threshold: float = 3.0,
    psf_sigma: float = 1.5,
    grow: int = 1,
) -> list[np.ndarray]:
    """Detect objects on the residuals stacked on the sky; return each one's window of the mask.

    Parameters
    ----------
    residuals : sequence of `numpy.ndarray`
        Object light plus noise of each image (e.g. from
        `response_residuals`; NaN where not held), any number of detectors
        and exposures.
    variances : sequence of `numpy.ndarray`
        The variance of each residual's pixels (electrons² for residuals in
        electrons: the image itself for Poisson noise).
    offsets : sequence of (`int`, `int`)
        Each image's first pixel (row, column) on the common grid: its
        position on the sky, in pixels, from the exposures' pointings and
        dithers.
    threshold : `float`, optional
        Detection threshold: signal to noise of the stack smoothed by the
        PSF.
    psf_sigma : `float`, optional
        Gaussian sigma (pixels) of the smoothing, about the PSF's.
    grow : `int`, optional
        Pixels by which the detections are grown.

    Returns
    -------
    masks : `list` [`numpy.ndarray`]
        Boolean, one per residual, of its shape: where the stack's detection
        falls on it.

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised for no residual, or if no pixel is held.
    lsst.skyframes.errors.BoxMismatchError
        Raised if the lengths differ, a variance's shape differs from its
        residual's, or an offset is negative.
    ValueError
        Raised if ``threshold`` or ``psf_sigma`` is not positive or ``grow``
        is negative.

    Notes
    -----
    The stack is the mean of the residuals holding each grid pixel, its
    noise ``sqrt(sum of variances) / n``; after smoothing by a normalised
    Gaussian of sigma ``s`` white noise falls by ``sqrt(4 pi) s``, which
    sets the smoothed image's noise.  Pixels no residual holds are never
    detected.
    """
    if len(residuals) == 0:
        raise NoDataError("stack_detections needs at least one residual image; got none.")
    if not len(variances) == len(offsets) == len(residuals):
        raise BoxMismatchError(
            f"stack_detections: {len(residuals)} residuals, {len(variances)} variances and {len(offsets)} "
            "offsets; give one of each per image."
        )
    if threshold <= 0.0 or psf_sigma <= 0.0 or grow < 0:
        raise ValueError(
            f"stack_detections: threshold = {threshold} and psf_sigma = {psf_sigma} must be > 0, and grow = "
            f"{grow} >= 0."
        )
    windows = []
    for index, (residual, variance, offset) in enumerate(zip(residuals, variances, offsets, strict=True)):
        if np.shape(variance) != np.shape(residual):
            raise BoxMismatchError(
                f"stack_detections: variance {index} has shape {np.shape(variance)}, but its residual "
                f"{np.shape(residual)}."
            )
        y0, x0 = (int(v) for v in offset)
        if y0 < 0 or x0 < 0:
            raise BoxMismatchError(
                f"stack_detections: offset {index} is {(y0, x0)}; put the common grid's origin below and "
                "left of every image (subtract the smallest offset)."
            )
        windows.append((slice(y0, y0 + np.shape(residual)[0]), slice(x0, x0 + np.shape(residual)[1])))
    shape = (max(w[0].stop for w in windows), max(w[1].stop for w in windows))
    total, total_variance = np.zeros(shape), np.zeros(shape)
    count = np.zeros(shape, dtype=np.int64)
    for residual, variance, window in zip(residuals, variances, windows, strict=True):
        values = np.asarray(residual, dtype=np.float64)
        held = np.isfinite(values) & np.isfinite(variance)
        total[window] += np.where(held, values, 0.0)
        total_variance[window] += np.where(held, variance, 0.0)
        count[window] += held
    held = count > 0
    if not held.any():
        raise NoDataError("stack_detections: no residual holds a finite pixel; check the images' bad pixels.")
    stacked = np.where(held, total / np.maximum(count, 1), 0.0)
    noise = np.where(held, np.sqrt(total_variance) / np.maximum(count, 1), np.inf)
    smoothed = ndimage.gaussian_filter(stacked, psf_sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = smoothed * (np.sqrt(4.0 * np.pi) * psf_sigma) / noise
    detected = (snr > threshold) & held
    if grow:
        detected = ndimage.binary_dilation(detected, iterations=grow)
    return [detected[window].copy() for window in windows]
