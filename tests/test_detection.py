"""_detection building blocks (meas_algorithms' background and detection, as object masking uses them)
against truth: analytic noise levels, scipy's distance transforms, exact ramps."""

import math

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
from lsst.images import Image, MaskedImage
from lsst.pex.config import FieldValidationError

from lsst.skyframes._detection import (
    SourceDetectionConfig,
    SourceDetectionTask,
    SubtractBackgroundConfig,
    SubtractBackgroundTask,
    _clipped_sigma,
    _separable_filter,
    grow_isotropic,
    grow_manhattan,
    kernel_width,
)
from lsst.skyframes.build import CpSkyImageConfig
from lsst.skyframes.correction import SkyCorrectionConfig
from lsst.skyframes.errors import NoDataError, UsageError
from lsst.skyframes.mask_planes import default_mask_schema
from lsst.skyframes.masking import MaskObjectsConfig, MaskObjectsTask

SIGMA = 5.0
HALF = 17  # kernel_width(5, 7) // 2
SIZE = 512


def smoothed_noise(sigma_pix, s=SIGMA):
    """Standard deviation of white noise after a normalised Gaussian of sigma s (pixels)."""
    return sigma_pix / (2.0 * math.sqrt(math.pi) * s)


def detector(**overrides):
    """SourceDetectionTask with the background steps off (as object masking requires)."""
    config = SourceDetectionConfig()
    config.reEstimateBackground = False
    config.doTempLocalBackground = False
    for name, value in overrides.items():
        setattr(config, name, value)
    return SourceDetectionTask(config=config)


def noise_image(sigma_pix=10.0, seed=0, size=SIZE):
    """Pure Gaussian noise of known sigma, with that variance in the variance plane."""
    rng = np.random.default_rng(seed)
    sigma = np.broadcast_to(np.asarray(sigma_pix, dtype=float), (size, size))
    image = MaskedImage(
        Image(rng.normal(0.0, 1.0, (size, size)).astype(np.float32) * sigma.astype(np.float32)),
        mask_schema=default_mask_schema(),
    )
    image.variance.array[:] = sigma**2
    return image


def interior(shape, width=HALF):
    inside = np.zeros(shape, dtype=bool)
    inside[width:-width, width:-width] = True
    return inside


TAIL = scipy.stats.norm.sf(2.5)  # 0.62%


# --- reference defaults -------------------------------------------------------------------------------


def test_source_detection_defaults_are_meas_algorithms():
    config = SourceDetectionConfig()
    assert (config.minPixels, config.isotropicGrow, config.combinedGrow, config.nSigmaToGrow) == (
        1,
        False,
        True,
        2.4,
    )
    assert (config.thresholdValue, config.includeThresholdMultiplier) == (5.0, 1.0)
    assert (config.thresholdType, config.thresholdPolarity) == ("pixel_stdev", "positive")
    assert (config.reEstimateBackground, config.doTempLocalBackground, config.doTempWideBackground) == (
        True,
        True,
        False,
    )
    assert config.nSigmaForKernel == 7.0
    assert list(config.statsMask) == ["BAD", "SAT", "EDGE", "NO_DATA"]


def test_subtract_background_defaults_are_meas_algorithms():
    config = SubtractBackgroundConfig()
    assert (config.statisticsProperty, config.undersampleStyle, config.algorithm) == (
        "MEANCLIP",
        "REDUCE_INTERP_ORDER",
        "AKIMA_SPLINE",
    )
    assert (config.binSize, config.binSizeX, config.binSizeY) == (128, 0, 0)
    assert list(config.ignoredPixelMask) == ["BAD", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "NO_DATA"]
    assert (config.isNanSafe, config.useApprox, config.weighting) == (False, True, True)
    assert (config.approxOrderX, config.approxOrderY) == (6, -1)


def test_mask_objects_set_defaults_are_the_reference():
    config = MaskObjectsConfig()
    detection = config.detection
    assert detection.thresholdValue == 2.5
    assert (
        detection.reEstimateBackground,
        detection.doTempLocalBackground,
        detection.doTempWideBackground,
    ) == (
        False,
        False,
        False,
    )
    assert (config.subtractBackground.binSize, config.subtractBackground.useApprox) == (1024, False)
    assert (config.interpolate.binSize, config.interpolate.useApprox) == (256, False)
    assert MaskObjectsTask().growRadius == 12
    assert kernel_width(5, 7) == 35 and kernel_width(2, 7) == 15


