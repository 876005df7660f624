"""`MaskObjectsTask`: find and remove astronomical objects before sky modelling.

A re-implementation, on lsst.images types and without afw or meas_algorithms,
of the Rubin pipelines' ``lsst.pipe.tasks.background.MaskObjectsTask`` used by
cp_pipe's ``cpSkyImage`` and by ``SkyCorrectionTask``:

1. ``nIter`` times: fit a coarse background (``backgroundBinSize`` bins,
   Akima spline, clipped mean, ``ignoredPixelMask`` planes ignored), subtract
   it, clear ``DETECTED``, smooth with a Gaussian of sigma ``detectSigma``
   (a PSF proxy), threshold at ``thresholdValue`` times the clipped standard
   deviation of the smoothed image (afw's ``STDEVCLIP``, as the reference's
   ``thresholdType="stdev"``; positive only), grow the detections
   isotropically by ``int(nSigmaToGrow * detectSigma + 0.5)`` pixels, set
   ``DETECTED`` and restore the background.
2. Replace the pixels of ``DETECTED`` and the requested mask planes: by a
   finer background fit (``interpolateBinSize`` bins, detections ignored) if
   ``doInterpolate``, else by the median of the other pixels (as the
   reference does).
3. If ``clearDetected``: clear ``DETECTED``.

With the reference's defaults about 10% of the pixels of pure noise are
detected after one round and 14% after three (2.5-sigma excursions of the
smoothed noise, grown by 12 pixels; later rounds fit the background without
the positive excursions, which biases it low by ~0.1 sigma of the smoothed
image).  The masking is meant to be generous: sky frames are hurt by faint
object wings, not by lost sky pixels.

Everything is vectorised: the smoothing is SciPy's separable Gaussian filter
(run on row strips in threads, which SciPy allows by releasing the GIL), the
growth a two-pass bounded Euclidean distance test in a parallel numba kernel.
"""

from __future__ import annotations

__all__ = ["MaskObjectsConfig", "MaskObjectsTask"]

import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import scipy.ndimage
from numba import njit, prange

from lsst.images import Image, MaskedImage
from lsst.pex.config import Config, Field, ListField, RangeField
from lsst.pipe.base import Struct, Task
from lsst.utils.timer import timeMethod

from .background import BackgroundControl, makeBackground
from .images import image_and_mask
from .interpolate import Interpolate, UndersampleStyle
from .mask_planes import LEGACY_PLANE_ALIASES
from .statistics import IQR_TO_SIGMA, Property, StatisticsControl, bad_pixel_mask

_SIGMA_SAMPLES = 1_000_000
"""About how many pixels of the smoothed image the noise estimate uses."""

_MIN_SIGMA_SAMPLES = 100
"""Fewest pixels from which the smoothed image's noise is estimated."""

_GAUSSIAN_TRUNCATE = 3.5
"""Gaussian kernel radius in sigma (afw's detection kernel is 7 sigma wide)."""

_MIN_STRIP_ROWS = 256
"""Images with fewer rows per thread are smoothed in one call."""


class MaskObjectsConfig(Config):
    """Configuration of `MaskObjectsTask` (defaults as in the Rubin pipelines).

    Counts and sizes are `RangeField`s, so nonsense values (``nIter`` < 1,
    ``detectSigma`` <= 0, bin sizes < 1) are rejected on assignment and by
    `validate` with a `~lsst.pex.config.FieldValidationError`.
    """

    nIter = RangeField[int](doc="Rounds of [background, detection].", default=3, min=1)
    detectSigma = RangeField[float](
        doc="Sigma (pixels) of the Gaussian that smooths the image before thresholding (a PSF proxy).",
        default=5.0,
        min=0.0,
        inclusiveMin=False,
    )
    thresholdValue = RangeField[float](
        doc="Detection threshold in standard deviations of the smoothed image (positive only).",
        default=2.5,
        min=0.0,
        inclusiveMin=False,
    )
    nSigmaToGrow = RangeField[float](
        doc="Grow detections isotropically by int(nSigmaToGrow * detectSigma + 0.5) pixels.",
        default=2.4,
        min=0.0,
    )
    backgroundBinSize = RangeField[int](
        doc="Bin size (pixels) of the coarse background subtracted before each detection.",
        default=1024,
        min=1,
    )
    doInterpolate = Field[bool](
        doc="Replace the pixels of the requested mask planes by a smooth background model?", default=True
    )
    interpolateBinSize = RangeField[int](
        doc="Bin size (pixels) of the background model used for the replacement.", default=256, min=1
    )
    ignoredPixelMask = ListField[str](
        doc="Mask planes ignored when fitting the backgrounds; their pixels (but for DETECTED) are set to "
        "the background before smoothing and left out of the noise estimate.",
        default=["BAD", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "NO_DATA", "SAT"],
    )
    clearDetected = Field[bool](doc="Clear the DETECTED plane at the end of run?", default=True)


