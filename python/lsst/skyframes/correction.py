"""`SkyCorrectionTask`: apply sky frames to a visit (the Rubin pipe_tasks ``skyCorr``).

Per visit, over every detector that has every input the configuration needs
(the others are skipped and named, as in the reference):

0. ``doApplyFlatBackgroundRatio``: multiply each image by its
   ``background_to_photometric_ratio`` (background-flattened to
   photometric-flattened), before any background work;
1. restore each detector's original background (its ``calBkgs`` list) and
   detect objects (``maskObjects``), which stay flagged ``DETECTED`` so that
   they are left out of every model below;
2. ``bgModel1``: fit one large-scale `FocalPlaneBackground` over the whole
   focal plane (with the instrument's overrides, the build's largeScaleBackground
   bins: one detector) and subtract it;
3. ``doSky``: measure matching samples of every detector and of its sky frame
   (`SkyMeasurementTask.measureScale`), fit **one** scale to all of them
   (`SkyMeasurementTask.solveScales`) and subtract the scaled sky frames;
4. ``undoBgModel1``: optionally add ``bgModel1`` back;
5. ``doBgModel2``: fit a finer, smoothed focal-plane background (bins one
   detector wide by default) to the residual and subtract it.

Output per detector: ``skyCorr``, the background list of everything
subtracted, such that **calibrated image - skyCorr.getImage() = sky-corrected
image**. As in the reference, the list starts with the input background's
elements *negated* (restoring it), followed by the elements this task adds.
With ``doApplyFlatBackgroundRatio`` the calibrated image in that identity is
the ratio times the input image: the input background is restored unscaled,
as the reference does. Per visit: binned focal-plane mosaics of the corrected images and of the
background this task subtracted (and PNG plots of both).

``runQuantum`` only unpacks inputs and packs outputs; ``run`` takes plain
images, so the whole correction runs in a notebook without a butler.
"""

from __future__ import annotations

__all__ = [
    "FocalPlaneCoverageError",
    "MissingSkyFrameError",
    "SkyCorrectionConfig",
    "SkyCorrectionConnections",
    "SkyCorrectionTask",
    "register_correction_inputs",
]

from collections.abc import Sequence
from typing import Any

import numpy as np

from lsst.daf.butler import Butler, DatasetType, DeferredDatasetHandle
from lsst.images import Image, MaskedImage, VisitImage
from lsst.pex.config import ConfigField, ConfigurableField, Field, FieldValidationError, ListField, RangeField
from lsst.pipe.base import (
    AlgorithmError,
    AnnotatedPartialOutputsError,
    InMemoryDatasetHandle,
    InputQuantizedConnection,
    OutputQuantizedConnection,
    PipelineTask,
    PipelineTaskConfig,
    PipelineTaskConnections,
    QuantumContext,
    Struct,
)
from lsst.pipe.base import connectionTypes as cT
from lsst.utils.timer import timeMethod

from ._visit_store import HeldImages, ScratchImages
from .background import BackgroundList, BackgroundMI
from .build import refuse_unused_fields
from .camera import Camera, DetectorGeometry
from .connections import camera_connection
from .errors import (
    BoxMismatchError,
    FocalPlaneCoverageError,
    MissingSkyFrameError,
    NoDataError,
    VisitImageError,
)
from .focal_plane import FocalPlaneBackground, FocalPlaneBackgroundConfig
from .images import image_and_mask, require_same_bbox
from .masking import MaskObjectsTask
from .mosaic import bin_image, focal_plane_mosaic, mosaic_figure
from .pca import fit_component_scales, subtract_components
from .sky_measurement import SkyMeasurementTask
from .visit_images import (
    attached_detector,
    camera_from_visit_images,
    detector_geometry,
    subtracted_background,
    with_correction,
)

# ---------------------------------------------------------------------------------------------------------
# Connections and configuration
# ---------------------------------------------------------------------------------------------------------


