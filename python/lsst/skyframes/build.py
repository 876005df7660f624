"""The four PipelineTasks that build a sky frame (the Rubin cp_pipe ``cpSky`` steps).

- `CpSkyImageTask` (instrument, physical_filter, exposure, detector): processed
  image -> object-masked image and a focal-plane background of that detector;
- `CpSkyScaleMeasureTask` (instrument, physical_filter, exposure): detectors'
  focal-plane backgrounds -> merged background and the sky level (scale);
- `CpSkySubtractBackgroundTask` (instrument, physical_filter, exposure,
  detector): masked image, merged background, scale -> normalised residual
  background;
- `CpSkyCombineTask` (instrument, physical_filter, detector): residual
  backgrounds of every exposure -> the ``sky`` calibration.

``runQuantum`` only unpacks inputs and packs outputs; ``run`` calls plain
functions and Task methods, so every step runs in a notebook without a butler.
"""

from __future__ import annotations

__all__ = [
    "CpSkyCombineConfig",
    "CpSkyCombineTask",
    "CpSkyImageConfig",
    "CpSkyImageTask",
    "CpSkyScaleMeasureConfig",
    "CpSkyScaleMeasureTask",
    "CpSkySubtractBackgroundConfig",
    "CpSkySubtractBackgroundTask",
    "SkyFocalPlaneConfig",
    "resolve_focal_plane_config",
]

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lsst.images import MaskedImage
from lsst.pex.config import ConfigField, ConfigurableField, Field, ListField
from lsst.pipe.base import (
    PipelineTask,
    PipelineTaskConfig,
    PipelineTaskConnections,
    Struct,
)
from lsst.pipe.base import connectionTypes as cT

from .background import BackgroundList
from .camera import Camera, DetectorGeometry
from .connections import camera_connection
from .errors import NoDataError
from .focal_plane import FocalPlaneBackground, FocalPlaneBackgroundConfig
from .images import image_and_mask
from .masking import MaskObjectsTask
from .pca import SkyPcaTask
from .quality import quality_report, select_inputs
from .sky_measurement import SkyMeasurementTask
from .statistics import bad_pixel_mask

# ---------------------------------------------------------------------------------------------------------
# Focal-plane configuration resolved from the camera
# ---------------------------------------------------------------------------------------------------------


class SkyFocalPlaneConfig(FocalPlaneBackgroundConfig):
    """`FocalPlaneBackgroundConfig` whose sizes may come from the camera.

    ``xSize``, ``ySize`` and ``pixelSize`` left as `None` are filled in by
    `resolve_focal_plane_config`: bins one detector wide and high, in the
    camera's pixel size.
    """

    xSize = Field[float](
        doc="Bin size in x (focal-plane mm); None: the widest detector's width.", default=None, optional=True
    )
    ySize = Field[float](
        doc="Bin size in y (focal-plane mm); None: the tallest detector's height.",
        default=None,
        optional=True,
    )
    pixelSize = Field[float](
        doc="Pixel size (focal-plane mm); None: the camera's most common pixel size.",
        default=None,
        optional=True,
    )

    def validate(self) -> None:
        # Check every other field; unset sizes are resolved against the camera at run time.
        resolved = FocalPlaneBackgroundConfig()
        for name in resolved._fields:
            value = getattr(self, name)
            setattr(resolved, name, value if value is not None else 1.0)
        resolved.validate()


def resolve_focal_plane_config(
    config: FocalPlaneBackgroundConfig, camera: Camera
) -> FocalPlaneBackgroundConfig:
    """Return a copy of ``config`` with unset sizes taken from the camera.

    Parameters
    ----------
    config : `FocalPlaneBackgroundConfig`
        Configuration with possibly `None` ``xSize``, ``ySize``, ``pixelSize``.
    camera : `Camera`
        Camera whose detectors set the defaults: the largest detector width
        and height in millimetres, and the most common pixel size.

    Returns
    -------
    resolved : `FocalPlaneBackgroundConfig`
        A validated plain config; ``config`` is not modified.
    """
    resolved = FocalPlaneBackgroundConfig()
    for name in resolved._fields:
        setattr(resolved, name, getattr(config, name))
    detectors = list(camera)
    sizes = [d.pixel_size_mm for d in detectors]
    if resolved.pixelSize is None:
        resolved.pixelSize = max(set(sizes), key=sizes.count)
    if resolved.xSize is None:
        resolved.xSize = max(d.width * d.pixel_size_mm for d in detectors)
    if resolved.ySize is None:
        resolved.ySize = max(d.height * d.pixel_size_mm for d in detectors)
    resolved.validate()
    return resolved


