"""background.binSizeChoice='crossValidated': the bin size a sky frame is made at, chosen from its inputs.

The cases have a known answer: pure noise (the coarsest candidate is best), strong structure
at the finest scale with little noise (the finest is best), and structure at several scales,
where each candidate's real error is measured against the noiseless field.
"""

import numpy as np
import pytest
from lsst.images import Image, MaskedImage
from lsst.pex.config import FieldValidationError

from lsst.skyframes import SkyMeasurementConfig, SkyMeasurementTask
from lsst.skyframes.bin_size import (
    BinSizeChoice,
    measurement_bin_edges,
    overlap_weights,
    rebin_background,
)
from lsst.skyframes.errors import BoxMismatchError, NoDataError
from lsst.skyframes.mask_planes import default_mask_schema
from lsst.skyframes.quality import quality_report
from lsst.skyframes.report import format_quality_table
from lsst.skyframes.statistics import Property, binned_statistics

SIZE = 256
CANDIDATES = [8, 16, 32, 64]


def cross_validated_task(**background) -> SkyMeasurementTask:
    config = SkyMeasurementConfig()
    config.background.binSizeChoice = "crossValidated"
    config.background.binSizeCandidates = CANDIDATES
    for name, value in background.items():
        setattr(config.background, name, value)
    return SkyMeasurementTask(config=config)


def pattern(kind: str) -> np.ndarray:
    """A normalised response (mean ~1) over SIZE x SIZE pixels."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    if kind == "flat":
        return np.ones((SIZE, SIZE))
    if kind == "fine":
        # Period 32 px: 8-px bins sample it 4 times a period, 16-px bins at the Nyquist limit, coarser not.
        return 1.0 + 0.05 * np.sin(2 * np.pi * (x + 0.5) / 32) * np.sin(2 * np.pi * (y + 0.5) / 32)
    if kind == "mixed":
        # A gradient, a 128-px wave and a weak 40-px one: each scale favours a different size.
        return (
            1.0
            + 0.1 * (x / SIZE - 0.5)
            + 0.02 * np.cos(2 * np.pi * x / 128) * np.cos(2 * np.pi * y / 128)
            + 0.004 * np.sin(2 * np.pi * (x + y) / 40)
        )
    raise ValueError(kind)


def exposures(truth: np.ndarray, noise: float, count: int, seed: int) -> list[MaskedImage]:
    rng = np.random.default_rng(seed)
    return [
        MaskedImage(
            Image((truth + rng.normal(0.0, noise, truth.shape)).astype(np.float32)),
            mask_schema=default_mask_schema(),
        )
        for _ in range(count)
    ]


def measured(task: SkyMeasurementTask, images: list[MaskedImage]):
    return [task.measureBackground(image) for image in images]


def fine_bins(array: np.ndarray) -> np.ndarray:
    """Means of an image over the finest candidate's bins."""
    edges = measurement_bin_edges(SIZE, CANDIDATES[0])
    return binned_statistics(array, None, edges, edges, Property.MEAN).value


def true_error(task: SkyMeasurementTask, backgrounds, size: int, truth: np.ndarray) -> float:
    """Mean-square error, on the finest bins, of the frame made at ``size`` against the noiseless field."""
    forced = BinSizeChoice(size, tuple(CANDIDATES), (0.0,) * 4, (0.0,) * 4, (0.0,) * 4)
    sky = task.averageBackgrounds(backgrounds, binSizeChoice=forced)
    rendered = task.exposureToBackground(sky).getImage().array.astype(np.float64)
    return float(np.mean((fine_bins(rendered) - fine_bins(truth)) ** 2))


def sampling_tolerance(size: int) -> float:
    """Relative spread (3 sigma) of a mean square over the bins of one candidate size."""
    n_bins = (len(measurement_bin_edges(SIZE, size)) - 1) ** 2
    return 3 * np.sqrt(2 / n_bins)


# --- configuration ----------------------------------------------------------------------------------