class SkyCorrectionConnections(PipelineTaskConnections, dimensions=("instrument", "visit")):
    calExps = cT.Input(
        name="preliminary_visit_image",
        doc="Background-subtracted calibrated images of every detector of the visit.",
        storageClass="MaskedImageV2",
        dimensions=("instrument", "visit", "detector"),
        multiple=True,
        # Loaded one detector at a time inside run (they are then held for the
        # whole visit: see SkyCorrectionTask.run).
        deferLoad=True,
    )
    calBkgs = cT.Input(
        name="preliminary_visit_image_background",
        doc="Backgrounds already subtracted from calExps; a detector without one is skipped (when no "
        "detector of the visit has one, nothing is taken as subtracted from any).",
        storageClass="SkyBackgroundList",
        dimensions=("instrument", "visit", "detector"),
        multiple=True,
        # Optional per detector and as a whole (minimum=0 also keeps it out of
        # the graph's initial data-ID query, so it cannot drop detectors).
        minimum=0,
    )
    backgroundToPhotometricRatioHandles = cT.Input(
        name="background_to_photometric_ratio",
        doc="Per detector, the ratio of the background-flattened to the photometric-flattened image "
        "(only with doApplyFlatBackgroundRatio); each calExp is multiplied by it.",
        storageClass="ImageV2",
        dimensions=("instrument", "visit", "detector"),
        multiple=True,
        deferLoad=True,
        # As calBkgs: a detector without one is named and skipped in run
        # rather than dropped unseen by the graph's data-ID query.
        minimum=0,
    )
    skyFrames = cT.PrerequisiteInput(
        name="sky",
        doc="Sky frames (calibration lookup by the visit's physical filter and time); a detector without "
        "one is skipped.",
        storageClass="MaskedImageV2",
        dimensions=("instrument", "physical_filter", "detector"),
        isCalibration=True,
        multiple=True,
        # Checked in run, which skips and names the detectors that lack one,
        # instead of failing the whole graph build.
        minimum=0,
    )
    skyComponents = cT.PrerequisiteInput(
        name="sky_components",
        doc="Multi-component sky templates (only with nComponents > 1; cpSkyCombine with nComponents "
        ">= this task's); the first nComponents elements are used.",
        storageClass="SkyBackgroundList",
        dimensions=("instrument", "physical_filter", "detector"),
        isCalibration=True,
        multiple=True,
        minimum=0,
    )
    # Optional: without one, run takes the detectors attached to the
    # VisitImages (a Rubin repository has no skyframes camera dataset).
    camera = camera_connection(optional=True)
    skyCorr = cT.Output(
        name="skyCorr",
        doc="Everything subtracted from the sky-corrected image: calExp - skyCorr.getImage() is the "
        "sky-corrected image.",
        storageClass="SkyBackgroundList",
        dimensions=("instrument", "visit", "detector"),
        multiple=True,
    )
    correctedExp = cT.Output(
        name="sky_corrected_visit_image",
        doc="The sky-corrected images (only with doWriteCorrected).",
        storageClass="MaskedImageV2",
        dimensions=("instrument", "visit", "detector"),
        multiple=True,
    )
    correctedVisitImage = cT.Output(
        name="skyCorr_visit_image",
        doc="The sky-corrected VisitImages, their BackgroundMap gaining this task's correction as entry "
        "correctionEntry (only with doWriteCorrectedVisitImage; needs VisitImage inputs).",
        storageClass="VisitImage",
        dimensions=("instrument", "visit", "detector"),
        multiple=True,
    )
    calExpMosaic = cT.Output(
        name="skyCorr_visit_mosaic",
        doc="Focal-plane mosaic of the sky-corrected images, binned by `binning`.",
        storageClass="ImageV2",
        dimensions=("instrument", "visit"),
    )
    calBkgMosaic = cT.Output(
        name="skyCorr_background_visit_mosaic",
        doc="Focal-plane mosaic of the background this task subtracted (bgModel1, sky frame, bgModel2), "
        "binned by `binning`.",
        storageClass="ImageV2",
        dimensions=("instrument", "visit"),
    )
    calExpMosaicPlot = cT.Output(
        name="skyCorr_visit_mosaic_plot",
        doc="PNG of calExpMosaic (only with doPlotMosaics).",
        storageClass="Plot",
        dimensions=("instrument", "visit"),
    )
    calBkgMosaicPlot = cT.Output(
        name="skyCorr_background_visit_mosaic_plot",
        doc="PNG of calBkgMosaic (only with doPlotMosaics).",
        storageClass="Plot",
        dimensions=("instrument", "visit"),
    )

    def __init__(self, *, config: SkyCorrectionConfig | None = None) -> None:
        super().__init__(config=config)
        if config is None:
            return
        if not config.doWriteCorrected:
            del self.correctedExp
        if not config.doWriteCorrectedVisitImage:
            del self.correctedVisitImage
        if not config.doPlotMosaics:
            del self.calExpMosaicPlot
            del self.calBkgMosaicPlot
        if not config.doSky:
            # No lookup at all: a repository without sky frames can still run
            # the focal-plane models alone.
            del self.skyFrames
            del self.skyComponents
        elif config.nComponents == 1:
            del self.skyComponents
        else:
            del self.skyFrames
        if not config.doApplyFlatBackgroundRatio:
            del self.backgroundToPhotometricRatioHandles


class SkyCorrectionConfig(PipelineTaskConfig, pipelineConnections=SkyCorrectionConnections):
    """Configuration of `SkyCorrectionTask` (fields and defaults of the reference)."""

    doApplyFlatBackgroundRatio = Field[bool](
        doc="Multiply each image by its background_to_photometric_ratio before any background work? Set "
        "it when the images were flattened with an illumination correction (a background flat): the sky "
        "is then fitted on photometric-flattened images, as the reference does.",
        default=False,
    )
    maskObjects = ConfigurableField(target=MaskObjectsTask, doc="Object detection.")
    doMaskObjects = Field[bool](doc="Detect objects and keep them out of the models?", default=True)
    bgModel1 = ConfigField[FocalPlaneBackgroundConfig](
        doc="Large-scale focal-plane background. No default size, as in the reference (obs packages set "
        "it, to the bins of the build's largeScaleBackground; the instrument's overrides make both one "
        "detector, see lsst.skyframes.camera_overrides.LARGE_SCALE_DETECTORS).",
        dtype=FocalPlaneBackgroundConfig,
    )
    undoBgModel1 = Field[bool](
        doc="Add bgModel1 back after the sky frame (leaving the large scales to bgModel2)?", default=False
    )
    sky = ConfigurableField(target=SkyMeasurementTask, doc="Sky-frame scaling and subtraction.")
    doSky = Field[bool](doc="Scale and subtract the sky frames?", default=True)
    nComponents = Field[int](
        doc="Sky templates fitted per visit: 1 scales the `sky` frame (the reference); K > 1 fits K "
        "coefficients over all detectors to the first K templates of `sky_components` "
        "(pca.fit_component_scales, with sky's sample boxes and rejection) and subtracts their sum.",
        default=1,
        check=lambda n: n >= 1,
    )
    bgModel2 = ConfigField[FocalPlaneBackgroundConfig](
        doc="Finer, smoothed focal-plane background of the residual (defaults: the reference's, 256x256 "
        "bins of pixelSize 1; the instrument's overrides make them one detector, see "
        "lsst.skyframes.camera_overrides).",
        dtype=FocalPlaneBackgroundConfig,
    )
    doBgModel2 = Field[bool](doc="Fit and subtract bgModel2?", default=True)
    binning = RangeField[int](doc="Binning (pixels) of the visit mosaics.", default=8, min=1)
    mosaicMask = ListField[str](
        doc="Mask planes whose pixels the corrected-image mosaic ignores.", default=["BAD", "SAT", "NO_DATA"]
    )
    visitImageBackgroundEntry = Field[str](
        doc="For lsst.images VisitImage inputs without separate backgrounds (calBkgs): the entry of each "
        "image's BackgroundMap holding the background already subtracted, restored before any model "
        "(Rubin's rewrite task names it 'subtracted'); None if nothing was subtracted. Ignored for "
        "images given with their calBkgs.",
        default="subtracted",
        optional=True,
    )
    doWriteCorrected = Field[bool](doc="Also write the sky-corrected images?", default=False)
    doWriteCorrectedVisitImage = Field[bool](
        doc="Also write the sky-corrected images as VisitImages (skyCorr_visit_image) whose BackgroundMap "
        "gains this task's correction, the terms after the restored background (Rubin's "
        "'differential_composed'), as entry correctionEntry? Needs lsst.images VisitImage inputs.",
        default=False,
    )
    correctionEntry = Field[str](
        doc="Name of the BackgroundMap entry holding this task's correction in skyCorr_visit_image.",
        default="skyCorr",
    )
    doPlotMosaics = Field[bool](doc="Write PNG plots of the two mosaics?", default=True)

    def setDefaults(self) -> None:
        super().setDefaults()
        self.bgModel2.doSmooth = True
        self.bgModel2.minFrac = 0.3
        self.bgModel2.xSize = 256
        self.bgModel2.ySize = 256
        self.bgModel2.smoothScale = 1.0

    def validate(self) -> None:
        # Before the fields' own checks, so that the message names this task's fix.
        if self.bgModel1.xSize is None or self.bgModel1.ySize is None:
            raise FieldValidationError(
                SkyCorrectionConfig.bgModel1,
                self,
                "bgModel1.xSize/ySize are unset: as in the reference they have no default, the "
                "instrument sets them. Set them (mm, with bgModel1.pixelSize in mm) in an obs config "
                "override file (config/skyCorr.py) or a pipeline config block, or on the command line "
                "(-c skyCorr:bgModel1.xSize=81.92 -c skyCorr:bgModel1.ySize=81.92 "
                "-c skyCorr:bgModel1.pixelSize=0.01), or take them from the camera with the instrument's "
                "overrides: pipetask run --instrument lsst.skyframes.instrument.SkyFramesInstrument "
                "with SKYFRAMES_CAMERA=camera.yaml (in Python: "
                "lsst.skyframes.camera_overrides.apply_camera_overrides('skyCorr', config, camera)).",
            )
        super().validate()
        if self.nComponents > 1 and not self.doSky:
            raise FieldValidationError(
                SkyCorrectionConfig.nComponents,
                self,
                f"nComponents={self.nComponents} needs doSky=True (the templates are what it fits); set "
                "doSky=True or nComponents=1.",
            )
        refuse_unused_fields(
            self.sky.value,
            ("maxDetectedFraction",),
            "sky.",
            "SkyCorrectionTask",
            "it weighs the detections across a build's exposures when the sky frame is made "
            "(cpSkyCombine:sky.maxDetectedFraction, with combineLevel='pixel'), not when it is applied.",
        )
        if self.undoBgModel1 and not self.doSky and not self.doBgModel2:
            raise FieldValidationError(
                SkyCorrectionConfig.undoBgModel1,
                self,
                "undoBgModel1=True with doSky=False and doBgModel2=False would subtract nothing at all; "
                "enable doSky or doBgModel2, or set undoBgModel1=False.",
            )


