"""Simulated exposures whose sky varies with two independent patterns, against their truth."""

import dataclasses

import numpy as np
import pytest

from lsst.skyframes.camera import make_synthetic_camera
from lsst.skyframes.simulate import (
    ExposurePlan,
    detector_pattern,
    exposure_header,
    large_scale_field,
    noiseless_sky,
    plan_exposures,
    secondary_pattern,
    simulate_detector,
    simulate_exposure,
    two_pattern_sky,
)

SEED = 5
AMPLITUDE = 0.1
SECONDARY_AMPLITUDE = 0.05
OBJECTS = {"n_stars": 20, "n_galaxies": 4}


@pytest.fixture(scope="module")
def camera():
    return make_synthetic_camera(n_x=2, n_y=2, size=96)


@pytest.fixture(scope="module")
def plan(camera):
    return plan_exposures(1, camera.physical_filters[1], seed=SEED, first_id=2000)[0]


def _analytic_sky(detector, plan: ExposurePlan, weight: float) -> np.ndarray:
    """level · large_scale · (p1 + w · (p2 − mean(p2))), computed independently."""
    p1 = detector_pattern(detector.id, amplitude=AMPLITUDE).render(detector.width, detector.height)
    p2 = secondary_pattern(detector.id, amplitude=SECONDARY_AMPLITUDE).render(detector.width, detector.height)
    return plan.sky_level * large_scale_field(detector, plan) * (p1 + weight * (p2 - p2.mean()))


def _assert_same_exposure(a, b) -> None:
    np.testing.assert_array_equal(a.image.image.array, b.image.image.array)
    np.testing.assert_array_equal(a.image.variance.array, b.image.variance.array)
    np.testing.assert_array_equal(a.image.mask.array, b.image.mask.array)
    np.testing.assert_array_equal(a.sky, b.sky)
    np.testing.assert_array_equal(a.objects, b.objects)


def test_weight_zero_reproduces_single_pattern_output(camera, plan):
    """A default plan simulates bit for bit what the one-pattern model did."""
    assert plan.secondary_weight == 0.0
    for detector in camera:
        new = simulate_detector(detector, plan, seed=SEED, amplitude=AMPLITUDE, **OBJECTS)
        # The one-pattern simulation as simulate_detector always made it.
        old = simulate_exposure(
            detector.width,
            detector.height,
            plan.sky_level,
            detector_pattern(detector.id, amplitude=AMPLITUDE),
            np.random.default_rng([SEED, plan.exposure_id, detector.id]),
            large_scale=large_scale_field(detector, plan),
            bad_columns=(detector.width // 3 + detector.id,),
            **OBJECTS,
        )
        _assert_same_exposure(new, old)
        # An explicit zero weight ignores the secondary amplitude.
        explicit = simulate_detector(
            detector,
            dataclasses.replace(plan, secondary_weight=0.0),
            seed=SEED,
            amplitude=AMPLITUDE,
            secondary_amplitude=0.3,
            **OBJECTS,
        )
        _assert_same_exposure(explicit, old)


@pytest.mark.parametrize("weight", [0.8, -0.7, 1.0])
def test_weighted_sky_matches_analytic_model(camera, plan, weight):
    weighted = dataclasses.replace(plan, secondary_weight=weight)
    for detector in camera:
        exposure = simulate_detector(
            detector,
            weighted,
            seed=SEED,
            amplitude=AMPLITUDE,
            secondary_amplitude=SECONDARY_AMPLITUDE,
            **OBJECTS,
        )
        expected = _analytic_sky(detector, plan, weight)
        np.testing.assert_allclose(exposure.sky, expected, rtol=1e-12, atol=0)
        # The second pattern changes the sky by a few percent, not by nothing.
        unweighted = _analytic_sky(detector, plan, 0.0)
        change = np.abs(expected / unweighted - 1).max()
        assert 0.005 < change < 0.2
        # Only the sky differs from the one-pattern exposure: same objects, same random draws.
        single = simulate_detector(detector, plan, seed=SEED, amplitude=AMPLITUDE, **OBJECTS)
        np.testing.assert_array_equal(exposure.objects, single.objects)
        np.testing.assert_array_equal(exposure.image.mask.get("BAD"), single.image.mask.get("BAD"))
        noise = exposure.image.image.array - exposure.sky - exposure.objects
        good = ~exposure.image.mask.get("BAD")
        assert abs(noise[good].mean()) < 5 * np.sqrt(expected.mean() / good.sum())


@pytest.mark.parametrize("weight", [0.0, -0.4])
def test_noiseless_sky_is_the_simulated_sky(camera, plan, weight):
    weighted = dataclasses.replace(plan, secondary_weight=weight)
    for detector in camera:
        kwargs = {"amplitude": AMPLITUDE, "secondary_amplitude": SECONDARY_AMPLITUDE}
        simulated = simulate_detector(detector, weighted, seed=SEED, **kwargs, **OBJECTS)
        np.testing.assert_array_equal(noiseless_sky(detector, weighted, **kwargs), simulated.sky)


def test_two_pattern_sky_matches_analytic_model(camera, plan):
    detector = camera[1]
    weight = 0.6
    exposure = two_pattern_sky(
        detector.width,
        detector.height,
        plan.sky_level,
        weight,
        detector_pattern(detector.id, amplitude=AMPLITUDE),
        secondary_pattern(detector.id, amplitude=SECONDARY_AMPLITUDE),
        np.random.default_rng(1),
        **OBJECTS,
    )
    p1 = detector_pattern(detector.id, amplitude=AMPLITUDE).render(detector.width, detector.height)
    p2 = secondary_pattern(detector.id, amplitude=SECONDARY_AMPLITUDE).render(detector.width, detector.height)
    np.testing.assert_allclose(exposure.sky, plan.sky_level * (p1 + weight * (p2 - p2.mean())), rtol=1e-12)


def test_plan_weights_in_range_and_levels_unchanged(camera):
    kwargs = {"seed": SEED, "first_id": 3000, "start": "2026-11-02T03:00:00"}
    plain = plan_exposures(40, camera.physical_filters[1], **kwargs)
    weighted = plan_exposures(40, camera.physical_filters[1], secondary_weight_range=(-1.0, 0.5), **kwargs)
    weights = np.array([p.secondary_weight for p in weighted])
    assert np.all((weights >= -1.0) & (weights <= 0.5))
    assert weights.std() > 0.2 and len(set(weights)) == len(weights)
    assert all(p.secondary_weight == 0.0 for p in plain)
    for a, b in zip(plain, weighted, strict=True):
        assert dataclasses.replace(b, secondary_weight=0.0) == a
    # Deterministic for a seed.
    again = plan_exposures(40, camera.physical_filters[1], secondary_weight_range=(-1.0, 0.5), **kwargs)
    assert again == weighted


def test_header_carries_weight(camera, plan):
    header = exposure_header(camera[0], dataclasses.replace(plan, secondary_weight=-0.25))
    assert header["SKYW2"] == -0.25
    assert header["EXPID"] == plan.exposure_id and header["FILTER"] == "SkyCam-i"