# --- the smoothing, the EDGE border, growth -----------------------------------------------------------


def test_edge_border_is_the_kernel_half_width():
    image = noise_image(seed=1)
    image.image.array[:40, :40] += 1000.0  # a bright corner object, mostly in the border
    found = detector(thresholdValue=2.5).detectFootprints(image, sigma=SIGMA)
    border = ~interior(found.edge.shape)
    np.testing.assert_array_equal(found.edge, border)
    np.testing.assert_array_equal(image.mask.get("EDGE"), border)
    # Seeds are interior-only; a 12 px grow from the interior cannot reach the outer 5 px.
    assert found.nGrow == 12
    assert not found.positive[~interior(found.edge.shape, HALF - 12)].any()
    assert found.positive[HALF:40, HALF:40].all()


def test_threaded_smoothing_equals_one_scipy_call():
    rng = np.random.default_rng(3)
    array = rng.normal(0.0, 1.0, (1100, 300)).astype(np.float32)
    weights = np.exp(-0.5 * (np.arange(-HALF, HALF + 1) / SIGMA) ** 2)
    weights /= weights.sum()
    expected = scipy.ndimage.correlate1d(array, weights, axis=0, output=np.float32, mode="reflect")
    expected = scipy.ndimage.correlate1d(expected, weights, axis=1, output=np.float32, mode="reflect")
    np.testing.assert_array_equal(_separable_filter(array, weights), expected)


def test_clipped_sigma_is_afw_stdevclip():
    rng = np.random.default_rng(4)
    values = rng.normal(0.0, 2.0, (1000, 1000))
    bad = np.zeros(values.shape, dtype=bool)
    # 3-sigma clipping of a Gaussian keeps a truncated normal, sigma 0.9866 of the parent.
    assert _clipped_sigma(values, bad) == pytest.approx(2.0 * 0.9866, rel=0.01)
    values[:50] += 100.0
    bad[:50] = True
    assert _clipped_sigma(values, bad) == pytest.approx(2.0 * 0.9866, rel=0.01)
    assert np.isnan(_clipped_sigma(values, np.ones(values.shape, dtype=bool)))


@pytest.mark.parametrize("radius", [0, 1, 2, 5, 12])
def test_grow_manhattan_is_a_taxicab_diamond(radius):
    rng = np.random.default_rng(radius)
    seeds = rng.random((97, 131)) < 0.003
    seeds[0, 0] = seeds[-1, 60] = seeds[40, -1] = True  # seeds on the edges
    expected = scipy.ndimage.distance_transform_cdt(~seeds, metric="taxicab") <= radius
    np.testing.assert_array_equal(grow_manhattan(seeds, radius), expected)


@pytest.mark.parametrize("radius", [1, 5, 12])
def test_grow_manhattan_single_seed(radius):
    seeds = np.zeros((41, 41), dtype=bool)
    assert not grow_manhattan(seeds, radius).any()
    seeds[20, 20] = True
    assert grow_manhattan(seeds, radius).sum() == 2 * radius * (radius + 1) + 1


@pytest.mark.parametrize("radius", [0, 1, 2, 5, 12])
def test_grow_isotropic_is_a_euclidean_disk(radius):
    rng = np.random.default_rng(radius)
    seeds = rng.random((97, 131)) < 0.003
    seeds[0, 0] = seeds[-1, 60] = True
    expected = scipy.ndimage.distance_transform_edt(~seeds) <= radius
    np.testing.assert_array_equal(grow_isotropic(seeds, radius), expected)
    seeds = np.zeros((41, 41), dtype=bool)
    seeds[20, 20] = True
    if radius == 12:
        assert grow_isotropic(seeds, 12).sum() == 441  # lattice points in a disk of radius 12


# --- thresholds on pure noise -------------------------------------------------------------------------


def seed_fraction(found):
    return found.positive[interior(found.positive.shape)].mean()


@pytest.mark.parametrize("kind", ["pixel_stdev", "stdev"])
def test_noise_seed_fraction_is_the_gaussian_tail(kind):
    image = noise_image(seed=2)
    found = detector(thresholdType=kind, thresholdValue=2.5, nSigmaToGrow=0.0).detectFootprints(
        image, sigma=SIGMA
    )
    # Measured (seeds 2-5): pixel_stdev threshold 1.4118 (analytic 2.5 x 0.5642 = 1.4105, the
    # truncated 35 px kernel); stdev clipped sigma 0.554-0.567; seed fractions 0.51-0.76% (pixel_stdev)
    # and 0.57-0.74% (stdev) against the 0.62% tail: the smoothed field has only ~700 independent
    # 5 px blobs in the interior, hence the wide margin.
    expected = 2.5 * smoothed_noise(10.0)
    if kind == "pixel_stdev":
        assert found.threshold == pytest.approx(expected, rel=0.01)
    else:
        # The clipped sigma of a Gaussian is 0.9866 of it.
        assert found.sigma == pytest.approx(0.9866 * smoothed_noise(10.0), rel=0.05)
    assert 0.4 * TAIL < seed_fraction(found) < 2.0 * TAIL