# ---------------------------------------------------------------------------------------------------------
# Step 1: mask objects, one-detector focal-plane background
# ---------------------------------------------------------------------------------------------------------


class CpSkyImageConnections(
    PipelineTaskConnections, dimensions=("instrument", "physical_filter", "exposure", "detector")
):
    inputExp = cT.Input(
        name="post_isr_image",
        doc="Processed single-detector image (e.g. after ISR).",
        storageClass="MaskedImageV2",
        dimensions=("instrument", "exposure", "detector"),
    )
    camera = camera_connection()
    maskedExp = cT.Output(
        name="cpSkyMaskedIsrExp",
        doc="Image with objects masked and replaced by a smooth background.",
        storageClass="MaskedImageV2",
        dimensions=("instrument", "exposure", "detector"),
    )
    maskedBkg = cT.Output(
        name="cpSkyDetectorBackground",
        doc="Focal-plane background of this detector alone.",
        storageClass="SkyFocalPlaneBackground",
        dimensions=("instrument", "exposure", "detector"),
    )


class CpSkyImageConfig(PipelineTaskConfig, pipelineConnections=CpSkyImageConnections):
    """Configuration of `CpSkyImageTask`."""

    maskList = ListField[str](
        doc="Mask planes whose pixels are replaced by the smooth background after object masking.",
        default=["DETECTED", "BAD", "NO_DATA", "SAT"],
    )
    largeScaleBackground = ConfigField[SkyFocalPlaneConfig](
        doc="Large-scale focal-plane background (sizes default to one detector, from the camera).",
        dtype=SkyFocalPlaneConfig,
    )
    maskObjects = ConfigurableField(target=MaskObjectsTask, doc="Object masking.")

    def setDefaults(self) -> None:
        super().setDefaults()
        # Keep DETECTED set after the masked pixels are replaced by the 256-px
        # model. The sky-frame statistics ignore DETECTED, so the replaced
        # pixels (which carry a smoothed pattern) do not enter the sky frame;
        # clearing it, as MaskObjectsTask does by default, biased 256-px test
        # detectors by ~15 sigma per bin.
        self.maskObjects.clearDetected = False


class CpSkyImageTask(PipelineTask):
    """Mask objects in one detector image and bin it onto the focal plane."""

    ConfigClass = CpSkyImageConfig
    _DefaultName = "cpSkyImage"
    config: CpSkyImageConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.makeSubtask("maskObjects")

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        inputs = butlerQC.get(inputRefs)
        detector = inputs["camera"][butlerQC.quantum.dataId["detector"]]
        outputs = self.run(inputExp=inputs["inputExp"], camera=inputs["camera"], detector=detector)
        butlerQC.put(outputs, outputRefs)

    def run(self, inputExp: MaskedImage, camera: Camera, detector: DetectorGeometry) -> Struct:
        """Mask objects and measure this detector's focal-plane background.

        Parameters
        ----------
        inputExp : `lsst.images.MaskedImage`
            Processed image of ``detector``; modified in place.
        camera : `Camera`
            Camera geometry (sets the focal-plane grid).
        detector : `DetectorGeometry`
            The detector ``inputExp`` belongs to.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``maskedExp`` (the masked image) and ``maskedBkg`` (a
            `FocalPlaneBackground` holding only this detector).
        """
        _, mask = image_and_mask(inputExp)
        if mask is not None and bad_pixel_mask(mask, list(self.config.maskList)).all():
            # Nothing to detect on; the focal-plane accumulation skips it anyway.
            self.log.warning("Detector %s is fully masked; skipping object masking.", detector.name)
        else:
            self.maskObjects.run(inputExp, list(self.config.maskList))
        config = resolve_focal_plane_config(self.config.largeScaleBackground, camera)
        background = FocalPlaneBackground.fromCamera(config, camera)
        background.addCcd(inputExp, detector)
        return Struct(maskedExp=inputExp, maskedBkg=background)


