"""SkyMeasurementTask: configuration, Task plumbing, each method, and the notebook scenario."""

import logging

import numpy as np
import pytest
from lsst.images import Box, Image, Mask, MaskedImage, MaskPlane, MaskSchema
from lsst.pex.config import Config, ConfigurableField, FieldValidationError
from lsst.pipe.base import Task, TaskMetadata

from lsst.skyframes import (
    BackgroundConfig,
    BackgroundList,
    Interpolate,
    SkyMeasurementConfig,
    SkyMeasurementTask,
    SkyStatsConfig,
    UndersampleStyle,
)
from lsst.skyframes.background import ApproximateControl
from lsst.skyframes.errors import BoxMismatchError, MissingMetadataError, NoDataError
from lsst.skyframes.mask_planes import default_mask_schema
from lsst.skyframes.simulate import SkyPattern, simulate_exposure
from lsst.skyframes.statistics import bin_edges


def masked(array, bbox=None, schema=None):
    image = Image(np.asarray(array, dtype=np.float32), bbox=bbox)
    return MaskedImage(image, mask_schema=schema or default_mask_schema())


# --- configuration -----------------------------------------------------------------------------------


def test_config_defaults_match_reference():
    config = SkyMeasurementConfig()
    assert (config.skyIter, config.skyRej, config.xNumSamples, config.yNumSamples) == (3, 3.0, 4, 4)
    bg = config.background
    assert (bg.statistic, bg.xBinSize, bg.yBinSize, bg.algorithm) == ("MEANCLIP", 32, 32, "NATURAL_SPLINE")
    assert list(bg.mask) == ["SAT", "BAD", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "NO_DATA"]
    stats = config.stats
    assert (stats.statistic, stats.clip, stats.nIter) == ("MEANCLIP", 3.0, 3)
    assert list(stats.mask) == ["SAT", "DETECTED", "DETECTED_NEGATIVE", "BAD", "NO_DATA"]
    assert isinstance(bg, BackgroundConfig) and isinstance(stats, SkyStatsConfig)
    config.validate()


@pytest.mark.parametrize(
    "path, value",
    [
        ("background.xBinSize", 0),
        ("background.yBinSize", -4),
        ("xNumSamples", 0),
        ("stats.clip", 0.0),
        ("stats.clip", -1.0),
        ("stats.nIter", 0),
        ("skyIter", 0),
        ("skyRej", 0.0),
        ("stats.statistic", "MODE"),
        ("background.statistic", "SUM"),
        ("background.algorithm", "CUBIC"),
    ],
)
def test_config_rejects_nonsense(path, value):
    config = SkyMeasurementConfig()
    *owners, name = path.split(".")
    owner = config
    for part in owners:
        owner = getattr(owner, part)
    with pytest.raises(FieldValidationError):
        setattr(owner, name, value)
        config.validate()


# --- Task plumbing -------------------------------------------------------------------------------------


class ParentConfig(Config):
    sky = ConfigurableField(target=SkyMeasurementTask, doc="Sky measurement")


class ParentTask(Task):
    ConfigClass = ParentConfig
    _DefaultName = "parent"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.makeSubtask("sky")


def test_is_a_pipe_base_task_usable_as_subtask():
    config = ParentConfig()
    config.sky.background.xBinSize = 16
    parent = ParentTask(config=config)
    assert isinstance(parent.sky, SkyMeasurementTask) and isinstance(parent.sky, Task)
    assert parent.sky.getFullName() == "parent.sky"
    assert parent.sky.config.background.xBinSize == 16
    assert SkyMeasurementTask._DefaultName == "skyMeasurement"
    image = masked(np.full((64, 64), 3.0))
    parent.sky.measureBackground(image)
    metadata = parent.getFullMetadata()
    assert isinstance(metadata, TaskMetadata)
    assert "measureBackgroundStartCpuTime" in metadata["parent:sky"]
    assert "measureBackgroundEndCpuTime" in metadata["parent:sky"]
    with parent.sky.timer("customStep"):
        pass
    assert "customStepEndCpuTime" in parent.sky.metadata


