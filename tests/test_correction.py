"""SkyCorrectionTask in-process: sky frames built by the build tasks, applied to a simulated visit.

The camera is 2x2 detectors of 256 px. The simulation's patterns scale with the detector
(rings ~30 px wide, amplifier steps ~20 px), so the sky frames are binned in 8 px bins, the
ratio LSSTCam's 32 px bins have to its 4096 px detectors' features; with 32 px bins the
binned frame cannot follow them and its spline rendering alone biases the scale by ~4%.
bgModel1 uses the build's bin size (the sky frame is the residual of exactly that model), and
the scale is measured in 16x16 samples per detector, so that four detectors give about the
statistics of a full camera's 4x4 (with a bgModel1 of two detectors, the generic instrument's
before it took the build's bins, the leftover per-detector structure biased the scale of this
small camera by +5%).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from lsst.images import Image, MaskedImage
from lsst.pex.config import FieldValidationError

from lsst.skyframes.bin_size import BinSizeChoice
from lsst.skyframes.build import (
    CpSkyCombineConfig,
    CpSkyCombineTask,
    CpSkyImageConfig,
    CpSkyImageTask,
    CpSkyScaleMeasureTask,
    CpSkySubtractBackgroundConfig,
    CpSkySubtractBackgroundTask,
)
from lsst.skyframes.camera import Camera, DetectorGeometry, FilterDefinition, make_synthetic_camera
from lsst.skyframes.camera_overrides import camera_config, camera_sized_config
from lsst.skyframes.correction import (
    FocalPlaneCoverageError,
    MissingSkyFrameError,
    SkyCorrectionConfig,
    SkyCorrectionConnections,
    SkyCorrectionTask,
)
from lsst.skyframes.errors import NoDataError
from lsst.skyframes.mask_planes import default_mask_schema
from lsst.skyframes.mosaic import MosaicGeometry, bin_image, focal_plane_mosaic
from lsst.skyframes.simulate import ExposurePlan, plan_exposures, simulate_detector, simulate_science_visit
from lsst.skyframes.truth import large_scale_residual, visit_sky_level

SEED = 17
AMPLITUDE = 0.3
SKY_BIN = 8
LEVEL = 1500.0
OBJECTS = {"n_stars": 40, "n_galaxies": 8}


@dataclasses.dataclass
class Frames:
    camera: Camera
    skies: dict[int, MaskedImage]
    focal_plane: object  # the build's resolved large-scale config
    residuals: dict[int, list]  # per detector, the residual backgrounds the sky frames combine


@pytest.fixture(scope="module")
def frames() -> Frames:
    """Sky frames of a 2x2 camera built by the four build tasks' run methods."""
    camera = make_synthetic_camera(n_x=2, n_y=2, size=256, gap_px=32)
    plans = plan_exposures(10, camera.physical_filters[0], seed=SEED)
    subtract_config = CpSkySubtractBackgroundConfig()
    subtract_config.sky.background.xBinSize = subtract_config.sky.background.yBinSize = SKY_BIN
    image_task = CpSkyImageTask(config=camera_config(CpSkyImageTask, camera))
    scale_task = CpSkyScaleMeasureTask()
    subtract_task = CpSkySubtractBackgroundTask(config=subtract_config)
    residuals: dict[int, list] = {d.id: [] for d in camera}
    for plan in plans:
        masked, backgrounds = {}, []
        for detector in camera:
            exposure = simulate_detector(detector, plan, seed=SEED, amplitude=AMPLITUDE, **OBJECTS)
            result = image_task.run(exposure.image, camera, detector)
            masked[detector.id] = result.maskedExp
            backgrounds.append(result.maskedBkg)
        merged = scale_task.run(backgrounds)
        for detector in camera:
            residuals[detector.id].append(
                subtract_task.run(
                    masked[detector.id], merged.outputBkg, merged.outputScale, detector
                ).outputBkg
            )
    combine = CpSkyCombineTask(config=CpSkyCombineConfig(sky=subtract_config.sky))
    skies = {d: combine.run(residuals[d]).outputCalib for d in camera.detector_ids}
    focal_plane = camera_sized_config(CpSkyImageConfig().largeScaleBackground, camera, 1)
    return Frames(camera, skies, focal_plane, residuals)