# ---------------------------------------------------------------------------------------------------------
# Step 2a: merge per exposure, measure the sky level
# ---------------------------------------------------------------------------------------------------------


class CpSkyScaleMeasureConnections(
    PipelineTaskConnections, dimensions=("instrument", "physical_filter", "exposure")
):
    inputBkgs = cT.Input(
        name="cpSkyDetectorBackground",
        doc="Focal-plane backgrounds of each detector.",
        storageClass="SkyFocalPlaneBackground",
        dimensions=("instrument", "exposure", "detector"),
        multiple=True,
    )
    outputBkg = cT.Output(
        name="cpSkyExpBackground",
        doc="Focal-plane background of the whole exposure.",
        storageClass="SkyFocalPlaneBackground",
        dimensions=("instrument", "exposure"),
    )
    outputScale = cT.Output(
        name="cpSkyExpScale",
        doc="Sky level of the exposure: median of the merged focal-plane background.",
        storageClass="StructuredDataDict",
        dimensions=("instrument", "exposure"),
    )


class CpSkyScaleMeasureConfig(PipelineTaskConfig, pipelineConnections=CpSkyScaleMeasureConnections):
    """Configuration of `CpSkyScaleMeasureTask`."""


class CpSkyScaleMeasureTask(PipelineTask):
    """Merge the detectors' focal-plane backgrounds and measure the sky level."""

    ConfigClass = CpSkyScaleMeasureConfig
    _DefaultName = "cpSkyScaleMeasure"

    def run(self, inputBkgs: Sequence[FocalPlaneBackground]) -> Struct:
        """Merge focal-plane backgrounds and take the median as the scale.

        Parameters
        ----------
        inputBkgs : sequence of `FocalPlaneBackground`
            One per detector of the exposure.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``outputBkg`` (merged background) and ``outputScale`` (a dict
            with ``scale``, the median of the merged stats image).

        Raises
        ------
        lsst.skyframes.errors.NoDataError
            Raised if there are no inputs or the sky level is not positive.
        """
        if not inputBkgs:
            raise NoDataError("cpSkyScaleMeasure got no focal-plane backgrounds for this exposure.")
        background = inputBkgs[0].clone()
        for other in inputBkgs[1:]:
            background.merge(other)
        stats = background.getStatsImage()
        finite = stats[np.isfinite(stats)]
        if finite.size == 0:
            raise NoDataError(
                f"cpSkyScaleMeasure: no focal-plane bin of this exposure's {len(inputBkgs)} detectors has "
                "usable pixels (all masked or NaN); exclude the exposure or check its masks."
            )
        scale = float(np.median(finite))
        if not scale > 0:
            raise NoDataError(
                f"cpSkyScaleMeasure: the exposure's sky level is {scale}; sky frames need exposures with "
                "positive sky (check the input collection for biases or darks)."
            )
        self.log.info(
            "Focal-plane background min/max %.3f/%.3f; scale %.3f", np.nanmin(stats), np.nanmax(stats), scale
        )
        return Struct(outputBkg=background, outputScale={"scale": scale, "nDetectors": len(inputBkgs)})


# ---------------------------------------------------------------------------------------------------------
# Step 2b: subtract the large-scale model, normalise, bin
# ---------------------------------------------------------------------------------------------------------


class CpSkySubtractBackgroundConnections(
    PipelineTaskConnections, dimensions=("instrument", "physical_filter", "exposure", "detector")
):
    inputExp = cT.Input(
        name="cpSkyMaskedIsrExp",
        doc="Object-masked image.",
        storageClass="MaskedImageV2",
        dimensions=("instrument", "exposure", "detector"),
    )
    inputBkg = cT.Input(
        name="cpSkyExpBackground",
        doc="Focal-plane background of the exposure.",
        storageClass="SkyFocalPlaneBackground",
        dimensions=("instrument", "exposure"),
    )
    inputScale = cT.Input(
        name="cpSkyExpScale",
        doc="Sky level of the exposure.",
        storageClass="StructuredDataDict",
        dimensions=("instrument", "exposure"),
    )
    camera = camera_connection()
    outputBkg = cT.Output(
        name="cpSkyExpResidualBackground",
        doc="Binned residual background in units of the sky level.",
        storageClass="SkyBackgroundList",
        dimensions=("instrument", "exposure", "detector"),
    )