# --- measureBackground ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "width, bin_size, expected",
    [(100, 32, 3), (80, 32, 3), (79, 32, 2), (16, 32, 1), (10, 32, 1), (1, 32, 1), (4096, 128, 32)],
)
def test_bin_count_rounds_half_up(width, bin_size, expected):
    task = SkyMeasurementTask()
    task.config.background.xBinSize = bin_size
    task.config.background.yBinSize = bin_size
    bg_list = task.measureBackground(masked(np.ones((width, width))))
    assert bg_list[0][0].getStatsImage().bbox.shape == (expected, expected)


def test_measure_background_element_and_masking(caplog):
    task = SkyMeasurementTask()
    image = masked(np.full((128, 96), 7.0))
    image.image.array[40:50, 40:50] = 5000.0
    image.mask.set("DETECTED", image.image.array > 100)
    image.image.array[:, 3] = np.nan
    bg_list = task.measureBackground(image)
    assert len(bg_list) == 1
    background, interp, undersample, approx, ox, oy, weighting = bg_list[0]
    assert (interp, undersample, approx, ox, oy, weighting) == (
        Interpolate.NATURAL_SPLINE,
        UndersampleStyle.REDUCE_INTERP_ORDER,
        ApproximateControl.UNKNOWN,
        0,
        0,
        False,
    )
    np.testing.assert_array_equal(background.getStatsImage().image.array, 7.0)
    np.testing.assert_allclose(bg_list.getImage().array, 7.0)

    # An image whose mask lacks most configured planes: those planes are skipped (debug log).
    schema = MaskSchema([MaskPlane("BAD", "bad")])
    sparse = masked(np.full((64, 64), 2.0), schema=schema)
    with caplog.at_level(logging.DEBUG, logger="lsst.skyframes"):
        np.testing.assert_array_equal(task.measureBackground(sparse)[0][0].getStatsImage().image.array, 2.0)
    assert "DETECTED" in caplog.text


def test_fully_masked_and_all_nan_give_nan_bins():
    task = SkyMeasurementTask()
    image = masked(np.ones((64, 64)))
    image.mask.set("BAD")
    assert np.isnan(task.measureBackground(image)[0][0].getStatsImage().image.array).all()
    assert np.isnan(
        task.measureBackground(masked(np.full((64, 64), np.nan)))[0][0].getStatsImage().image.array
    ).all()


# --- averageBackgrounds, exposure conversions ----------------------------------------------------------


def constant_background(task, value, shape=(64, 96), bbox_start=(0, 0)):
    bbox = Box.from_shape(shape, start=bbox_start)
    return task.measureBackground(masked(np.full(shape, value), bbox=bbox))


def test_average_backgrounds_clips_outliers_and_fills_nan_bins():
    task = SkyMeasurementTask()
    inputs = [constant_background(task, v) for v in (1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 50.0)]
    # One input has NaN bins; one bin is NaN in every input.
    inputs[1][0][0].getStatsImage().image.array[0, 0] = np.nan
    for bg in inputs:
        bg[0][0].getStatsImage().image.array[1, 2] = np.nan
    sky = task.averageBackgrounds(inputs)
    values = sky.image.array
    expected = np.mean([1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0])  # 50 is clipped
    finite_bins = np.ones(values.shape, bool)
    finite_bins[1, 2] = False
    np.testing.assert_allclose(
        values[finite_bins & (np.arange(values.size).reshape(values.shape) != 0)], expected, rtol=1e-6
    )
    np.testing.assert_allclose(values[0, 0], np.mean([1.0, 0.99, 1.0, 1.02, 0.98, 1.0]), rtol=1e-6)
    assert values[1, 2] == pytest.approx(np.median(values[finite_bins]))
    assert sky.mask.get("NO_DATA")[1, 2] and sky.mask.get("NO_DATA").sum() == 1
    assert np.all(sky.variance.array[finite_bins] > 0)
    # Inputs are not modified.
    assert np.isnan(inputs[1][0][0].getStatsImage().image.array[0, 0])
    assert sky.metadata["ALGORITHM"] == "NATURAL_SPLINE"
    assert (sky.metadata["BOX.MINX"], sky.metadata["BOX.MAXX"], sky.metadata["BOX.MAXY"]) == (0, 95, 63)


