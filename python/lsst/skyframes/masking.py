"""`MaskObjectsTask`: find and remove astronomical objects before sky modelling.

A re-implementation, on lsst.images types and without afw or meas_algorithms,
of ``lsst.pipe.tasks.background.MaskObjectsTask`` as cp_pipe's ``cpSkyImage``
(``maskTask``) and ``SkyCorrectionTask`` (``maskObjects``) use it, with the
reference's structure, so that the Rubin stack's override files apply:

- subtasks ``subtractBackground`` and ``interpolate`` (meas_algorithms'
  ``SubtractBackgroundTask`` configuration) and ``detection``
  (``SourceDetectionTask`` configuration), see `lsst.skyframes._detection`;
- ``nIter``, ``detectSigma``, ``doInterpolate`` and the reference's
  ``setDefaults``: detection at 2.5 (``thresholdType`` ``pixel_stdev``, the
  meas_algorithms default), backgrounds of 1024 px bins for detection and
  256 px for the replacement, no Chebyshev approximation.

`findObjects` runs ``nIter`` rounds of [fit the ``subtractBackground``
background, detect on the image minus it with the ``detectSigma`` Gaussian
(``DETECTED`` cleared and set again, the kernel's border marked ``EDGE``)].
`removeObjects` replaces the pixels of ``DETECTED`` and the requested planes:
by the ``interpolate`` background (fitted without them) if ``doInterpolate``,
after which ``DETECTED`` is cleared, else by the median of the other pixels.
`run` does both.

The image is only modified by `removeObjects`: the backgrounds are subtracted
from a scratch copy, so `findObjects` changes the mask alone (the reference
subtracts and adds back in place, which leaves float round-off).

Beyond the reference, ``clearDetected=False`` keeps ``DETECTED`` set after
the replacement, so that later steps whose mask lists hold ``DETECTED`` (the
sky-frame bins) leave the replaced pixels out instead of taking the smooth
model for sky. It is off by default; the project's build pipelines switch it
on (see the README).
"""

from __future__ import annotations

__all__ = ["MaskObjectsConfig", "MaskObjectsTask", "grow_isotropic", "grow_manhattan"]

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from lsst.images import Image, Mask, MaskedImage
from lsst.pex.config import Config, ConfigurableField, Field, FieldValidationError, RangeField
from lsst.pipe.base import Struct, Task
from lsst.utils.timer import timeMethod

from ._detection import (
    SourceDetectionTask,
    SubtractBackgroundTask,
    _MaskPlanes,
    grow_isotropic,
    grow_manhattan,
    kernel_width,
)
from .errors import BoxMismatchError
from .images import image_and_mask
from .statistics import bad_pixel_mask

_DETECTION_BACKGROUND_STEPS = ("reEstimateBackground", "doTempLocalBackground", "doTempWideBackground")


class MaskObjectsConfig(Config):
    """Configuration of `MaskObjectsTask` (the reference's fields, subtasks and defaults)."""

    nIter = RangeField[int](doc="Number of rounds of [background, detection].", default=3, min=1)
    subtractBackground = ConfigurableField(
        target=SubtractBackgroundTask, doc="Background subtracted before each detection."
    )
    detection = ConfigurableField(target=SourceDetectionTask, doc="Source detection.")
    detectSigma = RangeField[float](
        doc="Sigma (pixels) of the Gaussian that smooths the image for detection, and grows detections "
        "(deliberately wider than a PSF, to reach the faint wings of objects).",
        default=5.0,
        min=0.0,
        inclusiveMin=False,
    )
    doInterpolate = Field[bool](
        doc="Replace the removed pixels by a smooth background model (else by the median)?", default=True
    )
    interpolate = ConfigurableField(
        target=SubtractBackgroundTask, doc="Background model that replaces the removed pixels."
    )
    clearDetected = Field[bool](
        doc="With doInterpolate: clear DETECTED after the replacement, as the reference does? False (a "
        "skyframes option) keeps the replaced pixels flagged, so the sky-frame bins leave them out.",
        default=True,
    )

    def setDefaults(self) -> None:
        super().setDefaults()
        self.detection.reEstimateBackground = False
        self.detection.doTempLocalBackground = False
        self.detection.doTempWideBackground = False
        self.detection.thresholdValue = 2.5
        self.subtractBackground.binSize = 1024
        self.subtractBackground.useApprox = False
        self.interpolate.binSize = 256
        self.interpolate.useApprox = False

    def validate(self) -> None:
        super().validate()
        switched_on = [name for name in _DETECTION_BACKGROUND_STEPS if getattr(self.detection, name)]
        if switched_on:
            raise FieldValidationError(
                type(self).detection,
                self,
                f"object masking needs detection.{', detection.'.join(switched_on)} = False (as the "
                "reference requires): its own rounds of background subtraction replace them.",
            )
        for name in ("subtractBackground", "interpolate"):
            if getattr(self, name).useApprox:
                raise FieldValidationError(
                    type(self)._fields[name],
                    self,
                    f"{name}.useApprox=True (a Chebyshev approximation) is not implemented; set "
                    f"{name}.useApprox=False (the reference's default for object masking), which "
                    f"interpolates the bins with {name}.algorithm.",
                )