def register_correction_inputs(butler: Butler, run: str, config: SkyCorrectionConfig | None = None) -> None:
    """Register the input dataset types of `SkyCorrectionTask` and a RUN collection.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable butler.
    run : `str`
        RUN collection to register (harmless if it exists).
    config : `SkyCorrectionConfig`, optional
        Configuration whose connection names to register (default names
        otherwise); with ``doApplyFlatBackgroundRatio`` the ratio images'
        dataset type too.

    Notes
    -----
    The calibrated images and their backgrounds have dimensions (instrument,
    visit, detector), unlike the build inputs that
    `~lsst.skyframes.ingest.register_input` declares, so they are declared
    from the connections themselves. Put them with
    ``butler.put(image, "preliminary_visit_image", instrument=...,
    visit=..., detector=..., run=run)`` after defining the visit
    (`~lsst.skyframes.repo.insert_exposure` defines one per exposure).
    """
    connections = SkyCorrectionConnections(config=config or SkyCorrectionConfig())
    names = ("calExps", "calBkgs", "backgroundToPhotometricRatioHandles")
    for name in (n for n in names if n in connections.inputs):
        connection = getattr(connections, name)
        butler.registry.registerDatasetType(
            DatasetType(
                connection.name, connection.dimensions, connection.storageClass, universe=butler.dimensions
            )
        )
    butler.registry.registerRun(run)


# ---------------------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------------------


# What a dataset can be passed as instead of itself: pipetask's deferred
# handles, and pipe_base's in-memory ones (notebooks, tests).
_HANDLES = (DeferredDatasetHandle, InMemoryDatasetHandle)


def _load(item: Any) -> Any:
    """Return ``item``, or what it refers to if it is a butler dataset handle."""
    return item.get() if isinstance(item, _HANDLES) else item


def _label(detector: int, camera: Camera | None) -> str:
    """Name a detector in messages: its id, and its name if the camera is known yet."""
    return f"{detector} ({camera[detector].name})" if camera is not None else str(detector)


def _render(element: tuple) -> np.ndarray:
    """Full-resolution image of one background-list element (its own styles)."""
    background, interp, undersample, *_ = element
    return background.getImageF(interp, undersample).array


def _negated(bgList: BackgroundList) -> BackgroundList:
    """Copy of a background list with every stats image multiplied by -1.

    afw's ``statsImage *= -1`` on a masked image leaves the variance plane
    as it is ((-1)**2 = 1); so does this.
    """
    out = BackgroundList()
    for background, *styles in bgList:
        stats = background.getStatsImage().copy()
        stats.image.array *= -1
        out.append(
            (BackgroundMI(background.getImageBBox(), stats, background.getBackgroundControl()), *styles)
        )
    return out