class CpSkySubtractBackgroundConfig(
    PipelineTaskConfig, pipelineConnections=CpSkySubtractBackgroundConnections
):
    """Configuration of `CpSkySubtractBackgroundTask`."""

    sky = ConfigurableField(target=SkyMeasurementTask, doc="Sky measurement (binning of the residual).")


class CpSkySubtractBackgroundTask(PipelineTask):
    """Subtract the large-scale model, divide by the sky level, bin the residual."""

    ConfigClass = CpSkySubtractBackgroundConfig
    _DefaultName = "cpSkySubtractBackground"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.makeSubtask("sky")

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        inputs = butlerQC.get(inputRefs)
        detector = inputs.pop("camera")[butlerQC.quantum.dataId["detector"]]
        outputs = self.run(**inputs, detector=detector)
        butlerQC.put(outputs, outputRefs)

    def run(
        self,
        inputExp: MaskedImage,
        inputBkg: FocalPlaneBackground,
        inputScale: dict[str, float],
        detector: DetectorGeometry,
    ) -> Struct:
        """Return the normalised residual background of one detector.

        Parameters
        ----------
        inputExp : `lsst.images.MaskedImage`
            Object-masked image; modified in place (model subtracted,
            divided by the scale).
        inputBkg : `FocalPlaneBackground`
            The exposure's merged focal-plane background.
        inputScale : `dict`
            ``{"scale": sky level}``.
        detector : `DetectorGeometry`
            The detector of ``inputExp``.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``outputBkg``: `measureBackground` of the normalised residual.
        """
        scale = float(inputScale["scale"])
        pixels, _ = image_and_mask(inputExp)
        model = inputBkg.toCcdBackground(detector, pixels.bbox)
        pixels.array -= model.getImage().array
        pixels.array /= scale
        return Struct(outputBkg=self.sky.measureBackground(inputExp))


# ---------------------------------------------------------------------------------------------------------
# Step 3: combine exposures into the sky frame
# ---------------------------------------------------------------------------------------------------------


class CpSkyCombineConnections(
    PipelineTaskConnections, dimensions=("instrument", "physical_filter", "detector")
):
    inputBkgs = cT.Input(
        name="cpSkyExpResidualBackground",
        doc="Normalised residual backgrounds of every exposure.",
        storageClass="SkyBackgroundList",
        dimensions=("instrument", "exposure", "detector"),
        multiple=True,
    )
    outputCalib = cT.Output(
        name="sky",
        doc="Sky frame: combined residual background, in units of the sky level (with nComponents > 1: "
        "component 1 of the templates, made exactly as with nComponents = 1).",
        storageClass="MaskedImageV2",
        dimensions=("instrument", "physical_filter", "detector"),
        isCalibration=True,
    )
    outputComponents = cT.Output(
        name="sky_components",
        doc="The nComponents sky templates (only with nComponents > 1): a background list whose element k "
        "is template k+1 in the afw BackgroundList FITS layout; element 0 is the sky frame.",
        storageClass="SkyBackgroundList",
        dimensions=("instrument", "physical_filter", "detector"),
        isCalibration=True,
    )
    outputQuality = cT.Output(
        name="sky_quality",
        doc="Quality report of the sky frame (inputs used/rejected, noise, residuals); JSON.",
        storageClass="StructuredDataDict",
        dimensions=("instrument", "physical_filter", "detector"),
    )

    def __init__(self, *, config: CpSkyCombineConfig | None = None) -> None:
        super().__init__(config=config)
        if config is None or config.nComponents == 1:
            del self.outputComponents
            return
        # The principal components are those of the whole focal plane (one
        # coefficient per exposure describes every detector), so one quantum
        # sees every detector of a physical filter and writes all of them.
        self.dimensions.remove("detector")
        for name in ("outputCalib", "outputComponents", "outputQuality"):
            setattr(self, name, dataclasses.replace(getattr(self, name), multiple=True))