def test_defaults_are_the_reference_fixed_size():
    config = SkyMeasurementConfig()
    assert config.background.binSizeChoice == "fixed"
    assert list(config.background.binSizeCandidates) == [8, 16, 32, 64]
    task = SkyMeasurementTask(config=config)
    images = exposures(pattern("mixed"), 0.01, 3, seed=1)
    backgrounds = measured(task, images)
    assert backgrounds[0][0][0].getStatsImage().bbox.shape == (8, 8)  # 256 / 32
    sky = task.averageBackgrounds(backgrounds)
    assert "BINSIZE" not in sky.metadata
    assert not any(str(key).startswith("CV") for key in sky.metadata)


@pytest.mark.parametrize(
    "field, value",
    [("binSizeChoice", "bestGuess"), ("binSizeCandidates", [8, 0]), ("binSizeCandidates", [])],
)
def test_unknown_choice_and_bad_candidates_are_refused(field, value):
    config = SkyMeasurementConfig()
    with pytest.raises(FieldValidationError, match=field):
        setattr(config.background, field, value)
        config.validate()


def test_repeated_candidates_are_refused():
    config = SkyMeasurementConfig()
    config.background.binSizeCandidates = [8, 16, 16]
    with pytest.raises(FieldValidationError, match="repeats a size"):
        config.validate()


# --- rebinning ---------------------------------------------------------------------------------------


def test_overlap_weights_cover_every_pixel_once():
    fine, coarse = measurement_bin_edges(200, 8), measurement_bin_edges(200, 64)  # 25 and 3 bins: not nested
    weights = overlap_weights(fine, coarse)
    np.testing.assert_array_equal(weights.sum(axis=0), np.diff(fine))
    np.testing.assert_array_equal(weights.sum(axis=1), np.diff(coarse))


def test_rebinned_mean_equals_the_coarse_measurement_when_bins_nest():
    """With the MEAN statistic and nested grids, rebinning 8-px bins to 32 px is measuring at 32 px."""
    images = exposures(pattern("mixed"), 0.02, 1, seed=2)
    fine = cross_validated_task(statistic="MEAN").measureBackground(images[0])
    coarse_config = SkyMeasurementConfig()
    coarse_config.background.statistic = "MEAN"
    direct = SkyMeasurementTask(config=coarse_config).measureBackground(images[0])
    rebinned = rebin_background(fine, 32)
    np.testing.assert_allclose(
        rebinned[0][0].getStatsImage().image.array, direct[0][0].getStatsImage().image.array, rtol=2e-7
    )
    assert rebinned[0][1] == direct[0][1]


def test_rebinning_leaves_out_nan_and_bad_bins():
    images = exposures(pattern("flat"), 0.0, 1, seed=3)
    images[0].image.array[:8, :8] = 1000.0  # one 8-px bin, flagged BAD below
    images[0].image.array[8:16, :8] = np.nan  # one 8-px bin with no usable pixel
    fine = cross_validated_task(statistic="MEAN").measureBackground(images[0])
    fine[0][0].getStatsImage().mask.set("BAD", np.pad(np.ones((1, 1), bool), ((0, 31), (0, 31))))
    coarse = rebin_background(fine, 32)[0][0].getStatsImage()
    np.testing.assert_allclose(coarse.image.array, 1.0)
    assert not coarse.mask.get("BAD").any()


# --- the choice, against cases with a known answer ---------------------------------------------------


def test_pure_noise_chooses_the_coarsest_candidate():
    task = cross_validated_task()
    backgrounds = measured(task, exposures(pattern("flat"), 0.05, 20, seed=4))
    choice = task.chooseBinSize(backgrounds)
    assert choice.binSize == 64
    # No structure at any size: every structure estimate is zero within the noise of the finest grid.
    assert max(abs(s) for s in choice.structure) < choice.noise[0]
    # The noise falls with bin size, as the real error of each frame against the flat truth does
    # (by less than the bin area, 4x per doubling: the spline between bin centres averages noise too).
    assert np.all(np.diff(choice.noise) < 0)
    for size, estimate in zip(CANDIDATES, choice.noise, strict=True):
        real = true_error(task, backgrounds, size, pattern("flat"))
        assert estimate == pytest.approx(real, rel=sampling_tolerance(size)), size


