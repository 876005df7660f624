"""Clipped linear least squares without intercept, for fitting sky templates to samples.

One fit serves `SkyMeasurementTask.solveScales` (one sky frame, the reference's
iterative fit of one scale) and `~lsst.skyframes.pca.fit_component_scales`
(K templates): image samples ≈ Σ_k c_k · template samples_k, refitted after
rejecting samples whose residual exceeds ``rejection`` robust sigmas, the
rejection cumulative over ``n_iter`` rounds.
"""

from __future__ import annotations

__all__ = ["clipped_least_squares"]

from collections.abc import Callable

import numpy as np

from .errors import NoDataError


def clipped_least_squares(
    y: np.ndarray,
    x: np.ndarray,
    *,
    n_iter: int,
    rejection: float,
    iqr_to_sigma: float,
    too_few_message: Callable[[int, int], str],
    zero_message: str | None = None,
) -> np.ndarray:
    """Fit ``y ≈ x @ c`` by least squares with cumulative outlier rejection.

    Parameters
    ----------
    y : `numpy.ndarray`
        (n,) float64 samples of the image.
    x : `numpy.ndarray`
        (n,) or (n, K) float64 samples of the K templates at the same places.
    n_iter : `int`
        Rounds of [fit, reject]; each round rejects, from the samples kept
        so far, those whose residual ``|y - x @ c|`` exceeds ``rejection`` ×
        sigma, with sigma = ``iqr_to_sigma`` × the inter-quartile range of
        the kept samples' residuals.  A round that would leave fewer than K
        samples rejects nothing and ends the rounds (a perfect fit has sigma
        0 and round-off residuals).
    rejection : `float`
        Rejection threshold in sigma.
    iqr_to_sigma : `float`
        Ratio of sigma to the inter-quartile range (the reference's
        ``solveScales`` uses 0.741).
    too_few_message : callable (`int`, `int`) → `str`
        Message of the `NoDataError` raised if fewer than K samples are
        finite in ``y`` and every column of ``x``; called with that number
        and K.
    zero_message : `str`, optional
        For K = 1: message of the `NoDataError` raised if ``x`` is zero at
        every kept sample.  `None`: the coefficient is then 0 (the
        minimum-norm answer, as for a zero column when K > 1).

    Returns
    -------
    coefficients : `numpy.ndarray`
        (K,) float64, fitted on the samples kept after the last round.

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised as described for ``too_few_message`` and ``zero_message``.

    Notes
    -----
    For K = 1 the fit is the closed form ``c = Σxy / Σx²`` of the reference
    (bit for bit); for K > 1 `numpy.linalg.lstsq` (minimum norm where the
    templates are degenerate over the kept samples).
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    design = x.reshape(len(x), -1)
    n_components = design.shape[1]
    keep = np.isfinite(y) & np.isfinite(design).all(axis=1)
    if keep.sum() < n_components:
        raise NoDataError(too_few_message(int(keep.sum()), n_components))

    def solve(selected: np.ndarray) -> np.ndarray:
        if n_components > 1:
            return np.linalg.lstsq(design[selected], y[selected], rcond=None)[0]
        column, values = design[selected, 0], y[selected]
        denominator = float(np.dot(column, column))
        if denominator == 0.0:
            if zero_message is not None:
                raise NoDataError(zero_message)
            return np.zeros(1)
        return np.array([float(np.dot(column, values)) / denominator])

    def model(coefficients: np.ndarray) -> np.ndarray:
        return coefficients[0] * design[:, 0] if n_components == 1 else design @ coefficients

    for _ in range(n_iter):
        coefficients = solve(keep)
        residuals = y - model(coefficients)
        lower, upper = np.percentile(residuals[keep], [25, 75])
        sigma = iqr_to_sigma * (upper - lower)
        with np.errstate(invalid="ignore"):
            remaining = keep & ~(np.abs(residuals) > rejection * sigma)
        if remaining.sum() < n_components:
            break
        keep = remaining
    return solve(keep)