class MaskObjectsTask(Task):
    """Iteratively detect objects, then replace them with a smooth background.

    The image passed to `run` is modified in place: the pixels of the
    requested mask planes are replaced (``doInterpolate``) and the
    ``DETECTED`` plane is set to the detection, then cleared
    (``clearDetected``).  Everything else is left bit-for-bit unchanged: the
    backgrounds are subtracted from a temporary copy, not from the image.

    Metadata recorded by `run`: ``nIterations`` (detection rounds done),
    ``nDetectedPixels`` (pixels of the final detection), ``detectedFraction``,
    ``detectionThreshold`` and ``smoothedSigma`` (of the last round, in image
    units), ``nReplacedPixels``, ``growRadius`` and ``fullyMasked`` (True when
    the image had no usable pixel and nothing was done).
    """

    ConfigClass = MaskObjectsConfig
    _DefaultName = "maskObjects"
    config: MaskObjectsConfig

    @timeMethod
    def run(self, image: MaskedImage, maskPlanes: Iterable[str] | None = None) -> Struct:
        """Detect objects and replace them with a smooth background, in place.

        Parameters
        ----------
        image : `lsst.images.MaskedImage` or `lsst.images.VisitImage`
            The image; its image plane and ``DETECTED`` plane are modified.
            ``DETECTED`` pixels already set are ignored by the first
            background fit only (as in the reference, where they are part of
            ``ignoredPixelMask``); every round's detection replaces them.
        maskPlanes : `str` or iterable of `str`, optional
            Planes whose pixels are replaced; ``DETECTED`` is always added
            (as in the reference), so the default is ``["DETECTED"]``.
            Planes the image lacks are skipped (afw names fall back to their
            lsst.images spelling, e.g. SAT -> SATURATED).  ``DETECTED`` means
            the final detection, also for an image without that plane.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``detected``: boolean `numpy.ndarray`, the final (grown)
            detection; ``background``: the smooth model
            (`lsst.images.Image`) used for the replacement, or `None` when
            ``doInterpolate`` is False (the reference then replaces with the
            median of the other finite pixels) or nothing was done;
            ``nDetected``: `int` number of detected pixels.

        Raises
        ------
        TypeError
            Raised if ``image`` is not a masked image.

        Notes
        -----
        An image whose pixels are all non-finite or in ``ignoredPixelMask``
        cannot have a background fitted: a warning is logged and the image
        is returned unchanged, with nothing detected.  ``DETECTED_NEGATIVE``
        is treated as a static ignored plane and left as it is (the
        reference's detection clears it each round).
        """
        config = self.config
        planes = _replacement_planes(maskPlanes)
        pixels, mask = image_and_mask(image)
        if mask is None:
            raise TypeError(
                "MaskObjectsTask.run needs an image with a mask (lsst.images MaskedImage or VisitImage); "
                f"got a plain {type(image).__name__}. Wrap it with MaskedImage(image, mask_schema=...)."
            )
        array = pixels.array
        height, width = array.shape
        detected_plane = _plane_name(mask, "DETECTED")
        ignore_detected = "DETECTED" in config.ignoredPixelMask
        static_bad = bad_pixel_mask(mask, [name for name in config.ignoredPixelMask if name != "DETECTED"])
        static_bad |= ~np.isfinite(array)
        no_detection = np.zeros_like(static_bad)
        detected = (
            mask.get(detected_plane) if detected_plane is not None and ignore_detected else no_detection
        )
        self.metadata["growRadius"] = self.growRadius
        if np.all(static_bad | detected):
            self.log.warning(
                "All %d pixels of the %dx%d image are non-finite or in the ignored mask planes %s; "
                "no background can be fitted, so no objects are masked and the image is left unchanged.",
                array.size,
                width,
                height,
                list(config.ignoredPixelMask),
            )
            self._record(0, 0, array.size, math.nan, math.nan, 0, fully_masked=True)
            return Struct(detected=no_detection, background=None, nDetected=0)

        background = None
        threshold = sigma = math.nan
        n_done = 0
        for iteration in range(config.nIter):
            # The background is subtracted from a scratch copy inside _detect,
            # which restores it exactly (no float round-off on the image).
            fitted = _fit_background(
                array, static_bad | detected if ignore_detected else static_bad, config.backgroundBinSize
            )
            if fitted is None:
                self.log.warning(
                    "Round %d: the previous round's detections cover every usable pixel, so no background "
                    "can be fitted; keeping that detection.",
                    iteration + 1,
                )
                break
            background = fitted
            detected, threshold, sigma = self._detect(array, background, static_bad)
            n_done += 1
            self.log.debug(
                "Round %d: threshold %.4g (clipped sigma of the smoothed image %.4g), %d pixels detected.",
                iteration + 1,
                threshold,
                sigma,
                int(detected.sum()),
            )
        if detected_plane is not None:
            mask.clear(detected_plane)
            mask.set(detected_plane, detected)

        replace = self._replacement_mask(mask, planes, detected)
        model_image = None
        n_replaced = 0
        if config.doInterpolate:
            model = _fit_background(
                array, static_bad | detected if ignore_detected else static_bad, config.interpolateBinSize
            )
            if model is None:
                self.log.warning(
                    "Every usable pixel is detected; replacing with the last coarse background "
                    "(%d px bins) instead of a %d px one.",
                    config.backgroundBinSize,
                    config.interpolateBinSize,
                )
                model = background
            array[replace] = model[replace]
            n_replaced = int(replace.sum())
            model_image = Image(model, bbox=pixels.bbox)
        else:
            # The reference replaces with the median of the pixels it keeps.
            keep = ~replace & np.isfinite(array)
            if keep.any():
                array[replace] = np.median(array[keep])
                n_replaced = int(replace.sum())
            else:
                self.log.warning("No pixel is left outside %s; nothing is replaced.", planes)
        if config.clearDetected and detected_plane is not None:
            mask.clear(detected_plane)
        n_detected = int(detected.sum())
        self.log.info(
            "Masked objects: %d of %d pixels detected (%.1f%%) after %d rounds; %d pixels replaced.",
            n_detected,
            array.size,
            100.0 * n_detected / array.size,
            n_done,
            n_replaced,
        )
        self._record(n_done, n_detected, array.size, threshold, sigma, n_replaced, fully_masked=False)
        return Struct(detected=detected, background=model_image, nDetected=n_detected)

    @property
    def growRadius(self) -> int:
        """Radius (pixels) by which detections are grown, as the reference rounds it."""
        return int(self.config.nSigmaToGrow * self.config.detectSigma + 0.5)

    def _detect(
        self, array: np.ndarray, background: np.ndarray, static_bad: np.ndarray
    ) -> tuple[np.ndarray, float, float]:
        """Detect positive objects in ``array - background``.

        Returns the grown detection, the threshold and the smoothed image's
        noise sigma.  Ignored (``static_bad``) pixels are set to 0 (the
        background) before smoothing and are not used for the noise estimate;
        detections may extend over them.
        """
        residual = np.subtract(array, background, dtype=np.float32)
        residual[static_bad] = 0.0
        smoothed = _smooth(residual, self.config.detectSigma)
        sigma = _clipped_sigma(smoothed, static_bad)
        if not (math.isfinite(sigma) and sigma > 0.0):
            self.log.warning(
                "The smoothed image has no measurable noise (sigma %r); nothing is detected this round.",
                sigma,
            )
            return np.zeros(array.shape, dtype=bool), math.nan, sigma
        threshold = self.config.thresholdValue * sigma
        seeds = smoothed > threshold
        return grow_isotropic(seeds, self.growRadius), threshold, sigma

    @staticmethod
    def _replacement_mask(mask: Any, planes: list[str], detected: np.ndarray) -> np.ndarray:
        """Pixels in any of ``planes``; DETECTED is the final detection."""
        others = [name for name in planes if name != "DETECTED"]
        replace = bad_pixel_mask(mask, others) if others else np.zeros_like(detected)
        if "DETECTED" in planes:
            replace |= detected
        return replace

    def _record(
        self,
        n_iter: int,
        n_detected: int,
        n_pixels: int,
        threshold: float,
        sigma: float,
        n_replaced: int,
        *,
        fully_masked: bool,
    ) -> None:
        self.metadata["nIterations"] = n_iter
        self.metadata["nDetectedPixels"] = n_detected
        self.metadata["detectedFraction"] = n_detected / n_pixels if n_pixels else 0.0
        self.metadata["detectionThreshold"] = float(threshold)
        self.metadata["smoothedSigma"] = float(sigma)
        self.metadata["nReplacedPixels"] = n_replaced
        self.metadata["fullyMasked"] = fully_masked