class MaskObjectsTask(Task):
    """Iteratively detect objects, then replace them with a smooth background.

    Metadata recorded: ``nIterations`` (detection rounds done),
    ``nDetectedPixels`` and ``detectedFraction`` (of the final detection),
    ``detectionThreshold`` (last round, image units; the median over the
    image for ``pixel_stdev``), ``smoothedSigma`` (clipped noise of the
    smoothed image, NaN unless measured), ``growRadius``, ``edgeWidth``,
    ``nReplacedPixels`` and ``fullyMasked`` (True when the image had no
    usable pixel and nothing was done).
    """

    ConfigClass = MaskObjectsConfig
    _DefaultName = "maskObjects"
    config: MaskObjectsConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.makeSubtask("detection")
        self.makeSubtask("interpolate")
        self.makeSubtask("subtractBackground")

    @timeMethod
    def run(
        self,
        exposure: MaskedImage,
        maskPlanes: Iterable[str] | None = None,
        *,
        detections: np.ndarray | None = None,
    ) -> Struct:
        """Find objects and replace them, in place.

        Parameters
        ----------
        exposure : `lsst.images.MaskedImage` or `lsst.images.VisitImage`
            The image; its mask gains ``DETECTED`` (cleared again after a
            replacement unless ``clearDetected`` is False) and ``EDGE``, and
            its image plane the replacement.
        maskPlanes : `str` or iterable of `str`, optional
            Planes whose pixels are replaced besides ``DETECTED`` (afw names;
            planes the image lacks are skipped, afw names fall back to their
            lsst.images spelling, e.g. SAT -> SATURATED).
        detections : `numpy.ndarray`, optional
            Boolean, of the image's shape: a detection to use in place of
            `findObjects` (a skyframes option, e.g. cpSkyStackDetect's
            detection on the stacked exposures); it is set as ``DETECTED``
            and replaced as a detection found here would be.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``detected``: boolean `numpy.ndarray` of the final detection;
            ``background``: the `lsst.images.Image` model used for the
            replacement (None without ``doInterpolate`` or when nothing was
            done); ``nDetected``: number of detected pixels.
        """
        if detections is not None:
            return self._useDetections(exposure, maskPlanes, detections)
        found = self.findObjects(exposure)
        if found.fullyMasked:
            return Struct(detected=found.detected, background=None, nDetected=0)
        removed = self.removeObjects(exposure, maskPlanes, detected=found.detected)
        return Struct(detected=found.detected, background=removed.background, nDetected=found.nDetected)

    def _useDetections(
        self, exposure: MaskedImage, maskPlanes: Iterable[str] | None, detections: np.ndarray
    ) -> Struct:
        """Replace a given detection as `run` replaces one it found."""
        pixels, mask = _image_and_required_mask(exposure)
        if np.shape(detections) != pixels.array.shape:
            raise BoxMismatchError(
                f"MaskObjectsTask.run: detections of shape {np.shape(detections)} for an image of shape "
                f"{pixels.array.shape}; give a boolean array of the image's shape."
            )
        detected = np.asarray(detections, dtype=bool)
        # As detection here would: the given detection replaces any the image came with.
        planes = _MaskPlanes(mask)
        planes.clear("DETECTED")
        planes.clear("DETECTED_NEGATIVE")
        planes.add("DETECTED", detected)
        n_detected = int(detected.sum())
        self.log.info(
            "Given detection: %d of %d pixels (%.1f%%).",
            n_detected,
            detected.size,
            100.0 * n_detected / max(1, detected.size),
        )
        self._record(0, n_detected, detected.size, math.nan, math.nan, 0, fully_masked=False)
        removed = self.removeObjects(exposure, maskPlanes, detected=detected)
        return Struct(detected=detected, background=removed.background, nDetected=n_detected)

    def findObjects(self, exposure: MaskedImage) -> Struct:
        """Find objects with ``nIter`` rounds of background and detection; set ``DETECTED``.

        Parameters
        ----------
        exposure : `lsst.images.MaskedImage` or `lsst.images.VisitImage`
            The image; only its mask changes (``DETECTED``,
            ``DETECTED_NEGATIVE`` with a negative polarity, ``EDGE``).

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``detected`` (boolean array), ``nDetected``, ``fullyMasked``.

        Raises
        ------
        TypeError
            Raised if ``exposure`` has no mask.
        """
        pixels, mask = _image_and_required_mask(exposure)
        array = pixels.array
        height, width = array.shape
        planes = _MaskPlanes(mask)
        detected = (
            mask.get(planes.name("DETECTED")) if planes.name("DETECTED") else np.zeros(array.shape, bool)
        )
        negative = np.zeros(array.shape, dtype=bool)
        # Planes the mask cannot hold are carried here for the later rounds' fits.
        carried = self._carried_planes(planes)
        sigma = self.config.detectSigma
        self.metadata["growRadius"] = self.growRadius
        self.metadata["edgeWidth"] = kernel_width(sigma, self.config.detection.nSigmaForKernel) // 2

        usable = np.isfinite(array) & ~self._ignored(mask, planes, carried, detected, negative, None)
        if not usable.any():
            self.log.warning(
                "All %d pixels of the %dx%d image are non-finite or in subtractBackground.ignoredPixelMask "
                "%s; no background can be fitted, so no objects are masked and the image is left unchanged.",
                array.size,
                width,
                height,
                list(self.config.subtractBackground.ignoredPixelMask),
            )
            self._record(0, 0, array.size, math.nan, math.nan, 0, fully_masked=True)
            return Struct(detected=np.zeros(array.shape, bool), nDetected=0, fullyMasked=True)

        edge = None
        threshold = noise = math.nan
        n_done = 0
        for iteration in range(self.config.nIter):
            ignored = self._ignored(mask, planes, carried, detected, negative, edge)
            if not (np.isfinite(array) & ~ignored).any():
                self.log.warning(
                    "Round %d: the previous round's detections cover every usable pixel, so no background "
                    "can be fitted; keeping that detection.",
                    iteration + 1,
                )
                break
            background = self.subtractBackground.fitBackground(exposure, ignored=ignored).getImageF().array
            residual = MaskedImage(
                # The image's unit too: lsst.images refuses a variance with
                # units beside an image without (every VisitImage has units).
                Image(np.subtract(array, background, dtype=np.float32), bbox=pixels.bbox, unit=pixels.unit),
                mask=mask,
                variance=exposure.variance,
            )
            found = self.detection.detectFootprints(residual, sigma=sigma, clearMask=True)
            detected = found.positive
            negative = found.negative if found.negative is not None else np.zeros_like(detected)
            edge = found.edge if edge is None else edge | found.edge
            threshold, noise = found.threshold, found.sigma
            n_done += 1
            self.log.debug(
                "Round %d: threshold %.4g, %d pixels detected.", iteration + 1, threshold, int(detected.sum())
            )
        n_detected = int(detected.sum())
        self.log.info(
            "Found objects: %d of %d pixels detected (%.1f%%) after %d rounds.",
            n_detected,
            array.size,
            100.0 * n_detected / array.size,
            n_done,
        )
        self._record(n_done, n_detected, array.size, threshold, noise, 0, fully_masked=False)
        return Struct(detected=detected, nDetected=n_detected, fullyMasked=False)

    def removeObjects(
        self,
        exposure: MaskedImage,
        maskPlanes: str | Iterable[str] | None = None,
        *,
        detected: np.ndarray | None = None,
    ) -> Struct:
        """Replace the pixels of ``DETECTED`` and ``maskPlanes``.

        Parameters
        ----------
        exposure : `lsst.images.MaskedImage` or `lsst.images.VisitImage`
            The image, modified in place.
        maskPlanes : `str` or iterable of `str`, optional
            Planes replaced besides ``DETECTED``.
        detected : `numpy.ndarray`, optional
            The detection, for images whose mask has no ``DETECTED`` plane;
            by default the mask's plane.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``background``: the replacement model (`lsst.images.Image`), or
            None without ``doInterpolate``; ``nReplaced``.
        """
        pixels, mask = image_and_mask(exposure)
        planes = _MaskPlanes(mask)
        array = pixels.array
        if detected is None:
            name = planes.name("DETECTED")
            detected = mask.get(name) if name else np.zeros(array.shape, bool)
        others = [name for name in _requested(maskPlanes) if name != "DETECTED"]
        replace = detected | (bad_pixel_mask(mask, others) if others else False)
        model_image = None
        n_replaced = 0
        if self.config.doInterpolate:
            carried = None if planes.name("DETECTED") else detected
            model = self.interpolate.fitBackground(exposure, ignored=carried).getImageF().array
            if not np.isfinite(model).any():
                self.log.warning("No pixel is left to fit the replacement background; nothing is replaced.")
            else:
                array[replace] = model[replace]
                n_replaced = int(replace.sum())
                model_image = Image(model, bbox=pixels.bbox)
            if self.config.clearDetected:
                planes.clear("DETECTED")
        else:
            # As the reference: the median of the pixels kept.
            keep = ~replace & np.isfinite(array)
            if keep.any():
                array[replace] = np.median(array[keep])
                n_replaced = int(replace.sum())
            else:
                self.log.warning("No pixel is left outside DETECTED and %s; nothing is replaced.", others)
        self.metadata["nReplacedPixels"] = n_replaced
        return Struct(background=model_image, nReplaced=n_replaced)

    @property
    def growRadius(self) -> int:
        """Radius (pixels) by which detections are grown, as the reference rounds it."""
        nsigma = self.config.detection.nSigmaToGrow
        return int(nsigma * self.config.detectSigma + 0.5) if nsigma > 0 else 0

    def _carried_planes(self, planes: _MaskPlanes) -> set[str]:
        return {name for name in ("DETECTED", "DETECTED_NEGATIVE", "EDGE") if planes.name(name) is None}

    def _ignored(
        self,
        mask: Any,
        planes: _MaskPlanes,
        carried: set[str],
        detected: np.ndarray,
        negative: np.ndarray,
        edge: np.ndarray | None,
    ) -> np.ndarray:
        """Pixels the next background fit leaves out beyond the mask's own planes."""
        listed = set(self.config.subtractBackground.ignoredPixelMask)
        ignored = np.zeros(detected.shape, dtype=bool)
        if "DETECTED" in listed and "DETECTED" in carried:
            ignored |= detected
        if "DETECTED_NEGATIVE" in listed and "DETECTED_NEGATIVE" in carried:
            ignored |= negative
        if "EDGE" in listed and "EDGE" in carried and edge is not None:
            ignored |= edge
        if mask is not None:
            ignored |= bad_pixel_mask(mask, list(listed))
        return ignored

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


def _image_and_required_mask(exposure: MaskedImage) -> tuple[Image, Mask]:
    """Return the image and mask planes, refusing an image without a mask."""
    pixels, mask = image_and_mask(exposure)
    if mask is None:
        raise TypeError(
            "MaskObjectsTask needs an image with a mask (lsst.images MaskedImage or VisitImage); "
            f"got a plain {type(exposure).__name__}. Wrap it with MaskedImage(image, mask_schema=...)."
        )
    return pixels, mask


def _requested(maskPlanes: str | Iterable[str] | None) -> list[str]:
    """The requested planes, without repeats."""
    requested = [maskPlanes] if isinstance(maskPlanes, str) else list(maskPlanes or ())
    return list(dict.fromkeys(requested))