def visit_plan(camera: Camera, exposure_id: int = 5000) -> ExposurePlan:
    return ExposurePlan(
        exposure_id=exposure_id,
        physical_filter=camera.physical_filters[0],
        sky_level=LEVEL,
        gradient=(8e-4, -5e-4),
        obs_start="2026-11-20T03:00:00",
    )


@pytest.fixture(scope="module")
def visit(frames):
    return simulate_science_visit(
        frames.camera, visit_plan(frames.camera), seed=SEED + 1, amplitude=AMPLITUDE, **OBJECTS
    )


def make_config(frames: Frames, **fields) -> SkyCorrectionConfig:
    # The camera-sized models (as pipetask --instrument), bgModel1 then as the build's bins.
    config = camera_config(SkyCorrectionTask, frames.camera)
    config.bgModel1.xSize = frames.focal_plane.xSize
    config.bgModel1.ySize = frames.focal_plane.ySize
    config.sky.xNumSamples = config.sky.yNumSamples = 16
    config.doPlotMosaics = False
    for name, value in fields.items():
        setattr(config, name, value)
    config.validate()
    return config


def correct(frames, visit, ids=None, *, calBkgs=None, skyFrames=None, ratios=None, **fields):
    """Run the task on copies of the visit; return (result, task, ids).

    ``calBkgs`` and ``skyFrames`` default to the visit's backgrounds and the built sky frames.
    """
    ids = sorted(visit) if ids is None else ids
    task = SkyCorrectionTask(config=make_config(frames, **fields))
    result = task.run(
        calExps=[visit[d].image.copy() for d in ids],
        calBkgs=[visit[d].background for d in ids] if calBkgs is None else calBkgs,
        skyFrames=[frames.skies[d] for d in ids] if skyFrames is None else skyFrames,
        camera=frames.camera,
        detectorIds=ids,
        backgroundToPhotometricRatioHandles=ratios,
    )
    return result, task, ids


def residual_rms(result, visit, ids) -> float:
    residuals = [
        large_scale_residual(image.image.array, visit[d].truth, image.mask.get("BAD"))
        for d, image in zip(ids, result.correctedExp, strict=True)
    ]
    # A bin covered entirely by an object is NaN; leave it out.
    return float(np.sqrt(np.nanmean(np.concatenate([r.ravel() for r in residuals]) ** 2)))


@pytest.fixture(scope="module")
def with_sky(frames, visit):
    return correct(frames, visit)


@pytest.fixture(scope="module")
def without_sky(frames, visit):
    return correct(frames, visit, doSky=False)


# --- (a), (b): the numbers -------------------------------------------------------------------------------


def test_sky_frame_removes_the_pattern(with_sky, without_sky, visit):
    rms_sky = residual_rms(with_sky[0], visit, with_sky[2])
    rms_models = residual_rms(without_sky[0], visit, without_sky[2])
    # 32 px bins of a 1500 e sky have ~1.5 e of noise; the pattern is ~15x that.
    assert rms_models > 10 * np.sqrt(LEVEL) / 32, rms_models
    assert rms_models > 5 * rms_sky, (rms_models, rms_sky)


def test_scale_is_the_visit_sky_level(frames, with_sky):
    result, task, _ = with_sky
    expected = visit_sky_level(frames.camera, visit_plan(frames.camera), frames.focal_plane, AMPLITUDE)
    # The sky frame's unit is the build's per-exposure level, the median of the focal-plane
    # model: the injected level times the mean of the patterns (1.9% above 1 at amplitude 0.3).
    assert 0.0 < expected / LEVEL - 1 < 0.03
    assert result.skyFrameScale == pytest.approx(expected, rel=0.005)
    assert task.metadata["skyFrameScale"] == result.skyFrameScale
    samples = task.metadata["skySamples"]
    assert set(samples) == {"0", "1", "2", "3"}
    assert all(samples[k]["nSamples"] == 256 and samples[k]["nFinite"] > 200 for k in samples)