def test_value_variance_and_multiplier_thresholds():
    image = noise_image(seed=3)
    s = smoothed_noise(10.0)
    reference = detector(thresholdType="pixel_stdev", thresholdValue=2.5, nSigmaToGrow=0.0)
    base = reference.detectFootprints(image.copy(), sigma=SIGMA)
    value = detector(thresholdType="value", thresholdValue=2.5 * s, nSigmaToGrow=0.0)
    found = value.detectFootprints(image.copy(), sigma=SIGMA)
    assert found.threshold == pytest.approx(2.5 * s)
    # The same absolute threshold as pixel_stdev (up to float32 round-off of the variance).
    assert np.mean(found.positive != base.positive) < 1e-4
    clipped = 0.9866 * s
    variance = detector(thresholdType="variance", thresholdValue=2.5 / clipped, nSigmaToGrow=0.0)
    found = variance.detectFootprints(image.copy(), sigma=SIGMA)
    assert found.threshold == pytest.approx(2.5 / clipped * found.sigma**2)
    assert found.threshold == pytest.approx(2.5 * s, rel=0.05)
    multiplied = detector(thresholdValue=1.25, includeThresholdMultiplier=2.0, nSigmaToGrow=0.0)
    found = multiplied.detectFootprints(image.copy(), sigma=SIGMA)
    assert found.threshold == pytest.approx(base.threshold)
    np.testing.assert_array_equal(found.positive, base.positive)


