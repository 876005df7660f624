"""Multi-component (robust PCA) sky templates: building, fitting, subtracting."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from lsst.images import Image, MaskedImage

from lsst.skyframes import BackgroundList, SkyMeasurementConfig, SkyMeasurementTask
from lsst.skyframes.errors import NoDataError
from lsst.skyframes.mask_planes import default_mask_schema
from lsst.skyframes.pca import (
    SkyPcaConfig,
    SkyPcaTask,
    fit_component_scales,
    robust_pca,
    subtract_components,
)
from lsst.skyframes.simulate import detector_pattern, secondary_pattern, two_pattern_sky

DETECTORS = (0, 1, 2)
SIZE = 128
N_TRAIN = 36
HELD_OUT = (3000.0, 0.6)  # level, weight of the second pattern
# A strong second pattern, so its coefficient is measurable to 2 % from one visit.
SECOND_AMPLITUDE = 0.2


def sky_config() -> SkyMeasurementConfig:
    config = SkyMeasurementConfig()
    config.background.xBinSize = 16
    config.background.yBinSize = 16
    return config


def pattern1(detector: int):
    # No amplifier steps: steps sharper than the 16 px bins would leave a
    # rendering residual that hides the difference the tests measure.
    return dataclasses.replace(detector_pattern(detector), n_amplifiers=1)


def simulate(level: float, weight: float, detector: int, seed: int):
    rng = np.random.default_rng([seed, detector])
    return two_pattern_sky(
        SIZE,
        SIZE,
        level,
        weight,
        pattern1(detector),
        secondary_pattern(detector, amplitude=SECOND_AMPLITUDE),
        rng,
        n_stars=40,
        n_galaxies=8,
    )


def normalised_background(task: SkyMeasurementTask, image: MaskedImage, level: float) -> BackgroundList:
    scaled = MaskedImage(Image(image.image.array / level, bbox=image.bbox), mask=image.mask)
    return task.measureBackground(scaled)


def make_training(two_patterns: bool, seed: int) -> dict[int, list[BackgroundList]]:
    task = SkyMeasurementTask(config=sky_config())
    rng = np.random.default_rng(seed)
    levels = rng.uniform(2000.0, 5000.0, N_TRAIN)
    weights = rng.uniform(-1.0, 1.0, N_TRAIN) if two_patterns else np.zeros(N_TRAIN)
    return {
        det: [
            normalised_background(task, simulate(level, weight, det, seed * 1000 + i).image, level)
            for i, (level, weight) in enumerate(zip(levels, weights, strict=True))
        ]
        for det in DETECTORS
    }


def build(backgrounds, n_components: int, **overrides):
    config = SkyPcaConfig()
    config.nComponents = n_components
    config.sky.background.xBinSize = 16
    config.sky.background.yBinSize = 16
    for name, value in overrides.items():
        setattr(config, name, value)
    return SkyPcaTask(config=config).run(backgrounds, list(range(N_TRAIN)))


def stacked(backgrounds) -> np.ndarray:
    return np.concatenate(
        [
            np.stack([bg[0][0].getStatsImage().image.array.ravel() for bg in backgrounds[det]])
            for det in DETECTORS
        ],
        axis=1,
    ).astype(np.float64)


@pytest.fixture(scope="module")
def two_pattern_training():
    return make_training(True, seed=5)


@pytest.fixture(scope="module")
def one_pattern_training():
    return make_training(False, seed=6)


@pytest.fixture(scope="module")
def held_out():
    level, weight = HELD_OUT
    return {det: simulate(level, weight, det, seed=999) for det in DETECTORS}


def apply(held_out, frames) -> tuple[np.ndarray, float]:
    """Fit and subtract the templates from copies of the held-out visit; return coefficients, residual RMS."""
    config = sky_config()
    images = [held_out[det].image.copy() for det in DETECTORS]
    templates = [frames[det] for det in DETECTORS]
    coefficients = fit_component_scales(images, templates, config)
    # The large-scale residual in 32 px bins, with the known object flux
    # removed instead of masked (the ideal DETECTED mask covers about half
    # of the pixels), so that what remains is sky-model error and noise.
    residual_config = SkyMeasurementConfig()
    residual_config.background.mask = ["BAD", "NO_DATA"]
    measure = SkyMeasurementTask(config=residual_config)
    residuals = []
    for det, image, det_templates in zip(DETECTORS, images, templates, strict=True):
        bg_list = BackgroundList()
        subtract_components(image, det_templates, coefficients, bg_list)
        assert len(bg_list) == len(det_templates)
        image.image.array -= held_out[det].objects.astype(np.float32)
        residuals.append(measure.measureBackground(image)[0][0].getStatsImage().image.array.ravel())
    # Bins entirely covered by DETECTED objects are NaN and left out.
    rms = float(np.sqrt(np.nanmean(np.concatenate(residuals) ** 2))) / HELD_OUT[0]
    return coefficients, rms


def truth_patterns() -> np.ndarray:
    """Binned p1 and p2 − mean(p2) over the focal plane, (2, n_bins)."""
    task = SkyMeasurementTask(config=sky_config())
    rows = []
    for zero_mean in (False, True):
        parts = []
        for det in DETECTORS:
            pattern = secondary_pattern(det, amplitude=SECOND_AMPLITUDE) if zero_mean else pattern1(det)
            values = pattern.render(SIZE, SIZE)
            values = values - values.mean() if zero_mean else values
            image = MaskedImage(Image(values.astype(np.float32)), mask_schema=default_mask_schema())
            parts.append(task.measureBackground(image)[0][0].getStatsImage().image.array.ravel())
        rows.append(np.concatenate(parts))
    return np.array(rows, dtype=np.float64)


def test_two_patterns_need_two_components(two_pattern_training, held_out):
    one = build(two_pattern_training, 1, maxResidualFraction=None)
    two = build(two_pattern_training, 2)
    assert two.rejectedExposures == []
    for det in DETECTORS:
        assert [f.metadata["SKY_COMPONENT"] for f in two.skyFrames[det]] == [1, 2]
        assert all(f.metadata["SKY_NCOMPONENTS"] == 2 for f in two.skyFrames[det])
    _, rms1 = apply(held_out, one.skyFrames)
    coefficients, rms2 = apply(held_out, two.skyFrames)
    print(f"residual RMS K=1 {rms1:.5f}, K=2 {rms2:.5f}, ratio {rms1 / rms2:.2f}")
    assert rms1 / rms2 >= 3.0

    # Express the true patterns in the template basis to turn the fitted
    # coefficients back into (level, weight·level).
    templates = np.array(
        [np.concatenate([two.skyFrames[det][k].image.array.ravel() for det in DETECTORS]) for k in range(2)],
        dtype=np.float64,
    )
    mixing = np.linalg.lstsq(templates.T, truth_patterns().T, rcond=None)[0]
    level, weight_level = np.linalg.solve(mixing, coefficients)
    true_level, weight = HELD_OUT
    level_error = abs(level / true_level - 1)
    weight_error = abs(weight_level / (weight * true_level) - 1)
    print(f"coefficient errors: level {level_error:.4f}, a*level {weight_error:.4f}")
    assert level_error < 0.02
    assert weight_error < 0.02
    assert two.coefficients[:, 0] == pytest.approx(1.0, abs=0.02)


def test_extra_components_do_no_harm(one_pattern_training, held_out):
    level = HELD_OUT[0]
    task = SkyMeasurementTask(config=sky_config())
    visit = {det: simulate(level, 0.0, det, seed=998) for det in DETECTORS}
    del task
    _, rms1 = apply(visit, build(one_pattern_training, 1).skyFrames)
    _, rms3 = apply(visit, build(one_pattern_training, 3).skyFrames)
    print(f"one pattern: residual RMS K=1 {rms1:.5f}, K=3 {rms3:.5f}, ratio {rms3 / rms1:.3f}")
    assert rms3 <= 1.05 * rms1


def test_first_component_is_todays_sky_frame(one_pattern_training):
    task = SkyMeasurementTask(config=sky_config())
    result = build(one_pattern_training, 2)
    assert result.rejectedExposures == []
    pca = robust_pca(stacked(one_pattern_training), 2)
    start = 0
    for det in DETECTORS:
        expected = task.averageBackgrounds(one_pattern_training[det])
        first = result.skyFrames[det][0]
        np.testing.assert_array_equal(first.image.array, expected.image.array)
        np.testing.assert_array_equal(first.variance.array, expected.variance.array)
        n = expected.image.array.size
        np.testing.assert_allclose(
            pca.templates[0, start : start + n], expected.image.array.ravel(), rtol=1e-6
        )
        start += n
        for key in ("BOX.MINX", "BOX.MAXY", "ALGORITHM"):
            assert first.metadata[key] == expected.metadata[key]
        # A single-frame consumer reads component 1 unchanged.
        SkyMeasurementTask.exposureToBackground(first)


def test_rejects_artefacts_and_handles_missing_bins(one_pattern_training):
    data = stacked(one_pattern_training)
    n_exp, n_bins = data.shape
    data[5] += 0.03 * np.linspace(-1.0, 1.0, n_bins) + 0.01
    rng = np.random.default_rng(1)
    data[rng.random(data.shape) < 0.05] = np.nan
    data[7, : n_bins // 3] = np.nan  # a detector missing from one exposure
    data[9] = np.nan
    result = robust_pca(data, 2)
    reasons = dict(result.rejected_exposures)
    assert set(reasons) == {5, 9}
    assert "residual" in reasons[5] or "clipped" in reasons[5]
    assert reasons[9] == "no finite bin"
    assert np.isfinite(result.templates).all()
    assert np.isnan(result.coefficients[9]).all()
    assert np.isfinite(result.coefficients[7]).all()

    # Through the Task, with a missing detector given as None.
    backgrounds = {det: list(bgs) for det, bgs in one_pattern_training.items()}
    backgrounds[1][7] = None
    out = build(backgrounds, 2)
    assert out.rejectedExposures == []
    assert all(np.isfinite(f.image.array).all() for frames in out.skyFrames.values() for f in frames)


def test_variance_explained(two_pattern_training):
    result = robust_pca(stacked(two_pattern_training), 3)
    explained = result.variance_explained
    assert np.all(np.diff(explained) <= 0)
    assert explained.sum() <= 1.0
    assert explained[1] > 10 * explained[2]


def test_too_few_exposures():
    data = np.ones((2, 10))
    with pytest.raises(NoDataError):
        robust_pca(data, 3)


def test_cp_sky_combine_components(two_pattern_training):
    """cpSkyCombine with nComponents: one focal-plane quantum, `sky` unchanged, K templates, report."""
    from lsst.skyframes.build import (
        MISSING_INPUT_REASON,
        CpSkyCombineConfig,
        CpSkyCombineConnections,
        CpSkyCombineTask,
    )

    default = CpSkyCombineConnections(config=CpSkyCombineConfig())
    assert set(default.dimensions) == {"instrument", "physical_filter", "detector"}
    assert "outputComponents" not in default.outputs
    config = CpSkyCombineConfig()
    config.nComponents = 2
    # The bins the training backgrounds were measured with (checked at run time).
    config.sky = sky_config()
    connections = CpSkyCombineConnections(config=config)
    assert set(connections.dimensions) == {"instrument", "physical_filter"}
    assert connections.outputCalib.multiple and connections.outputComponents.multiple
    assert connections.outputComponents.isCalibration

    ids = [100 + i for i in range(N_TRAIN)]
    backgrounds = {det: list(bgs) for det, bgs in two_pattern_training.items()}
    backgrounds[2][4] = None  # exposure 104 lacks detector 2
    dropped = [{"exposure": 99, "reason": "cpSkyScaleMeasure: no usable pixel"}]
    result = CpSkyCombineTask(config=config).runComponents(backgrounds, ids, dropped=dropped)
    single_config = CpSkyCombineConfig()
    single_config.sky = sky_config()
    single = CpSkyCombineTask(config=single_config)
    for det in DETECTORS:
        present = [(e, bg) for e, bg in zip(ids, backgrounds[det], strict=True) if bg is not None]
        reference = single.run([bg for _, bg in present], [e for e, _ in present]).outputCalib
        np.testing.assert_array_equal(result.outputCalib[det].image.array, reference.image.array)
        assert result.outputCalib[det].metadata["SKY_NINPUTS"] == len(present)
        templates = result.outputComponents[det]
        assert len(templates) == 2
        np.testing.assert_array_equal(templates[0][0].getStatsImage().image.array, reference.image.array)
        report = result.outputQuality[det]
        assert report["inputs_used"] == [e for e, _ in present]
        # Dropped upstream: listed for every detector; detector 2 also lacks exposure 104.
        missing = [{"exposure": 104, "reason": MISSING_INPUT_REASON}] if det == 2 else []
        assert report["inputs_dropped"] == dropped + missing
        assert len(report["variance_explained"]) == 2 and len(report["coefficients"]) == len(present)
        # Each input's residual from its own two-component model is far below
        # its residual from the mean frame: the second pattern is modelled.
        assert (
            np.median(list(report["model_residual_rms"].values()))
            < np.median(list(report["residual_rms"].values())) / 3
        )


def test_sky_correction_component_inputs():
    """skyCorr:nComponents: the right prerequisite, config validation, missing or short templates."""
    from lsst.pex.config import FieldValidationError

    from lsst.skyframes.camera import make_synthetic_camera
    from lsst.skyframes.camera_overrides import camera_config
    from lsst.skyframes.correction import (
        MissingSkyFrameError,
        SkyCorrectionConfig,
        SkyCorrectionConnections,
        SkyCorrectionTask,
    )

    camera = make_synthetic_camera(n_x=2, n_y=1, size=64)
    config = camera_config(SkyCorrectionTask, camera)
    config.nComponents = 2
    connections = SkyCorrectionConnections(config=config)
    assert "skyComponents" in connections.prerequisiteInputs
    assert "skyFrames" not in connections.prerequisiteInputs
    assert "skyComponents" not in SkyCorrectionConnections(config=SkyCorrectionConfig()).prerequisiteInputs
    bad = camera_config(SkyCorrectionTask, camera)
    bad.nComponents = 2
    bad.doSky = False
    with pytest.raises(FieldValidationError, match="doSky"):
        bad.validate()

    task = SkyCorrectionTask(config=config)
    image = MaskedImage(Image(np.zeros((64, 64), dtype=np.float32)), mask_schema=default_mask_schema())
    one = SkyMeasurementTask().measureBackground(image)
    # A detector without templates is skipped (the reference's detector set); none left is an error.
    with pytest.raises(MissingSkyFrameError, match="no sky_components.*nComponents=1") as missing:
        task.run([image, image], None, None, camera, [0, 1], skyComponents=[None, None])
    assert missing.value.detectorIds == (0, 1)
    with pytest.raises(MissingSkyFrameError, match="has 1 sky templates but nComponents=2"):
        task.run([image, image], None, None, camera, [0, 1], skyComponents=[one, one])


def test_residual_threshold_is_in_excess_of_noise():
    """Small, noisy bins: the 0.005 test measures missed structure, not bin noise."""
    rng = np.random.default_rng(4)
    n_exp, n_bins, sigma = 30, 400, 0.01  # an 8-px bin of a ~1500 e sky
    pattern = 1.0 + 0.05 * np.sin(np.linspace(0.0, 6.0, n_bins))
    data = pattern[None, :] + rng.normal(0.0, sigma, (n_exp, n_bins))
    # One exposure with structure the mean frame lacks: RMS 0.02 beyond the noise.
    data[3] += 0.02 * np.sqrt(2.0) * np.sin(np.linspace(0.0, 40.0, n_bins))
    noise = np.full(data.shape, sigma)
    with pytest.raises(NoDataError):
        # Judged on the raw RMS every exposure fails (the noise alone is 0.01).
        robust_pca(data, 1)
    # One component, so that no template can take up exposure 3's own structure.
    result = robust_pca(data, 1, noise=noise, clip=10.0)
    assert [index for index, _ in result.rejected_exposures] == [3]
    assert "beyond noise" in result.rejected_exposures[0][1]
    kept = np.delete(result.excess_rms, 3)
    assert np.all(kept < 0.005) and result.excess_rms[3] > 0.005
    np.testing.assert_allclose(np.delete(result.residual_rms, 3), sigma, rtol=0.15)
    with pytest.raises(ValueError, match="noise has shape"):
        robust_pca(data, 1, noise=noise[:, :10])


def test_clipped_rms_ignores_a_few_spoilt_bins():
    from lsst.skyframes.quality import clipped_rms

    rng = np.random.default_rng(8)
    sigma = 0.01
    values = rng.normal(0.0, sigma, (5, 64, 64))
    values[:, :4, :10] = 0.5  # ~1 % of bins spoilt by an object halo
    values[1, 10, 10] = np.nan
    rms = clipped_rms(values)
    # A Gaussian truncated at 3 sigma has an RMS of 0.9865 sigma.
    np.testing.assert_allclose(rms, 0.9865 * sigma, rtol=0.03)
    assert np.isnan(clipped_rms(np.full((1, 3), np.nan)))[0]


def test_fast_kernels_match_numpy():
    """The vectorised quartiles and Gram-matrix directions against numpy's own routines."""
    import warnings

    from lsst.skyframes._robust_pca import directions_from_gram, nan_quartiles

    rng = np.random.default_rng(3)
    x = rng.normal(size=(17, 500))
    x[rng.random(x.shape) < 0.3] = np.nan
    x[:, 5] = np.nan  # no finite value
    x[:16, 7] = np.nan  # one finite value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN column
        expected = np.nanpercentile(x, [25, 75], axis=0)
    for got, want in zip(nan_quartiles(x), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-14, equal_nan=True)
    residual = rng.normal(size=(20, 3000))
    _, _, vt = np.linalg.svd(residual, full_matrices=False)
    projection, scale = directions_from_gram(residual @ residual.T, 3)
    directions = projection @ residual / scale[:, None]
    np.testing.assert_allclose(np.abs(np.sum(vt[:3] * directions, axis=1)), 1.0, rtol=1e-12)