def test_cross_validated_bin_size_corrects_as_well(frames, visit, with_sky):
    """Frames at sizes chosen by cross-validation correct the visit as well as the best fixed size.

    Here that is the fixed frames' 8 px; frames of the same inputs at the reference's 32 px leave
    more residual and a scale further from the truth (it absorbs the pattern 32-px bins cannot hold).
    """
    config = CpSkyCombineConfig()
    config.sky.background.binSizeChoice = "crossValidated"
    config.sky.background.binSizeCandidates = [SKY_BIN, 16, 32, 64]  # measured at the fixed frames' 8 px
    combine = CpSkyCombineTask(config=config)
    built = {d: combine.run(frames.residuals[d]) for d in frames.camera.detector_ids}
    chosen = {d: result.outputCalib for d, result in built.items()}
    for d, result in built.items():
        assert result.outputQuality["bin_size_choice"]["bin_size"] == chosen[d].metadata["BINSIZE"]
    at_32 = BinSizeChoice(32, (SKY_BIN, 16, 32, 64), (0.0,) * 4, (0.0,) * 4, (0.0,) * 4)
    coarse = {d: combine.sky.averageBackgrounds(r, binSizeChoice=at_32) for d, r in frames.residuals.items()}
    expected = visit_sky_level(frames.camera, visit_plan(frames.camera), frames.focal_plane, AMPLITUDE)
    results = {
        name: correct(frames, visit, skyFrames=[skies[d] for d in sorted(visit)])
        for name, skies in (("chosen", chosen), ("32 px", coarse))
    }
    rms = {name: residual_rms(result, visit, ids) for name, (result, _, ids) in results.items()}
    scale_error = {name: abs(result.skyFrameScale / expected - 1) for name, (result, _, _) in results.items()}
    fixed = residual_rms(with_sky[0], visit, with_sky[2])
    print(f"residual RMS {rms}, fixed 8 px {fixed}; scale error {scale_error}")
    assert rms["chosen"] <= 1.05 * fixed
    assert rms["chosen"] < rms["32 px"]
    assert scale_error["chosen"] < scale_error["32 px"]


def test_without_sky_scale_is_nan(without_sky):
    assert np.isnan(without_sky[0].skyFrameScale)
    assert all(len(bg) == 1 + 2 for bg in without_sky[0].skyCorr)  # input, bgModel1, bgModel2


# --- (c): the skyCorr identity ---------------------------------------------------------------------------


def test_skycorr_identity_with_input_background(with_sky, visit):
    result, _, ids = with_sky
    for d, corrected, bg in zip(ids, result.correctedExp, result.skyCorr, strict=True):
        # input background (negated), bgModel1, sky frame, bgModel2
        assert len(bg) == 4
        original = visit[d].image.image.array
        np.testing.assert_allclose(original - bg.getImage().array, corrected.image.array, atol=0.02)
        # The first element restores the input background exactly.
        np.testing.assert_array_equal(
            bg[0][0].getStatsImage().image.array, -visit[d].background[0][0].getStatsImage().image.array
        )


def test_skycorr_identity_without_input_background(frames, visit):
    ids = sorted(visit)
    raw = [visit[d].truth.image for d in ids]
    task = SkyCorrectionTask(config=make_config(frames))
    result = task.run([r.copy() for r in raw], None, [frames.skies[d] for d in ids], frames.camera, ids)
    for original, corrected, bg in zip(raw, result.correctedExp, result.skyCorr, strict=True):
        assert len(bg) == 3
        np.testing.assert_allclose(
            original.image.array - bg.getImage().array, corrected.image.array, atol=0.02
        )


def test_undo_bg_model1(frames, visit):
    result, _, ids = correct(frames, visit, undoBgModel1=True)
    for d, corrected, bg in zip(ids, result.correctedExp, result.skyCorr, strict=True):
        assert len(bg) == 3  # input, sky frame, bgModel2
        np.testing.assert_allclose(
            visit[d].image.image.array - bg.getImage().array, corrected.image.array, atol=0.02
        )