def test_pixel_stdev_follows_the_variance_plane():
    sigma = np.full((SIZE, SIZE), 10.0)
    sigma[:, SIZE // 2 :] = 20.0  # 4x the variance on the right half
    image = noise_image(sigma, seed=4)
    found = detector(thresholdValue=2.5, nSigmaToGrow=0.0).detectFootprints(image, sigma=SIGMA)
    seeds = found.positive
    left = seeds[HALF:-HALF, HALF : SIZE // 2 - HALF].mean()
    right = seeds[HALF:-HALF, SIZE // 2 + HALF : -HALF].mean()
    # Measured (seeds 2-5) 0.17-1.07% per half (seed 4: 0.55% left, 0.74% right), tail 0.62%.
    for fraction in (left, right):
        assert 0.25 * TAIL < fraction < 2.0 * TAIL
    # A single stdev threshold would give the right half many times the left's seeds.
    single = detector(thresholdType="stdev", thresholdValue=2.5, nSigmaToGrow=0.0)
    stdev_seeds = single.detectFootprints(noise_image(sigma, seed=4), sigma=SIGMA).positive
    # (measured 2.3-4.1% on the right, 0-0.01% on the left).
    assert stdev_seeds[HALF:-HALF, SIZE // 2 + HALF : -HALF].mean() > 2 * right


@pytest.mark.parametrize("polarity", ["negative", "both"])
def test_negative_blob_is_detected_negative(polarity):
    image = noise_image(seed=5)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    blob = 200.0 * np.exp(-0.5 * ((x - 300) ** 2 + (y - 200) ** 2) / 3.0**2)
    image.image.array[:] -= blob.astype(np.float32)
    found = detector(thresholdPolarity=polarity, thresholdValue=5.0).detectFootprints(image, sigma=SIGMA)
    assert found.negative[200, 300] and image.mask.get("DETECTED_NEGATIVE")[200, 300]
    assert not image.mask.get("DETECTED")[200, 300] and not found.positive[200, 300]
    np.testing.assert_array_equal(image.mask.get("DETECTED_NEGATIVE"), found.negative)


def test_min_pixels_drops_small_groups():
    image = MaskedImage(Image(np.zeros((100, 100), dtype=np.float32)), mask_schema=default_mask_schema())
    image.image.array[30, 30] = 10.0  # one pixel
    image.image.array[60:63, 60:63] = 10.0  # 9 pixels
    image.image.array[30, 70] = image.image.array[31, 71] = 10.0  # 2 pixels, diagonal: 2 groups of 1
    task = detector(thresholdType="value", thresholdValue=1.0, nSigmaToGrow=0.0, minPixels=2)
    found = task.detectFootprints(image, sigma=1.0, doSmooth=False)
    expected = np.zeros((100, 100), dtype=bool)
    expected[60:63, 60:63] = True
    np.testing.assert_array_equal(found.positive, expected)


# --- background fitting -------------------------------------------------------------------------------


def background_task(**overrides):
    config = SubtractBackgroundConfig()
    config.useApprox = False
    for name, value in overrides.items():
        setattr(config, name, value)
    return SubtractBackgroundTask(config=config)


def test_fit_background_bins_and_ramp():
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    ramp = (100.0 + 0.5 * x + 0.2 * y).astype(np.float32)
    clean = MaskedImage(Image(ramp.copy()), mask_schema=default_mask_schema())
    task = background_task(binSize=128)
    background = task.fitBackground(clean)
    assert background.getStatsImage().image.array.shape == (5, 5)  # 512 // 128 + 1
    np.testing.assert_allclose(background.getImageF().array, ramp, atol=0.01)

    # Pixels left out: BAD and DETECTED_NEGATIVE with wild values, and NaNs.
    bad = np.zeros((SIZE, SIZE), bool)
    bad[100:140, 200:260] = True
    negative = np.zeros((SIZE, SIZE), bool)
    negative[300:320, 50:90] = True
    holes = MaskedImage(Image(ramp.copy()), mask_schema=default_mask_schema())
    holes.mask.set("BAD", bad)
    holes.mask.set("DETECTED_NEGATIVE", negative)
    holes.image.array[400:410, 400:450] = np.nan
    wild = holes.copy()
    wild.image.array[bad] = 1e6
    wild.image.array[negative] = -1e6
    model = task.fitBackground(wild).getImageF().array
    # The values under the ignored planes do not matter: the same fit as with the ramp there.
    np.testing.assert_array_equal(model, task.fitBackground(holes).getImageF().array)
    # Holes move the centroid of a bin's pixels off the bin centre, where its value is placed
    # (as afw does): measured at most 5.2 of the ramp's 255 counts.
    np.testing.assert_allclose(model, ramp, atol=6.0)


def test_refusals_name_the_fix():
    config = MaskObjectsConfig()
    config.detection.reEstimateBackground = True
    with pytest.raises(FieldValidationError, match="reEstimateBackground = False"):
        config.validate()
    config = MaskObjectsConfig()
    config.subtractBackground.useApprox = True
    with pytest.raises(FieldValidationError, match="subtractBackground.useApprox=False"):
        config.validate()
    image = noise_image(seed=6, size=64)
    with pytest.raises(UsageError, match="useApprox=False"):
        SubtractBackgroundTask().fitBackground(image)
    with pytest.raises(UsageError, match="sigma"):
        detector().detectFootprints(image)
    image.variance.array[:] = 0.0
    with pytest.raises(NoDataError, match="thresholdType='stdev'"):
        detector().detectFootprints(image, sigma=SIGMA)


# --- override files as the Rubin stack brings them ----------------------------------------------------


def test_sky_correction_override_file(tmp_path):
    path = tmp_path / "skyCorr.py"
    path.write_text(
        "# Object masking for sky correction: plain noise threshold, diamond growth, no local background.\n"
        'config.maskObjects.detection.thresholdType = "stdev"\n'
        "config.maskObjects.detection.isotropicGrow = False\n"
        "config.maskObjects.detection.doTempLocalBackground = False\n"
        "# The obs packages also size the large-scale model (no default, as in the reference).\n"
        "config.bgModel1.xSize = config.bgModel1.ySize = 81.92\n"
        "config.bgModel1.pixelSize = 0.01\n"
    )
    config = SkyCorrectionConfig()
    config.load(str(path))
    config.validate()
    assert config.maskObjects.detection.thresholdType == "stdev"
    assert config.maskObjects.detection.doTempLocalBackground is False


def test_cp_sky_image_override_file(tmp_path):
    path = tmp_path / "cpSkyImage.py"
    path.write_text(
        "# A higher masking threshold for sky-frame inputs.\nconfig.maskTask.detection.thresholdValue = 3.0\n"
    )
    config = CpSkyImageConfig()
    assert config.maskThresh == 3.0
    config.load(str(path))
    config.validate()
    assert config.maskTask.detection.thresholdValue == 3.0