def test_strong_fine_structure_and_low_noise_chooses_the_finest():
    task = cross_validated_task()
    backgrounds = measured(task, exposures(pattern("fine"), 0.002, 10, seed=5))
    choice = task.chooseBinSize(backgrounds)
    assert choice.binSize == 8
    sky = task.averageBackgrounds(backgrounds, binSizeChoice=choice)
    assert sky.bbox.shape == (32, 32) and sky.metadata["BINSIZE"] == 8
    # The 32-px period averages out in 32- and 64-px bins: what remains is the wave as the finest bins
    # see it (attenuated by averaging over 8 px).
    wave_ms = np.mean((fine_bins(pattern("fine")) - 1.0) ** 2)
    assert choice.structure[2] == pytest.approx(wave_ms, rel=0.2)
    assert choice.structure[3] == pytest.approx(wave_ms, rel=0.2)


@pytest.mark.parametrize("noise", [0.01, 0.1])
def test_estimated_errors_follow_the_real_ones(noise):
    """Structure at several scales: the chosen size is (nearly) the best one in truth."""
    truth = pattern("mixed")
    task = cross_validated_task()
    backgrounds = measured(task, exposures(truth, noise, 20, seed=6))
    choice = task.chooseBinSize(backgrounds)
    real = [true_error(task, backgrounds, size, truth) for size in CANDIDATES]
    chosen = CANDIDATES.index(choice.binSize)
    assert real[chosen] <= 1.25 * min(real)
    # Each estimate within a factor 1.6 of the real error (both carry sampling noise of ~1/sqrt(bins)).
    np.testing.assert_allclose(choice.error, real, rtol=0.6)


def test_the_sky_frame_is_made_at_the_chosen_size_and_says_so():
    task = cross_validated_task()
    backgrounds = measured(task, exposures(pattern("flat"), 0.05, 8, seed=7))
    sky = task.averageBackgrounds(backgrounds)
    choice = BinSizeChoice.fromMetadata(sky.metadata)
    assert choice == task.chooseBinSize(backgrounds)
    assert sky.metadata["BINSIZE"] == choice.binSize
    expected_bins = len(measurement_bin_edges(SIZE, choice.binSize)) - 1
    assert sky.bbox.shape == (expected_bins, expected_bins)
    # The frame renders over the detector and holds the flat field's level.
    rendered = task.exposureToBackground(sky).getImage()
    assert rendered.bbox.shape == (SIZE, SIZE)
    assert np.mean(rendered.array) == pytest.approx(1.0, abs=0.002)


def test_quality_report_holds_the_error_budget_at_the_chosen_size():
    task = cross_validated_task()
    backgrounds = measured(task, exposures(pattern("flat"), 0.05, 6, seed=8))
    sky = task.averageBackgrounds(backgrounds)
    report = quality_report(sky, backgrounds, list(range(6)), [])
    budget = report["bin_size_choice"]
    assert report["schema_version"] == 4
    assert budget["bin_size"] == sky.metadata["BINSIZE"]
    assert budget["candidates"] == CANDIDATES
    assert len(budget["error_ms"]) == len(budget["structure_ms"]) == len(budget["noise_ms"]) == 4
    assert np.array(report["residual_rms_map"]).shape == sky.bbox.shape
    # The per-input residuals are at the chosen size: the per-pixel noise over about the bin's side.
    residual = np.median(list(report["residual_rms"].values()))
    assert residual == pytest.approx(0.05 / sky.metadata["BINSIZE"], rel=0.35)


def test_report_table_shows_the_chosen_size():
    task = cross_validated_task()
    backgrounds = measured(task, exposures(pattern("flat"), 0.05, 6, seed=8))
    chosen = quality_report(task.averageBackgrounds(backgrounds), backgrounds, list(range(6)), [])
    fixed_task = SkyMeasurementTask()
    fixed_inputs = measured(fixed_task, exposures(pattern("flat"), 0.05, 6, seed=8))
    fixed = quality_report(fixed_task.averageBackgrounds(fixed_inputs), fixed_inputs, list(range(6)), [])
    lines = format_quality_table(
        [({"physical_filter": "r", "detector": 0}, chosen), ({"physical_filter": "r", "detector": 1}, fixed)]
    ).splitlines()
    assert lines[0].split()[-5:] == ["bin", "px", "est.", "RMS", "error"]
    budget = chosen["bin_size_choice"]
    error = budget["error_rms"][budget["candidates"].index(budget["bin_size"])]
    assert lines[2].split()[-2:] == [str(budget["bin_size"]), f"{error:.3e}"]
    assert lines[3].split()[-1] == "fixed"