def test_objects_are_untouched(with_sky, visit):
    # Object detection only sets DETECTED: the corrected image minus the input differs by a
    # smooth background, not by replaced object pixels.
    result, _, ids = with_sky
    d = ids[0]
    change = result.correctedExp[0].image.array - visit[d].image.image.array
    peak = np.unravel_index(np.argmax(visit[d].truth.objects), change.shape)
    assert result.correctedExp[0].mask.get("DETECTED")[peak]
    assert abs(change[peak] - np.median(change)) < 0.05 * visit[d].truth.objects[peak]


# --- (d)-(g): failure modes and configuration ------------------------------------------------------------


@pytest.fixture(scope="module")
def three_detectors(frames, visit):
    """The visit without detector 2 at all."""
    return correct(frames, visit, ids=[0, 1, 3])


def test_missing_detector_runs_on_the_rest(frames, three_detectors):
    result, task, ids = three_detectors
    assert len(result.skyCorr) == 3 and task.metadata["nDetectors"] == 3
    assert np.isfinite(result.skyFrameScale)
    mosaic = result.calExpMosaic.array
    geometry = MosaicGeometry.fromMetadata(result.calExpMosaic)
    for detector in frames.camera:
        ix, iy = geometry.toMosaicIndex(*detector.pixel_to_focal_plane(*detector.centre_pixel))
        value = mosaic[int(round(float(iy))), int(round(float(ix)))]
        assert np.isfinite(value) == (detector.id != 2)


def test_detector_without_background_is_skipped_and_named(
    frames, visit, without_sky, three_detectors, caplog
):
    """The reference's detector set: a detector lacking its background takes no part."""
    with caplog.at_level("WARNING"):
        result, task, _ = correct(
            frames, visit, calBkgs=[visit[d].background if d != 2 else None for d in visit]
        )
    assert result.detectorIds == [0, 1, 3] and len(result.skyCorr) == len(result.correctedExp) == 3
    assert task.metadata["skippedDetectors"].to_dict() == {"2": "preliminary_visit_image_background"}
    assert list(task.metadata.getArray("detectors")) == [0, 1, 3]
    assert "2 (R10): no preliminary_visit_image_background" in caplog.text
    # The other three are corrected: against the truth, the sky frame takes out most of the
    # pattern the focal-plane models alone leave on them ...
    rms_sky = residual_rms(result, visit, result.detectorIds)
    models = without_sky[0]
    rms_models = float(
        np.sqrt(
            np.nanmean(
                np.concatenate(
                    [
                        large_scale_residual(image.image.array, visit[d].truth, image.mask.get("BAD")).ravel()
                        for d, image in zip(without_sky[2], models.correctedExp, strict=True)
                        if d != 2
                    ]
                )
                ** 2
            )
        )
    )
    assert rms_models > 4 * rms_sky, (rms_models, rms_sky)
    # ... and exactly as in a visit that never had detector 2: it leaves no trace.
    alone = three_detectors[0]
    assert result.skyFrameScale == alone.skyFrameScale
    for ours, theirs in zip(result.correctedExp, alone.correctedExp, strict=True):
        np.testing.assert_array_equal(ours.image.array, theirs.image.array)


def test_detector_without_sky_frame_is_skipped(frames, visit, caplog):
    """The reference drops a detector without a sky calibration rather than failing the visit."""
    skies = [frames.skies[d] if d != 2 else None for d in sorted(visit)]
    with caplog.at_level("WARNING"):
        result, task, _ = correct(frames, visit, skyFrames=skies)
    assert result.detectorIds == [0, 1, 3]
    assert task.metadata["skippedDetectors"].to_dict() == {"2": "sky"}
    assert "2 (R10): no sky" in caplog.text and "skyframes certify" in caplog.text


