"""Background fitting and source detection with meas_algorithms' configuration.

Private building blocks of `~lsst.skyframes.masking.MaskObjectsTask`, which
has the reference's subtasks ``subtractBackground``, ``detection`` and
``interpolate``. The configs carry the fields and defaults of
``lsst.meas.algorithms.SubtractBackgroundConfig`` and
``SourceDetectionConfig`` so that the Rubin stack's override files (obs
packages' ``config/skyCorr.py``, drp_pipe's and cp_pipe's pipeline blocks)
apply unchanged; the tasks implement what object masking uses of them, on
lsst.images types and without afw.

What `SourceDetectionTask.detectFootprints` does, as meas_algorithms does it
for a given Gaussian ``sigma``:

1. clear ``DETECTED`` and ``DETECTED_NEGATIVE`` (``clearMask``);
2. smooth with a Gaussian of ``sigma`` sampled on a kernel of
   ``(int(sigma * nSigmaForKernel + 0.5) // 2) * 2 + 1`` pixels, and mark the
   border the kernel does not fit in (its half width) ``EDGE``; only the
   interior is searched (``searchEdge``, a skyframes option, searches the
   border too, smoothed with reflected edges, and marks no ``EDGE``);
3. threshold the interior: ``thresholdValue * includeThresholdMultiplier``
   times the clipped standard deviation of the smoothed image (``stdev``; the
   ``statsMask`` planes left out), times its square (``variance``), times each
   pixel's standard deviation in the smoothed image (``pixel_stdev``: the
   variance plane correlated with the square of the kernel), or as a value
   (``value``); positive, negative or both (``thresholdPolarity``);
4. drop 4-connected detections of fewer than ``minPixels`` pixels, grow the
   rest by ``int(nSigmaToGrow * sigma + 0.5)`` pixels (a disk if
   ``isotropicGrow``, else afw's Manhattan diamond) and set ``DETECTED``
   (``DETECTED_NEGATIVE`` for negative ones).

Fields that shape footprints and peaks rather than the mask
(``combinedGrow``, ``returnOriginalFootprints``, ``nPeaksMaxSimple``) are
accepted and leave the mask as it would be. The three background steps of
detection (``reEstimateBackground``, ``doTempLocalBackground``,
``doTempWideBackground``) are not implemented: object masking requires them
off, as the reference's ``MaskObjectsConfig.validate`` does, and
`SourceDetectionTask` refuses them.

Where this differs from afw, for a reason: non-finite pixels and pixels in
the ``statsMask`` planes other than ``EDGE`` enter the smoothing as 0 (the
background) instead of with their value, so a NaN or a dead column cannot
spread into a detection; NaN pixels are always left out of background bins
(afw does so only with ``isNanSafe``); the Chebyshev approximation
(``useApprox=True``) is not implemented and is refused with the setting to
use instead.
"""

from __future__ import annotations

__all__ = [
    "SourceDetectionConfig",
    "SourceDetectionTask",
    "SubtractBackgroundConfig",
    "SubtractBackgroundTask",
    "grow_isotropic",
    "grow_manhattan",
    "kernel_width",
]

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import scipy.ndimage
from numba import prange

from lsst.images import Image, MaskedImage
from lsst.pex.config import ChoiceField, Config, ConfigurableField, Field, ListField, RangeField
from lsst.pipe.base import Struct, Task

from ._jit import njit
from .background import BackgroundControl, BackgroundList, BackgroundMI, makeBackground
from .errors import NoDataError, UsageError
from .images import image_and_mask
from .interpolate import stringToInterpStyle
from .mask_planes import LEGACY_PLANE_ALIASES
from .statistics import IQR_TO_SIGMA, StatisticsControl, bad_pixel_mask

_SIGMA_SAMPLES = 1_000_000
"""About how many pixels of the smoothed image the ``stdev`` threshold uses."""

_MIN_SIGMA_SAMPLES = 100
"""Fewest pixels from which the smoothed image's noise is estimated."""

_MIN_STRIP_ROWS = 256
"""Images with fewer rows per thread are filtered in one call."""


