"""The four PipelineTasks that build a sky frame (the Rubin cp_pipe ``cpSky`` steps).

- `CpSkyImageTask` (instrument, physical_filter, exposure, detector): processed
  image -> object mask (what masking changed, `~lsst.skyframes.object_mask.ObjectMask`;
  the whole masked image too with ``doWriteMaskedExp``, as cp_pipe) and a
  focal-plane background of that detector;
- `CpSkyScaleMeasureTask` (instrument, physical_filter, exposure): detectors'
  focal-plane backgrounds -> merged background and the sky level (scale);
- `CpSkySubtractBackgroundTask` (instrument, physical_filter, exposure,
  detector): the processed image's image plane, read again, with its object
  mask (the masked image, bit for bit), merged background, scale ->
  normalised residual background;
- `CpSkyCombineTask` (instrument, physical_filter, detector): residual
  backgrounds of every exposure -> the ``sky`` calibration, with cp_pipe's
  calibration header (`calibration_header`), dated from the exposure records
  in the data IDs of its deferred ``inputExpHandles`` (no image is read).

``runQuantum`` only unpacks inputs and packs outputs; ``run`` calls plain
functions and Task methods, so every step runs in a notebook without a butler.

One bad input costs only itself: an exposure without usable data is dropped by
cpSkyScaleMeasure (it writes only ``cpSkyExpScale``, with the reason), so
pipe_base skips its cpSkySubtractBackground quanta; cpSkyCombine reads every
exposure's ``cpSkyExpScale`` and lists the drop in ``sky_quality``. A detector
without usable pixels gives a residual without finite bins, which cpSkyCombine
rejects for that detector alone.

Cameras with two kinds of sensor (LSSTCam's E2V and ITL): with
``includeAlternateBackground`` on cpSkyScaleMeasure and cpSkySubtractBackground
(cp_pipe's option, off by default), the detectors of each ``physical_type``
of the camera are merged into a focal-plane background and sky level of their
own: the first type in sorted order gives ``cpSkyExpBackground`` and
``scale``, the second ``cpSkyExpBackgroundAlternate`` and ``scaleAlternate``
(with ``detectorType`` and ``detectorTypeAlternate`` in ``cpSkyExpScale``),
and each detector is normalised by its own type's. With the option off these
connections do not exist and nothing changes.

The residuals' bins are set by cpSkySubtractBackground's ``sky.background``;
cpSkyCombine's must agree (the pipelines' contracts, and a run-time check of
the inputs). Fields of a ``sky`` or ``pca`` subtask that a build task never
reads are refused by ``validate`` when set (`refuse_unused_fields`).
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
    "InputExposure",
    "calibration_header",
    "describe",
    "dropped_exposures",
    "input_exposures_of",
    "refuse_scale_fit_fields",
    "refuse_unused_fields",
]

import dataclasses
import datetime
import os
import tempfile
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import astropy.time
import numpy as np

from lsst.daf.butler import DataCoordinate
from lsst.images import Image, MaskedImage
from lsst.pex.config import (
    ChoiceField,
    Config,
    ConfigField,
    ConfigurableField,
    Field,
    FieldValidationError,
    ListField,
)
from lsst.pex.config.configurableField import ConfigurableInstance
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

from .background import BackgroundList
from .camera import Camera, DetectorGeometry
from .connections import camera_connection
from .errors import BoxMismatchError, CameraError, ConfigMismatchError, MissingMetadataError, NoDataError
from .focal_plane import FocalPlaneBackground, FocalPlaneBackgroundConfig
from .images import image_and_mask
from .mask_planes import DETECTION_PLANES, split_detection_planes
from .masking import MaskObjectsTask
from .object_mask import ObjectMask
from .pca import SkyPcaTask
from .quality import quality_report, select_inputs
from .sky_measurement import (
    SkyMeasurementConfig,
    SkyMeasurementTask,
    algorithm_style,
    measurement_bin_edges,
    measurement_bin_sizes,
)
from .stack_detection import STACK_MASK_PLANE
from .statistics import bad_pixel_mask


def describe(data_id: Any) -> str:
    """Name a quantum's input for the log: exposure, physical filter and detector, as far as known."""
    keys = dict(data_id.mapping) if hasattr(data_id, "mapping") else dict(data_id)
    parts = [f"exposure {keys['exposure']}"] if "exposure" in keys else []
    if "physical_filter" in keys:
        parts.append(f"(physical_filter {keys['physical_filter']})")
    if "detector" in keys:
        parts.append(f"detector {keys['detector']}")
    return " ".join(parts) or str(data_id)


# Fields of SkyMeasurementConfig that only the fitting of a sky frame's scale reads
# (measureScale, solveScales: SkyCorrectionTask); building a sky frame reads none of them.
SCALE_FIT_FIELDS = ("skyIter", "skyRej", "xNumSamples", "yNumSamples", "stats")


def _same(value: Any, other: Any) -> bool:
    value, other = (v.value if isinstance(v, ConfigurableInstance) else v for v in (value, other))
    return value.compare(other) if isinstance(value, Config) else value == other


def _refuse(config: Config, name: str, message: str) -> None:
    raise FieldValidationError(type(config)._fields[name], config, message)


def refuse_unused_fields(config: Config, names: Sequence[str], prefix: str, task: str, why: str) -> None:
    """Refuse values other than the defaults for fields a task does not read.

    Parameters
    ----------
    config : `lsst.pex.config.Config`
        A subtask's configuration, e.g. a build task's ``sky``.
    names : sequence of `str`
        Its fields that the task never reads.
    prefix : `str`
        Where ``config`` sits in the task's configuration (e.g. ``"sky."``).
    task : `str`
        The task's name, for the message.
    why : `str`
        What the task uses instead, or where the fields do take effect.

    Raises
    ------
    lsst.pex.config.FieldValidationError
        Raised for the first field that differs from its default: a value
        there would be accepted and silently ignored.
    """
    default = type(config)()
    for name in names:
        value, expected = getattr(config, name), getattr(default, name)
        if not _same(value, expected):
            shown = (
                "its defaults"
                if isinstance(value, Config | ConfigurableInstance)
                else f"its default {expected!r}"
            )
            _refuse(config, name, f"{prefix}{name} is set but not used by {task}: {why} Leave it at {shown}.")


def refuse_scale_fit_fields(sky: SkyMeasurementConfig, task: str, does: str) -> None:
    """Refuse a build task's ``sky`` scale-fit fields (`SCALE_FIT_FIELDS`) when set.

    Parameters
    ----------
    sky : `SkyMeasurementConfig`
        The task's ``sky`` configuration.
    task : `str`
        The task's name, for the message.
    does : `str`
        What the task does with ``sky.background`` instead.

    Raises
    ------
    lsst.pex.config.FieldValidationError
        Raised if one of the fields differs from its default.
    """
    why = (
        f"it only {does} (sky.background); the scale fit these fields configure runs when a sky frame is "
        "applied (skyCorr:sky.*)."
    )
    refuse_unused_fields(sky, SCALE_FIT_FIELDS, "sky.", task, why)


# ---------------------------------------------------------------------------------------------------------
# Step 1: mask objects, one-detector focal-plane background
# ---------------------------------------------------------------------------------------------------------


class CpSkyImageConnections(
    PipelineTaskConnections, dimensions=("instrument", "physical_filter", "exposure", "detector")
):
    inputExp = cT.Input(
        name="post_isr_image",
        doc="Processed single-detector image (e.g. after ISR). Only the planes masking needs are read: "
        "image and mask, and the variance for detection.thresholdType='pixel_stdev' or doWriteMaskedExp.",
        storageClass="MaskedImageV2",
        dimensions=("instrument", "exposure", "detector"),
        deferLoad=True,
    )
    camera = camera_connection()
    objectMask = cT.Output(
        name="cpSkyObjectMask",
        doc="What object masking changed: the mask after masking and the values of the pixels it replaced "
        "(an ObjectMask). With the input's image plane it gives back the masked image, bit for bit.",
        storageClass="SkyObjectMask",
        dimensions=("instrument", "exposure", "detector"),
    )
    maskedExp = cT.Output(
        name="cpSkyMaskedIsrExp",
        doc="Image with objects masked and replaced by a smooth background (doWriteMaskedExp only; cp_pipe "
        "always writes it).",
        storageClass="MaskedImageV2",
        dimensions=("instrument", "exposure", "detector"),
    )
    maskedBkg = cT.Output(
        name="cpSkyDetectorBackground",
        doc="Focal-plane background of this detector alone.",
        storageClass="SkyFocalPlaneBackground",
        dimensions=("instrument", "exposure", "detector"),
    )
    stackMask = cT.Input(
        name="cpSkyStackMask",
        doc="Detection on the build's exposures stacked on the sky (cpSkyStackDetect), used in place of "
        "maskTask's own detection (doUseStackMask only).",
        storageClass="MaskV2",
        dimensions=("instrument", "exposure", "detector"),
    )

    def __init__(self, *, config: CpSkyImageConfig | None = None) -> None:
        super().__init__(config=config)
        if config is None or not config.doWriteMaskedExp:
            del self.maskedExp
        if config is None or not config.doUseStackMask:
            del self.stackMask