class SkyCorrectionTask(PipelineTask):
    """Correct the sky of a whole visit: focal-plane models and a scaled sky frame.

    See the module docstring for the steps. `run` records in the task
    metadata: ``nDetectors``, ``detectors`` (those that took part),
    ``skippedDetectors`` (the others: detector id -> the dataset types it
    lacks), ``skyFrameScale`` (NaN without
    ``doSky``), per model ``bgModel1``/``bgModel2`` the bins and good bins and
    the median of the model, and per detector under ``skySamples`` the number
    of sample pairs, how many are finite, and the median image and sky
    samples.
    """

    ConfigClass = SkyCorrectionConfig
    _DefaultName = "skyCorr"
    config: SkyCorrectionConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.makeSubtask("maskObjects")
        self.makeSubtask("sky")

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        # Detector order fixed by id, so logs and metadata are reproducible.
        # Every detector with an image is passed on, None where another input
        # is absent: run decides which take part and names the others.
        refs = sorted(inputRefs.calExps, key=lambda ref: ref.dataId["detector"])
        detectorIds = [int(ref.dataId["detector"]) for ref in refs]
        calExps = [butlerQC.get(ref) for ref in refs]
        calBkgs = None
        if inputRefs.calBkgs:
            calBkgs = self._byDetector(butlerQC, inputRefs.calBkgs, detectorIds)
        skyFrames = skyComponents = ratios = None
        if self.config.doSky and self.config.nComponents == 1:
            skyFrames = self._byDetector(butlerQC, inputRefs.skyFrames, detectorIds)
        elif self.config.doSky:
            skyComponents = self._byDetector(butlerQC, inputRefs.skyComponents, detectorIds)
        if self.config.doApplyFlatBackgroundRatio:
            # Deferred handles: each ratio image is read when its detector is.
            ratios = self._byDetector(butlerQC, inputRefs.backgroundToPhotometricRatioHandles, detectorIds)
        # A connection with minimum=0 and no dataset is left unset.
        cameraRef = getattr(inputRefs, "camera", None)
        camera = butlerQC.get(cameraRef) if cameraRef is not None else None
        try:
            outputs = self.run(
                calExps=calExps,
                calBkgs=calBkgs,
                skyFrames=skyFrames,
                camera=camera,
                detectorIds=detectorIds,
                skyComponents=skyComponents,
                backgroundToPhotometricRatioHandles=ratios,
            )
        except AlgorithmError as err:
            # Nothing is written: a partial skyCorr (say without bgModel2)
            # would be taken downstream for a complete one. The failure is
            # recorded in this task's metadata, which is still written.
            error = AnnotatedPartialOutputsError.annotate(err, self, log=self.log)
            raise error from err
        try:
            self._write(butlerQC, outputRefs, outputs)
        finally:
            # Written (or failed): the scratch files can go.
            outputs.store.close()

    def _write(
        self, butlerQC: QuantumContext, outputRefs: OutputQuantizedConnection, outputs: Struct
    ) -> None:
        """Put the outputs of `run`; the corrected images are made one at a time."""
        # Skipped detectors get no outputs, as in the reference.
        index = {detector: i for i, detector in enumerate(outputs.detectorIds)}
        for ref in outputRefs.skyCorr:
            if ref.dataId["detector"] in index:
                butlerQC.put(outputs.skyCorr[index[ref.dataId["detector"]]], ref)
        if self.config.doWriteCorrected:
            for ref in outputRefs.correctedExp:
                if ref.dataId["detector"] in index:
                    butlerQC.put(outputs.correctedExp[index[ref.dataId["detector"]]], ref)
        if self.config.doWriteCorrectedVisitImage:
            for ref in outputRefs.correctedVisitImage:
                if ref.dataId["detector"] in index:
                    butlerQC.put(outputs.correctedVisitImage[index[ref.dataId["detector"]]], ref)
        butlerQC.put(outputs.calExpMosaic, outputRefs.calExpMosaic)
        butlerQC.put(outputs.calBkgMosaic, outputRefs.calBkgMosaic)
        if self.config.doPlotMosaics:
            butlerQC.put(outputs.calExpMosaicPlot, outputRefs.calExpMosaicPlot)
            butlerQC.put(outputs.calBkgMosaicPlot, outputRefs.calBkgMosaicPlot)

    @staticmethod
    def _byDetector(butlerQC: Any, refs: Sequence[Any], detectorIds: Sequence[int]) -> list[Any]:
        """Load the datasets of ``refs`` in ``detectorIds`` order, `None` where absent.

        Only the visit's detectors are read: a prerequisite lookup of sky
        frames finds those of every detector of the camera. Deferred refs
        give deferred handles.
        """
        found = {int(ref.dataId["detector"]): ref for ref in refs}
        return [butlerQC.get(found[d]) if d in found else None for d in detectorIds]

    @timeMethod
    def run(
        self,
        calExps: Sequence[MaskedImage | DeferredDatasetHandle],
        calBkgs: Sequence[BackgroundList | None] | None,
        skyFrames: Sequence[MaskedImage | None] | None,
        camera: Camera | None,
        detectorIds: Sequence[int],
        skyComponents: Sequence[BackgroundList | None] | None = None,
        backgroundToPhotometricRatioHandles: Sequence[Image | DeferredDatasetHandle | None] | None = None,
    ) -> Struct:
        """Correct the sky of one visit.

        The visit's detector set is, as in the reference, the detectors that
        have every input the configuration needs: the image, its background,
        its sky frame (``doSky``; its templates with ``nComponents`` > 1) and
        its ratio image (``doApplyFlatBackgroundRatio``). The others are
        skipped with a warning that names them and what they lack, and are
        recorded in the metadata under ``skippedDetectors`` (detector id ->
        the dataset types it lacks).

        Parameters
        ----------
        calExps : sequence of `lsst.images.MaskedImage` or `DeferredDatasetHandle`
            Background-subtracted calibrated images, one per detector of the
            visit (any subset of the camera). Images are corrected in place;
            pass copies to keep the originals. Handles are read one at a
            time.
        calBkgs : sequence of `BackgroundList` or `None`, or `None`
            Background already subtracted from each image; a detector whose
            entry is `None` is skipped. `None` for the whole visit means
            nothing was subtracted from any image, except from
            `lsst.images.VisitImage` inputs, whose background is then their
            ``BackgroundMap`` entry ``visitImageBackgroundEntry``
            (`~lsst.skyframes.visit_images.subtracted_background`, restored
            exactly as its field renders).
        skyFrames : sequence of `lsst.images.MaskedImage` or `None`, or `None`
            Sky frame of each detector (``sky`` calibrations); if ``doSky``
            and ``nComponents`` is 1 a detector without one is skipped;
            ignored otherwise.
        camera : `~lsst.skyframes.camera.Camera` or `None`
            Camera geometry; `None` takes it from the detectors attached to
            the images, which must then be `lsst.images.VisitImage`
            (`~lsst.skyframes.visit_images.camera_from_visit_images`).
        detectorIds : sequence of `int`
            Detector id of each image.
        skyComponents : sequence of `BackgroundList` or `None`, or `None`
            Sky templates of each detector (``sky_components``, at least
            ``nComponents`` elements); if ``doSky`` and ``nComponents`` > 1
            a detector without them is skipped; ignored otherwise.
        backgroundToPhotometricRatioHandles : sequence of `lsst.images.Image` or `None`, or `None`
            With ``doApplyFlatBackgroundRatio``: each detector's
            ``background_to_photometric_ratio``, by which its image (and its
            variance, squared) is multiplied before the background is
            restored; a detector without one is skipped. Deferred handles
            are read one at a time. Ignored otherwise.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            - ``detectorIds``: `list` of `int`, the detectors that took part,
              in input order; the lists below follow it;
            - ``skyCorr``: `list` of `BackgroundList`, per detector: the input
              background's elements negated, then bgModel1 (unless undone),
              the scaled sky frame, bgModel2, so that ``calExp -
              skyCorr.getImage()`` is the corrected image (with
              ``doApplyFlatBackgroundRatio``, ``ratio x calExp -
              skyCorr.getImage()``: as in the reference, the input background
              is restored unscaled and the models are fitted on the
              photometric-flattened image);
            - ``correctedExp``: sequence of the corrected images (the inputs
              when given in memory; made on access from handles, see Notes;
              photometric-flattened with ``doApplyFlatBackgroundRatio``);
            - ``calExpMosaic``, ``calBkgMosaic``: `lsst.images.Image` focal-plane
              mosaics (`~lsst.skyframes.mosaic.focal_plane_mosaic`) of the
              binned corrected images and of the background this task
              subtracted (the ``skyCorr`` elements after the input's);
            - ``calExpMosaicPlot``, ``calBkgMosaicPlot``:
              `matplotlib.figure.Figure` of the mosaics, or `None` without
              ``doPlotMosaics``;
            - ``skyFrameScale``: `float`, NaN without ``doSky`` (with
              ``nComponents`` > 1 the first coefficient);
            - ``skyComponentCoefficients``: `numpy.ndarray` of the
              ``nComponents`` fitted coefficients (``[skyFrameScale]`` for
              one component, empty without ``doSky``);
            - ``store``: where the images waited between the passes; its
              ``close()`` deletes any scratch files (see Notes);
            - ``correctedVisitImage``: with ``doWriteCorrectedVisitImage``,
              `list` of `lsst.images.VisitImage`: ``correctedExp`` whose
              ``BackgroundMap`` gains the ``skyCorr`` elements after the
              restored background as entry ``correctionEntry``
              (`~lsst.skyframes.visit_images.with_correction`); else `None`.

        Raises
        ------
        lsst.skyframes.errors.BackgroundEntryError
            Raised if a VisitImage given without calBkgs lacks the
            ``visitImageBackgroundEntry`` entry.
        lsst.skyframes.errors.VisitImageError
            Raised if ``camera`` is `None` and an image is not a VisitImage
            or its detector cannot be described, if ``detectorIds`` differ
            from the attached detectors, or if ``doWriteCorrectedVisitImage``
            is set and an image is not a VisitImage.
        MissingSkyFrameError
            Raised, before any image is read, if no detector takes part
            because none has a sky frame (or templates); the message names
            them.
        lsst.skyframes.errors.NoDataError
            Raised, before any image is read, if no detector has every
            required input; the message names what each lacks.
        FocalPlaneCoverageError
            Raised if every bin of bgModel1 or bgModel2 has fewer good pixels
            than ``minFrac`` allows (e.g. a fully masked visit).
        lsst.skyframes.errors.NoDataError
            Raised if there are no images.
        lsst.skyframes.errors.BoxMismatchError
            Raised if an image, its background or its sky frame does not
            cover the detector.

        Notes
        -----
        Memory: every model is a reduction over the whole focal plane whose
        result is then applied to every detector (bgModel1, the one sky
        scale, bgModel2), so each detector is visited five times, and
        re-reading an image for each visit would repeat its object detection.
        Images given in memory are corrected where they are (the caller
        holds them anyway). Images given as handles (pipetask's deferred
        handles, or `lsst.pipe.base.InMemoryDatasetHandle`) are read one at
        a time, restored and object-masked, and written uncompressed to a
        private scratch directory (`tempfile.gettempdir`, i.e. ``TMPDIR``;
        4 bytes per pixel plus the mask's bytes, plus 4 for the variance
        with ``doWriteCorrected`` or ``doWriteCorrectedVisitImage``), from
        which each later pass maps one detector at a time
        (`lsst.skyframes._visit_store.ScratchImages`). The results are the
        same bit for bit; memory is then about one detector's planes plus
        its detection scratch, whatever the number of detectors. The
        corrected images (``correctedExp``, ``correctedVisitImage``) are then
        made when each is asked for, from the image as read (so a VisitImage
        keeps its detector, PSF and backgrounds) with the stored planes, and
        the scratch files go with ``result.store.close()`` (runQuantum does
        it after writing). Sky frames and backgrounds are binned and small.
        """
        ids = [int(d) for d in detectorIds]
        self._warnedNoBackgrounds = False
        n = len(ids)
        if n == 0:
            raise NoDataError("SkyCorrectionTask.run got no images; a visit needs at least one detector.")
        nComponents = self.config.nComponents
        # The inputs this configuration requires of every detector.
        inputs = {"calExps": list(calExps)}
        if calBkgs is not None:
            inputs["calBkgs"] = list(calBkgs)
        if self.config.doSky and nComponents == 1:
            inputs["skyFrames"] = list(skyFrames or [None] * n)
        elif self.config.doSky:
            inputs["skyComponents"] = list(skyComponents or [None] * n)
        if self.config.doApplyFlatBackgroundRatio:
            ratioHandles = backgroundToPhotometricRatioHandles
            inputs["backgroundToPhotometricRatioHandles"] = list(ratioHandles or [None] * n)
        for name, values in inputs.items():
            if len(values) != n:
                raise ValueError(
                    f"SkyCorrectionTask.run: {name} has {len(values)} entries but detectorIds has {n}; "
                    "pass one entry per detector (None where a detector lacks it)."
                )
        keep = self._selectDetectors(ids, inputs, camera)
        ids = [ids[k] for k in keep]
        selected = {name: [values[k] for k in keep] for name, values in inputs.items()}
        calExps = selected["calExps"]
        absent = [None] * len(keep)
        calBkgs = selected.get("calBkgs")  # None: none were given
        skyFrames = selected.get("skyFrames", absent)
        skyComponents = selected.get("skyComponents", absent)
        ratios = selected.get("backgroundToPhotometricRatioHandles", absent)
        if self.config.doSky and nComponents > 1:
            self._checkSkyComponents(skyComponents, ids, camera)
        self.metadata["nDetectors"] = len(ids)
        self.metadata["detectors"] = ids

        # (1) Restore the original backgrounds, detect objects; the images
        # then wait in the store for the passes over the whole focal plane.
        store = self._makeStore(calExps)
        try:
            skyCorr, isVisitImage, camera = self._restoreAndDetect(
                store, ids, calExps, calBkgs, ratios, camera, detectorIds
            )
            nOriginal = [len(bgList) for bgList in skyCorr]
            return self._fitAndSubtract(
                store, calExps, isVisitImage, skyCorr, nOriginal, skyFrames, skyComponents, camera, ids
            )
        except BaseException:
            store.close()
            raise

    def _restoreAndDetect(
        self,
        store: HeldImages | ScratchImages,
        ids: Sequence[int],
        calExps: Sequence[Any],
        calBkgs: Sequence[Any] | None,
        ratios: Sequence[Any],
        camera: Camera | None,
        detectorIds: Sequence[int],
    ) -> tuple[list[BackgroundList], list[bool], Camera]:
        """Pass (1) of `run`: each image read once, restored, object-masked and stored.

        ``calBkgs`` is `None` when none were given. Returns the start of each
        detector's ``skyCorr``, whether each image is a VisitImage, and the
        camera (``camera``, or the one the VisitImages' detectors make).
        """
        skyCorr: list[BackgroundList] = []
        attached = []
        isVisitImage = []
        for d, calExp, calBkg, ratio in zip(ids, calExps, calBkgs or [None] * len(ids), ratios, strict=True):
            image = _load(calExp)
            if camera is None:
                # The detectors come from the images, one at a time.
                attached.append(attached_detector(image))
                detector = detector_geometry(attached[-1][0])
                if detector.id != d:
                    raise VisitImageError(
                        f"SkyCorrectionTask.run: detectorIds {[int(i) for i in detectorIds]} differ from the "
                        f"detectors attached to the images (detector {detector.id} where {d} was given); "
                        "pass the ids in the images' order."
                    )
            else:
                detector = camera[d]
            self._checkImageType(image, detector, noBackgrounds=calBkgs is None)
            if self.config.doApplyFlatBackgroundRatio:
                # Before any background work, as the reference does: the
                # restored background below is then added unscaled.
                self._applyFlatBackgroundRatio(image, _load(ratio), detector)
            calBkg = _load(calBkg)
            if calBkgs is None and isinstance(image, VisitImage):
                calBkg = self._visitImageBackground(image)
            skyCorr.append(self._restoreBackground(image, calBkg, detector))
            if self.config.doMaskObjects:
                # As the reference: find objects only (DETECTED stays set, the pixels are untouched).
                self.maskObjects.findObjects(image)
            isVisitImage.append(isinstance(image, VisitImage))
            store.add(image)
            # Let go of it before the next one is read.
            del image
        if camera is None:
            camera = camera_from_visit_images(attached)
        return skyCorr, isVisitImage, camera

    def _fitAndSubtract(
        self,
        images: HeldImages | ScratchImages,
        calExps: Sequence[Any],
        isVisitImage: Sequence[bool],
        skyCorr: list[BackgroundList],
        nOriginal: Sequence[int],
        skyFrames: Sequence[Any],
        skyComponents: Sequence[Any],
        camera: Camera,
        ids: Sequence[int],
    ) -> Struct:
        """Passes (2) to (5) of `run` over the stored images, then the outputs."""
        nComponents = self.config.nComponents
        detectors = [camera[d] for d in ids]
        # (2) Large-scale focal-plane model.
        self._subtractFocalPlaneModel("bgModel1", self.config.bgModel1, camera, images, detectors, skyCorr)

        # (3) One sky-frame scale for the whole visit.
        coefficients = np.array([])
        if self.config.doSky and nComponents == 1:
            coefficients = np.array(
                [self._subtractSkyFrames(images, [_load(s) for s in skyFrames], detectors, skyCorr)]
            )
        elif self.config.doSky:
            coefficients = self._subtractSkyComponents(
                images, [_load(s) for s in skyComponents], detectors, skyCorr
            )
        scale = float(coefficients[0]) if coefficients.size else float("nan")
        self.metadata["skyFrameScale"] = scale
        self.metadata["skyComponentCoefficients"] = [float(c) for c in coefficients]

        # (4) Optionally put bgModel1 back (it is the element after the input's).
        if self.config.undoBgModel1:
            for image, bgList, index in zip(images, skyCorr, nOriginal, strict=True):
                image.image.array += _render(bgList[index])
            skyCorr = [
                BackgroundList(*(e for k, e in enumerate(bgList) if k != index))
                for bgList, index in zip(skyCorr, nOriginal, strict=True)
            ]

        # (5) Finer focal-plane model of the residual.
        if self.config.doBgModel2:
            self._subtractFocalPlaneModel(
                "bgModel2", self.config.bgModel2, camera, images, detectors, skyCorr
            )

        result = self._mosaics(images, skyCorr, nOriginal, camera, ids, scale)
        result.skyComponentCoefficients = coefficients
        result.detectorIds = ids

        def correctedExp(index: int) -> MaskedImage:
            # From scratch files, the image as read with the stored planes
            # (so a VisitImage keeps its detector, PSF...); held images are
            # the inputs themselves.
            into = _load(calExps[index]) if isVisitImage[index] or self._keepVariance else None
            return images.final(index, into)

        def correctedVisitImage(index: int) -> VisitImage:
            return with_correction(
                correctedExp(index),
                skyCorr[index],
                self.config.correctionEntry,
                restored=nOriginal[index],
                image_is_corrected=True,
            )

        result.correctedExp = images.outputs(correctedExp)
        result.correctedVisitImage = None
        if self.config.doWriteCorrectedVisitImage:
            result.correctedVisitImage = images.outputs(correctedVisitImage)
        result.store = images
        return result

    @property
    def _keepVariance(self) -> bool:
        """Whether the corrected images are wanted whole (their variance too)."""
        return self.config.doWriteCorrected or self.config.doWriteCorrectedVisitImage

    def _makeStore(self, calExps: Sequence[Any]) -> HeldImages | ScratchImages:
        """Hold images given in memory; keep those read through butler handles in scratch files.

        Images the caller holds cost nothing more to keep. Images read from
        dataset handles (pipetask's deferred handles) would otherwise all be
        resident at once: 12 bytes per pixel of the camera.
        """
        if any(isinstance(c, _HANDLES) for c in calExps):
            return ScratchImages(keepVariance=self._keepVariance)
        return HeldImages()

    # What each required input is, and how to provide it, for the messages
    # about detectors that lack it.
    _INPUT_FIXES = {
        "calExps": "put its image",
        "calBkgs": "put the background subtracted from its image",
        "skyFrames": "build and certify its sky frame (pipelines/BuildSkyFrame.yaml, then `skyframes "
        "certify`) and check that the <instrument>/calib collection is valid at the visit's time",
        "skyComponents": "build its templates with -c cpSkyCombine:nComponents=K (K >= nComponents) "
        "and certify them",
        "backgroundToPhotometricRatioHandles": "put its ratio image",
    }

    def _selectDetectors(
        self, ids: Sequence[int], inputs: dict[str, list[Any]], camera: Camera | None
    ) -> list[int]:
        """Return the positions of the detectors that have every required input.

        The others are logged as a warning naming each one and the dataset
        types it lacks, and recorded in the metadata under
        ``skippedDetectors``: per detector id (as a string) the dataset
        types it lacks, comma-separated; empty when none was skipped.

        Raises
        ------
        MissingSkyFrameError
            Raised if no detector is left and none had a sky frame (or
            templates).
        lsst.skyframes.errors.NoDataError
            Raised if no detector is left for any other reason.
        """
        missing = {k: [name for name, values in inputs.items() if values[k] is None] for k in range(len(ids))}
        keep = [k for k, names in missing.items() if not names]
        skipped = {ids[k]: names for k, names in missing.items() if names}
        connections = self.config.connections
        lacks = {d: ", ".join(getattr(connections, name) for name in names) for d, names in skipped.items()}
        # One string per detector: TaskMetadata reads a list back as its last element.
        self.metadata["skippedDetectors"] = {str(d): datasets for d, datasets in lacks.items()}
        if not skipped:
            return keep
        lines = [f"{_label(d, camera)}: no {datasets}" for d, datasets in lacks.items()]
        lacking = sorted({name for names in skipped.values() for name in names})
        fixes = "; ".join(f"for {getattr(connections, name)}, {self._INPUT_FIXES[name]}" for name in lacking)
        if keep:
            self.log.warning(
                "Skipping %d of %d detectors of this visit, which lack a required input: %s. To include "
                "them: %s.",
                len(skipped),
                len(ids),
                "; ".join(lines),
                fixes,
            )
            return keep
        message = (
            f"No detector of this visit has every input skyCorr needs: {'; '.join(lines)}. To include "
            f"them: {fixes}."
        )
        for sky, alternative in (
            ("skyFrames", "-c skyCorr:doSky=False to use the focal-plane models only"),
            ("skyComponents", "-c skyCorr:nComponents=1 to use the single sky frames"),
        ):
            if sky in inputs and all(sky in names for names in skipped.values()):
                raise MissingSkyFrameError(f"{message} Or run with {alternative}.", list(skipped))
        raise NoDataError(message)

    def _checkSkyComponents(
        self, skyComponents: Sequence[Any], ids: Sequence[int], camera: Camera | None
    ) -> None:
        """Raise `MissingSkyFrameError` if a detector has fewer than ``nComponents`` templates."""
        for d, templates in zip(ids, skyComponents, strict=True):
            if not isinstance(templates, _HANDLES) and len(templates) < self.config.nComponents:
                raise MissingSkyFrameError(
                    f"Detector {_label(d, camera)} has {len(templates)} sky templates but "
                    f"nComponents={self.config.nComponents}; rebuild with -c cpSkyCombine:nComponents="
                    f"{self.config.nComponents} or lower skyCorr:nComponents.",
                    [d],
                )

    def _applyFlatBackgroundRatio(self, image: MaskedImage, ratio: Image, detector: DetectorGeometry) -> None:
        """Turn a background-flattened image into a photometric-flattened one, in place.

        The image plane is multiplied by the ratio and the variance plane by
        its square, as afw multiplies a masked image by an image.
        """
        pixels, _ = image_and_mask(image)
        require_same_bbox(
            pixels.bbox, ratio.bbox, f"detector {detector.id} image and its background_to_photometric_ratio"
        )
        pixels.array *= ratio.array
        variance = getattr(image, "variance", None)
        if variance is not None:
            variance.array *= ratio.array**2
        self.log.debug("Detector %d: multiplied by its background to photometric ratio.", detector.id)

    def _checkImageType(self, image: MaskedImage, detector: DetectorGeometry, *, noBackgrounds: bool) -> None:
        """Say what a non-VisitImage input lacks, before any work is done on it.

        Without calBkgs a VisitImage's background comes from its
        ``BackgroundMap``; any other image is taken to have had nothing
        subtracted, which is logged (once per visit). doWriteCorrectedVisitImage
        needs VisitImages, so it fails here rather than after the models.
        """
        if isinstance(image, VisitImage):
            return
        if self.config.doWriteCorrectedVisitImage:
            raise VisitImageError(
                f"doWriteCorrectedVisitImage=True needs lsst.images VisitImages, but detector {detector.id} "
                f"({detector.name}) is a {type(image).__name__}; store the inputs as VisitImages "
                f"(storage class VisitImage) or set doWriteCorrectedVisitImage=False (doWriteCorrected "
                "writes the corrected images as they are)."
            )
        if noBackgrounds and not self._warnedNoBackgrounds:
            # Images ingested without their background (skyframes ingest
            # --visit-images): nothing was subtracted from any of them.
            self._warnedNoBackgrounds = True
            self.log.warning(
                "No %s for the detectors of this visit and the images are not VisitImages (whose "
                "BackgroundMap would say): taking it that nothing was subtracted from them.",
                self.config.connections.calBkgs,
            )

    def _visitImageBackground(self, image: VisitImage) -> BackgroundList | None:
        """Return the background a VisitImage says was subtracted, or `None` if configured so."""
        entry = self.config.visitImageBackgroundEntry
        if entry is None:
            return None
        return subtracted_background(image, entry)

    def _restoreBackground(
        self, image: MaskedImage, calBkg: BackgroundList | None, detector: DetectorGeometry
    ) -> BackgroundList:
        """Add the subtracted background back; return the negated list that starts skyCorr."""
        pixels, _ = image_and_mask(image)
        if tuple(pixels.bbox.shape) != detector.shape:
            raise BoxMismatchError(
                f"Image bbox {pixels.bbox} is {tuple(pixels.bbox.shape)} (height, width) but detector "
                f"{detector.id} ({detector.name!r}) is {detector.shape}; pass whole-detector images."
            )
        if calBkg is None or len(calBkg) == 0:
            return BackgroundList()
        restore = _negated(calBkg)
        model = restore.getImage()
        require_same_bbox(pixels.bbox, model.bbox, f"detector {detector.id} image and its input background")
        # image - (-background): the same operation skyCorr's user applies.
        pixels.array -= model.array
        return restore

    def _subtractFocalPlaneModel(
        self,
        label: str,
        config: FocalPlaneBackgroundConfig,
        camera: Camera,
        images: Sequence[MaskedImage],
        detectors: Sequence[DetectorGeometry],
        skyCorr: Sequence[BackgroundList],
    ) -> None:
        """Fit one focal-plane background to all images; subtract and record it."""
        model = FocalPlaneBackground.fromCamera(config, camera)
        goodPixels = {}
        for image, detector in zip(images, detectors, strict=True):
            before = float(model.numbers.sum())
            model.addCcd(image, detector)
            goodPixels[detector.id] = int(model.numbers.sum() - before)
        threshold = config.minFrac * (config.xSize / config.pixelSize) * (config.ySize / config.pixelSize)
        try:
            stats = model.getStatsImage()
        except NoDataError as err:
            counts = ", ".join(f"{d}: {n}" for d, n in goodPixels.items())
            raise FocalPlaneCoverageError(
                f"{label}: no focal-plane bin of this visit has the {threshold:.0f} good pixels minFrac="
                f"{config.minFrac:g} requires (good pixels per detector {{{counts}}}). The visit is (nearly) "
                f"fully masked or too few detectors are present; lower skyCorr:{label}.minFrac, use larger "
                f"{label}.xSize/ySize, or exclude the visit.",
                label,
                goodPixels,
                threshold,
            ) from err
        good = model.numbers >= threshold
        self.metadata[label] = {
            "nBins": int(good.size),
            "nGoodBins": int(good.sum()),
            "median": float(np.median(stats[good])) if good.any() else float("nan"),
        }
        self.log.info(
            "%s: %d of %d bins good (%.3g x %.3g mm), median %.4g",
            label,
            int(good.sum()),
            good.size,
            config.xSize,
            config.ySize,
            self.metadata[label]["median"],
        )
        for image, detector, bgList in zip(images, detectors, skyCorr, strict=True):
            pixels, _ = image_and_mask(image)
            ccd = model.toCcdBackground(detector, pixels.bbox)
            pixels.array -= _render(ccd[0])
            bgList.append(ccd[0])

    def _subtractSkyFrames(
        self,
        images: Sequence[MaskedImage],
        skyFrames: Sequence[MaskedImage],
        detectors: Sequence[DetectorGeometry],
        skyCorr: Sequence[BackgroundList],
    ) -> float:
        """Fit one scale over all detectors and subtract the scaled sky frames."""
        skies = [self.sky.exposureToBackground(frame) for frame in skyFrames]
        samples = []
        perDetector = {}
        for image, sky, detector in zip(images, skies, detectors, strict=True):
            imageSamples, skySamples = self.sky.measureScale(image, sky)
            samples.append((imageSamples, skySamples))
            finite = np.isfinite(imageSamples) & np.isfinite(skySamples)
            perDetector[str(detector.id)] = {
                "nSamples": int(imageSamples.size),
                "nFinite": int(finite.sum()),
                "medianImageSample": float(np.median(imageSamples[finite])) if finite.any() else float("nan"),
                "medianSkySample": float(np.median(skySamples[finite])) if finite.any() else float("nan"),
            }
        self.metadata["skySamples"] = perDetector
        scale = self.sky.solveScales(samples)
        self.log.info("Sky frame scale: %.6g (from %d detectors)", scale, len(images))
        for image, sky, bgList in zip(images, skies, skyCorr, strict=True):
            self.sky.subtractSkyFrame(image, sky, scale, bgList)
        return scale

    def _subtractSkyComponents(
        self,
        images: Sequence[MaskedImage],
        skyComponents: Sequence[BackgroundList],
        detectors: Sequence[DetectorGeometry],
        skyCorr: Sequence[BackgroundList],
    ) -> np.ndarray:
        """Fit K template coefficients over all detectors; subtract the combination.

        Each scaled template is appended to the detector's ``skyCorr`` list,
        so the list still describes everything subtracted; the coefficients
        go to the metadata.
        """
        k = self.config.nComponents
        templates = [[BackgroundList(element) for element in list(bgList)[:k]] for bgList in skyComponents]
        coefficients = fit_component_scales(images, templates, self.sky.config)
        self.log.info(
            "Sky template coefficients: %s (from %d detectors)",
            ", ".join(f"{c:.6g}" for c in coefficients),
            len(images),
        )
        for image, detectorTemplates, bgList in zip(images, templates, skyCorr, strict=True):
            subtract_components(image, detectorTemplates, coefficients, bgList)
        return coefficients

    def _mosaics(
        self,
        images: HeldImages | ScratchImages,
        skyCorr: list[BackgroundList],
        nOriginal: Sequence[int],
        camera: Camera,
        ids: Sequence[int],
        scale: float,
    ) -> Struct:
        binning = self.config.binning
        binnedExps = {
            d: bin_image(image, binning, self.config.mosaicMask) for d, image in zip(ids, images, strict=True)
        }
        binnedBkgs = {
            d: bin_image(BackgroundList(*bgList[n:]).getImage(), binning)
            for d, bgList, n in zip(ids, skyCorr, nOriginal, strict=True)
        }
        calExpMosaic = focal_plane_mosaic(camera, binnedExps, binning)
        calBkgMosaic = focal_plane_mosaic(camera, binnedBkgs, binning)
        plots: tuple[Any, Any] = (None, None)
        if self.config.doPlotMosaics:
            plots = (
                mosaic_figure([("sky-corrected image", calExpMosaic)], label="counts", about_sky=True),
                mosaic_figure([("background subtracted by skyCorr", calBkgMosaic)], label="counts"),
            )
        return Struct(
            skyCorr=skyCorr,
            calExpMosaic=calExpMosaic,
            calBkgMosaic=calBkgMosaic,
            calExpMosaicPlot=plots[0],
            calBkgMosaicPlot=plots[1],
            skyFrameScale=scale,
        )
