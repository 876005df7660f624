"""The in-process demo: build a sky frame from synthetic exposures and apply it.

Everything runs through the plain `SkyMeasurementTask` methods, as a notebook
user would call them; the figures and numbers are scored against the
simulation's truth.
"""

from __future__ import annotations

__all__ = ["DemoResult", "run_task_demo"]

import dataclasses
import os
import time

import numpy as np

from .background import BackgroundList
from .plotting import plot_panels
from .simulate import SkyPattern, simulate_exposure
from .sky_measurement import SkyMeasurementTask
from .statistics import bin_edges, binned_statistics


@dataclasses.dataclass
class DemoResult:
    """Numbers the demo reports (all against the simulation's truth)."""

    n_exposures: int
    size: int
    sky_frame_rms_error: float
    sky_frame_expected_noise: float
    true_scale: float
    fitted_scale: float
    residual_before: float
    residual_after: float
    pattern_amplitude: float
    figure: str
    seconds: float


def _binned_truth(field: np.ndarray, nx: int, ny: int) -> np.ndarray:
    height, width = field.shape
    return binned_statistics(field, None, bin_edges(width, nx), bin_edges(height, ny), "MEAN").value


def run_task_demo(
    output: str, *, n_exposures: int = 20, size: int = 1024, seed: int = 1, log=print
) -> DemoResult:
    """Build and apply a sky frame on synthetic data; print metrics and write a PNG.

    Parameters
    ----------
    output : `str`
        Directory for the figure (created if needed).
    n_exposures : `int`, optional
        Exposures combined into the sky frame.
    size : `int`, optional
        Detector width and height in pixels.
    seed : `int`, optional
        Seed of the simulation.
    log : callable, optional
        Where progress lines go.

    Returns
    -------
    result : `DemoResult`
    """
    start = time.monotonic()
    os.makedirs(output, exist_ok=True)
    rng = np.random.default_rng(seed)
    pattern = SkyPattern()
    task = SkyMeasurementTask()
    levels = rng.uniform(800.0, 2500.0, n_exposures)
    backgrounds = []
    # Sum over exposures of 1 / (level * good pixels per bin): the variance of
    # the normalised bin mean of exposure k is p / (level_k * N_k).
    inverse_information = 0.0
    exposures_used = 0
    for index, level in enumerate(levels, 1):
        exposure = simulate_exposure(size, size, level, pattern, rng, bad_columns=(size // 3,))
        image = exposure.image
        image.image.array /= level
        backgrounds.append(task.measureBackground(image))
        log(f"  [{index:>3}/{n_exposures}] exposure at sky level {level:7.1f} e-/px measured")
        good = ~(image.mask.get("DETECTED") | image.mask.get("BAD"))
        ny, nx = backgrounds[-1][0][0].getStatsImage().bbox.shape
        x_edges, y_edges = bin_edges(size, nx), bin_edges(size, ny)
        areas = np.diff(y_edges)[:, None] * np.diff(x_edges)[None, :]
        good_counts = binned_statistics(good.astype(np.float32), None, x_edges, y_edges, "MEAN").value * areas
        # A bin with no good pixel (under a large galaxy) is NaN and skipped by the combination.
        used = good_counts > 0
        inverse_information = inverse_information + np.where(
            used, 1.0 / (level * np.maximum(good_counts, 1)), 0.0
        )
        exposures_used = exposures_used + used

    sky_exposure = task.averageBackgrounds(backgrounds)
    sky_frame = SkyMeasurementTask.exposureToBackground(sky_exposure)
    ny, nx = sky_exposure.bbox.shape
    truth_field = pattern.render(size, size)
    truth_bins = _binned_truth(truth_field, nx, ny)
    # The combined bin is (close to) the mean over the n exposures that measured
    # it: variance = sum_k p / (level_k N_k) / n^2.
    expected_noise = float(np.sqrt(np.mean(truth_bins * inverse_information / exposures_used**2)))
    error = sky_exposure.image.array - truth_bins
    rms_error = float(np.sqrt(np.mean(error**2)))

    true_scale = 1500.0
    science = simulate_exposure(size, size, true_scale, pattern, rng).image
    before = science.image.array.copy()
    fitted = task.solveScales([task.measureScale(science, sky_frame)])
    bg_list = BackgroundList()
    task.subtractSkyFrame(science, sky_frame, fitted, bg_list)
    good = ~science.mask.get("DETECTED")
    coarse = (bin_edges(size, max(size // 64, 1)), bin_edges(size, max(size // 64, 1)))
    residual_before = binned_statistics(
        before - true_scale * truth_field.mean(), ~good, *coarse, "MEANCLIP"
    ).value
    residual_after = binned_statistics(science.image.array, ~good, *coarse, "MEANCLIP").value
    amplitude = true_scale * float(truth_field.max() - truth_field.min())

    figure = os.path.join(output, "sky_frame.png")
    rendered = sky_frame.getImage().array
    plot_panels(
        [
            ("true pattern", truth_field, "relative sky"),
            ("recovered sky frame", rendered, "relative sky"),
            ("sky frame - truth", rendered - truth_field, "relative sky"),
            (
                "science after subtraction (64-px means)",
                residual_after / amplitude,
                "fraction of pattern amplitude",
            ),
        ],
        figure,
        title=f"Sky frame from {n_exposures} synthetic exposures of {size}x{size} px",
        symmetric=[False, False, True, True],
        extent=(-0.5, size - 0.5, -0.5, size - 0.5),
    )
    return DemoResult(
        n_exposures=n_exposures,
        size=size,
        sky_frame_rms_error=rms_error,
        sky_frame_expected_noise=expected_noise,
        true_scale=true_scale,
        fitted_scale=fitted,
        residual_before=float(np.sqrt(np.mean(residual_before**2))),
        residual_after=float(np.sqrt(np.mean(residual_after**2))),
        pattern_amplitude=amplitude,
        figure=figure,
        seconds=time.monotonic() - start,
    )