# ---------------------------------------------------------------------------------------------------------
# Background fitting (meas_algorithms' SubtractBackgroundTask)
# ---------------------------------------------------------------------------------------------------------


class SubtractBackgroundConfig(Config):
    """Configuration of `SubtractBackgroundTask` (meas_algorithms' fields and defaults)."""

    statisticsProperty = ChoiceField[str](
        doc="Statistic of the pixels of each bin.",
        default="MEANCLIP",
        allowed={"MEANCLIP": "clipped mean", "MEAN": "unclipped mean", "MEDIAN": "median"},
    )
    undersampleStyle = ChoiceField[str](
        doc="What to do if there are too few bins for the interpolation style.",
        default="REDUCE_INTERP_ORDER",
        allowed={
            "THROW_EXCEPTION": "raise an exception",
            "REDUCE_INTERP_ORDER": "use an interpolation style of lower order",
            "INCREASE_NXNYSAMPLE": "use more bins (not supported here: refused when it would act)",
        },
    )
    binSize = RangeField[int](doc="Bin size (pixels) of the background grid.", default=128, min=1)
    binSizeX = RangeField[int](doc="Bin size in x (pixels); 0: binSize.", default=0, min=0)
    binSizeY = RangeField[int](doc="Bin size in y (pixels); 0: binSize.", default=0, min=0)
    algorithm = ChoiceField[str](
        doc="Interpolation of the bin values.",
        default="AKIMA_SPLINE",
        optional=True,
        allowed={
            "CONSTANT": "a single constant value",
            "LINEAR": "linear interpolation",
            "NATURAL_SPLINE": "cubic spline with zero second derivative at the ends",
            "AKIMA_SPLINE": "Akima spline, robust to outliers",
            "NONE": "no background estimation (refused by fitBackground)",
        },
    )
    ignoredPixelMask = ListField[str](
        doc="Mask planes whose pixels are left out of the bins.",
        default=["BAD", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "NO_DATA"],
    )
    isNanSafe = Field[bool](
        doc="Ignore NaN pixels? (Here NaN pixels are always ignored; the field is kept for afw configs.)",
        default=False,
    )
    useApprox = Field[bool](
        doc="Model the background with a Chebyshev approximation? Not implemented: set it False "
        "(object masking does, as the reference's MaskObjectsConfig.setDefaults).",
        default=True,
    )
    approxOrderX = Field[int](doc="Chebyshev order in x (useApprox only).", default=6)
    approxOrderY = Field[int](doc="Chebyshev order in y; -1: approxOrderX (useApprox only).", default=-1)
    weighting = Field[bool](
        doc="Inverse-variance weighting of the Chebyshev fit (useApprox only).", default=True
    )

    def bin_sizes(self) -> tuple[int, int]:
        """Return the bin size in x and y (``binSizeX``/``binSizeY``, else ``binSize``)."""
        return (self.binSizeX or self.binSize, self.binSizeY or self.binSize)