def test_visit_without_any_sky_frame_is_an_error(frames, visit):
    ids = sorted(visit)
    task = SkyCorrectionTask(config=make_config(frames))
    with pytest.raises(MissingSkyFrameError, match=r"0 \(R00\): no sky.*doSky=False") as caught:
        task.run([visit[d].image.copy() for d in ids], None, None, frames.camera, ids)
    assert caught.value.detectorIds == (0, 1, 2, 3)
    assert isinstance(caught.value, NoDataError)
    # Missing backgrounds everywhere: no detector left, but not for want of sky frames.
    with pytest.raises(NoDataError, match="no preliminary_visit_image_background") as caught:
        task.run(
            [visit[d].image.copy() for d in ids],
            [None] * 4,
            [frames.skies[d] for d in ids],
            frames.camera,
            ids,
        )
    assert not isinstance(caught.value, MissingSkyFrameError)


def _ratio_image(visit, d, value):
    return Image(np.full(visit[d].image.bbox.shape, value, dtype=np.float32), bbox=visit[d].image.bbox)


def test_flat_background_ratio_scales_the_sky_scale(frames, visit):
    """A uniform ratio of 1.1 makes every image 1.1 times brighter: the fitted scale too."""
    ids = sorted(visit)
    raw = [visit[d].truth.image for d in ids]  # nothing subtracted: every step is then linear
    scales = {}
    for ratio in (None, 1.1):
        task = SkyCorrectionTask(config=make_config(frames, doApplyFlatBackgroundRatio=ratio is not None))
        result = task.run(
            [r.copy() for r in raw],
            None,
            [frames.skies[d] for d in ids],
            frames.camera,
            ids,
            backgroundToPhotometricRatioHandles=None
            if ratio is None
            else [_ratio_image(visit, d, ratio) for d in ids],
        )
        scales[ratio] = task.metadata["skyFrameScale"]
        if ratio is not None:
            # The variance scales as the square, so detection at N sigma finds the same objects.
            for original, corrected in zip(raw, result.correctedExp, strict=True):
                np.testing.assert_allclose(
                    corrected.variance.array, 1.21 * original.variance.array, rtol=1e-6
                )
    assert scales[1.1] == pytest.approx(1.1 * scales[None], rel=1e-4)


def test_flat_background_ratio_restores_the_background_unscaled(frames, visit):
    """As the reference: ratio x image, then the input background added back as it was."""
    ratios = [_ratio_image(visit, d, 1.0 + 0.05 * d) for d in sorted(visit)]
    result, _, ids = correct(frames, visit, ratios=ratios, doApplyFlatBackgroundRatio=True)
    for d, ratio, corrected, bg in zip(ids, ratios, result.correctedExp, result.skyCorr, strict=True):
        np.testing.assert_array_equal(
            bg[0][0].getStatsImage().image.array, -visit[d].background[0][0].getStatsImage().image.array
        )
        photometric = ratio.array * visit[d].image.image.array
        np.testing.assert_allclose(photometric - bg.getImage().array, corrected.image.array, atol=0.02)


def test_detector_without_ratio_is_skipped(frames, visit):
    ratios = [_ratio_image(visit, d, 1.0) if d != 1 else None for d in sorted(visit)]
    result, task, _ = correct(frames, visit, ratios=ratios, doApplyFlatBackgroundRatio=True)
    assert result.detectorIds == [0, 2, 3]
    assert task.metadata["skippedDetectors"].to_dict() == {"1": "background_to_photometric_ratio"}


def test_fully_masked_visit_fails_specifically(frames, visit):
    ids = sorted(visit)
    images = []
    for d in ids:
        image = visit[d].image.copy()
        image.mask.set("BAD", np.ones(image.bbox.shape, dtype=bool))
        images.append(image)
    task = SkyCorrectionTask(config=make_config(frames))
    with pytest.raises(FocalPlaneCoverageError, match="bgModel1: no focal-plane bin") as caught:
        task.run(images, None, [frames.skies[d] for d in ids], frames.camera, ids)
    assert caught.value.metadata["model"] == "bgModel1"
    assert caught.value.goodPixels == {0: 0, 1: 0, 2: 0, 3: 0}


def test_no_images_is_an_error(frames):
    with pytest.raises(NoDataError, match="no images"):
        SkyCorrectionTask(config=make_config(frames)).run([], None, None, frames.camera, [])


