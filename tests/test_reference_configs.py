"""Configuration written for the Rubin stack applies here with the reference's meaning.

The obs packages' override files (obs_lsst, obs_subaru) and drp_pipe's LSSTCam skyCorr block,
restricted to their focal-plane settings and said again under tests/data/, are loaded as a user
would load them and checked for what the reference makes of them: a bin is used when it holds at
least minFrac * (xSize / pixelSize) * (ySize / pixelSize) good pixels. Also: the defaults are the
reference's, a skyCorr config without bgModel1 sizes is refused with the fix, and the instrument's
overrides give the camera-derived sizes (one detector, in the camera's pixel size).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import yaml
from lsst.images import Image, MaskedImage
from lsst.pex.config import FieldValidationError
from lsst.pipe.base import Pipeline

from conftest import APPLY_PIPELINE, BUILD_PIPELINE, ROOT
from lsst.skyframes.build import CpSkyImageConfig, CpSkyImageTask, CpSkySubtractBackgroundTask
from lsst.skyframes.camera import Camera
from lsst.skyframes.camera_overrides import CAMERA_OVERRIDES, apply_camera_overrides, camera_config
from lsst.skyframes.correction import SkyCorrectionConfig, SkyCorrectionTask
from lsst.skyframes.focal_plane import FocalPlaneBackground, FocalPlaneBackgroundConfig
from lsst.skyframes.instrument import CAMERA_ENV_VAR, SkyFramesInstrument, instrument_class
from lsst.skyframes.mask_planes import default_mask_schema
from lsst.skyframes.masking import MaskObjectsConfig, MaskObjectsTask

DATA = ROOT / "tests" / "data"
CAMERA_FILE = DATA / "camera.yaml"


def _bin_is_used(config: FocalPlaneBackgroundConfig, n_good: int) -> bool:
    """Whether a bin with ``n_good`` good pixels enters the model, as getStatsImage decides.

    The bin (mean 100) sits beside two well-filled bins (mean 7): if it is used the model keeps
    100 there, otherwise the bin is filled from its neighbours. Only the settings of the test
    are taken from ``config`` (smoothing, which decides nothing about it, would mix the bins).
    """
    probe = FocalPlaneBackgroundConfig()
    for name in ("xSize", "ySize", "pixelSize", "minFrac"):
        setattr(probe, name, getattr(config, name))
    config = probe
    full = 10 * math.ceil(
        config.minFrac * (config.xSize / config.pixelSize) * (config.ySize / config.pixelSize)
    )
    numbers = np.array([[n_good, full, full]], dtype=np.float64)
    values = numbers * np.array([[100.0, 7.0, 7.0]])
    model = FocalPlaneBackground(config, (3, 1), (0.0, 0.0), values=values, numbers=numbers)
    value = model.getStatsImage()[0, 0]
    assert value == pytest.approx(100.0) or value == pytest.approx(7.0), value
    return bool(value == pytest.approx(100.0))


def _assert_needs(config: FocalPlaneBackgroundConfig, minimum: float) -> None:
    """A bin needs ``minimum`` good pixels (the reference's test), no fewer."""
    required = math.ceil(minimum - 1e-6)
    assert _bin_is_used(config, required), (config.toDict(), required)
    assert not _bin_is_used(config, required - 1), (config.toDict(), required - 1)


# --- obs packages' override files and drp_pipe's block ------------------------------------------------


def test_obs_lsst_bins_are_ten_pixels_of_unit_size():
    config = SkyCorrectionConfig()
    config.load(str(DATA / "obs_lsst" / "skyCorr.py"))
    config.validate()
    bg = config.bgModel1
    assert (bg.xSize, bg.ySize, bg.pixelSize, bg.minFrac) == (10.0, 10.0, 1.0, 0.1)
    # 10 x 10 units of pixelSize 1 at minFrac 0.1: 10 good pixels, not 0.1 * (10 / 0.01)**2.
    _assert_needs(bg, 10)
    # bgModel2 keeps the reference's defaults: 256 x 256 at minFrac 0.3.
    _assert_needs(config.bgModel2, 0.3 * 256 * 256)


def test_obs_subaru_bins_are_8192_and_256_pixels():
    config = SkyCorrectionConfig()
    config.load(str(DATA / "obs_subaru" / "skyCorr.py"))
    config.validate()
    one, two = config.bgModel1, config.bgModel2
    assert (one.xSize, one.ySize, one.pixelSize, one.minFrac) == pytest.approx((122.88, 122.88, 0.015, 0.1))
    assert (two.xSize, two.ySize, two.pixelSize, two.minFrac) == pytest.approx((3.84, 3.84, 0.015, 0.5))
    _assert_needs(one, 0.1 * 8192 * 8192)
    _assert_needs(two, 0.5 * 256 * 256)
    _assert_detection_as_sky_correction(config)


def test_drp_pipe_lsstcam_block_through_a_pipeline(monkeypatch):
    monkeypatch.setenv("SKYFRAMES_DIR", str(ROOT))
    graph = Pipeline.from_uri(str(DATA / "drp_pipe_LSSTCam_skyCorr.yaml")).to_graph()
    config = graph.tasks["skyCorr"].config
    one, two = config.bgModel1, config.bgModel2
    assert (one.xSize, one.ySize, one.pixelSize, one.doSmooth) == (81.92, 81.92, 0.01, False)
    assert (two.xSize, two.ySize, two.pixelSize, two.doSmooth, two.smoothScale) == (
        40.96,
        40.96,
        0.01,
        True,
        1.0,
    )
    assert config.doSky and config.doBgModel2
    # 8192 and 4096 pixels of 0.01 mm; minFrac the reference's defaults (0.1, and 0.3 for bgModel2).
    _assert_needs(one, 0.1 * 8192 * 8192)
    _assert_needs(two, 0.3 * 4096 * 4096)
    _assert_detection_as_sky_correction(config)


def _assert_detection_as_sky_correction(config):
    """The obs packages' skyCorr detection: stdev threshold, Manhattan growth, applied with that meaning."""
    detection = config.maskObjects.detection
    assert (detection.thresholdType, detection.isotropicGrow, detection.doTempLocalBackground) == (
        "stdev",
        False,
        False,
    )
    # Pure noise (sigma 10) with a bright square: the threshold is 2.5 times the clipped noise of
    # the smoothed image, and detections grow by afw's Manhattan diamond of int(2.4 * 5 + 0.5) px.
    rng = np.random.default_rng(1)
    pixels = rng.normal(1000.0, 10.0, (512, 512)).astype(np.float32)
    pixels[254:258, 254:258] += 5000.0

    def find(nSigmaToGrow):
        masking = MaskObjectsConfig()
        masking.loadFromString(config.maskObjects.saveToString())
        masking.nIter = 1  # one round: the grown and the ungrown runs fit the same background
        masking.detection.nSigmaToGrow = nSigmaToGrow
        image = MaskedImage(Image(pixels.copy()), mask_schema=default_mask_schema())
        image.variance.array[:] = 100.0
        task = MaskObjectsTask(config=masking)
        return task, task.findObjects(image).detected

    task, grown = find(config.maskObjects.detection.nSigmaToGrow)
    assert task.metadata["detectionThreshold"] == pytest.approx(2.5 * task.metadata["smoothedSigma"])
    # The smoothed noise of a Gaussian of sigma 5: 10 / (2 sqrt(pi) 5) = 0.564 (clipping trims ~1 %);
    # the smoothed image has ~800 independent samples, so its estimate scatters by ~2.5 %.
    assert task.metadata["smoothedSigma"] == pytest.approx(10 / (2 * np.sqrt(np.pi) * 5), rel=0.08)
    _, seeds = find(0.0)
    assert grown[256, 256] and 0 < seeds.sum() < grown.sum()
    np.testing.assert_array_equal(grown, scipy.ndimage.distance_transform_cdt(~seeds, metric="taxicab") <= 12)


# --- Defaults and the refused config ------------------------------------------------------------------


def test_cp_pipe_defaults():
    bg = CpSkyImageConfig().largeScaleBackground
    assert (bg.xSize, bg.ySize, bg.pixelSize, bg.minFrac) == (122.88, 122.88, 0.015, 0.1)
    assert list(bg.mask) == ["BAD", "SAT", "INTRP", "DETECTED", "DETECTED_NEGATIVE", "EDGE", "NO_DATA"]
    _assert_needs(bg, 0.1 * 8192 * 8192)  # HSC's 8192 px bins
    assert CpSkyImageTask._DefaultName == "CpSkyImage"
    assert CpSkySubtractBackgroundTask._DefaultName == "cpSkySubtractBkg"
    assert SkyCorrectionTask._DefaultName == "skyCorr"


def test_pipe_tasks_defaults():
    config = SkyCorrectionConfig()
    two = config.bgModel2
    assert (two.doSmooth, two.minFrac, two.xSize, two.ySize, two.smoothScale, two.pixelSize) == (
        True,
        0.3,
        256,
        256,
        1.0,
        1.0,
    )
    assert config.bgModel1.xSize is None and config.bgModel1.ySize is None
    assert config.bgModel1.pixelSize == 1.0


def test_unset_bgmodel1_is_refused_with_the_fix():
    with pytest.raises(FieldValidationError, match=r"bgModel1\.xSize/ySize") as refused:
        SkyCorrectionConfig().validate()
    message = str(refused.value)
    assert "-c skyCorr:bgModel1.xSize=" in message
    assert "--instrument lsst.skyframes.instrument.SkyFramesInstrument" in message
    assert "override file" in message
    # A pipeline without the instrument and without sizes stops before any work.
    with pytest.raises(FieldValidationError, match=r"bgModel1\.xSize/ySize"):
        Pipeline.from_uri(str(APPLY_PIPELINE)).to_graph()


def test_unset_focal_plane_size_names_the_field():
    with pytest.raises(FieldValidationError, match="xSize is unset"):
        FocalPlaneBackgroundConfig().validate()
    config = FocalPlaneBackgroundConfig()
    config.xSize = 1.0
    with pytest.raises(FieldValidationError, match="ySize is unset"):
        config.validate()


# --- The instrument's overrides -----------------------------------------------------------------------


def _camera_file_sizes() -> tuple[float, float, float]:
    """(widest detector, tallest detector in mm, most common pixel size) read from the YAML itself."""
    data = yaml.safe_load(CAMERA_FILE.read_text())
    default = data["pixel_size_mm"]
    pixels = [d.get("pixel_size_mm", default) for d in data["detectors"]]
    width = max(d["bbox"]["width"] * p for d, p in zip(data["detectors"], pixels, strict=True))
    height = max(d["bbox"]["height"] * p for d, p in zip(data["detectors"], pixels, strict=True))
    return width, height, max(set(pixels), key=pixels.count)


def _assert_camera_sized(config: FocalPlaneBackgroundConfig, detectors: int) -> None:
    width, height, pixel = _camera_file_sizes()
    assert (width, height, pixel) == pytest.approx((1.0, 0.8, 0.01))  # 100 px of 0.01, 40 px of 0.02
    assert config.xSize == pytest.approx(detectors * width)
    assert config.ySize == pytest.approx(detectors * height)
    assert config.pixelSize == pytest.approx(pixel)


def test_pipetask_instrument_gives_the_camera_sized_models(monkeypatch):
    """What ``pipetask run --instrument lsst.skyframes.instrument.SkyFramesInstrument`` configures."""
    monkeypatch.setenv(CAMERA_ENV_VAR, str(CAMERA_FILE))
    build = Pipeline.from_uri(str(BUILD_PIPELINE))
    build.addInstrument("lsst.skyframes.instrument.SkyFramesInstrument")
    large_scale = build.to_graph().tasks["cpSkyImage"].config.largeScaleBackground
    _assert_camera_sized(large_scale, 1)
    apply = Pipeline.from_uri(str(APPLY_PIPELINE))
    apply.addInstrument("lsst.skyframes.instrument.SkyFramesInstrument")
    # A -c option still wins over the instrument (it is applied after).
    apply.addConfigOverride("skyCorr", "bgModel2.minFrac", 0.5)
    config = apply.to_graph().tasks["skyCorr"].config
    # bgModel1 takes the build's large-scale bins, as the reference's configs keep them equal.
    _assert_camera_sized(config.bgModel1, 1)
    assert (config.bgModel1.xSize, config.bgModel1.ySize, config.bgModel1.pixelSize) == (
        large_scale.xSize,
        large_scale.ySize,
        large_scale.pixelSize,
    )
    _assert_camera_sized(config.bgModel2, 1)
    assert config.bgModel2.minFrac == 0.5
    # Everything else keeps the reference's defaults.
    assert (config.bgModel1.minFrac, config.bgModel2.doSmooth, config.bgModel2.smoothScale) == (
        0.1,
        True,
        1.0,
    )


def test_instrument_and_camera_config_agree():
    camera = Camera.from_yaml(CAMERA_FILE)
    instrument = SkyFramesInstrument.from_camera(camera)
    config = CpSkyImageConfig()
    instrument.applyConfigOverrides(CpSkyImageTask._DefaultName, config)
    _assert_camera_sized(config.largeScaleBackground, 1)
    assert config.largeScaleBackground.minFrac == 0.1
    assert camera_config(CpSkyImageTask, camera).largeScaleBackground.toDict() == (
        config.largeScaleBackground.toDict()
    )
    corr = camera_config(SkyCorrectionTask, camera)
    _assert_camera_sized(corr.bgModel1, 1)
    _assert_camera_sized(corr.bgModel2, 1)
    corr.validate()
    # Tasks without entries are left as they are.
    assert set(CAMERA_OVERRIDES) == {"CpSkyImage", "skyCorr"}
    untouched = SkyCorrectionConfig()
    apply_camera_overrides("cpSkyCombine", untouched, camera)
    assert untouched.bgModel1.xSize is None


def test_table_entries_may_be_plain_values(monkeypatch):
    """A plain value in CAMERA_OVERRIDES is assigned at its dotted path (for later entries)."""
    camera = Camera.from_yaml(CAMERA_FILE)
    monkeypatch.setitem(
        CAMERA_OVERRIDES, "skyCorr", {**CAMERA_OVERRIDES["skyCorr"], "bgModel2.minFrac": 0.25}
    )
    config = camera_config(SkyCorrectionTask, camera)
    assert config.bgModel2.minFrac == 0.25
    _assert_camera_sized(config.bgModel2, 1)
    # Without a camera the plain values still apply; the camera-derived entries are reported.
    other = SkyCorrectionConfig()
    assert apply_camera_overrides("skyCorr", other, None) == ["bgModel1", "bgModel2"]
    assert other.bgModel2.minFrac == 0.25 and other.bgModel1.xSize is None


def test_instrument_without_camera_leaves_the_sizes_unset(monkeypatch, caplog):
    monkeypatch.delenv(CAMERA_ENV_VAR, raising=False)
    config = SkyCorrectionConfig()
    with caplog.at_level("WARNING", logger="lsst.skyframes.instrument"):
        instrument_class("NoSuchCam")().applyConfigOverrides("skyCorr", config)
    assert "No camera-derived config for skyCorr" in caplog.text
    with pytest.raises(FieldValidationError, match=r"bgModel1\.xSize/ySize"):
        config.validate()


# --- The generic instrument's masking choices -----------------------------------------------------------


def test_generic_instrument_masking_choices():
    camera = Camera.from_yaml(DATA / "camera.yaml")
    image_config = camera_config(CpSkyImageTask, camera).maskTask
    assert (image_config.detection.thresholdType, image_config.clearDetected) == ("stdev", False)
    assert image_config.detection.searchEdge is True
    correction_config = camera_config(SkyCorrectionTask, camera).maskObjects
    assert correction_config.detection.thresholdType == "stdev" and correction_config.detection.searchEdge
    # The reference's defaults are unchanged without the instrument.
    assert CpSkyImageConfig().maskTask.detection.thresholdType == "pixel_stdev"
    assert CpSkyImageConfig().maskTask.clearDetected is True
    assert SkyCorrectionConfig().maskObjects.detection.searchEdge is False


@pytest.mark.parametrize("search_edge", [False, True])
def test_search_edge_finds_objects_in_the_kernel_border(search_edge):
    """A faint star 2 px from the edge: in the reference's EDGE border (17 px), found only with searchEdge."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:200, 0:200]
    star = 300.0 * np.exp(-((xx - 100) ** 2 + (yy - 2) ** 2) / (2 * 2.0**2))
    pixels = (rng.normal(1000.0, 10.0, (200, 200)) + star).astype(np.float32)
    image = MaskedImage(Image(pixels), mask_schema=default_mask_schema())
    image.variance.array[:] = 100.0
    config = MaskObjectsConfig()
    config.detection.searchEdge = search_edge
    detected = MaskObjectsTask(config=config).findObjects(image).detected
    edge = image.mask.get("EDGE")
    if search_edge:
        assert not edge.any()
        assert detected[star > 30.0].all()  # every pixel of the star above 3 sigma
    else:
        border = np.ones((200, 200), dtype=bool)
        border[17:-17, 17:-17] = False
        np.testing.assert_array_equal(edge, border)
        # Its light 15 px inward, where the search starts, is below the threshold: it stays unmasked
        # but where a grown noise excursion happens to reach it (measured 10 %, as 9 % of the image).
        assert detected[star > 30.0].mean() < 0.5