class CpSkyImageConfig(PipelineTaskConfig, pipelineConnections=CpSkyImageConnections):
    """Configuration of `CpSkyImageTask`."""

    maskList = ListField[str](
        doc="Mask planes whose pixels are replaced by the smooth background after object masking.",
        default=["DETECTED", "BAD", "NO_DATA", "SAT"],
    )
    largeScaleBackground = ConfigField[FocalPlaneBackgroundConfig](
        doc="Large-scale focal-plane background (defaults: cp_pipe's, HSC's 8192 px bins; "
        "camera-sized with the instrument's overrides, see lsst.skyframes.camera_overrides).",
        dtype=FocalPlaneBackgroundConfig,
    )
    maskTask = ConfigurableField(target=MaskObjectsTask, doc="Object masker.")
    maskThresh = Field[float](
        doc="k-sigma threshold for masking pixels. Unused, as in cp_pipe, where the field exists but nothing "
        "reads it: the detection threshold is maskTask.detection.thresholdValue.",
        default=3.0,
    )
    doWriteMaskedExp = Field[bool](
        doc="Also write the whole masked image as cpSkyMaskedIsrExp, as cp_pipe does (e.g. to look at the "
        "masks)? The build does not need it: cpSkySubtractBackground re-reads the input's image plane and "
        "applies cpSkyObjectMask. It costs a compressed copy of every input (about 4.5 bytes per pixel) "
        "and the time to write it (the README's dataset table).",
        default=False,
    )

    doUseStackMask = Field[bool](
        doc="Mask the objects cpSkyStackDetect found on the build's exposures stacked on the sky "
        "(cpSkyStackMask) in place of maskTask's detection on this exposure alone? A skyframes option (the "
        "reference detects on each exposure), for crowded fields, whose faint sources and wings a single "
        "exposure's detection misses (pipelines/BuildSkyFrameStackDetected.yaml; the README's figures).",
        default=False,
    )

    def setDefaults(self) -> None:
        super().setDefaults()
        # cp_pipe's values: HSC's 8192 px of 0.015 mm.
        self.largeScaleBackground.xSize = 122.88
        self.largeScaleBackground.ySize = 122.88
        self.largeScaleBackground.pixelSize = 0.015
        self.largeScaleBackground.minFrac = 0.1
        self.largeScaleBackground.mask = [
            "BAD",
            "SAT",
            "INTRP",
            "DETECTED",
            "DETECTED_NEGATIVE",
            "EDGE",
            "NO_DATA",
        ]


class CpSkyImageTask(PipelineTask):
    """Mask objects in one detector image and bin it onto the focal plane."""

    ConfigClass = CpSkyImageConfig
    _DefaultName = "CpSkyImage"
    config: CpSkyImageConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.makeSubtask("maskTask")

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        inputs = butlerQC.get(inputRefs)
        data_id = butlerQC.quantum.dataId
        detector = inputs["camera"][data_id["detector"]]
        stack_mask = inputs.get("stackMask")
        outputs = self.run(
            inputExp=self._read(inputs["inputExp"]),
            camera=inputs["camera"],
            detector=detector,
            where=describe(data_id),
            stackMask=None if stack_mask is None else stack_mask.get(STACK_MASK_PLANE),
        )
        butlerQC.put(outputs, outputRefs)

    @property
    def needsVariance(self) -> bool:
        """Whether this configuration reads the input's variance plane.

        Only detection with ``thresholdType='pixel_stdev'`` uses it, and
        ``doWriteMaskedExp`` writes it; otherwise runQuantum reads the image
        and mask planes alone (decompressing a plane costs more than masking
        objects in it).
        """
        return self.config.doWriteMaskedExp or self.config.maskTask.detection.thresholdType == "pixel_stdev"

    def _read(self, handle: Any) -> MaskedImage:
        if self.needsVariance:
            return handle.get()
        planes = handle.get(component="components", parameters={"components": ["image", "mask"]})
        return MaskedImage(planes["image"], mask=planes["mask"])

    def run(
        self,
        inputExp: MaskedImage,
        camera: Camera,
        detector: DetectorGeometry,
        *,
        where: str | None = None,
        stackMask: np.ndarray | None = None,
    ) -> Struct:
        """Mask objects and measure this detector's focal-plane background.

        Parameters
        ----------
        inputExp : `lsst.images.MaskedImage`
            Processed image of ``detector``; modified in place.
        camera : `Camera`
            Camera geometry (sets the focal-plane grid).
        detector : `DetectorGeometry`
            The detector ``inputExp`` belongs to.
        where : `str`, optional
            What the image is (e.g. exposure, filter and detector), for the
            log; the detector's name if `None`.
        stackMask : `numpy.ndarray`, optional
            Boolean, of the image's shape: the detection to use in place of
            maskTask's (the ``DETECTED`` plane of cpSkyStackMask); required
            with ``doUseStackMask``, refused without.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``maskedExp`` (the masked image, ``inputExp`` itself),
            ``objectMask`` (the `~lsst.skyframes.object_mask.ObjectMask` of
            what masking changed) and ``maskedBkg`` (a
            `FocalPlaneBackground` holding only this detector).

        Notes
        -----
        An image without a usable pixel (every pixel NaN or in ``maskList``)
        is not object-masked; it adds nothing to the focal-plane background,
        so its exposure's other detectors are unaffected, and its residual
        background has no finite bin, which cpSkyCombine reports as a
        rejected input of this detector. If every detector of an exposure is
        like this, cpSkyScaleMeasure drops the exposure.
        """
        if (stackMask is None) == self.config.doUseStackMask:
            raise ConfigMismatchError(
                f"CpSkyImageTask.run: doUseStackMask is {self.config.doUseStackMask} but stackMask was "
                f"{'not ' if stackMask is None else ''}given; pass cpSkyStackDetect's mask exactly when "
                "doUseStackMask is set."
            )
        pixels, mask = image_and_mask(inputExp)
        before = pixels.array.copy()
        unusable = ~np.isfinite(pixels.array)
        if mask is not None:
            unusable |= bad_pixel_mask(mask, list(self.config.maskList))
        if unusable.all():
            self.log.warning(
                "%s has no usable pixel (every pixel is NaN or in the mask planes %s): not masking objects; "
                "it adds nothing to the focal-plane background and no input to this detector's sky frame.",
                where or f"Detector {detector.name}",
                list(self.config.maskList),
            )
        elif stackMask is None:
            self.maskTask.run(inputExp, list(self.config.maskList))
        else:
            self.maskTask.run(inputExp, list(self.config.maskList), detections=stackMask)
        background = FocalPlaneBackground.fromCamera(self.config.largeScaleBackground, camera)
        background.addCcd(inputExp, detector)
        return Struct(
            maskedExp=inputExp, objectMask=ObjectMask.fromMasking(before, inputExp), maskedBkg=background
        )


# ---------------------------------------------------------------------------------------------------------
# Step 2a: merge per exposure, measure the sky level
# ---------------------------------------------------------------------------------------------------------


