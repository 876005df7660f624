"""The robust PCA streamed over chunks of bins: the dense definition's numbers, bounded memory."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

from lsst.skyframes import pca
from lsst.skyframes.errors import ProblemTooLargeError
from lsst.skyframes.simulate import binned_background
from lsst.skyframes.statistics import IQR_TO_SIGMA, stack_statistics

NOISE = 2e-3
# Detectors of different bin grids, so chunks and detectors do not line up.
GRIDS = {0: (12, 10), 1: (8, 8), 2: (10, 6)}
N_EXP = 24
N_COMPONENTS = 3


def dense_robust_pca(
    data: np.ndarray,
    noise: np.ndarray,
    k: int,
    *,
    clip: float = 3.0,
    n_iter: int = 5,
    max_bad_fraction: float = 0.2,
    max_residual_fraction: float = 0.005,
) -> dict[str, np.ndarray]:
    """The robust PCA of `lsst.skyframes.pca.robust_pca`'s documentation, on the whole matrix at once.

    Written from the definition with plain tools (an SVD of the residuals,
    one ``lstsq`` per exposure, ``nanpercentile``), none of which the
    streamed implementation uses.
    """
    finite = np.isfinite(data)
    empty = ~finite.any(axis=1)

    def clipped_mean(keep):
        # Component 1: the per-bin 3-sigma clipped mean of the kept exposures.
        return stack_statistics(data[keep][:, None, :], ~finite[keep][:, None, :], "MEANCLIP").value[0]

    def zero_nan(values):
        return np.where(np.isfinite(values), values, 0.0)

    def fit(rows, weights, basis):
        out = np.zeros((len(rows), len(basis)))
        for i, (row, w) in enumerate(zip(rows, weights, strict=True)):
            if w.any():
                out[i] = np.linalg.lstsq(basis[:, w].T, row[w], rcond=None)[0]
        return out

    def outliers(model, keep):
        residual = np.where(finite & keep[:, None], data - model, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # bins without a kept value
            low, high = np.nanpercentile(residual, [25, 75], axis=0)
        with np.errstate(invalid="ignore"):
            return finite & (np.abs(data - model) > clip * IQR_TO_SIGMA * (high - low))

    keep = ~empty
    mean = zero_nan(clipped_mean(keep))
    # Outliers of the rank-1 model first, so an artefact is not a component.
    model = fit(data, finite, mean[None]) @ mean[None]
    good = finite & ~outliers(model, keep)
    for _ in range(n_iter):
        mean = zero_nan(clipped_mean(keep))
        filled = np.where(good, data, model)
        scale = filled @ mean / (mean @ mean)
        _, _, vt = np.linalg.svd(filled[keep] - scale[keep, None] * mean[None], full_matrices=False)
        directions = vt[: k - 1]
        largest = directions[np.arange(k - 1), np.argmax(np.abs(directions), axis=1)]
        basis = np.vstack([mean, directions * np.sign(largest)[:, None]])
        coefficients = fit(data, good, basis)
        model = coefficients @ basis
        clipped = outliers(model, keep)
        good = finite & ~clipped
        n_good = np.maximum(good.sum(axis=1), 1)
        rms2 = np.sum(np.where(good, data - model, 0.0) ** 2, axis=1) / n_good
        noise2 = np.sum(np.where(good, noise, 0.0) ** 2, axis=1) / n_good
        excess = np.sqrt(np.maximum(rms2 - noise2, 0.0))
        bad_fraction = clipped.sum(axis=1) / np.maximum(finite.sum(axis=1), 1)
        keep = ~empty & (bad_fraction <= max_bad_fraction) & (excess <= max_residual_fraction)
    final = clipped_mean(keep)
    basis = np.vstack([zero_nan(final), basis[1:]])
    coefficients = fit(data, good, basis)
    coefficients[empty] = np.nan
    total = np.sum(np.where(good[keep], data[keep], 0.0) ** 2)
    remaining = [
        np.sum(
            np.where(good[keep], data[keep] - fit(data[keep], good[keep], basis[: j + 1]) @ basis[: j + 1], 0)
            ** 2
        )
        for j in range(k)
    ]
    templates = np.vstack([final, basis[1:]])
    templates[1:, ~finite.any(axis=0)] = np.nan
    return {
        "templates": templates,
        "coefficients": coefficients,
        "rejected": np.flatnonzero(~keep),
        "explained": -np.diff([total, *remaining]) / total,
    }


def patterned_bins(n_exp: int, grids: dict[int, tuple[int, int]], seed: int):
    """Per detector (n_exp, ny, nx) bins p1 + a·p2 + b·p3 + noise, and the weights."""
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-1.0, 1.0, (2, n_exp))
    bins = {}
    for det, (ny, nx) in grids.items():
        y, x = np.mgrid[0:ny, 0:nx] / max(ny, nx)
        p1 = 1.0 + 0.05 * np.sin(3 * x + det) * np.cos(2 * y)
        p2 = 0.02 * np.cos(5 * x - det) * np.sin(4 * y + 1)
        p3 = 0.01 * (x - y + 0.1 * det)
        noise = rng.normal(0.0, NOISE, (n_exp, ny, nx))
        bins[det] = p1 + a[:, None, None] * p2 + b[:, None, None] * p3 + noise
    return bins, (a, b)


@pytest.fixture(scope="module")
def spoilt_focal_plane():
    """Backgrounds of 3 detectors with missing bins and exposures, outliers and an artefact."""
    bins, _ = patterned_bins(N_EXP, GRIDS, seed=11)
    rng = np.random.default_rng(12)
    for values in bins.values():
        values[rng.random(values.shape) < 0.04] = np.nan
        values[rng.random(values.shape) < 0.01] += 0.2  # a few bins spoilt by objects: clipped
        values[:, 0, 0] = np.nan  # a bin no exposure measured
    bins[0][5] += 0.05 * np.linspace(-1.0, 1.0, bins[0][5].size).reshape(bins[0][5].shape)  # an artefact
    backgrounds = {det: [binned_background(v, NOISE) for v in values] for det, values in bins.items()}
    backgrounds[1][7] = None  # exposure 7 lacks detector 1
    for det in backgrounds:
        backgrounds[det][9] = None  # exposure 9 has no detector at all
    data = np.concatenate(
        [
            np.stack(
                [
                    np.full(GRIDS[det][0] * GRIDS[det][1], np.nan)
                    if bg is None
                    else bg[0][0].getStatsImage().image.array.ravel().astype(np.float64)
                    for bg in backgrounds[det]
                ]
            )
            for det in sorted(backgrounds)
        ],
        axis=1,
    )
    # The stats images hold float32: the reference sees the same numbers as the task.
    noise = np.where(np.isfinite(data), float(np.float32(NOISE)), np.nan)
    return backgrounds, data, noise


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    both = np.isfinite(got) & np.isfinite(want)
    return float(np.max(np.abs(got[both] - want[both])) / np.max(np.abs(want[both])))


@pytest.mark.parametrize("chunk_entries", [None, N_EXP * 7])
def test_streamed_pca_is_the_dense_definition(spoilt_focal_plane, monkeypatch, chunk_entries):
    backgrounds, data, noise = spoilt_focal_plane
    if chunk_entries is not None:
        # 7 bins per chunk: chunks end inside every detector.
        monkeypatch.setattr(pca, "PCA_CHUNK_ENTRIES", chunk_entries)
    truth = dense_robust_pca(data, noise, N_COMPONENTS)
    assert 5 in truth["rejected"] and 9 in truth["rejected"]  # the artefact, the empty exposure

    result = pca.robust_pca(data, N_COMPONENTS, noise=noise)
    assert [i for i, _ in result.rejected_exposures] == list(truth["rejected"])
    assert _relative(result.templates, truth["templates"]) < 1e-9
    np.testing.assert_array_equal(np.isnan(result.templates), np.isnan(truth["templates"]))
    assert _relative(result.coefficients, truth["coefficients"]) < 1e-9
    np.testing.assert_array_equal(np.isnan(result.coefficients), np.isnan(truth["coefficients"]))
    np.testing.assert_allclose(result.variance_explained, truth["explained"], rtol=1e-9)
    assert result.clipped.sum() > 0.005 * data.size  # clipping took part

    config = pca.SkyPcaConfig()
    config.nComponents = N_COMPONENTS
    task = pca.SkyPcaTask(config=config).run(backgrounds, list(range(100, 100 + N_EXP)))
    assert [e - 100 for e, _ in task.rejectedExposures] == list(truth["rejected"])
    assert _relative(task.coefficients, truth["coefficients"]) < 1e-6
    start = 0
    for det in sorted(GRIDS):
        n = GRIDS[det][0] * GRIDS[det][1]
        for k, frame in enumerate(task.skyFrames[det]):
            want = truth["templates"][k, start : start + n].reshape(GRIDS[det])
            # Stored as float32; component 1 fills unmeasured bins, the others set them to 0.
            assert _relative(frame.image.array.astype(np.float64), want) < 1e-6
        start += n


def test_pca_beyond_the_old_estimate_runs_and_the_new_estimate_still_refuses(monkeypatch):
    """A PCA the dense design refused at this maxMemoryGiB runs within the new estimate."""
    monkeypatch.setattr(pca, "PCA_CHUNK_ENTRIES", 2**14)
    n_exp, grids = 40, dict.fromkeys(range(4), (64, 64))
    bins, (a, b) = patterned_bins(n_exp, grids, seed=3)
    backgrounds = {det: [binned_background(v, NOISE) for v in values] for det, values in bins.items()}
    n_bins = sum(ny * nx for ny, nx in grids.values())
    old_estimate = 120 * n_exp * n_bins  # the dense design's 120 bytes per exposure and bin
    estimate = pca.pca_memory_bytes(n_exp, n_bins, N_COMPONENTS, largest_block=64 * 64)
    limit = 8 * 2**20
    assert estimate < limit < old_estimate / 8

    config = pca.SkyPcaConfig()
    config.nComponents = N_COMPONENTS
    config.maxMemoryGiB = limit / 2**30
    task = pca.SkyPcaTask(config=config)
    tracemalloc.start()
    try:
        result = task.run(backgrounds, list(range(n_exp)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"peak {peak / 2**20:.1f} MiB, estimate {estimate / 2**20:.1f}, dense {old_estimate / 2**20:.0f}")
    assert peak <= estimate
    assert result.rejectedExposures == []
    # Truth: the coefficients of components 2 and 3 span the injected weights (a, b).
    weights = np.column_stack([a, b, np.ones(n_exp)])
    fitted = np.linalg.lstsq(weights, result.coefficients[:, 1:], rcond=None)[0]
    predicted = weights @ fitted
    assert np.allclose(predicted, result.coefficients[:, 1:], atol=0.02 * np.ptp(result.coefficients[:, 1:]))

    config.maxMemoryGiB = 0.5 * estimate / 2**30
    with pytest.raises(ProblemTooLargeError, match="maxMemoryGiB"):
        pca.SkyPcaTask(config=config).run(backgrounds, list(range(n_exp)))