def test_config_validation():
    config = camera_config(SkyCorrectionTask, make_synthetic_camera(n_x=2, n_y=2, size=256))
    config.undoBgModel1 = True
    config.doSky = False
    config.doBgModel2 = False
    with pytest.raises(FieldValidationError, match="undoBgModel1"):
        config.validate()
    config.doBgModel2 = True
    config.validate()


def test_reference_defaults():
    config = SkyCorrectionConfig()
    assert (config.doMaskObjects, config.doSky, config.doBgModel2, config.undoBgModel1) == (
        True,
        True,
        True,
        False,
    )
    assert config.binning == 8
    assert (config.bgModel2.doSmooth, config.bgModel2.minFrac, config.bgModel2.smoothScale) == (
        True,
        0.3,
        1.0,
    )
    assert (config.bgModel2.xSize, config.bgModel2.ySize, config.bgModel2.pixelSize) == (256, 256, 1.0)
    assert config.bgModel1.xSize is None and config.bgModel1.ySize is None
    # Object masking as the reference's MaskObjectsTask (detection defaults of meas_algorithms).
    assert config.maskObjects.detection.thresholdType == "pixel_stdev"
    assert config.maskObjects.subtractBackground.binSize == 1024
    sized = camera_config(SkyCorrectionTask, make_synthetic_camera(n_x=2, n_y=2, size=256))
    # bgModel1 as the build's largeScaleBackground: one detector.
    assert sized.bgModel1.xSize == pytest.approx(256 * 0.015)
    assert sized.bgModel2.ySize == pytest.approx(256 * 0.015)
    # The generic instrument thresholds as obs_subaru's and obs_lsst's config/skyCorr.py do.
    assert sized.maskObjects.detection.thresholdType == "stdev"


def test_connections_follow_the_config():
    config = SkyCorrectionConfig()
    assert config.doApplyFlatBackgroundRatio is False  # the reference's default
    connections = SkyCorrectionConnections(config=config)
    assert "correctedExp" not in connections.outputs and "skyFrames" in connections.prerequisiteInputs
    assert connections.calBkgs.minimum == 0
    assert "backgroundToPhotometricRatioHandles" not in connections.inputs
    config.doApplyFlatBackgroundRatio = True
    ratio = SkyCorrectionConnections(config=config).backgroundToPhotometricRatioHandles
    assert (ratio.name, ratio.storageClass, set(ratio.dimensions)) == (
        "background_to_photometric_ratio",
        "ImageV2",
        {"instrument", "visit", "detector"},
    )
    assert ratio.deferLoad and ratio.multiple
    config.doApplyFlatBackgroundRatio = False
    config.doWriteCorrected = True
    config.doSky = False
    config.doPlotMosaics = False
    connections = SkyCorrectionConnections(config=config)
    assert "correctedExp" in connections.outputs and "skyFrames" not in connections.prerequisiteInputs
    assert "calExpMosaicPlot" not in connections.outputs


# --- (h): mosaics ----------------------------------------------------------------------------------------


def test_bin_image_ignores_masked_and_nan_pixels():
    array = np.arange(64, dtype=np.float32).reshape(8, 8)
    image = MaskedImage(Image(array.copy()), mask_schema=default_mask_schema())
    bad = np.zeros((8, 8), dtype=bool)
    bad[0, 0] = True
    image.mask.set("BAD", bad)
    image.image.array[1, 1] = np.nan
    image.image.array[4:8, 4:8] = np.nan
    binned = bin_image(image, 4)
    expected = array.reshape(2, 4, 2, 4).mean(axis=(1, 3))
    block = array[0:4, 0:4].copy()
    keep = np.ones((4, 4), dtype=bool)
    keep[0, 0] = keep[1, 1] = False
    expected[0, 0] = block[keep].mean()
    expected[1, 1] = np.nan
    np.testing.assert_allclose(binned, expected)
    # A remainder narrower than the binning is left out, as afw's binImage does.
    assert bin_image(np.ones((10, 9)), 4).shape == (2, 2)


def _constant_mosaic(camera: Camera, binning: int) -> tuple[Image, dict[int, float]]:
    values = {d.id: 10.0 + d.id for d in camera}
    binned = {
        d.id: bin_image(np.full((d.height, d.width), values[d.id], dtype=np.float32), binning) for d in camera
    }
    return focal_plane_mosaic(camera, binned, binning), values