class CpSkyScaleMeasureConnections(
    PipelineTaskConnections, dimensions=("instrument", "physical_filter", "exposure")
):
    camera = camera_connection()
    inputBkgs = cT.Input(
        name="cpSkyDetectorBackground",
        doc="Focal-plane backgrounds of each detector.",
        storageClass="SkyFocalPlaneBackground",
        dimensions=("instrument", "exposure", "detector"),
        multiple=True,
    )
    outputBkg = cT.Output(
        name="cpSkyExpBackground",
        doc="Focal-plane background of the whole exposure (with includeAlternateBackground: of the "
        "detectors of the first physical type, in sorted order).",
        storageClass="SkyFocalPlaneBackground",
        dimensions=("instrument", "exposure"),
    )
    outputBkgAlternate = cT.Output(
        name="cpSkyExpBackgroundAlternate",
        doc="Focal-plane background of the exposure's detectors of the second physical type "
        "(includeAlternateBackground only; not written for an exposure of one type).",
        storageClass="SkyFocalPlaneBackground",
        dimensions=("instrument", "exposure"),
    )
    outputScale = cT.Output(
        name="cpSkyExpScale",
        doc="Sky level of the exposure: median of the merged focal-plane background (with "
        "includeAlternateBackground and two physical types, also that of the second type).",
        storageClass="StructuredDataDict",
        dimensions=("instrument", "exposure"),
    )

    def __init__(self, *, config: CpSkyScaleMeasureConfig | None = None) -> None:
        super().__init__(config=config)
        # The camera says which detector is of which type: only needed, and
        # only a graph input, when the types are modelled apart.
        if config is None or not config.includeAlternateBackground:
            del self.camera
            del self.outputBkgAlternate


class CpSkyScaleMeasureConfig(PipelineTaskConfig, pipelineConnections=CpSkyScaleMeasureConnections):
    """Configuration of `CpSkyScaleMeasureTask`."""

    includeAlternateBackground = Field[bool](
        doc="Merge the focal-plane backgrounds of detectors of a second physical type (the camera's "
        "physical_type, e.g. LSSTCam's ITL beside E2V) into a background and sky level of their own "
        "(cpSkyExpBackgroundAlternate, scaleAlternate in cpSkyExpScale)? cpSkySubtractBackground must "
        "set the same value (pipeline contract).",
        default=False,
    )


class CpSkyScaleMeasureTask(PipelineTask):
    """Merge the detectors' focal-plane backgrounds and measure the sky level.

    In a pipeline, an exposure without usable data (`run` raises
    `~lsst.skyframes.errors.NoDataError`) is dropped rather than failed: the
    quantum writes only ``cpSkyExpScale``, holding the reason under
    ``dropped``, and logs a warning naming the exposure. Without a
    ``cpSkyExpBackground`` the exposure's cpSkySubtractBackground quanta have
    no work (pipe_base skips them), and cpSkyCombine, which reads every
    exposure's ``cpSkyExpScale``, lists the exposure and the reason in
    ``sky_quality``; the other exposures' sky frames are built as if it had
    never been there.
    """

    ConfigClass = CpSkyScaleMeasureConfig
    _DefaultName = "cpSkyScaleMeasure"

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        inputs = butlerQC.get(inputRefs)
        if self.config.includeAlternateBackground:
            # Which background is which detector's: the camera gives its type.
            inputs["inputDims"] = [dict(ref.dataId.required) for ref in inputRefs.inputBkgs]
        try:
            outputs = self.run(**inputs)
        except NoDataError as err:
            outputs = self._dropExposure(err, butlerQC.quantum.dataId, len(inputs["inputBkgs"]))
        butlerQC.put(outputs, outputRefs)

    def _dropExposure(self, error: NoDataError, data_id: Any, n_detectors: int) -> Struct:
        """Return the outputs of an exposure dropped for ``error``: its scale record only."""
        reason = str(error)
        if not reason.startswith(self._DefaultName):
            reason = f"{self._DefaultName}: {reason}"
        self.log.warning(
            "Dropping %s from the sky frames: %s Its cpSkySubtractBackground quanta are skipped; "
            "cpSkyCombine builds the sky frames from the other exposures and lists this one under "
            "inputs_dropped in sky_quality.",
            describe(data_id),
            reason,
        )
        self.metadata["dropped"] = reason
        scale = {"scale": None, "nDetectors": n_detectors, "dropped": reason}
        return Struct(outputBkg=None, outputScale=scale)

    def run(
        self,
        inputBkgs: Sequence[FocalPlaneBackground],
        camera: Camera | None = None,
        inputDims: Sequence[Mapping[str, Any]] | None = None,
    ) -> Struct:
        """Merge focal-plane backgrounds and take the median as the scale.

        Parameters
        ----------
        inputBkgs : sequence of `FocalPlaneBackground`
            One per detector of the exposure.
        camera : `Camera`, optional
            The camera, whose detectors' ``physical_type`` sorts the inputs
            (``includeAlternateBackground`` only).
        inputDims : sequence of `~collections.abc.Mapping`, optional
            The data ID (at least ``detector``) of each of ``inputBkgs``, in
            the same order (``includeAlternateBackground`` only).

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``outputBkg`` (merged background) and ``outputScale`` (a dict
            with ``scale``, the median of the merged stats image,
            ``nDetectors`` and ``dropped`` = `None`). With
            ``includeAlternateBackground`` each physical type is merged
            apart: ``outputBkg`` and ``scale`` are those of the first type in
            sorted order; if the exposure has detectors of a second type,
            ``outputBkgAlternate`` is theirs and ``outputScale`` adds
            ``detectorType`` (the first type), ``scaleAlternate`` and
            ``detectorTypeAlternate``; otherwise ``outputBkgAlternate`` is
            `None`, as in the reference.

        Raises
        ------
        lsst.skyframes.errors.NoDataError
            Raised if there are no inputs, no pixel of any detector (of a
            type) is usable, no focal-plane bin has enough usable pixels, or
            the sky level is not positive.
        lsst.skyframes.errors.ConfigMismatchError
            Raised if ``includeAlternateBackground`` is set but ``camera`` or
            ``inputDims`` is missing or of the wrong length.
        lsst.skyframes.errors.CameraError
            Raised if the exposure's detectors are of more than two physical
            types.
        """
        if not inputBkgs:
            raise NoDataError("cpSkyScaleMeasure got no focal-plane backgrounds for this exposure.")
        if not self.config.includeAlternateBackground:
            background, scale = self._merge(inputBkgs)
            return Struct(
                outputBkg=background,
                outputScale={"scale": scale, "nDetectors": len(inputBkgs), "dropped": None},
            )
        types = self._physicalTypes(inputBkgs, camera, inputDims)
        merged = {
            physical_type: self._merge(
                [bg for bg, t in zip(inputBkgs, types, strict=True) if t == physical_type], physical_type
            )
            for physical_type in sorted(set(types))
        }
        (primary, (background, scale)), *others = merged.items()
        record: dict[str, Any] = {"scale": scale, "nDetectors": len(inputBkgs), "dropped": None}
        alternate = None
        if others:
            ((alternate_type, (alternate, alternate_scale)),) = others
            record |= {
                "detectorType": primary,
                "scaleAlternate": alternate_scale,
                "detectorTypeAlternate": alternate_type,
            }
        return Struct(outputBkg=background, outputBkgAlternate=alternate, outputScale=record)

    def _physicalTypes(
        self,
        inputBkgs: Sequence[FocalPlaneBackground],
        camera: Camera | None,
        inputDims: Sequence[Mapping[str, Any]] | None,
    ) -> list[str]:
        """Return the physical type of each input's detector; refuse more than two types."""
        if camera is None or inputDims is None or len(inputDims) != len(inputBkgs):
            given = "no inputDims" if inputDims is None else f"{len(inputDims)} inputDims"
            raise ConfigMismatchError(
                "cpSkyScaleMeasure: includeAlternateBackground is True, so each focal-plane background "
                "must be matched to its detector's physical type, but run() got "
                f"{'no camera' if camera is None else 'a camera'} and {given} for {len(inputBkgs)} "
                "backgrounds. Pass camera= and inputDims= (one data ID with 'detector' per background, "
                "as runQuantum does), or set includeAlternateBackground = False."
            )
        types = [camera[int(dims["detector"])].physical_type for dims in inputDims]
        if len(set(types)) > 2:
            counts = {t: types.count(t) for t in sorted(set(types))}
            raise CameraError(
                f"cpSkyScaleMeasure: the exposure's detectors are of {len(counts)} physical types "
                f"{counts} (camera {camera.instrument!r}); includeAlternateBackground models two (a "
                "background of the first type in sorted order and an alternate one). Give the camera "
                "file at most two physical_type values, or set includeAlternateBackground = False."
            )
        return types

    def _merge(
        self, inputBkgs: Sequence[FocalPlaneBackground], physical_type: str | None = None
    ) -> tuple[FocalPlaneBackground, float]:
        """Merge backgrounds (of one physical type, if given) and return the merged one and its scale."""
        of = "" if physical_type is None else f" of physical type {physical_type!r}"
        background = inputBkgs[0].clone()
        for other in inputBkgs[1:]:
            background.merge(other)
        if not np.any(background.numbers > 0):
            raise NoDataError(
                f"cpSkyScaleMeasure: none of the exposure's {len(inputBkgs)} detector(s){of} has a usable "
                f"pixel: every pixel is NaN or in the mask planes {list(background.config.mask)} "
                "(cpSkyImage:largeScaleBackground.mask); the exposure holds no sky to measure."
            )
        stats = background.getStatsImage()
        finite = stats[np.isfinite(stats)]
        if finite.size == 0:
            raise NoDataError(
                f"cpSkyScaleMeasure: no focal-plane bin of this exposure's {len(inputBkgs)} detectors{of} "
                "has usable pixels (all masked or NaN); exclude the exposure or check its masks."
            )
        scale = float(np.median(finite))
        if not scale > 0:
            raise NoDataError(
                f"cpSkyScaleMeasure: the exposure's sky level{of} is {scale}; sky frames need exposures "
                "with positive sky (check the input collection for biases or darks)."
            )
        self.log.info(
            "Focal-plane background%s min/max %.3f/%.3f; scale %.3f",
            "" if physical_type is None else f" ({physical_type})",
            np.nanmin(stats),
            np.nanmax(stats),
            scale,
        )
        return background, scale