class CpSkyCombineConfig(PipelineTaskConfig, pipelineConnections=CpSkyCombineConnections):
    """Configuration of `CpSkyCombineTask`."""

    sky = ConfigurableField(target=SkyMeasurementTask, doc="Sky measurement (combination).")
    minExposures = Field[int](
        doc="Fewest exposures a sky frame may be built from (HSC guidance: 20 at least, 50 ideally).",
        default=1,
        check=lambda n: n >= 1,
    )
    nComponents = Field[int](
        doc="Number of sky templates per detector. 1: one sky frame per (physical_filter, detector) "
        "quantum, as the reference. K > 1: a robust PCA over the whole focal plane (one quantum per "
        "physical_filter) writes `sky` (component 1) and `sky_components` (all K) per detector. The "
        "quantum's dimensions change with it, and so do those of <label>_metadata and <label>_log: in a "
        "repository that has the per-detector ones, run K > 1 under another label "
        "(pipelines/BuildSkyTemplates.yaml uses cpSkyTemplates).",
        default=1,
        check=lambda n: n >= 1,
    )
    pca = ConfigurableField(
        target=SkyPcaTask,
        doc="Robust PCA of the templates (nComponents > 1): clip, nIter, maxBadFraction, "
        "maxResidualFraction. Its own nComponents and sky are not used: this task's are.",
    )