def test_mosaic_places_each_detector(frames, with_sky):
    camera = frames.camera
    mosaic, values = _constant_mosaic(camera, 8)
    geometry = MosaicGeometry.fromMetadata(mosaic)
    # 2 x 256 px + 32 px gap, binned by 8.
    assert mosaic.array.shape == (68, 68)
    array = mosaic.array
    for detector in camera:
        ix, iy = geometry.toMosaicIndex(*detector.pixel_to_focal_plane(*detector.centre_pixel))
        assert array[int(round(float(iy))), int(round(float(ix)))] == values[detector.id]
        assert np.count_nonzero(array == values[detector.id]) == 32 * 32
    # The gap is empty.
    assert np.isnan(array[:, 32:36]).all() and np.isnan(array[32:36, :]).all()
    # Detector R01 (id 1) is at +x: the right-hand lower block.
    assert (array[0:32, 36:68] == values[1]).all() and (array[36:68, 0:32] == values[2]).all()
    # The task's mosaics use the same geometry.
    assert with_sky[0].calExpMosaic.array.shape == (68, 68)
    assert with_sky[0].calBkgMosaic.array.shape == (68, 68)


def _rotated_camera(rotation: float) -> Camera:
    detectors = (
        DetectorGeometry(0, "A", 64, 32, (0.0, 0.0), 0.01, rotation_deg=0.0),
        DetectorGeometry(1, "B", 64, 32, (1.2, 0.0), 0.01, rotation_deg=rotation),
    )
    return Camera("RotCam", detectors, (FilterDefinition("RotCam-r", "r"),), 0.01)


def test_mosaic_rotation_by_90_degrees_is_exact():
    camera = _rotated_camera(90.0)
    array = np.arange(64 * 32, dtype=np.float32).reshape(32, 64)
    binned = {0: bin_image(np.zeros((32, 64)), 4), 1: bin_image(array, 4)}
    mosaic = focal_plane_mosaic(camera, binned, 4)
    geometry = MosaicGeometry.fromMetadata(mosaic)
    detector = camera[1]
    # Every binned value appears exactly once, where its centre lands in the focal plane.
    for j, i in [(0, 0), (0, 15), (7, 0), (7, 15), (3, 9)]:
        px, py = i * 4 + 1.5, j * 4 + 1.5
        ix, iy = geometry.toMosaicIndex(*detector.pixel_to_focal_plane(px, py))
        assert mosaic.array[int(round(float(iy))), int(round(float(ix)))] == binned[1][j, i]
    found = mosaic.array[np.isfinite(mosaic.array) & (mosaic.array != 0)]
    expected = binned[1][binned[1] != 0]
    np.testing.assert_array_equal(np.sort(found), np.sort(expected))
    # Rotated by 90 degrees: 8 mosaic columns by 16 rows.
    columns = np.flatnonzero(np.isin(mosaic.array, expected).any(axis=0))
    rows = np.flatnonzero(np.isin(mosaic.array, expected).any(axis=1))
    assert (columns.size, rows.size) == (8, 16)


def test_mosaic_other_rotations_resample():
    camera = _rotated_camera(30.0)
    mosaic, values = _constant_mosaic(camera, 4)
    covered = np.count_nonzero(mosaic.array == values[1])
    # A rotated 16x8 block of mosaic pixels covers about 128 of them.
    assert 110 <= covered <= 146
    assert np.count_nonzero(mosaic.array == values[0]) == 128


def test_mosaic_rejects_wrong_binning(frames):
    with pytest.raises(ValueError, match="binning 8"):
        focal_plane_mosaic(frames.camera, {0: np.zeros((16, 16))}, 8)


def test_sky_frame_bbox_must_match(frames, visit):
    task = SkyCorrectionTask(config=make_config(frames))
    small = MaskedImage(Image(np.zeros((128, 128), dtype=np.float32)), mask_schema=default_mask_schema())
    with pytest.raises(ValueError, match="detector 0"):
        task.run([small], None, [frames.skies[0]], frames.camera, [0])