def test_scale_and_subtraction_work_at_the_chosen_size():
    task = cross_validated_task()
    truth = pattern("mixed")
    backgrounds = measured(task, exposures(truth, 0.02, 10, seed=9))
    sky = task.exposureToBackground(task.averageBackgrounds(backgrounds))
    science = exposures(3.0 * truth, 0.02, 1, seed=10)[0]
    scale = task.solveScales([task.measureScale(science, sky)])
    assert scale == pytest.approx(3.0, rel=2e-3)
    task.subtractSkyFrame(science, sky, scale)
    assert abs(np.mean(science.image.array)) < 5e-3


# --- bad input -----------------------------------------------------------------------------------------


def test_one_input_cannot_be_cross_validated():
    task = cross_validated_task()
    with pytest.raises(NoDataError, match="two halves.*binSizeChoice='fixed'"):
        task.averageBackgrounds(measured(task, exposures(pattern("flat"), 0.05, 1, seed=11)))


def test_inputs_not_at_the_finest_candidate_are_refused():
    fixed = SkyMeasurementTask()  # 32-px bins
    backgrounds = measured(fixed, exposures(pattern("flat"), 0.05, 4, seed=12))
    with pytest.raises(BoxMismatchError, match="finest of background.binSizeCandidates .8 px."):
        cross_validated_task().averageBackgrounds(backgrounds)


def test_fully_masked_inputs_say_so():
    task = cross_validated_task()
    images = exposures(pattern("flat"), 0.05, 4, seed=13)
    for image in images:
        image.image.array[...] = np.nan
    with pytest.raises(NoDataError, match="no finite bin in common"):
        task.averageBackgrounds(measured(task, images))


# --- through pipetask ----------------------------------------------------------------------------------


def test_pipetask_builds_each_sky_frame_at_its_chosen_size(reference_build):
    """One pipeline parameter switches it on; each detector's frame is averageBackgrounds' own choice."""
    reference, _ = reference_build
    run = "crossvalidated/run"
    result = reference.pipetask(
        "-o", "crossvalidated", "--output-run", run, "--register-dataset-types",
        "-c", "parameters:binSizeChoice=crossValidated",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    butler = reference.butler()
    config = SkyMeasurementConfig()
    config.background.binSizeChoice = "crossValidated"
    task = SkyMeasurementTask(config=config)
    for detector in reference.camera:
        data_id = {
            "instrument": reference.instrument,
            "detector": detector.id,
            "physical_filter": reference.plans[0].physical_filter,
        }
        sky = butler.get("sky", data_id, collections=run)
        report = butler.get("sky_quality", data_id, collections=run)
        residuals = [
            butler.get(
                "cpSkyExpResidualBackground",
                instrument=reference.instrument,
                detector=detector.id,
                exposure=exposure,
                collections=run,
            )
            for exposure in report["inputs_used"]
        ]
        # Measured at the finest candidate (8 px) by cpSkySubtractBackground.
        assert residuals[0][0][0].getStatsImage().bbox.shape == (detector.height // 8, detector.width // 8)
        expected = task.averageBackgrounds(residuals)
        chosen = report["bin_size_choice"]["bin_size"]
        assert sky.metadata["BINSIZE"] == expected.metadata["BINSIZE"] == chosen
        np.testing.assert_array_equal(sky.image.array, expected.image.array)
        # The error budget survives the FITS header.
        stored, made = BinSizeChoice.fromMetadata(sky.metadata), BinSizeChoice.fromMetadata(expected.metadata)
        assert (
            (stored.binSize, stored.candidates)
            == (made.binSize, made.candidates)
            == (chosen, (8, 16, 32, 64))
        )
        np.testing.assert_allclose(stored.error, made.error, rtol=1e-12)