def test_average_backgrounds_errors():
    task = SkyMeasurementTask()
    with pytest.raises(NoDataError):
        task.averageBackgrounds([])
    a = constant_background(task, 1.0)
    b = constant_background(task, 1.0, bbox_start=(0, 1))
    with pytest.raises(BoxMismatchError, match="input 1"):
        task.averageBackgrounds([a, b])
    two = constant_background(task, 1.0)
    two.append(a[0])
    with pytest.raises(ValueError, match="single-element"):
        task.averageBackgrounds([a, two])
    nan = constant_background(task, np.nan)
    with pytest.raises(NoDataError, match="finite"):
        task.averageBackgrounds([nan, nan])


def test_exposure_round_trip_including_fits(tmp_path):
    task = SkyMeasurementTask()
    task.config.background.algorithm = "AKIMA_SPLINE"
    bbox = Box.from_shape((200, 300), start=(10, 20))
    y, x = np.mgrid[0:200, 0:300]
    truth = 1 + 0.001 * x - 0.0005 * y
    bg = task.measureBackground(masked(truth, bbox=bbox))
    exposure = task.backgroundToExposure(bg[0][0].getStatsImage(), bbox)
    md = exposure.metadata
    assert (md["BOX.MINX"], md["BOX.MINY"], md["BOX.MAXX"], md["BOX.MAXY"]) == (20, 10, 319, 209)
    assert md["ALGORITHM"] == "AKIMA_SPLINE"
    path = tmp_path / "sky.fits"
    exposure.write(str(path))
    for candidate in (exposure, MaskedImage.read(str(path))):
        back = SkyMeasurementTask.exposureToBackground(candidate)
        assert back[0][1] is Interpolate.AKIMA_SPLINE and back[0][0].getImageBBox() == bbox
        np.testing.assert_allclose(back.getImage().array, truth, rtol=1e-5)
    with pytest.raises(MissingMetadataError, match="BOX.MINX"):
        SkyMeasurementTask.exposureToBackground(masked(np.ones((3, 3))))


# --- measureScale / solveScales / subtractSkyFrame -----------------------------------------------------


def test_measure_scale_box_layout_and_order():
    task = SkyMeasurementTask()
    width, height = 10, 7
    # Pixel value encodes its sample box: 10 * x_box + y_box.
    x_edges = np.linspace(0, width, 5).astype(int)
    y_edges = np.linspace(0, height, 5).astype(int)
    xb = np.searchsorted(x_edges, np.arange(width), side="right") - 1
    yb = np.searchsorted(y_edges, np.arange(height), side="right") - 1
    array = 10.0 * xb[None, :] + yb[:, None]
    sky = task.measureBackground(masked(np.ones((height, width))))
    image_samples, sky_samples = task.measureScale(masked(array), sky)
    assert list(image_samples) == [10.0 * i + j for i in range(4) for j in range(4)]
    np.testing.assert_allclose(sky_samples, 1.0)
    # Fewer pixels than samples: one box per pixel.
    tiny_sky = task.measureBackground(masked(np.ones((2, 3))))
    assert len(task.measureScale(masked(np.ones((2, 3))), tiny_sky)[0]) == 6
    with pytest.raises(BoxMismatchError):
        task.measureScale(masked(np.ones((8, 8))), sky)


def test_solve_scales_rejects_outliers():
    task = SkyMeasurementTask()
    rng = np.random.default_rng(3)
    sky = rng.uniform(0.5, 1.5, 64)
    image = 2.5 * sky + rng.normal(0, 0.001, 64)
    image[[3, 17, 40]] += [5.0, -4.0, 9.0]
    image[5] = np.nan
    scales = [(image[:32], sky[:32]), (image[32:], sky[32:])]
    assert task.solveScales(scales) == pytest.approx(2.5, rel=1e-3)
    exact = task.solveScales([(3.0 * sky, sky)])
    assert exact == pytest.approx(3.0, rel=1e-12)
    with pytest.raises(NoDataError):
        task.solveScales([])
    with pytest.raises(NoDataError, match="finite"):
        task.solveScales([([np.nan], [1.0])])
    with pytest.raises(NoDataError, match="zero"):
        task.solveScales([([1.0, 2.0], [0.0, 0.0])])