def test_memory_estimate_bounds_the_pca_and_guards_the_task(one_pattern_training):
    """robust_pca's working memory is within pca_memory_bytes; SkyPcaTask refuses more than maxMemoryGiB."""
    import tracemalloc

    from lsst.skyframes.errors import ProblemTooLargeError
    from lsst.skyframes.pca import pca_memory_bytes

    rng = np.random.default_rng(2)
    n_exp, n_bins = 20, 50_000
    pattern = rng.normal(0.0, 0.02, n_bins)
    data = 1.0 + pattern[None, :] * rng.uniform(0.5, 1.5, (n_exp, 1)) + rng.normal(0, 0.002, (n_exp, n_bins))
    noise = np.full(data.shape, 0.002)
    tracemalloc.start()
    try:
        result = robust_pca(data, 3, noise=noise)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Beyond the inputs; the estimate leaves out the (n_exp, n_bins) bool clipped result.
    estimate = pca_memory_bytes(n_exp, n_bins, 3) + result.clipped.nbytes
    print(f"peak {peak / 2**20:.0f} MiB, estimate {estimate / 2**20:.0f} MiB")
    assert peak <= estimate

    with pytest.raises(ProblemTooLargeError, match="xBinSize=128"):
        build(one_pattern_training, 2, maxMemoryGiB=1e-6)


