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
2. `measure_offsets`: the dithers themselves, from the residuals, by
   cross-correlation with the first exposure, refined against the stack of
   the others (the ingested ``post_isr_image`` carries no sky projection to
   register exposures by).
3. `stack_detections`: the residuals, placed at their offsets on a common
   grid, averaged; smoothed by the PSF and thresholded in signal to noise;
   each exposure's window of the mask returned.

`CpSkyStackDetectTask` (label ``cpSkyStackDetect``, per physical filter and
detector) runs the three on the build's exposures and writes each one's mask
as ``cpSkyStackMask``, which cpSkyImage masks in place of its own detection
with ``doUseStackMask`` (pipelines/BuildSkyFrameStackDetected.yaml).  It
works per detector: an object is registered where it stays on one detector,
so the dithers must be smaller than a detector (the overlap with the first
exposure holds the objects the offset is measured from), and larger than
the objects (the median keeps as response what stays on the same pixels in
most exposures).
"""

from __future__ import annotations

__all__ = (
    "STACK_MASK_PLANE",
    "CpSkyStackDetectConfig",
    "CpSkyStackDetectConnections",
    "CpSkyStackDetectTask",
    "measure_offsets",
    "response_residuals",
    "stack_detections",
)

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import fft, ndimage

from lsst.images import Image, Mask, MaskedImage, MaskPlane, MaskSchema
from lsst.pex.config import ConfigurableField, Field, ListField
from lsst.pipe.base import (
    InputQuantizedConnection,
    OutputQuantizedConnection,
    PipelineTask,
    PipelineTaskConfig,
    PipelineTaskConnections,
    QuantumContext,
    Struct,
)
from lsst.pipe.base import connectionTypes as cT

from ._detection import SubtractBackgroundTask
from .errors import BoxMismatchError, NoDataError
from .images import image_and_mask
from .statistics import bad_pixel_mask

STACK_MASK_PLANE = "DETECTED"
"""The one plane of a ``cpSkyStackMask``: detected on the stacked exposures."""

# Values per strip of the per-pixel median (about 16 MB of float32).
_STRIP_VALUES = 1 << 22


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
        float32, ``image - level x response``, with the response the
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
    # float32, as the images are stored: one detector's stack is 4 bytes per pixel and exposure.
    stack = np.empty((len(images), *shape), dtype=np.float32)
    for index, image in enumerate(images):
        if np.shape(image) != shape or (bad is not None and np.shape(bad[index]) != shape):
            raise BoxMismatchError(
                f"response_residuals: exposure {index} (or its bad pixels) has shape {np.shape(image)}, "
                f"but exposure 0 {shape}; give the exposures of one detector."
            )
        level = float(levels[index])
        if not np.isfinite(level) or level <= 0.0:
            raise ValueError(f"response_residuals: exposure {index} has sky level {level}; it must be > 0.")
        np.divide(image, level, out=stack[index], dtype=np.float32, casting="unsafe")
        if bad is not None:
            stack[index][np.asarray(bad[index], dtype=bool)] = np.nan
    response = np.empty(shape, dtype=np.float32)
    # In strips of rows, so that the median's working copies stay small beside the stack.
    rows = max(1, _STRIP_VALUES // max(1, len(images) * int(np.prod(shape[1:]))))
    with warnings.catch_warnings():
        # A pixel no exposure holds has a NaN median, as documented.
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        for start in range(0, shape[0], rows):
            response[start : start + rows] = np.nanmedian(stack[:, start : start + rows], axis=0)
    for values, level in zip(stack, levels, strict=True):
        values -= response
        values *= float(level)
    return list(stack)


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


def measure_offsets(
    residuals: Sequence[np.ndarray],
    variances: Sequence[np.ndarray],
    *,
    max_offset: int,
    min_significance: float = 10.0,
) -> tuple[list[tuple[int, int] | None], list[float]]:
    """Measure each image's dither offset from the objects in it, by cross-correlation.

    Parameters
    ----------
    residuals : sequence of `numpy.ndarray`
        Object light plus noise of each image of one detector (e.g. from
        `response_residuals`; NaN where not held), all of one shape.
    variances : sequence of `numpy.ndarray`
        The variance of each residual's pixels.
    max_offset : `int`
        Largest shift (pixels, along each axis) searched between an image
        and the first.
    min_significance : `float`, optional
        Smallest correlation peak, in units of the correlation's own
        scatter over the searched shifts, taken as a measurement.

    Returns
    -------
    offsets : `list` [(`int`, `int`) or `None`]
        Each image's first pixel (row, column) on a common grid whose
        origin is below and left of every registered image (the
        ``offsets`` of `stack_detections`); None for an image whose peak is
        below ``min_significance`` (too few objects overlap the first
        image's), which has no place on the grid.
    significances : `list` [`float`]
        Each image's correlation peak over the scatter (inf for the first).

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised for no residual.
    lsst.skyframes.errors.BoxMismatchError
        Raised if the lengths or shapes differ.
    ValueError
        Raised if ``max_offset`` is negative or ``min_significance`` is not
        positive.

    Notes
    -----
    An object at sky position ``q`` (in pixels) lies at ``q - o`` on an
    image of offset ``o``, so the correlation of an image with the first
    peaks at the difference of their offsets.  The images are correlated
    as signal to noise, clipped to [-5, 20] so that a few bright stars do
    not outweigh the field, with unheld pixels 0.  The response does not
    move with the dithers and is not in the residuals, so it does not pull
    the peak to zero shift.  Shifts are whole pixels: the masks are grown
    by at least a pixel.
    """
    if len(residuals) == 0:
        raise NoDataError("measure_offsets needs at least one residual image; got none.")
    if len(variances) != len(residuals):
        raise BoxMismatchError(
            f"measure_offsets: {len(residuals)} residuals and {len(variances)} variances; give one of each."
        )
    if max_offset < 0 or min_significance <= 0.0:
        raise ValueError(
            f"measure_offsets: max_offset = {max_offset} must be >= 0 and min_significance = "
            f"{min_significance} > 0."
        )
    shape = np.shape(residuals[0])
    for index, (residual, variance) in enumerate(zip(residuals, variances, strict=True)):
        if np.shape(residual) != shape or np.shape(variance) != shape:
            raise BoxMismatchError(
                f"measure_offsets: residual {index} (or its variance) has shape {np.shape(residual)}, but "
                f"residual 0 {shape}; give the images of one detector."
            )
    m = min(int(max_offset), max(shape) - 1)
    padded = tuple(fft.next_fast_len(n + m, real=True) for n in shape)

    snrs = [_correlation_image(r, v) for r, v in zip(residuals, variances, strict=True)]
    reference = fft.rfft2(snrs[0], s=padded)
    shifts: list[tuple[int, int] | None] = [(0, 0)]
    significances = [math.inf]
    # Shifts -m..m along each axis, as indices of the (wrapped) correlation.
    rows = np.r_[0 : m + 1, padded[0] - m : padded[0]]
    columns = np.r_[0 : m + 1, padded[1] - m : padded[1]]
    for snr in snrs[1:]:
        correlation = fft.irfft2(reference * np.conj(fft.rfft2(snr, s=padded)), s=padded)
        window = correlation[np.ix_(rows, columns)]
        peak = np.unravel_index(int(np.argmax(window)), window.shape)
        scatter = float(np.std(window))
        significance = float(window[peak] - np.median(window)) / scatter if scatter > 0 else 0.0
        significances.append(significance)
        if significance < min_significance:
            shifts.append(None)
            continue
        dy, dx = (int(index[p]) for index, p in zip((rows, columns), peak, strict=True))
        shifts.append((dy if dy <= m else dy - padded[0], dx if dx <= m else dx - padded[1]))
    measured = [s for s in shifts if s is not None]
    y_min, x_min = min(s[0] for s in measured), min(s[1] for s in measured)
    offsets = [None if s is None else (s[0] - y_min, s[1] - x_min) for s in shifts]
    return _refine_offsets(snrs, offsets), significances


def _correlation_image(residual: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Signal to noise, clipped to [-5, 20] and of zero mean, with unheld pixels 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.asarray(residual, dtype=np.float32) / np.sqrt(np.asarray(variance, dtype=np.float32))
    held = np.isfinite(snr)
    snr = np.where(held, np.clip(snr, -5.0, 20.0), 0.0).astype(np.float32)
    if held.any():
        snr[held] -= snr[held].mean()
    return snr


def _refine_offsets(
    snrs: list[np.ndarray], offsets: list[tuple[int, int] | None], reach: int = 2
) -> list[tuple[int, int] | None]:
    """Re-measure each placed image against the stack of the others, within ``reach`` pixels.

    Against one other image the correlation peak is as noisy as the two;
    against the stack of all the others it is about ``sqrt(N)`` times
    sharper, which settles the whole pixel.
    """
    placed = [k for k, offset in enumerate(offsets) if offset is not None]
    if len(placed) < 3:
        return offsets
    height, width = snrs[0].shape
    grid = (max(offsets[k][0] for k in placed) + height, max(offsets[k][1] for k in placed) + width)
    total = np.zeros(grid, dtype=np.float64)
    for k in placed:
        y0, x0 = offsets[k]
        total[y0 : y0 + height, x0 : x0 + width] += snrs[k]
    refined = list(offsets)
    for k in placed:
        y0, x0 = offsets[k]
        own = (slice(y0, y0 + height), slice(x0, x0 + width))
        # The others' stack: the image's own contribution taken out while it is matched.
        total[own] -= snrs[k]
        best, best_value = (y0, x0), -math.inf
        for y in range(y0 - reach, y0 + reach + 1):
            for x in range(x0 - reach, x0 + reach + 1):
                ys = slice(max(y, 0), min(y + height, grid[0]))
                xs = slice(max(x, 0), min(x + width, grid[1]))
                image = snrs[k][ys.start - y : ys.stop - y, xs.start - x : xs.stop - x]
                value = float(np.sum(total[ys, xs] * image))
                if value > best_value:
                    best, best_value = (y, x), value
        total[own] += snrs[k]
        refined[k] = best
    y_min = min(refined[k][0] for k in placed)
    x_min = min(refined[k][1] for k in placed)
    return [None if o is None else (o[0] - y_min, o[1] - x_min) for o in refined]


class CpSkyStackDetectConnections(
    PipelineTaskConnections, dimensions=("instrument", "physical_filter", "detector")
):
    inputExps = cT.Input(
        name="post_isr_image",
        doc="The build's processed images of this detector (every exposure of the filter); the image, mask "
        "and variance planes are read.",
        storageClass="MaskedImageV2",
        dimensions=("instrument", "exposure", "detector"),
        multiple=True,
        deferLoad=True,
    )
    outputMasks = cT.Output(
        name="cpSkyStackMask",
        doc="Each exposure's window of the detection on the stacked exposures (one plane, DETECTED); "
        "cpSkyImage masks it in place of its own detection with doUseStackMask.",
        storageClass="MaskV2",
        dimensions=("instrument", "exposure", "detector"),
        multiple=True,
    )


class CpSkyStackDetectConfig(PipelineTaskConfig, pipelineConnections=CpSkyStackDetectConnections):
    """Configuration of `CpSkyStackDetectTask`."""

    maskList = ListField[str](
        doc="Mask planes of pixels left out of the response, the registration and the stack.",
        default=["BAD", "SAT", "NO_DATA"],
    )
    thresholdValue = Field[float](
        doc="Detection threshold: signal to noise of the stack smoothed by the PSF.",
        default=3.0,
        check=lambda value: value > 0.0,
    )
    psfSigma = Field[float](
        doc="Gaussian sigma (pixels) of the smoothing, about the PSF's.",
        default=1.5,
        check=lambda value: value > 0.0,
    )
    nPixelsToGrow = Field[int](
        doc="Pixels by which the stack's detections are grown (covers whole-pixel registration).",
        default=1,
        check=lambda value: value >= 0,
    )
    maxOffset = Field[int](
        doc="Largest dither searched (pixels along each axis between an exposure and the first); None for "
        "the detector's size.",
        default=None,
        optional=True,
        check=lambda value: value >= 0,
    )
    background = ConfigurableField(
        target=SubtractBackgroundTask,
        doc="Background of each residual, subtracted before the stack (what the sky does beyond level x "
        "response: gradients that change between exposures); the stack's detections are left out of it "
        "after the first round.",
    )
    doSubtractBackground = Field[bool](
        doc="Subtract each residual's background (the background subtask) before the stack? Off by default: "
        "the residuals' large-scale structure is mostly the unresolved light of faint objects, which is what "
        "the stack should find (on benchmarks/accuracy_real.py a 128-px or 1024-px background doubles the "
        "scale error, 0.10 % against 0.045 %), while sky gradients that change between exposures average "
        "down in the stack. Switch it on for skies whose shape changes strongly (twilight, moonlight).",
        default=False,
    )
    nIter = Field[int](
        doc="Rounds of background and detection with doSubtractBackground (each round's detections are left "
        "out of the next round's background); one round is done without.",
        default=2,
        check=lambda value: value >= 1,
    )
    minSignificance = Field[float](
        doc="Smallest cross-correlation peak (in units of its scatter) taken as a measured offset; an "
        "exposure below it gets an empty mask and keeps cpSkyImage's own detection alone.",
        default=10.0,
        check=lambda value: value > 0.0,
    )

    def setDefaults(self) -> None:
        super().setDefaults()
        # As MaskObjectsTask's: binned background, no Chebyshev approximation.
        self.background.useApprox = False


class CpSkyStackDetectTask(PipelineTask):
    """Detect objects on the build's exposures of one detector stacked on the sky.

    ``run`` takes the images themselves, so it works in a notebook: levels
    are each image's median good pixel, the response the per-pixel median
    of the images over their levels, the offsets measured from the
    residuals (`measure_offsets`), and the masks `stack_detections`'.  The
    metadata records each exposure's offset and its correlation peak.

    Memory: the images of one detector are held at once, about 20 bytes per
    pixel and exposure (image, variance and mask planes, the residuals and,
    while the offsets are measured, their signal to noise, in float32).
    """

    ConfigClass = CpSkyStackDetectConfig
    _DefaultName = "CpSkyStackDetect"
    config: CpSkyStackDetectConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.makeSubtask("background")

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        handles = butlerQC.get(inputRefs.inputExps)
        by_exposure = {int(handle.dataId["exposure"]): handle for handle in handles}
        exposures = sorted(by_exposure)
        result = self.run([by_exposure[e].get() for e in exposures], exposureIds=exposures)
        masks = dict(zip(exposures, result.outputMasks, strict=True))
        for ref in outputRefs.outputMasks:
            butlerQC.put(masks[int(ref.dataId["exposure"])], ref)

    def run(self, inputExps: Sequence[MaskedImage], exposureIds: Sequence[int] | None = None) -> Struct:
        """Detect objects on the stack of one detector's exposures.

        Parameters
        ----------
        inputExps : sequence of `lsst.images.MaskedImage`
            The exposures of one detector (with mask and variance planes),
            all of one box.
        exposureIds : sequence of `int`, optional
            Their exposure ids, for the log and metadata (default 0, 1, ...).

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``outputMasks`` (`list` [`lsst.images.Mask`], one plane
            ``DETECTED``, each image's box), ``offsets`` (`list` of the
            measured (row, column) offsets, None where not measured) and
            ``significances``.

        Raises
        ------
        lsst.skyframes.errors.BoxMismatchError
            Raised if the images' boxes differ.
        lsst.skyframes.errors.NoDataError
            Raised for no image.
        """
        if len(inputExps) == 0:
            raise NoDataError("cpSkyStackDetect needs the exposures of a detector; got none.")
        ids = list(range(len(inputExps))) if exposureIds is None else [int(e) for e in exposureIds]
        bbox = inputExps[0].bbox
        images, variances, bad, levels = [], [], [], []
        for exposure_id, exposure in zip(ids, inputExps, strict=True):
            if exposure.bbox != bbox:
                raise BoxMismatchError(
                    f"cpSkyStackDetect: exposure {exposure_id} has box {exposure.bbox}, exposure {ids[0]} "
                    f"{bbox}; give the exposures of one detector."
                )
            pixels, mask = image_and_mask(exposure)
            array = pixels.array
            variance = exposure.variance.array if exposure.variance is not None else np.clip(array, 0.0, None)
            unusable = ~np.isfinite(array) | ~(variance > 0)
            if mask is not None:
                unusable |= bad_pixel_mask(mask, list(self.config.maskList))
            images.append(array)
            variances.append(variance)
            bad.append(unusable)
            levels.append(float(np.median(array[~unusable])) if not unusable.all() else math.nan)
        usable = [i for i, level in enumerate(levels) if np.isfinite(level) and level > 0.0]
        offsets: list[tuple[int, int] | None] = [None] * len(images)
        significances = [0.0] * len(images)
        detected = [np.zeros(images[0].shape, dtype=bool) for _ in images]
        if len(usable) < 3:
            self.log.warning(
                "%d of %d exposures have usable pixels; a stack needs 3 (the response is their median). "
                "Writing empty stack masks: cpSkyImage's own detection stands alone.",
                len(usable),
                len(images),
            )
        else:
            residuals = response_residuals(
                [images[i] for i in usable], [levels[i] for i in usable], [bad[i] for i in usable]
            )
            flattened = [
                self._flatten(residual, bad[i]) for residual, i in zip(residuals, usable, strict=True)
            ]
            measured, peaks = self._register(
                flattened, [variances[i] for i in usable], [ids[i] for i in usable]
            )
            for k, i in enumerate(usable):
                offsets[i], significances[i] = measured[k], peaks[k]
            registered = [k for k, offset in enumerate(measured) if offset is not None]
            windows = self._detect(flattened, variances, measured, usable, registered)
            # More rounds only with a background: the previous round's detections left out of it.
            for _ in range(self.config.nIter - 1 if self.config.doSubtractBackground else 0):
                for k, window in zip(registered, windows, strict=True):
                    flattened[k] = self._flatten(residuals[k], bad[usable[k]] | window)
                windows = self._detect(flattened, variances, measured, usable, registered)
            for k, window in zip(registered, windows, strict=True):
                detected[usable[k]] = window & ~bad[usable[k]]
        self.metadata["exposures"] = ids
        self.metadata["offsetRows"] = [-1 if o is None else o[0] for o in offsets]
        self.metadata["offsetColumns"] = [-1 if o is None else o[1] for o in offsets]
        self.metadata["significances"] = [float(v) for v in significances]
        self.metadata["detectedFractions"] = [float(d.mean()) for d in detected]
        schema = MaskSchema(
            [
                MaskPlane(
                    STACK_MASK_PLANE,
                    "Detected on the build's exposures stacked on the sky (cpSkyStackDetect).",
                )
            ]
        )
        masks = []
        for values in detected:
            mask = Mask(0, schema=schema, bbox=bbox)
            mask.set(STACK_MASK_PLANE, values)
            masks.append(mask)
        return Struct(outputMasks=masks, offsets=offsets, significances=significances)

    def _detect(
        self,
        flattened: list[np.ndarray],
        variances: list[np.ndarray],
        offsets: list[tuple[int, int] | None],
        usable: list[int],
        registered: list[int],
    ) -> list[np.ndarray]:
        """`stack_detections` of the registered residuals (indices into ``usable``)."""
        return stack_detections(
            [flattened[k] for k in registered],
            [variances[usable[k]] for k in registered],
            [offsets[k] for k in registered],
            threshold=self.config.thresholdValue,
            psf_sigma=self.config.psfSigma,
            grow=self.config.nPixelsToGrow,
        )

    def _flatten(self, residual: np.ndarray, ignored: np.ndarray) -> np.ndarray:
        """Return ``residual`` minus its background, fitted outside ``ignored``."""
        if not self.config.doSubtractBackground:
            return residual
        fitted = self.background.fitBackground(Image(residual), ignored=ignored).getImageF().array
        return residual - fitted

    def _register(
        self, flattened: list[np.ndarray], variances: list[np.ndarray], ids: list[int]
    ) -> tuple[list[tuple[int, int] | None], list[float]]:
        """Measure the offsets (`measure_offsets`); log the exposures it cannot place."""
        max_offset = max(flattened[0].shape) if self.config.maxOffset is None else self.config.maxOffset
        measured, peaks = measure_offsets(
            flattened, variances, max_offset=max_offset, min_significance=self.config.minSignificance
        )
        for exposure_id, offset, peak in zip(ids, measured, peaks, strict=True):
            if offset is None:
                self.log.warning(
                    "Exposure %d: no dither offset measured (correlation peak %.1f x its scatter, below "
                    "minSignificance %.1f); its stack mask is empty.",
                    exposure_id,
                    peak,
                    self.config.minSignificance,
                )
        return measured, peaks