# ---------------------------------------------------------------------------------------------------------
# Step 2b: subtract the large-scale model, normalise, bin
# ---------------------------------------------------------------------------------------------------------


class CpSkySubtractBackgroundConnections(
    PipelineTaskConnections, dimensions=("instrument", "physical_filter", "exposure", "detector")
):
    inputExp = cT.Input(
        name="post_isr_image",
        doc="The image cpSkyImage masked (its inputExp); only the image plane is read, and objectMask "
        "turns it into the masked image.",
        storageClass="MaskedImageV2",
        dimensions=("instrument", "exposure", "detector"),
        deferLoad=True,
    )
    objectMask = cT.Input(
        name="cpSkyObjectMask",
        doc="What cpSkyImage's object masking changed in inputExp (mask and replaced pixels).",
        storageClass="SkyObjectMask",
        dimensions=("instrument", "exposure", "detector"),
    )
    inputBkg = cT.Input(
        name="cpSkyExpBackground",
        doc="Focal-plane background of the exposure.",
        storageClass="SkyFocalPlaneBackground",
        dimensions=("instrument", "exposure"),
    )
    inputBkgAlternate = cT.Input(
        name="cpSkyExpBackgroundAlternate",
        doc="Focal-plane background of the exposure's detectors of the second physical type "
        "(includeAlternateBackground only).",
        storageClass="SkyFocalPlaneBackground",
        dimensions=("instrument", "exposure"),
        # An exposure of one physical type has none (cpSkyScaleMeasure writes
        # none, as the reference); its detectors use inputBkg.
        minimum=0,
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

    def __init__(self, *, config: CpSkySubtractBackgroundConfig | None = None) -> None:
        super().__init__(config=config)
        if config is None or not config.includeAlternateBackground:
            del self.inputBkgAlternate


class CpSkySubtractBackgroundConfig(
    PipelineTaskConfig, pipelineConnections=CpSkySubtractBackgroundConnections
):
    """Configuration of `CpSkySubtractBackgroundTask`."""

    sky = ConfigurableField(
        target=SkyMeasurementTask,
        doc="Sky measurement: sky.background bins the residual, hence sets the sky frame's bins; "
        "cpSkyCombine's sky.background must be the same (pipeline contract; set the bin size once with "
        "-c parameters:xBinSize=N and yBinSize). Its scale-fit fields (skyIter, skyRej, xNumSamples, "
        "yNumSamples, stats) are not used here and are refused if set.",
    )
    includeAlternateBackground = Field[bool](
        doc="Subtract the alternate focal-plane background (cpSkyExpBackgroundAlternate) from detectors "
        "of the second physical type and divide them by its sky level (scaleAlternate)? Must equal "
        "cpSkyScaleMeasure's includeAlternateBackground (pipeline contract).",
        default=False,
    )

    def validate(self) -> None:
        super().validate()
        refuse_scale_fit_fields(self.sky.value, "CpSkySubtractBackgroundTask", "bins the residual")
        refuse_unused_fields(
            self.sky.value,
            ("maxDetectedFraction",),
            "sky.",
            "CpSkySubtractBackgroundTask",
            "it bins each exposure's residual alone; the detections are weighed across the exposures by "
            "cpSkyCombine (cpSkyCombine:sky.maxDetectedFraction, with combineLevel='pixel').",
        )


class CpSkySubtractBackgroundTask(PipelineTask):
    """Subtract the large-scale model, divide by the sky level, bin the residual."""

    ConfigClass = CpSkySubtractBackgroundConfig
    _DefaultName = "cpSkySubtractBkg"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.makeSubtask("sky")

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        inputs = butlerQC.get(inputRefs)
        detector = inputs.pop("camera")[butlerQC.quantum.dataId["detector"]]
        # The masked image, bit for bit, from the image plane alone.
        image = inputs.pop("inputExp").get(component="image")
        inputs["inputExp"] = inputs.pop("objectMask").applyTo(image)
        outputs = self.run(**inputs, detector=detector)
        butlerQC.put(outputs, outputRefs)

    def run(
        self,
        inputExp: MaskedImage,
        inputBkg: FocalPlaneBackground,
        inputScale: dict[str, Any],
        detector: DetectorGeometry,
        inputBkgAlternate: FocalPlaneBackground | None = None,
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
            ``{"scale": sky level}`` (``cpSkyExpScale``); with two physical
            types also ``detectorType``, ``scaleAlternate`` and
            ``detectorTypeAlternate``.
        detector : `DetectorGeometry`
            The detector of ``inputExp``.
        inputBkgAlternate : `FocalPlaneBackground`, optional
            The background of the second physical type
            (``cpSkyExpBackgroundAlternate``; ``includeAlternateBackground``
            only): used, with ``scaleAlternate``, instead of ``inputBkg``
            and ``scale`` if ``detector.physical_type`` is
            ``detectorTypeAlternate``.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``outputBkg``: `measureBackground` of the normalised residual.

        Raises
        ------
        lsst.skyframes.errors.NoDataError
            Raised if ``inputScale`` records a dropped exposure or its scale
            is not a positive number, or the detector is of the alternate
            type and ``inputBkgAlternate`` is missing.
        lsst.skyframes.errors.ConfigMismatchError
            Raised if ``inputScale`` holds an alternate type but
            ``includeAlternateBackground`` is False, or the detector is of
            neither of its types.
        """
        if inputScale.get("dropped"):
            raise NoDataError(
                "cpSkySubtractBackground: cpSkyScaleMeasure dropped this exposure "
                f"({inputScale['dropped']}); there is no sky level to normalise by."
            )
        inputBkg, key = self._backgroundOf(detector, inputBkg, inputScale, inputBkgAlternate)
        scale = inputScale.get(key)
        if scale is None or not np.isfinite(scale) or scale <= 0:
            raise NoDataError(
                f"cpSkySubtractBackground: the exposure's sky level (cpSkyExpScale"
                f"{'' if key == 'scale' else ' ' + key}) is {scale}; it must be finite and positive (made by "
                "cpSkyScaleMeasure)."
            )
        normalise_residual(inputExp, inputBkg, float(scale), detector)
        return Struct(outputBkg=self.sky.measureBackground(inputExp))

    def _backgroundOf(
        self,
        detector: DetectorGeometry,
        inputBkg: FocalPlaneBackground,
        inputScale: Mapping[str, Any],
        inputBkgAlternate: FocalPlaneBackground | None,
    ) -> tuple[FocalPlaneBackground, str]:
        """Return the focal-plane background of the detector's type and the key of its scale."""
        alternate_type = inputScale.get("detectorTypeAlternate")
        if alternate_type is None:
            return inputBkg, "scale"
        primary_type = inputScale.get("detectorType")
        if not self.config.includeAlternateBackground:
            raise ConfigMismatchError(
                f"cpSkySubtractBackground: cpSkyScaleMeasure merged physical types {primary_type!r} and "
                f"{alternate_type!r} apart (its includeAlternateBackground is True), but this task's "
                f"includeAlternateBackground is False, so detector {detector.id} ({detector.name}) would "
                "be normalised by the other type's background and sky level. Set includeAlternateBackground "
                "to the same value on both tasks "
                "(-c cpSkySubtractBackground:includeAlternateBackground=True)."
            )
        if detector.physical_type not in (primary_type, alternate_type):
            raise ConfigMismatchError(
                f"cpSkySubtractBackground: detector {detector.id} ({detector.name}) is of physical type "
                f"{detector.physical_type!r}, but cpSkyScaleMeasure measured backgrounds of "
                f"{primary_type!r} and {alternate_type!r} only; the camera given here is not the one "
                "cpSkyScaleMeasure used."
            )
        if detector.physical_type != alternate_type:
            return inputBkg, "scale"
        if inputBkgAlternate is None:
            raise NoDataError(
                f"cpSkySubtractBackground: detector {detector.id} ({detector.name}) is of the alternate "
                f"physical type {alternate_type!r} but no alternate focal-plane background "
                "(cpSkyExpBackgroundAlternate) was given; pass inputBkgAlternate."
            )
        return inputBkgAlternate, "scaleAlternate"


def normalise_residual(
    inputExp: MaskedImage, inputBkg: FocalPlaneBackground, scale: float, detector: DetectorGeometry
) -> None:
    """Subtract the exposure's focal-plane model from one detector image and divide by its sky level.

    Parameters
    ----------
    inputExp : `lsst.images.MaskedImage`
        Object-masked image of ``detector``; modified in place.
    inputBkg : `FocalPlaneBackground`
        The exposure's merged focal-plane background (of the detector's type).
    scale : `float`
        The exposure's sky level (finite, positive).
    detector : `DetectorGeometry`
        The detector of ``inputExp``.
    """
    pixels, _ = image_and_mask(inputExp)
    model = inputBkg.toCcdBackground(detector, pixels.bbox)
    pixels.array -= model.getImage().array
    pixels.array /= scale


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
        # Run even when every exposure was dropped upstream, so that the task
        # fails saying why instead of the quantum vanishing without a sky frame.
        minimum=0,
    )
    inputScales = cT.Input(
        name="cpSkyExpScale",
        doc="Every exposure's sky level, or why cpSkyScaleMeasure dropped it (listed in sky_quality).",
        storageClass="StructuredDataDict",
        dimensions=("instrument", "exposure"),
        multiple=True,
    )
    inputExpHandles = cT.Input(
        name="cpSkyObjectMask",
        doc="Object masks of the inputs (cp_pipe: the masked images, cpSkyMaskedIsrExp, which this "
        "pipeline does not write by default). The exposure records of their data IDs give the sky frame's "
        "provenance header (CPP_INPUT_*, DATE-*, MJD-*); read only with combineLevel='pixel'.",
        storageClass="SkyObjectMask",
        dimensions=("instrument", "exposure", "detector"),
        multiple=True,
        deferLoad=True,
    )
    inputImages = cT.Input(
        name="post_isr_image",
        doc="The images cpSkyImage masked (combineLevel='pixel' only): their image planes, with "
        "cpSkyObjectMask, cpSkyExpBackground and cpSkyExpScale, give the normalised residual images that "
        "are combined pixel by pixel.",
        storageClass="MaskedImageV2",
        dimensions=("instrument", "exposure", "detector"),
        multiple=True,
        deferLoad=True,
        minimum=0,
    )
    inputExpBackgrounds = cT.Input(
        name="cpSkyExpBackground",
        doc="Focal-plane background of every exposure (combineLevel='pixel' only).",
        storageClass="SkyFocalPlaneBackground",
        dimensions=("instrument", "exposure"),
        multiple=True,
        minimum=0,
    )
    camera = camera_connection()
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
        if config is None or config.combineLevel != "pixel":
            del self.inputImages
            del self.inputExpBackgrounds
            del self.camera
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

    sky = ConfigurableField(
        target=SkyMeasurementTask,
        doc="Sky measurement (combination). sky.background describes the inputs' bins and sets the sky "
        "frame's ALGORITHM: it must equal cpSkySubtractBackground's, which bins them (pipeline contract; "
        "the inputs' bin layout is also checked at run time). Its scale-fit fields (skyIter, skyRej, "
        "xNumSamples, yNumSamples, stats) are not used here and are refused if set.",
    )
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
    combineLevel = ChoiceField[str](
        doc="Where the inputs are combined across exposures.",
        default="bin",
        allowed={
            "bin": "the reference: each exposure's residual background (its bins' clipped means, "
            "cpSkySubtractBackground) is combined bin by bin with a clipped mean",
            "pixel": "each pixel is the clipped mean of its unmasked values across the exposures and each "
            "bin the mean of those pixels (SkyMeasurementTask.averageImages): no structure inside a bin is "
            "clipped, and pixels one exposure's object masking left out are filled by the others instead "
            "of biasing its bin. Reads every input's image plane again (post_isr_image, one at a time) and "
            "holds the normalised images in a scratch file of 4 bytes per pixel and exposure in the "
            "temporary directory (TMPDIR), removed when the quantum ends. nComponents = 1 and one physical "
            "detector type only.",
        },
    )
    pca = ConfigurableField(
        target=SkyPcaTask,
        doc="Robust PCA of the templates (nComponents > 1): clip, nIter, maxBadFraction, "
        "maxResidualFraction, maxMemoryGiB. Its own nComponents and sky are not used (this task's are) "
        "and are refused if set to anything else.",
    )

    def validate(self) -> None:
        super().validate()
        refuse_scale_fit_fields(self.sky.value, "CpSkyCombineTask", "combines the residual backgrounds")
        if self.sky.maxDetectedFraction is not None and self.combineLevel != "pixel":
            raise FieldValidationError(
                type(self).combineLevel,
                self,
                f"sky.maxDetectedFraction = {self.sky.maxDetectedFraction} needs the per-pixel stack of "
                "combineLevel='pixel' (the bins of combineLevel='bin' no longer know which pixels were "
                "detected); set combineLevel='pixel' or leave sky.maxDetectedFraction None.",
            )
        if self.combineLevel == "pixel" and self.nComponents != 1:
            raise FieldValidationError(
                type(self).combineLevel,
                self,
                f"combineLevel='pixel' builds one sky frame per detector; with nComponents = "
                f"{self.nComponents} the templates are combined from the residual backgrounds' bins. Use "
                "combineLevel='bin' (the default) for templates.",
            )
        pca = self.pca.value
        default = type(pca)()
        if pca.nComponents not in (default.nComponents, self.nComponents):
            _refuse(
                pca,
                "nComponents",
                f"pca.nComponents = {pca.nComponents} is not used: CpSkyCombineTask passes its own "
                f"nComponents (= {self.nComponents}) to the PCA. Set nComponents instead (pipetask -c "
                f"LABEL:nComponents={pca.nComponents}, LABEL being e.g. cpSkyTemplates) and leave "
                "pca.nComponents at its default.",
            )
        if not (_same(pca.sky, default.sky) or _same(pca.sky, self.sky.value)):
            _refuse(
                pca,
                "sky",
                "pca.sky is set but not used: CpSkyCombineTask combines the templates with its own sky (so "
                "that component 1 is the single sky frame). Set sky.* instead and leave pca.sky at its "
                "defaults.",
            )


class CpSkyCombineTask(PipelineTask):
    """Combine the exposures' residual backgrounds into the ``sky`` calibration.

    The calibration's metadata gets cp_pipe's header (`calibration_header`):
    its ``inputExpHandles`` (cp_pipe's connection, deferred) give each input's
    start and exposure time through their data IDs' exposure records (they are
    read only with ``combineLevel='pixel'``, which combines the normalised
    images pixel by pixel; see `SkyMeasurementTask.averageImages`).

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

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        inputs = butlerQC.get(inputRefs)
        scales = {
            int(ref.dataId["exposure"]): scale
            for ref, scale in zip(inputRefs.inputScales, inputs["inputScales"], strict=True)
        }
        # The handles' data IDs carry the exposure records (read only at the pixel level).
        input_exposures = input_exposures_of(handle.dataId for handle in inputs["inputExpHandles"])
        if self.config.nComponents == 1:
            exposures = [int(ref.dataId["exposure"]) for ref in inputRefs.inputBkgs]
            detector_id = int(butlerQC.quantum.dataId["detector"])
            outputs = self.run(
                inputBkgs=inputs["inputBkgs"],
                exposureIds=exposures,
                dropped=dropped_exposures(scales, exposures),
                detectorId=detector_id,
                inputExposures=input_exposures,
                residualImages=(
                    self._residualLoaders(inputRefs, inputs, scales, exposures, detector_id)
                    if self.config.combineLevel == "pixel"
                    else None
                ),
            )
            butlerQC.put(outputs, outputRefs)
            return
        exposures = sorted({int(ref.dataId["exposure"]) for ref in inputRefs.inputBkgs})
        column = {exposure: i for i, exposure in enumerate(exposures)}
        # Every detector that should get templates, even one whose exposures were all dropped.
        backgrounds: dict[int, list[BackgroundList | None]] = {
            int(ref.dataId["detector"]): [None] * len(exposures) for ref in outputRefs.outputCalib
        }
        for ref, background in zip(inputRefs.inputBkgs, inputs["inputBkgs"], strict=True):
            row = backgrounds.setdefault(int(ref.dataId["detector"]), [None] * len(exposures))
            row[column[int(ref.dataId["exposure"])]] = background
        outputs = self.runComponents(
            backgrounds,
            exposures,
            dropped=dropped_exposures(scales, exposures),
            inputExposures=input_exposures,
        )
        for name in ("outputCalib", "outputComponents", "outputQuality"):
            for ref in getattr(outputRefs, name):
                butlerQC.put(getattr(outputs, name)[int(ref.dataId["detector"])], ref)

    def _residualLoaders(
        self,
        inputRefs: InputQuantizedConnection,
        inputs: Mapping[str, Any],
        scales: Mapping[int, Mapping[str, Any]],
        exposures: Sequence[int],
        detector_id: int,
    ) -> list[Callable[[], MaskedImage]]:
        """For each exposure, a loader of its normalised residual image (combineLevel='pixel').

        Each loader reads the image plane of ``post_isr_image``, applies the
        exposure's object mask, subtracts its focal-plane model and divides by
        its sky level, as cpSkySubtractBackground does before binning.
        """
        detector = inputs["camera"][detector_id]
        images = {int(h.dataId["exposure"]): h for h in inputs["inputImages"]}
        masks = {int(h.dataId["exposure"]): h for h in inputs["inputExpHandles"]}
        focal_plane = {
            int(ref.dataId["exposure"]): background
            for ref, background in zip(
                inputRefs.inputExpBackgrounds, inputs["inputExpBackgrounds"], strict=True
            )
        }
        needed = (
            ("post_isr_image", images),
            ("cpSkyObjectMask", masks),
            ("cpSkyExpBackground", focal_plane),
        )

        # With maxDetectedFraction the combination decides which detections to leave out, so the
        # detected pixels keep their own values instead of masking's smooth replacement.
        keep = DETECTION_PLANES if self.config.sky.maxDetectedFraction is not None else ()

        def loader(exposure: int) -> Callable[[], MaskedImage]:
            def load() -> MaskedImage:
                scale = scales[exposure]
                if scale.get("detectorTypeAlternate") is not None:
                    raise ConfigMismatchError(
                        f"cpSkyCombine: combineLevel='pixel' normalises every detector by the exposure's "
                        f"one focal-plane background, but exposure {exposure} was measured with two "
                        f"physical types ({scale.get('detectorType')!r} and "
                        f"{scale['detectorTypeAlternate']!r}, includeAlternateBackground). Use "
                        "combineLevel='bin' for such cameras."
                    )
                for name, found in needed:
                    if exposure not in found:
                        raise NoDataError(
                            f"cpSkyCombine: combineLevel='pixel' needs the {name} of exposure {exposure}, "
                            f"detector {detector_id}, but the quantum has none."
                        )
                masked = masks[exposure].get().applyTo(images[exposure].get(component="image"), keep)
                normalise_residual(masked, focal_plane[exposure], float(scale["scale"]), detector)
                return masked

            return load

        return [loader(exposure) for exposure in exposures]

    def run(
        self,
        inputBkgs: Sequence[BackgroundList],
        exposureIds: Sequence[int] = (),
        dropped: Sequence[Mapping[str, Any]] = (),
        detectorId: int | None = None,
        inputExposures: Mapping[int, InputExposure] | None = None,
        residualImages: Sequence[Callable[[], MaskedImage]] | None = None,
    ) -> Struct:
        """Average the residual backgrounds into a sky frame and report on it.

        Parameters
        ----------
        inputBkgs : sequence of `BackgroundList`
            One single-element list per exposure.
        exposureIds : sequence of `int`, optional
            Exposure ids of the inputs, recorded in the metadata and report.
        dropped : sequence of `dict`, optional
            ``{"exposure": id, "reason": text}`` for exposures of the build
            that have no input here (see `dropped_exposures`); listed in the
            report and in the error if too few inputs remain.
        detectorId : `int`, optional
            The detector, for log and error messages.
        inputExposures : `~collections.abc.Mapping` [`int`, `InputExposure`], optional
            When each input exposure was taken, by exposure id (at least every
            input of ``exposureIds``; see `input_exposures_of`). Without it the
            header lists only the inputs' ids.
        residualImages : sequence of callables, optional
            With ``combineLevel='pixel'`` (required then): one loader per
            input, in ``inputBkgs`` order, returning that exposure's
            normalised residual image (object-masked, model subtracted,
            divided by the sky level: what cpSkySubtractBackground binned).
            Only the loaders of used inputs are called, each once; the images
            are held in a scratch file, not in memory.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``outputCalib``: the sky frame, with cp_pipe's calibration header
            in its metadata (see `calibration_header`) and ``SKY_NINPUTS``,
            the number of inputs; ``outputQuality``: the
            `~lsst.skyframes.quality.quality_report`.

        Raises
        ------
        lsst.skyframes.errors.NoDataError
            Raised if fewer than ``minExposures`` inputs have a finite bin.
        lsst.skyframes.errors.ConfigMismatchError
            Raised if the inputs were binned otherwise than ``sky.background``
            says (bin counts or interpolation style).
        lsst.skyframes.errors.MissingMetadataError
            Raised if ``inputExposures`` lacks an input that was used.

        Notes
        -----
        With fewer than 3 inputs the clipped mean cannot reject anything; the
        sky frame is built (if ``minExposures`` allows) with a warning.
        """
        ids = list(exposureIds) if len(exposureIds) else list(range(len(inputBkgs)))
        self._checkBinning(inputBkgs, ids)
        used, used_ids, rejected = select_inputs(inputBkgs, ids)
        self._checkInputs(used, rejected, dropped, detectorId)
        if self.config.combineLevel == "pixel":
            if residualImages is None or len(residualImages) != len(inputBkgs):
                raise ValueError(
                    f"cpSkyCombine: combineLevel='pixel' needs one residual image loader per input "
                    f"({len(inputBkgs)}); got "
                    f"{'none' if residualImages is None else len(residualImages)}."
                )
            position = {exposure: index for index, exposure in enumerate(ids)}
            sky = self._averagePixels(used, [residualImages[position[e]] for e in used_ids])
        else:
            sky = self.sky.averageBackgrounds(used)
        _stamp_calibration(sky, used_ids, inputExposures)
        report = quality_report(sky, used, used_ids, rejected, dropped=dropped)
        return Struct(outputCalib=sky, outputQuality=report)

    def runComponents(
        self,
        backgrounds: Mapping[int, Sequence[BackgroundList | None]],
        exposureIds: Sequence[int],
        dropped: Sequence[Mapping[str, Any]] = (),
        inputExposures: Mapping[int, InputExposure] | None = None,
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
        dropped : sequence of `dict`, optional
            Exposures of the build not in ``exposureIds`` (dropped upstream),
            with reasons, as for `run`; in every detector's report.
        inputExposures : `~collections.abc.Mapping` [`int`, `InputExposure`], optional
            When each exposure was taken, as for `run`.

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
        lsst.skyframes.errors.ConfigMismatchError
            Raised if the inputs were binned otherwise than ``sky.background``
            says.
        lsst.skyframes.errors.MissingMetadataError
            Raised if ``inputExposures`` lacks an input that was used.
        """
        ids = [int(e) for e in exposureIds]
        for per_exposure in backgrounds.values():
            present = [(e, bg) for e, bg in zip(ids, per_exposure, strict=True) if bg is not None]
            self._checkBinning([bg for _, bg in present], [e for e, _ in present])
        if not ids:
            # Every exposure was dropped upstream: say so for the first detector.
            self._checkInputs([], [], dropped, min(backgrounds, default=None))
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
            missing = [
                {"exposure": e, "reason": MISSING_INPUT_REASON}
                for e, bg in zip(ids, per_exposure, strict=True)
                if bg is None
            ]
            detector_dropped = sorted([*dropped, *missing], key=lambda entry: entry["exposure"])
            candidates = [(e, bg) for e, bg in present if e not in pca_rejected]
            used, used_ids, rejected = select_inputs([bg for _, bg in candidates], [e for e, _ in candidates])
            rejected += [
                {"exposure": e, "reason": f"robust PCA: {pca_rejected[e]}"}
                for e, _ in present
                if e in pca_rejected
            ]
            self._checkInputs(used, rejected, detector_dropped, detector)
            frames = result.skyFrames[detector]
            _stamp_calibration(frames[0], used_ids, inputExposures)
            calibs[detector] = frames[0]
            components[detector] = BackgroundList(
                *(self.sky.exposureToBackground(frame)[0] for frame in frames)
            )
            reports[detector] = quality_report(
                frames[0],
                used,
                used_ids,
                rejected,
                dropped=detector_dropped,
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

    def _averagePixels(
        self, used: Sequence[BackgroundList], loaders: Sequence[Callable[[], MaskedImage]]
    ) -> MaskedImage:
        """The sky frame of the used inputs, combined pixel by pixel (combineLevel='pixel').

        The normalised images go one at a time into a float32 scratch file
        (masked pixels as NaN), which `SkyMeasurementTask.averageImages` reads
        in strips of rows; the bin size of ``'crossValidated'`` is chosen from
        the inputs' residual backgrounds, as with ``combineLevel='bin'``.  With
        ``sky.maxDetectedFraction`` the detected pixels keep their values, and
        their flags go into a second scratch file (one byte per pixel).
        """
        background = self.config.sky.background
        choice = self.sky.chooseBinSize(used) if background.binSizeChoice != "fixed" else None
        bbox = used[0][0][0].getImageBBox()
        height, width = bbox.shape
        flag_detections = self.config.sky.maxDetectedFraction is not None
        planes_bad, planes_detected = (
            split_detection_planes(background.mask) if flag_detections else (list(background.mask), [])
        )
        shape = (len(loaders), height, width)
        with tempfile.TemporaryDirectory(prefix="skyframes-pixel-stack-") as scratch:
            stack = np.memmap(os.path.join(scratch, "stack.f32"), dtype=np.float32, mode="w+", shape=shape)
            detected = (
                np.memmap(os.path.join(scratch, "detected.u1"), dtype=np.bool_, mode="w+", shape=shape)
                if flag_detections
                else None
            )
            for index, load in enumerate(loaders):
                pixels, mask = image_and_mask(load())
                if pixels.bbox != bbox:
                    raise BoxMismatchError(
                        f"cpSkyCombine: residual image {index} covers {pixels.bbox}, but its residual "
                        f"background covers {bbox}; both must come from the same detector image."
                    )
                layer = stack[index]
                layer[...] = pixels.array
                if mask is not None:
                    layer[bad_pixel_mask(mask, planes_bad)] = np.nan
                    if planes_detected:
                        detected[index] = bad_pixel_mask(mask, planes_detected)
            layers = [Image(stack[index], bbox=bbox) for index in range(len(loaders))]
            detections = None if detected is None else [detected[index] for index in range(len(loaders))]
            sky = self.sky.averageImages(layers, binSizeChoice=choice, detections=detections)
            del layers, layer, stack, detections, detected
        return sky

    def _checkInputs(
        self,
        used: Sequence[BackgroundList],
        rejected: Sequence[Mapping[str, Any]],
        dropped: Sequence[Mapping[str, Any]] = (),
        detector: int | None = None,
    ) -> None:
        """Log rejections; refuse fewer than minExposures inputs, warn below 3."""
        where = "" if detector is None else f" of detector {detector}"
        for entry in rejected:
            self.log.warning("Rejecting exposure %s%s: %s", entry["exposure"], where, entry["reason"])
        if dropped:
            self.log.info(
                "%d exposure(s) dropped before the combination%s: %s",
                len(dropped),
                where,
                ", ".join(str(entry["exposure"]) for entry in dropped),
            )
        if len(used) < self.config.minExposures:
            lost = [*rejected, *dropped]
            shown = "; ".join(f"exposure {entry['exposure']}: {entry['reason']}" for entry in lost[:5])
            more = f"; and {len(lost) - 5} more" if len(lost) > 5 else ""
            raise NoDataError(
                f"cpSkyCombine: the sky frame{where} would be built from {len(used)} exposure(s) "
                f"({len(rejected)} rejected, {len(dropped)} dropped before the combination"
                f"{': ' + shown + more if lost else ''}), fewer than minExposures = "
                f"{self.config.minExposures}. Add exposures, exclude the bad ones (pipetask -d "
                '"exposure NOT IN (...)"), or lower cpSkyCombine:minExposures.'
            )
        if len(used) < 3:
            self.log.warning(
                "The sky frame%s is built from %d input(s): with fewer than 3 the clipped mean rejects "
                "nothing, so an object or artefact in one input goes into the sky frame (HSC guidance: at "
                "least 20 exposures; cpSkyCombine:minExposures enforces a minimum).",
                where,
                len(used),
            )

    def _checkBinning(self, inputBkgs: Sequence[BackgroundList], exposureIds: Sequence[int]) -> None:
        """Refuse inputs binned otherwise than this task's ``sky.background`` says."""
        config = self.config.sky.background
        style = algorithm_style(config.algorithm)
        for background_list, exposure in zip(inputBkgs, exposureIds, strict=True):
            if len(background_list) != 1:
                continue  # averageBackgrounds says what is wrong with it
            background, input_style, *_ = background_list[0]
            height, width = background.getImageBBox().shape
            ny, nx = background.getStatsImage().bbox.shape
            x_size, y_size = measurement_bin_sizes(config)
            expected_nx = len(measurement_bin_edges(width, x_size)) - 1
            expected_ny = len(measurement_bin_edges(height, y_size)) - 1
            if (nx, ny) != (expected_nx, expected_ny):
                sizes = (
                    f"xBinSize = {config.xBinSize}, yBinSize = {config.yBinSize}"
                    if config.binSizeChoice == "fixed"
                    else f"binSizeCandidates (finest {x_size})"
                )
                raise ConfigMismatchError(
                    f"cpSkyCombine: the residual background (cpSkyExpResidualBackground) of exposure "
                    f"{exposure} has {nx}x{ny} bins over {width}x{height} pixels (bins of about "
                    f"{width / nx:.4g}x{height / ny:.4g} px, as cpSkySubtractBackground binned it), but "
                    f"cpSkyCombine's sky.background.{sizes} make {expected_nx}x{expected_ny}. Set the bin "
                    "size once for both "
                    "steps (pipetask -c parameters:xBinSize=N -c parameters:yBinSize=N with "
                    "pipelines/BuildSkyFrame.yaml), or give cpSkyCombine the sky.background that "
                    "cpSkySubtractBackground used."
                )
            if input_style != style:
                raise ConfigMismatchError(
                    f"cpSkyCombine: the residual background of exposure {exposure} has interpolation style "
                    f"{getattr(input_style, 'name', input_style)} (cpSkySubtractBackground:"
                    f"sky.background.algorithm), but cpSkyCombine's sky.background.algorithm is "
                    f"{config.algorithm}, which the sky frame would record. Set the same algorithm on both "
                    "tasks."
                )


# Reason recorded for an exposure whose scale is fine but which has no residual
# background of a detector.
MISSING_INPUT_REASON = (
    "no cpSkyExpResidualBackground of this detector (the exposure lacks the detector, or an earlier quantum "
    "of it wrote no output)"
)


def dropped_exposures(
    scales: Mapping[int, Mapping[str, Any]], present: Collection[int]
) -> list[dict[str, Any]]:
    """List the exposures of a build that reach cpSkyCombine without an input, with reasons.

    Parameters
    ----------
    scales : `~collections.abc.Mapping` [`int`, `dict`]
        Every exposure's ``cpSkyExpScale``, by exposure id.
    present : collection of `int`
        Exposures with a residual background in the quantum.

    Returns
    -------
    dropped : `list` [`dict`]
        ``{"exposure": id, "reason": text}``, sorted by exposure: the reason
        cpSkyScaleMeasure recorded, or `MISSING_INPUT_REASON`.
    """
    present = {int(e) for e in present}
    return [
        {"exposure": int(exposure), "reason": scale.get("dropped") or MISSING_INPUT_REASON}
        for exposure, scale in sorted(scales.items())
        if int(exposure) not in present
    ]


@dataclasses.dataclass(frozen=True)
class InputExposure:
    """When one input exposure of a sky frame was taken (its butler ``exposure`` record).

    Attributes
    ----------
    exposure_id : `int`
        Exposure id.
    begin : `astropy.time.Time`
        Start of the exposure.
    exposure_time : `float`
        Exposure time in seconds.
    """

    exposure_id: int
    begin: astropy.time.Time
    exposure_time: float

    @property
    def midpoint(self) -> astropy.time.Time:
        """Middle of the exposure: the date afw's ``VisitInfo`` gives an exposure."""
        return self.begin + astropy.time.TimeDelta(self.exposure_time / 2.0, format="sec")

    @property
    def end(self) -> astropy.time.Time:
        """End of the exposure: ``begin`` plus the exposure time."""
        return self.begin + astropy.time.TimeDelta(self.exposure_time, format="sec")


def input_exposures_of(data_ids: Iterable[DataCoordinate]) -> dict[int, InputExposure]:
    """Read when each exposure was taken from expanded data IDs, without any file I/O.

    Parameters
    ----------
    data_ids : iterable of `lsst.daf.butler.DataCoordinate`
        Data IDs with an ``exposure`` (e.g. of cpSkyCombine's deferred
        ``inputExpHandles``), expanded: a quantum's always are.

    Returns
    -------
    exposures : `dict` [`int`, `InputExposure`]
        By exposure id; data IDs of one exposure (its detectors) give one entry.

    Raises
    ------
    lsst.skyframes.errors.MissingMetadataError
        Raised if a data ID carries no exposure record, or one without a
        start time.
    """
    exposures: dict[int, InputExposure] = {}
    for data_id in data_ids:
        exposure_id = int(data_id["exposure"])
        if exposure_id in exposures:
            continue
        record = data_id.records["exposure"] if data_id.hasRecords() else None
        if record is None or record.timespan is None or record.timespan.begin is None:
            raise MissingMetadataError(
                f"cpSkyCombine: the data ID {data_id} of input exposure {exposure_id} has no exposure record "
                "with a start time, which the sky frame's header (CPP_INPUT_DATE_*, DATE-*) needs. Pass "
                "expanded data IDs (butler.registry.expandDataId), as pipetask does, and give every exposure "
                "a timespan (skyframes ingest does)."
            )
        exposures[exposure_id] = InputExposure(
            exposure_id, record.timespan.begin, float(record.exposure_time)
        )
    return exposures


def calibration_header(
    exposure_ids: Sequence[int],
    exposures: Mapping[int, InputExposure] | None = None,
    *,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Return the header cards cp_pipe gives a sky calibration (its ``combineHeaders``).

    Parameters
    ----------
    exposure_ids : sequence of `int`
        The exposures the sky frame was made from; ``CPP_INPUT_<i>`` lists
        them in increasing order.
    exposures : `~collections.abc.Mapping` [`int`, `InputExposure`], optional
        When each was taken; `None` writes neither input dates and exposure
        times nor the DATE/MJD range.
    now : `datetime.datetime`, optional
        Creation time (aware); default the current time.

    Returns
    -------
    cards : `dict` [`str`, `str` | `int` | `float`]
        In order: ``OBSTYPE`` (``SKY``); ``CALIB_CREATION_DATETIME`` (UTC,
        ``YYYY-MM-DDThh:mm:ss``), ``CALIB_CREATION_DATE`` and
        ``CALIB_CREATION_TIME`` (local time, ``%Y-%m-%d`` and ``%X %Z``); per
        input i: ``CPP_INPUT_<i>`` (exposure id), ``CPP_INPUT_DATE_<i>`` (TAI
        middle of the exposure, FITS format) and ``CPP_INPUT_EXPT_<i>``
        (exposure time, s); then ``TIMESYS`` = ``TAI`` and ``DATE-OBS``,
        ``DATE-BEG``, ``DATE-END``, ``DATE-AVG`` with the ``MJD-`` of each:
        from the start of the input whose middle is earliest to the end of the
        one whose middle is latest, and the midpoint of the two.

    Raises
    ------
    lsst.skyframes.errors.MissingMetadataError
        Raised if ``exposures`` lacks one of ``exposure_ids``.
    """
    now = datetime.datetime.now(datetime.UTC) if now is None else now
    local = now.astimezone()
    cards: dict[str, Any] = {
        "OBSTYPE": "SKY",
        "CALIB_CREATION_DATETIME": now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "CALIB_CREATION_DATE": local.strftime("%Y-%m-%d"),
        "CALIB_CREATION_TIME": local.strftime("%X %Z"),
    }
    ids = sorted(int(e) for e in exposure_ids)
    if exposures is None:
        cards.update({f"CPP_INPUT_{i}": exposure for i, exposure in enumerate(ids)})
        return cards
    missing = [exposure for exposure in ids if exposure not in exposures]
    if missing:
        raise MissingMetadataError(
            f"cpSkyCombine: no exposure record for the input exposure(s) {missing} (the sky frame's header "
            "dates them); its inputExpHandles (cpSkyObjectMask) must include every input exposure."
        )
    inputs = [exposures[exposure] for exposure in ids]
    for i, exposure in enumerate(inputs):
        cards[f"CPP_INPUT_{i}"] = exposure.exposure_id
        cards[f"CPP_INPUT_DATE_{i}"] = str(_tai(exposure.midpoint).to_value("fits"))
        cards[f"CPP_INPUT_EXPT_{i}"] = exposure.exposure_time
    if not inputs:
        return cards
    # As cp_pipe: order the inputs by their middles; the range runs from the first one's start
    # to the last one's end.
    by_date = sorted(inputs, key=lambda exposure: exposure.midpoint)
    earliest, newest = by_date[0].begin, by_date[-1].end
    cards["TIMESYS"] = "TAI"
    for suffix, date in (
        ("OBS", earliest),
        ("BEG", earliest),
        ("END", newest),
        ("AVG", earliest + (newest - earliest) / 2.0),
    ):
        cards[f"DATE-{suffix}"] = _tai(date).isot
        cards[f"MJD-{suffix}"] = float(_tai(date).mjd)
    return cards


def _tai(time: astropy.time.Time) -> astropy.time.Time:
    """Return ``time`` in TAI, written to the millisecond as cp_pipe's cards are.

    The registry's times print to the microsecond; cp_pipe's (from afw dates) to the millisecond.
    """
    return astropy.time.Time(time, scale="tai", precision=3)


def _stamp_calibration(
    sky: MaskedImage, exposure_ids: Sequence[int], exposures: Mapping[int, InputExposure] | None
) -> None:
    """Write the calibration header (`calibration_header`) and the input count into a sky frame."""
    sky.metadata.update(calibration_header(exposure_ids, exposures))
    sky.metadata["SKY_NINPUTS"] = len(exposure_ids)