def test_cross_validated_bin_size_templates(two_pattern_training, held_out):
    """With binSizeChoice='crossValidated' every component is at the size the single sky frame chooses."""
    cross_validated = SkyPcaConfig().sky
    cross_validated.background.binSizeChoice = "crossValidated"
    cross_validated.background.binSizeCandidates = [16, 32, 64]  # the training is measured at 16 px
    two = build(two_pattern_training, 2, sky=cross_validated)
    single = SkyMeasurementTask(config=cross_validated)
    for det in DETECTORS:
        first, second = two.skyFrames[det]
        assert first.metadata["BINSIZE"] == second.metadata["BINSIZE"]
        assert first.bbox == second.bbox
        # Component 1 is the single sky frame at its own chosen size, bit for bit.
        expected = single.averageBackgrounds(two_pattern_training[det])
        assert first.metadata["BINSIZE"] == expected.metadata["BINSIZE"]
        np.testing.assert_array_equal(first.image.array, expected.image.array)
    _, rms_fixed = apply(held_out, build(two_pattern_training, 2).skyFrames)
    _, rms_chosen = apply(held_out, two.skyFrames)
    print(f"K=2 residual RMS: fixed 16 px {rms_fixed:.5f}, cross-validated {rms_chosen:.5f}")
    assert rms_chosen <= 1.1 * rms_fixed