class SubtractBackgroundTask(Task):
    """Fit a binned background to an image, and subtract it.

    As meas_algorithms' task: ``W // binSizeX + 1`` by ``H // binSizeY + 1``
    bins, the ``statisticsProperty`` of the pixels outside
    ``ignoredPixelMask`` (3 sigma, 3 passes for MEANCLIP), rendered with
    ``algorithm`` and ``undersampleStyle``.
    """

    ConfigClass = SubtractBackgroundConfig
    _DefaultName = "subtractBackground"
    config: SubtractBackgroundConfig

    def run(self, exposure: MaskedImage) -> Struct:
        """Fit a background and subtract it from ``exposure`` in place.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``background``: a `~lsst.skyframes.background.BackgroundList`
            holding the fitted background.
        """
        background = self.fitBackground(exposure)
        pixels, _ = image_and_mask(exposure)
        pixels.array -= background.getImageF().array
        return Struct(background=BackgroundList(background))

    def fitBackground(self, maskedImage: MaskedImage, *, ignored: np.ndarray | None = None) -> BackgroundMI:
        """Fit the background of a masked image.

        Parameters
        ----------
        maskedImage : `lsst.images.MaskedImage` or `lsst.images.Image`
            The image; pixels in ``ignoredPixelMask`` and non-finite pixels
            are left out.
        ignored : `numpy.ndarray`, optional
            More pixels to leave out (boolean, the image's shape): planes
            the caller holds outside the mask.

        Returns
        -------
        background : `~lsst.skyframes.background.BackgroundMI`
            Bins without a usable pixel hold NaN.

        Raises
        ------
        lsst.skyframes.errors.UsageError
            Raised for ``useApprox=True`` or ``algorithm`` None/``"NONE"``,
            which this implementation does not fit.
        """
        self._check_supported()
        pixels, mask = image_and_mask(maskedImage)
        height, width = pixels.array.shape
        bin_x, bin_y = self.config.bin_sizes()
        bad = ~np.isfinite(pixels.array)
        if mask is not None:
            bad |= bad_pixel_mask(mask, list(self.config.ignoredPixelMask))
        if ignored is not None:
            bad |= ignored
        control = BackgroundControl(
            self.config.algorithm,
            min(width // bin_x + 1, width),
            min(height // bin_y + 1, height),
            self.config.undersampleStyle,
            StatisticsControl(),
            self.config.statisticsProperty,
        )
        # Ignored pixels become NaN in a scratch copy, which makeBackground
        # always skips; this also serves images lacking some of the planes.
        scratch = np.where(bad, np.float32(np.nan), pixels.array.astype(np.float32, copy=False))
        return makeBackground(Image(scratch, bbox=pixels.bbox), control)

    def _check_supported(self) -> None:
        config = self.config
        if config.useApprox:
            raise UsageError(
                f"{self.getFullName()}: useApprox=True (a Chebyshev approximation of the background) is not "
                f"implemented; set {self.getFullName().split(':', 1)[-1]}.useApprox=False to interpolate the "
                "bins with `algorithm` (the reference's object masking does so)."
            )
        if config.algorithm in (None, "NONE"):
            raise UsageError(
                f"{self.getFullName()}: algorithm={config.algorithm!r} fits no background; choose one of "
                "CONSTANT, LINEAR, NATURAL_SPLINE or AKIMA_SPLINE."
            )
        stringToInterpStyle(config.algorithm)


# ---------------------------------------------------------------------------------------------------------
# Detection (meas_algorithms' SourceDetectionTask, as far as a mask needs it)
# ---------------------------------------------------------------------------------------------------------


class SourceDetectionConfig(Config):
    """Configuration of `SourceDetectionTask` (meas_algorithms' fields and defaults)."""

    minPixels = RangeField[int](
        doc="Detections (4-connected) with fewer pixels than this are dropped.", default=1, min=0
    )
    isotropicGrow = Field[bool](
        doc="Grow detections by a disk (True) or by afw's Manhattan diamond (False)?", default=False
    )
    combinedGrow = Field[bool](
        doc="Grow all footprints at once, so that they may merge? (The mask is the same either way.)",
        default=True,
    )
    nSigmaToGrow = Field[float](
        doc="Grow detections by int(nSigmaToGrow * sigma + 0.5) pixels; 0: do not grow.", default=2.4
    )
    returnOriginalFootprints = Field[bool](
        doc="Return the footprints before growing? (The mask is grown either way.)", default=False
    )
    thresholdValue = RangeField[float](
        doc="Detection threshold, in units of thresholdType.", default=5.0, min=0.0
    )
    includeThresholdMultiplier = RangeField[float](
        doc="Multiplier of thresholdValue for the pixels included in a detection.", default=1.0, min=0.0
    )
    thresholdType = ChoiceField[str](
        doc="What thresholdValue multiplies.",
        default="pixel_stdev",
        allowed={
            "variance": "the clipped variance of the smoothed image",
            "stdev": "the clipped standard deviation of the smoothed image",
            "value": "nothing: an absolute threshold on the smoothed image",
            "pixel_stdev": "each pixel's standard deviation in the smoothed image (from the variance plane)",
        },
    )
    thresholdPolarity = ChoiceField[str](
        doc="Detect positive sources, negative ones, or both.",
        default="positive",
        allowed={"positive": "positive only", "negative": "negative only", "both": "both"},
    )
    adjustBackground = Field[float](
        doc="Value added to a re-estimated background (reEstimateBackground only).", default=0.0
    )
    reEstimateBackground = Field[bool](
        doc="Re-estimate the background after detection? Not implemented here (object masking requires "
        "False).",
        default=True,
    )
    background = ConfigurableField(
        target=SubtractBackgroundTask, doc="Background re-estimation (reEstimateBackground only)."
    )
    tempLocalBackground = ConfigurableField(
        target=SubtractBackgroundTask, doc="Temporary local background (doTempLocalBackground only)."
    )
    doTempLocalBackground = Field[bool](
        doc="Subtract a temporary local background before finding peaks? Not implemented here (object "
        "masking requires False).",
        default=True,
    )
    tempWideBackground = ConfigurableField(
        target=SubtractBackgroundTask, doc="Temporary wide background (doTempWideBackground only)."
    )
    doTempWideBackground = Field[bool](
        doc="Subtract a temporary wide background before detection? Not implemented here (object "
        "masking requires False).",
        default=False,
    )
    nPeaksMaxSimple = Field[int](
        doc="Peaks per footprint before peaks are re-found (peaks only; no effect on the mask).", default=1
    )
    nSigmaForKernel = Field[float](
        doc="Full width of the smoothing kernel in units of sigma, rounded to an odd number of pixels.",
        default=7.0,
    )
    statsMask = ListField[str](
        doc="Mask planes left out of the image statistics (thresholdType stdev and variance).",
        default=["BAD", "SAT", "EDGE", "NO_DATA"],
    )
    searchEdge = Field[bool](
        doc="Beyond the reference: also search the border the smoothing kernel does not fit in (half its "
        "width), smoothed with reflected edges, instead of marking it EDGE and leaving objects there "
        "unmasked. For detectors small enough that the border is a large share of their pixels.",
        default=False,
    )

    def setDefaults(self) -> None:
        super().setDefaults()
        # meas_algorithms' values for the (unused here) temporary backgrounds.
        self.tempLocalBackground.binSize = 64
        self.tempLocalBackground.algorithm = "AKIMA_SPLINE"
        self.tempLocalBackground.useApprox = False
        self.tempWideBackground.binSize = 512
        self.tempWideBackground.algorithm = "AKIMA_SPLINE"
        self.tempWideBackground.useApprox = False
        for plane in ("DETECTED", "DETECTED_NEGATIVE"):
            if plane in self.tempWideBackground.ignoredPixelMask:
                self.tempWideBackground.ignoredPixelMask.remove(plane)


def kernel_width(sigma: float, nSigmaForKernel: float) -> int:
    """Return the (odd) width in pixels of meas_algorithms' smoothing kernel.

    Parameters
    ----------
    sigma : `float`
        Gaussian sigma (pixels).
    nSigmaForKernel : `float`
        Full width of the kernel in units of sigma.

    Returns
    -------
    width : `int`
        ``(int(sigma * nSigmaForKernel + 0.5) // 2) * 2 + 1``; the border
        marked ``EDGE`` is ``width // 2`` pixels wide.
    """
    return (int(sigma * nSigmaForKernel + 0.5) // 2) * 2 + 1


class SourceDetectionTask(Task):
    """Find the pixels of sources in a background-subtracted image.

    See the module docstring for the steps. The three background steps of
    meas_algorithms' detection (``reEstimateBackground``,
    ``doTempLocalBackground``, ``doTempWideBackground``) are refused.
    """

    ConfigClass = SourceDetectionConfig
    _DefaultName = "sourceDetection"
    config: SourceDetectionConfig

    def __init__(self, schema: Any = None, **kwargs: Any) -> None:
        # ``schema`` is accepted for afw-style construction; no catalogue is made.
        super().__init__(**kwargs)

    def detectFootprints(
        self,
        exposure: MaskedImage,
        doSmooth: bool = True,
        sigma: float | None = None,
        clearMask: bool = True,
        expId: int | None = None,
        *,
        ignored: np.ndarray | None = None,
    ) -> Struct:
        """Detect sources and set the detection mask planes.

        Parameters
        ----------
        exposure : `lsst.images.MaskedImage`
            Background-subtracted image. Its ``DETECTED``,
            ``DETECTED_NEGATIVE`` and ``EDGE`` planes (or their lsst.images
            spellings) are set where the schema has them; the pixels are not
            changed.
        doSmooth : `bool`, optional
            Smooth with the Gaussian before thresholding (no ``EDGE`` border
            without it).
        sigma : `float`
            Gaussian sigma (pixels) of the smoothing and of the growth.
            Required: images here carry no PSF to take it from.
        clearMask : `bool`, optional
            Clear ``DETECTED`` and ``DETECTED_NEGATIVE`` first.
        expId : `int`, optional
            Unused (as in meas_algorithms).
        ignored : `numpy.ndarray`, optional
            More pixels (boolean, the image's shape) that enter the smoothing
            as 0 and are left out of the image statistics.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``positive``, ``negative``: boolean arrays of the grown
            detections (``negative`` None unless the polarity asks for it);
            ``edge``: the ``EDGE`` border; ``threshold``: the threshold in
            image units (the median over the interior for ``pixel_stdev``);
            ``sigma``: the clipped standard deviation of the smoothed image
            (NaN if not measured); ``nGrow``: the growth in pixels.

        Raises
        ------
        lsst.skyframes.errors.UsageError
            Raised if ``sigma`` is missing or not positive, or a background
            step is switched on.
        lsst.skyframes.errors.NoDataError
            Raised for ``thresholdType="pixel_stdev"`` on an image whose
            variance plane has no positive finite pixel in the searched
            interior.
        """
        self._check_supported()
        if sigma is None or not (math.isfinite(sigma) and sigma > 0.0):
            raise UsageError(
                f"{self.getFullName()}.detectFootprints needs the Gaussian sigma (pixels) of the smoothing, "
                f"got {sigma!r}; images here carry no PSF to take it from (MaskObjectsTask passes "
                "detectSigma)."
            )
        config = self.config
        pixels, mask = image_and_mask(exposure)
        array = pixels.array
        height, width = array.shape
        planes = _MaskPlanes(mask)
        if clearMask:
            planes.clear("DETECTED")
            planes.clear("DETECTED_NEGATIVE")

        half = kernel_width(sigma, config.nSigmaForKernel) // 2 if doSmooth else 0
        # The border the kernel does not fit in is EDGE and not searched (the
        # reference), unless searchEdge smooths it with reflected edges.
        border = 0 if config.searchEdge else half
        edge = np.zeros((height, width), dtype=bool)
        if border > 0:
            edge[:border, :] = edge[-border:, :] = True
            edge[:, :border] = edge[:, -border:] = True
        self.metadata["doSmooth"] = doSmooth
        self.metadata["sigma"] = float(sigma)
        self.metadata["smoothingKernelWidth"] = 2 * half + 1
        interior = (slice(border, height - border), slice(border, width - border))
        if height <= 2 * border or width <= 2 * border:
            self.log.warning(
                "The %dx%d image is not wider than the %d px smoothing kernel: every pixel is EDGE and "
                "nothing is detected.",
                width,
                height,
                2 * half + 1,
            )
            edge[:] = True
            planes.add("EDGE", edge)
            empty = np.zeros_like(edge)
            negative = empty.copy() if config.thresholdPolarity != "positive" else None
            return Struct(
                positive=empty, negative=negative, edge=edge, threshold=math.nan, sigma=math.nan, nGrow=0
            )

        # Pixels that carry no sky enter the smoothing as the background (0).
        zeroed = ~np.isfinite(array)
        if mask is not None:
            zeroed |= bad_pixel_mask(mask, [name for name in config.statsMask if name != "EDGE"])
        if ignored is not None:
            zeroed |= ignored
        residual = np.where(zeroed, np.float32(0.0), array.astype(np.float32, copy=False))
        weights = _gaussian_weights(sigma, half) if doSmooth else np.ones(1)
        smoothed = _separable_filter(residual, weights)[interior]

        stats_bad = zeroed.copy()
        if mask is not None:
            stats_bad |= bad_pixel_mask(mask, "EDGE")
        stats_bad = stats_bad[interior]
        noise = math.nan
        kind = config.thresholdType
        factor = config.thresholdValue * config.includeThresholdMultiplier
        if kind in ("stdev", "variance"):
            noise = _clipped_sigma(smoothed, stats_bad)
            if not (math.isfinite(noise) and noise > 0.0):
                self.log.warning(
                    "The smoothed image has no measurable noise (clipped sigma %r); nothing is detected.",
                    noise,
                )
                planes.add("EDGE", edge)
                empty = np.zeros_like(edge)
                negative = empty.copy() if config.thresholdPolarity != "positive" else None
                return Struct(
                    positive=empty, negative=negative, edge=edge, threshold=math.nan, sigma=noise, nGrow=0
                )
            threshold: float | np.ndarray = factor * (noise if kind == "stdev" else noise * noise)
            summary = float(threshold)
        elif kind == "value":
            threshold = summary = factor
        else:  # pixel_stdev
            threshold, summary = self._pixel_threshold(exposure, weights, interior, factor)

        n_grow = int(config.nSigmaToGrow * sigma + 0.5) if config.nSigmaToGrow > 0 else 0
        self.metadata["nGrow"] = n_grow
        results: dict[str, np.ndarray | None] = {"positive": None, "negative": None}
        for polarity, sign in (("positive", 1.0), ("negative", -1.0)):
            if config.thresholdPolarity not in (polarity, "both"):
                continue
            seeds_interior = sign * smoothed > threshold
            seeds = np.zeros((height, width), dtype=bool)
            seeds[interior] = seeds_interior
            if config.minPixels > 1:
                seeds = _drop_small(seeds, config.minPixels)
            grown = _grow(seeds, n_grow, isotropic=config.isotropicGrow)
            results[polarity] = grown
            planes.add("DETECTED" if sign > 0 else "DETECTED_NEGATIVE", grown)
        planes.add("EDGE", edge)
        positive = results["positive"] if results["positive"] is not None else np.zeros_like(edge)
        return Struct(
            positive=positive,
            negative=results["negative"],
            edge=edge,
            threshold=summary,
            sigma=noise,
            nGrow=n_grow,
        )

    def _pixel_threshold(
        self, exposure: Any, weights: np.ndarray, interior: tuple[slice, slice], factor: float
    ) -> tuple[np.ndarray, float]:
        """Per-pixel threshold: factor x the smoothed image's standard deviation."""
        variance = getattr(exposure, "variance", None)
        if variance is None:
            raise NoDataError(
                f"{self.getFullName()}: thresholdType='pixel_stdev' needs a variance plane, and the image "
                f"({type(exposure).__name__}) has none; pass a MaskedImage with a variance, or set "
                "thresholdType='stdev'."
            )
        var = np.asarray(variance.array, dtype=np.float32)
        usable = np.isfinite(var) & (var > 0.0)
        # The variance of a correlation with k is the variance correlated with k**2.
        smoothed_var = _separable_filter(np.where(usable, var, np.float32(0.0)), weights * weights)[interior]
        usable_interior = usable[interior]
        if not usable_interior.any():
            raise NoDataError(
                f"{self.getFullName()}: thresholdType='pixel_stdev' needs a positive variance, and the "
                "image's variance plane has no positive finite pixel in the searched interior; fix the "
                "variance plane or set thresholdType='stdev' (the clipped noise of the smoothed image)."
            )
        threshold = factor * np.sqrt(np.maximum(smoothed_var, 0.0))
        # A pixel without a usable variance is never a seed.
        threshold[~usable_interior] = np.inf
        return threshold, float(np.median(threshold[usable_interior]))

    def _check_supported(self) -> None:
        config = self.config
        switched_on = [
            name
            for name in ("reEstimateBackground", "doTempLocalBackground", "doTempWideBackground")
            if getattr(config, name)
        ]
        if switched_on:
            raise UsageError(
                f"{self.getFullName()}: {', '.join(switched_on)} must be False here: the background steps of "
                "detection are not implemented (object masking requires them off, as the reference's "
                "MaskObjectsConfig does)."
            )


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------


class _MaskPlanes:
    """Set and clear afw-named planes of an lsst.images mask, where it has them."""

    def __init__(self, mask: Any) -> None:
        self._mask = mask

    def name(self, plane: str) -> str | None:
        if self._mask is None:
            return None
        names = set(self._mask.schema.names)
        if plane in names:
            return plane
        alias = LEGACY_PLANE_ALIASES.get(plane)
        return alias if alias in names else None

    def clear(self, plane: str) -> None:
        name = self.name(plane)
        if name is not None:
            self._mask.clear(name)

    def add(self, plane: str, where: np.ndarray) -> None:
        name = self.name(plane)
        if name is not None and where.any():
            self._mask.set(name, where)


def _gaussian_weights(sigma: float, half: int) -> np.ndarray:
    """Normalised Gaussian samples at -half..half (afw's separable detection kernel)."""
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def _n_threads() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        available = os.cpu_count() or 1
    return max(1, min(8, available))


def _separable_filter(array: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Correlate a float32 image with ``weights`` along both axes, in row strips on threads.

    Each strip overlaps its neighbours by the kernel's half width, so the
    result equals one call on the whole image; values within the half width
    of the border depend on the boundary mode and are not used by detection.
    """
    if weights.size == 1:
        return array * np.float32(weights[0] ** 2)
    height = array.shape[0]
    pad = weights.size // 2

    def filter_rows(part: np.ndarray) -> np.ndarray:
        out = scipy.ndimage.correlate1d(part, weights, axis=0, output=np.float32, mode="reflect")
        return scipy.ndimage.correlate1d(out, weights, axis=1, output=np.float32, mode="reflect")

    n_strips = min(_n_threads(), height // _MIN_STRIP_ROWS)
    if n_strips <= 1:
        return filter_rows(array)
    edges = np.linspace(0, height, n_strips + 1).astype(int)
    out = np.empty_like(array, dtype=np.float32)

    def strip(index: int) -> None:
        lo, hi = edges[index], edges[index + 1]
        start, stop = max(lo - pad, 0), min(hi + pad, height)
        out[lo:hi] = filter_rows(array[start:stop])[lo - start : hi - start]

    _map_threads(strip, n_strips)
    return out


def _map_threads(func: Callable[[int], None], n: int) -> None:
    with ThreadPoolExecutor(max_workers=n) as executor:
        for _ in executor.map(func, range(n)):
            pass


def _clipped_sigma(smoothed: np.ndarray, bad: np.ndarray, clip: float = 3.0, n_iter: int = 3) -> float:
    """Return afw's STDEVCLIP of the good pixels of the smoothed image.

    The first pass keeps values within ``clip`` x 0.741301 x IQR of the
    median (`~lsst.skyframes.statistics.IQR_TO_SIGMA`), each further pass
    those within ``clip`` standard deviations of the previous survivors'
    mean; the result is the standard deviation (ddof=1) of the last
    survivors. Large images are subsampled on a regular grid (about a
    million pixels): the smoothed image is correlated over several pixels,
    so this loses little. NaN with fewer than ``_MIN_SIGMA_SAMPLES`` pixels.
    """
    step = max(1, int(math.sqrt(smoothed.size / _SIGMA_SAMPLES)))
    values = smoothed[::step, ::step][~bad[::step, ::step]]
    if values.size < _MIN_SIGMA_SAMPLES and step > 1:
        values = smoothed[~bad]
    if values.size < _MIN_SIGMA_SAMPLES:
        return math.nan
    values = values.astype(np.float64)
    q25, median, q75 = np.percentile(values, [25.0, 50.0, 75.0])
    centre, width = median, IQR_TO_SIGMA * (q75 - q25)
    kept = values
    for _ in range(n_iter):
        survivors = values[np.abs(values - centre) <= clip * width]
        if survivors.size < 2:
            break
        kept = survivors
        centre, width = float(kept.mean()), float(kept.std(ddof=1))
    return float(kept.std(ddof=1))


def _drop_small(seeds: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop 4-connected groups of fewer than ``min_pixels`` pixels."""
    labels, n = scipy.ndimage.label(seeds)
    if n == 0:
        return seeds
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def _grow(seeds: np.ndarray, radius: int, *, isotropic: bool) -> np.ndarray:
    return grow_isotropic(seeds, radius) if isotropic else grow_manhattan(seeds, radius)


def grow_isotropic(seeds: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by a disk: pixels within ``radius`` of a True pixel.

    afw's isotropic footprint growth (``Stencil.CIRCLE``).

    Parameters
    ----------
    seeds : `numpy.ndarray`
        2-d boolean array.
    radius : `int`
        Growth radius in pixels; a pixel is set if some seed lies at a
        Euclidean distance ``<= radius``.

    Returns
    -------
    grown : `numpy.ndarray`
        Boolean array of the same shape.
    """
    dy = np.arange(-abs(int(radius)), abs(int(radius)) + 1)
    return _grow_by_rows(seeds, radius, np.floor(np.sqrt(radius * radius - dy * dy) + 1e-9))


def _grow_by_rows(seeds: np.ndarray, radius: int, reach: np.ndarray) -> np.ndarray:
    """Grow ``seeds`` by a stencil given, per row offset dy = -radius..radius, as its half width ``reach``.

    A pixel is set if some seed in row y + dy lies within ``reach[dy]`` of it
    along the row: a disk for ``reach = floor(sqrt(r**2 - dy**2))``, afw's
    Manhattan diamond for ``reach = r - |dy|``.
    """
    seeds = np.ascontiguousarray(seeds, dtype=bool)
    radius = int(radius)
    if radius <= 0 or not seeds.any():
        return seeds.copy()
    hdist = np.empty(seeds.shape, dtype=np.int32)
    _row_distance(seeds, radius, hdist)
    grown = np.empty(seeds.shape, dtype=np.bool_)
    _column_reach(hdist, np.asarray(reach, dtype=np.int32), grown)
    return grown


@njit(cache=True, parallel=True)
def _row_distance(seeds: np.ndarray, radius: int, out: np.ndarray) -> None:  # pragma: no cover - numba
    """Distance along each row to the nearest seed, capped at radius + 1."""
    height, width = seeds.shape
    cap = radius + 1
    for y in prange(height):
        d = cap
        for x in range(width):
            if seeds[y, x]:
                d = 0
            elif d < cap:
                d += 1
            out[y, x] = d
        d = cap
        for x in range(width - 1, -1, -1):
            if seeds[y, x]:
                d = 0
            elif d < cap:
                d += 1
            if d < out[y, x]:
                out[y, x] = d


@njit(cache=True, parallel=True)
def _column_reach(hdist: np.ndarray, reach: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """out[y, x] = any over dy of hdist[y + dy, x] <= reach[dy] (a disk of rows)."""
    height, width = hdist.shape
    radius = (reach.size - 1) // 2
    for y in prange(height):
        for x in range(width):
            out[y, x] = False
        for k in range(reach.size):
            yy = y + k - radius
            if yy < 0 or yy >= height:
                continue
            limit = reach[k]
            for x in range(width):
                if hdist[yy, x] <= limit:
                    out[y, x] = True


def grow_manhattan(seeds: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by a diamond: pixels within Manhattan distance ``radius`` of a True pixel.

    afw's non-isotropic footprint growth (``Stencil.MANHATTAN``).

    Parameters
    ----------
    seeds : `numpy.ndarray`
        2-d boolean array.
    radius : `int`
        Growth radius in pixels; a pixel is set if some seed lies at
        ``|dx| + |dy| <= radius``.

    Returns
    -------
    grown : `numpy.ndarray`
        Boolean array of the same shape.
    """
    dy = np.arange(-abs(int(radius)), abs(int(radius)) + 1)
    return _grow_by_rows(seeds, radius, int(radius) - np.abs(dy))