def _replacement_planes(maskPlanes: str | Iterable[str] | None) -> list[str]:
    """DETECTED followed by the requested planes, without repeats (as the reference)."""
    requested = [maskPlanes] if isinstance(maskPlanes, str) else list(maskPlanes or ())
    return list(dict.fromkeys(["DETECTED", *requested]))


def _plane_name(mask: Any, name: str) -> str | None:
    """Return the name under which ``mask`` holds afw plane ``name``, or None."""
    names = set(mask.schema.names)
    if name in names:
        return name
    alias = LEGACY_PLANE_ALIASES.get(name)
    return alias if alias in names else None


def _fit_background(array: np.ndarray, bad: np.ndarray, bin_size: int) -> np.ndarray | None:
    """Fit and render a background as the reference's SubtractBackgroundTask does.

    ``max(ceil(W / bin_size), 1)`` by ``max(ceil(H / bin_size), 1)`` bins,
    clipped mean (3 sigma, 3 passes) of the pixels not in ``bad`` (and
    finite), Akima spline with REDUCE_INTERP_ORDER.  Returns the float32
    full-resolution model, or None if no bin has a usable pixel.
    """
    height, width = array.shape
    control = BackgroundControl(
        Interpolate.AKIMA_SPLINE,
        max(math.ceil(width / bin_size), 1),
        max(math.ceil(height / bin_size), 1),
        UndersampleStyle.REDUCE_INTERP_ORDER,
        StatisticsControl(),
        Property.MEANCLIP,
    )
    # Ignored pixels become NaN in a scratch copy, which makeBackground always
    # skips; this also serves images lacking some of the ignored planes.
    scratch = array.astype(np.float32, copy=True)
    scratch[bad] = np.nan
    background = makeBackground(Image(scratch), control)
    if not np.isfinite(background.getStatsImage().image.array).any():
        return None
    return background.getImageF().array