class CpSkyCombineTask(PipelineTask):
    """Combine the exposures' residual backgrounds into the ``sky`` calibration.

    With ``nComponents`` > 1 it also builds multi-component templates
    (`~lsst.skyframes.pca.SkyPcaTask`) of every detector at once; see
    `runComponents`.
    """

    ConfigClass = CpSkyCombineConfig
    _DefaultName = "cpSkyCombine"
    config: CpSkyCombineConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.makeSubtask("sky")
        self.makeSubtask("pca")

    def runQuantum(self, butlerQC: Any, inputRefs: Any, outputRefs: Any) -> None:
        inputs = butlerQC.get(inputRefs)
        if self.config.nComponents == 1:
            exposures = [ref.dataId["exposure"] for ref in inputRefs.inputBkgs]
            outputs = self.run(inputBkgs=inputs["inputBkgs"], exposureIds=exposures)
            butlerQC.put(outputs, outputRefs)
            return
        exposures = sorted({int(ref.dataId["exposure"]) for ref in inputRefs.inputBkgs})
        column = {exposure: i for i, exposure in enumerate(exposures)}
        backgrounds: dict[int, list[BackgroundList | None]] = {}
        for ref, background in zip(inputRefs.inputBkgs, inputs["inputBkgs"], strict=True):
            row = backgrounds.setdefault(int(ref.dataId["detector"]), [None] * len(exposures))
            row[column[int(ref.dataId["exposure"])]] = background
        outputs = self.runComponents(backgrounds, exposures)
        for name in ("outputCalib", "outputComponents", "outputQuality"):
            for ref in getattr(outputRefs, name):
                butlerQC.put(getattr(outputs, name)[int(ref.dataId["detector"])], ref)

    def run(self, inputBkgs: Sequence[BackgroundList], exposureIds: Sequence[int] = ()) -> Struct:
        """Average the residual backgrounds into a sky frame and report on it.

        Parameters
        ----------
        inputBkgs : sequence of `BackgroundList`
            One single-element list per exposure.
        exposureIds : sequence of `int`, optional
            Exposure ids of the inputs, recorded in the metadata and report.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``outputCalib``: the sky frame, with metadata ``OBSTYPE = SKY``,
            ``CALIB_CREATION_DATE``/``TIME``, ``SKY_NINPUTS`` and the input
            exposure ids ``SKY_INPUT_<i>``; ``outputQuality``: the
            `~lsst.skyframes.quality.quality_report`.

        Raises
        ------
        lsst.skyframes.errors.NoDataError
            Raised if fewer than ``minExposures`` inputs have a finite bin.
        """
        used, used_ids, rejected = select_inputs(inputBkgs, exposureIds)
        self._checkInputs(used, rejected)
        sky = self.sky.averageBackgrounds(used)
        _stamp_calibration(sky, used_ids)
        return Struct(outputCalib=sky, outputQuality=quality_report(sky, used, used_ids, rejected))

    def runComponents(
        self, backgrounds: Mapping[int, Sequence[BackgroundList | None]], exposureIds: Sequence[int]
    ) -> Struct:
        """Build ``nComponents`` templates of every detector from the whole focal plane.

        Parameters
        ----------
        backgrounds : `~collections.abc.Mapping` [`int`, sequence of `BackgroundList` or `None`]
            Per detector id, one single-element residual background per
            exposure in ``exposureIds`` order, `None` where the exposure lacks
            the detector.
        exposureIds : sequence of `int`
            The exposures.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            Dicts keyed by detector id: ``outputCalib`` (component 1, the
            ``sky`` frame, stamped as `run` stamps it), ``outputComponents``
            (`BackgroundList` of the K templates, element 0 being the sky
            frame) and ``outputQuality`` (`~lsst.skyframes.quality.quality_report`
            with the variance explained per component, the exposures the PCA
            rejected with reasons, each input's coefficients and its residual
            from its K-component model); also ``varianceExplained`` (K,).

        Raises
        ------
        lsst.skyframes.errors.NoDataError
            Raised if a detector has fewer than ``minExposures`` usable
            inputs, or too few exposures survive the PCA's rejection.
        """
        ids = [int(e) for e in exposureIds]
        result = self.pca.run(backgrounds, ids, nComponents=self.config.nComponents, sky=self.sky)
        # Logged per detector by _checkInputs, with the other rejections.
        pca_rejected = dict(result.rejectedExposures)
        self.log.info(
            "%d templates from %d exposures; variance explained per component %s",
            self.config.nComponents,
            len(result.usedExposures),
            ", ".join(f"{v:.3g}" for v in result.varianceExplained),
        )
        coefficient_of = {e: result.coefficients[i] for i, e in enumerate(ids)}
        calibs, components, reports = {}, {}, {}
        for detector, per_exposure in backgrounds.items():
            present = [(e, bg) for e, bg in zip(ids, per_exposure, strict=True) if bg is not None]
            candidates = [(e, bg) for e, bg in present if e not in pca_rejected]
            used, used_ids, rejected = select_inputs([bg for _, bg in candidates], [e for e, _ in candidates])
            rejected += [
                {"exposure": e, "reason": f"robust PCA: {pca_rejected[e]}"}
                for e, _ in present
                if e in pca_rejected
            ]
            self._checkInputs(used, rejected, detector)
            frames = result.skyFrames[detector]
            _stamp_calibration(frames[0], used_ids)
            calibs[detector] = frames[0]
            components[detector] = BackgroundList(
                *(self.sky.exposureToBackground(frame)[0] for frame in frames)
            )
            reports[detector] = quality_report(
                frames[0],
                used,
                used_ids,
                rejected,
                variance_explained=result.varianceExplained,
                templates=frames,
                coefficients=np.array([coefficient_of[e] for e in used_ids]),
            )
        self.metadata["varianceExplained"] = [float(v) for v in result.varianceExplained]
        return Struct(
            outputCalib=calibs,
            outputComponents=components,
            outputQuality=reports,
            varianceExplained=result.varianceExplained,
        )

    def _checkInputs(
        self, used: Sequence[BackgroundList], rejected: Sequence[dict[str, Any]], detector: int | None = None
    ) -> None:
        for entry in rejected:
            self.log.warning("Rejecting exposure %s: %s", entry["exposure"], entry["reason"])
        if len(used) < self.config.minExposures:
            where = "" if detector is None else f" for detector {detector}"
            raise NoDataError(
                f"cpSkyCombine has {len(used)} usable exposures{where} ({len(rejected)} rejected); at least "
                f"{self.config.minExposures} are configured (minExposures). Add exposures or lower it."
            )


def _stamp_calibration(sky: MaskedImage, exposure_ids: Sequence[int]) -> None:
    """Write the calibration header cards of a sky frame (creation time, inputs)."""
    now = datetime.datetime.now(datetime.UTC)
    sky.metadata["OBSTYPE"] = "SKY"
    sky.metadata["CALIB_CREATION_DATE"] = now.date().isoformat()
    sky.metadata["CALIB_CREATION_TIME"] = now.time().isoformat(timespec="seconds")
    sky.metadata["SKY_NINPUTS"] = len(exposure_ids)
    for index, exposure in enumerate(sorted(exposure_ids)):
        sky.metadata[f"SKY_INPUT_{index}"] = int(exposure)