def test_subtract_sky_frame_and_bg_list():
    task = SkyMeasurementTask()
    bbox = Box.from_shape((64, 64))
    y, x = np.mgrid[0:64, 0:64]
    frame = 1 + 0.002 * x
    sky = task.measureBackground(masked(frame, bbox=bbox))
    image = masked(100.0 + 4.0 * frame, bbox=bbox)
    bg_list = BackgroundList()
    task.subtractSkyFrame(image, sky, 4.0, bg_list)
    np.testing.assert_allclose(image.image.array, 100.0, rtol=1e-5)
    assert len(bg_list) == 1
    np.testing.assert_allclose(
        bg_list[0][0].getStatsImage().image.array, 4 * sky[0][0].getStatsImage().image.array
    )
    assert bg_list[0][1:] == sky[0][1:]
    with pytest.raises(NoDataError, match="non-finite"):
        task.subtractSkyFrame(image, sky, np.nan)


# --- the notebook scenario -----------------------------------------------------------------------------


def test_scenario_build_scale_subtract():
    rng = np.random.default_rng(2026)
    width = height = 384
    # Features broader than a bin: where the pattern changes a lot within a bin,
    # a clipped mean of the bin is not the bin's mean, by construction.
    pattern = SkyPattern(amplitude=0.1, amp_step_width=0.15)
    task = SkyMeasurementTask()
    backgrounds = []
    n_pixels_good = []
    levels = rng.uniform(800, 2000, 20)
    for level in levels:
        exposure = simulate_exposure(width, height, level, pattern, rng, bad_columns=(57,))
        image = exposure.image
        image.image.array /= level  # normalise by the sky level
        backgrounds.append(task.measureBackground(image))
        n_pixels_good.append(~(image.mask.get("DETECTED") | image.mask.get("BAD")))
    sky_exposure = task.averageBackgrounds(backgrounds)
    sky_frame = SkyMeasurementTask.exposureToBackground(sky_exposure)

    # Truth: the bin means of the pattern; noise: per-pixel sqrt(level * p) / level over the good pixels.
    truth_pixels = pattern.render(width, height)
    x_edges, y_edges = bin_edges(width, 12), bin_edges(height, 12)
    recovered = sky_exposure.image.array
    z = np.empty_like(recovered, dtype=float)
    for j in range(12):
        for i in range(12):
            region = (slice(y_edges[j], y_edges[j + 1]), slice(x_edges[i], x_edges[i + 1]))
            truth = truth_pixels[region].mean()
            # Mean over the exposures that measured this bin (a bin under a large galaxy is NaN).
            per_exposure = [
                truth / level / good[region].sum()
                for level, good in zip(levels, n_pixels_good, strict=True)
                if good[region].any()
            ]
            variance_of_mean = np.mean(per_exposure) / len(per_exposure)
            z[j, i] = (recovered[j, i] - truth) / np.sqrt(variance_of_mean)
    assert np.sqrt(np.mean(z**2)) < 1.5, z
    assert np.abs(z).max() < 3 * 1.5

    # A new exposure of known level: fit the scale and subtract.
    level = 4321.0
    science = simulate_exposure(width, height, level, pattern, rng).image
    scale = task.solveScales([task.measureScale(science, sky_frame)])
    assert scale == pytest.approx(level, rel=0.002)
    bg_list = BackgroundList()
    task.subtractSkyFrame(science, sky_frame, scale, bg_list)
    assert len(bg_list) == 1
    np.testing.assert_allclose(
        bg_list[0][0].getStatsImage().image.array, scale * sky_exposure.image.array, rtol=1e-6
    )
    # Large-scale residual: 96-px clipped means of what is left (noise ~1 e-), against the
    # pattern's peak-to-peak amplitude (~250 e-).
    check = SkyMeasurementTask()
    check.config.background.xBinSize = check.config.background.yBinSize = 96
    residual = check.measureBackground(science)[0][0].getStatsImage().image.array
    amplitude = level * (truth_pixels.max() - truth_pixels.min())
    assert np.abs(residual).max() < 0.02 * amplitude


def test_visit_image_plane_names_are_understood():
    # lsst.images visit images call afw's SAT plane SATURATED; the configured "SAT" must still mask it.
    schema = MaskSchema([MaskPlane("SATURATED", "saturated"), MaskPlane("DETECTED", "detected")])
    image = MaskedImage(
        Image(np.full((64, 64), 4.0, dtype=np.float32)), mask=Mask(0, schema=schema, shape=(64, 64))
    )
    image.image.array[:, :8] = 1e5
    image.mask.set("SATURATED", image.image.array > 1e4)
    task = SkyMeasurementTask()
    np.testing.assert_array_equal(task.measureBackground(image)[0][0].getStatsImage().image.array, 4.0)