def _n_threads() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        available = os.cpu_count() or 1
    return max(1, min(8, available))


def _smooth(residual: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smooth ``residual`` (float32), in row strips on several threads.

    Each strip is filtered with enough overlap (the kernel radius) that the
    result equals one `scipy.ndimage.gaussian_filter` call on the whole image
    (``reflect`` boundaries, kernel truncated at 3.5 sigma).
    """
    height = residual.shape[0]
    n_strips = min(_n_threads(), height // _MIN_STRIP_ROWS)
    if n_strips <= 1:
        return scipy.ndimage.gaussian_filter(residual, sigma, output=np.float32, truncate=_GAUSSIAN_TRUNCATE)
    pad = int(_GAUSSIAN_TRUNCATE * sigma + 0.5)
    edges = np.linspace(0, height, n_strips + 1).astype(int)
    out = np.empty_like(residual, dtype=np.float32)

    def strip(index: int) -> None:
        lo, hi = edges[index], edges[index + 1]
        start, stop = max(lo - pad, 0), min(hi + pad, height)
        part = scipy.ndimage.gaussian_filter(
            residual[start:stop], sigma, output=np.float32, truncate=_GAUSSIAN_TRUNCATE
        )
        out[lo:hi] = part[lo - start : hi - start]

    _map_threads(strip, n_strips)
    return out


def _map_threads(func: Callable[[int], None], n: int) -> None:
    with ThreadPoolExecutor(max_workers=n) as executor:
        for _ in executor.map(func, range(n)):
            pass


def _clipped_sigma(smoothed: np.ndarray, bad: np.ndarray, clip: float = 3.0, n_iter: int = 3) -> float:
    """Return the clipped standard deviation of the good pixels of the smoothed image.

    afw's ``STDEVCLIP``, which the reference detection thresholds against:
    the first pass keeps values within ``clip`` × 0.741301 × IQR of the
    median (`~lsst.skyframes.statistics.IQR_TO_SIGMA`, afw's
    ``IQ_TO_STDEV``), each further pass those within ``clip`` standard deviations of
    the previous survivors' mean; the result is the standard deviation
    (ddof=1) of the last pass's survivors.  Objects are not excluded (as in
    the reference, whose statistics mask omits DETECTED), the clipping
    limits their weight.

    A regular subsample (every ``step``-th row and column, about a million
    pixels) is used for large images; the smoothed image is correlated over
    several pixels, so this loses little.  Returns NaN with fewer than
    ``_MIN_SIGMA_SAMPLES`` good pixels.
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


def grow_isotropic(seeds: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by a disk: pixels within ``radius`` of a True pixel.

    Parameters
    ----------
    seeds : `numpy.ndarray`
        2-d boolean array.
    radius : `int`
        Growth radius in pixels; a pixel is set if some seed lies at a
        Euclidean distance ``<= radius`` (afw's isotropic footprint dilation).

    Returns
    -------
    grown : `numpy.ndarray`
        Boolean array of the same shape.
    """
    seeds = np.ascontiguousarray(seeds, dtype=bool)
    radius = int(radius)
    if radius <= 0 or not seeds.any():
        return seeds.copy()
    dy = np.arange(-radius, radius + 1)
    reach = np.floor(np.sqrt(radius * radius - dy * dy) + 1e-9).astype(np.int32)
    hdist = np.empty(seeds.shape, dtype=np.int32)
    _row_distance(seeds, radius, hdist)
    grown = np.empty(seeds.shape, dtype=np.bool_)
    _column_reach(hdist, reach, grown)
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
