"""Evidence of a sky frame's quality, stored beside it as JSON.

Every built sky frame gets a ``sky_quality`` dataset (storage class
``StructuredDataDict``, dimensions instrument, physical_filter, detector): which
inputs were used, which rejected (with reasons) and which dropped by an earlier
step (with reasons), the per-bin noise estimate,
the fraction of bins filled because no input measured them, and how far each
input is from the template.  The layout is versioned by ``schema_version``.

Per-input residuals are 3-sigma clipped RMS (3 passes), so that the few bins an
unmasked object halo spoils do not hide how well the template describes the rest;
the per-bin ``residual_rms_map`` is a plain RMS over inputs, where such bins show.
Version 2: clipped per-input residuals, ``noise_rms`` per input, optional
multi-component fields. Version 3: ``inputs_dropped``, the exposures of the build
that reached the combination without a residual background of this detector
(e.g. dropped by cpSkyScaleMeasure for having no usable pixel), with reasons;
``inputs_rejected`` remains those the combination itself left out. Version 4:
``bin_size_choice``, for a sky frame whose bin size was chosen by cross-validation
(``background.binSizeChoice='crossValidated'``): the chosen size, the candidates and
each one's estimated error, structure and noise (see `lsst.skyframes.bin_size`);
the per-input figures are then at the chosen size.
"""

from __future__ import annotations

__all__ = ["QUALITY_SCHEMA_VERSION", "RESIDUAL_CLIP", "clipped_rms", "quality_report", "select_inputs"]

from collections.abc import Sequence
from typing import Any

import numpy as np

from lsst.images import MaskedImage

from .background import BackgroundList
from .bin_size import BinSizeChoice, rebin_background

QUALITY_SCHEMA_VERSION = 4

# Clipping of the per-input residual RMS (threshold in sigma, passes).
RESIDUAL_CLIP = (3.0, 3)


def select_inputs(
    backgrounds: Sequence[BackgroundList], exposure_ids: Sequence[int]
) -> tuple[list[BackgroundList], list[int], list[dict[str, Any]]]:
    """Drop inputs that cannot contribute, saying why.

    Parameters
    ----------
    backgrounds : sequence of `BackgroundList`
        Per-exposure residual backgrounds (single elements).
    exposure_ids : sequence of `int`
        Their exposure ids (same order; may be empty, then indices are used).

    Returns
    -------
    used : `list` [`BackgroundList`]
        Inputs with at least one finite bin.
    used_ids : `list` [`int`]
        Their ids.
    rejected : `list` [`dict`]
        ``{"exposure": id, "reason": text}`` for each dropped input.
    """
    ids = list(exposure_ids) if len(exposure_ids) else list(range(len(backgrounds)))
    used, used_ids, rejected = [], [], []
    for background, exposure in zip(backgrounds, ids, strict=True):
        values = background[0][0].getStatsImage().image.array
        if not np.isfinite(values).any():
            rejected.append({"exposure": int(exposure), "reason": "no finite bin (fully masked or all NaN)"})
        else:
            used.append(background)
            used_ids.append(int(exposure))
    return used, used_ids, rejected


def clipped_rms(
    values: np.ndarray, clip: float = RESIDUAL_CLIP[0], n_iter: int = RESIDUAL_CLIP[1]
) -> np.ndarray:
    """RMS about zero of each row's finite values after iterative sigma clipping.

    Parameters
    ----------
    values : `numpy.ndarray`
        (n, ...) residuals; each row's values are clipped separately.
    clip : `float`, optional
        Values further than ``clip`` standard deviations from the row's mean
        (of the values kept so far) are dropped in each pass.
    n_iter : `int`, optional
        Clipping passes.

    Returns
    -------
    rms : `numpy.ndarray`
        (n,) float64; NaN for a row without finite values.
    """
    x = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    keep = np.isfinite(x)
    data = np.where(keep, x, 0.0)
    for _ in range(n_iter):
        n = np.maximum(keep.sum(axis=1), 1)
        mean = (data * keep).sum(axis=1) / n
        std = np.sqrt((((data - mean[:, None]) * keep) ** 2).sum(axis=1) / n)
        keep &= np.abs(data - mean[:, None]) <= clip * std[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt((data**2 * keep).sum(axis=1) / keep.sum(axis=1))


def _finite_list(array: np.ndarray) -> list:
    """Return nested lists with NaN as None (JSON has no NaN)."""
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in array]


def quality_report(
    sky: MaskedImage,
    backgrounds: Sequence[BackgroundList],
    exposure_ids: Sequence[int],
    rejected: Sequence[dict[str, Any]],
    *,
    dropped: Sequence[dict[str, Any]] = (),
    variance_explained: Sequence[float] | None = None,
    templates: Sequence[MaskedImage] | None = None,
    coefficients: np.ndarray | None = None,
) -> dict[str, Any]:
    """Summarise a built sky frame and its inputs.

    Parameters
    ----------
    sky : `lsst.images.MaskedImage`
        The sky frame (stats image: one pixel per bin; variance plane holds the
        squared error of the combination; NO_DATA where no input measured).
    backgrounds : sequence of `BackgroundList`
        The inputs used, as combined.
    exposure_ids : sequence of `int`
        Their exposure ids.
    rejected : sequence of `dict`
        Inputs the combination left out, ``{"exposure": id, "reason": text}``.
    dropped : sequence of `dict`, optional
        Exposures of the build that have no input here because an earlier
        step dropped them, in the same form.
    variance_explained : sequence of `float`, optional
        For multi-component templates, the fraction of variance per component.
    templates : sequence of `lsst.images.MaskedImage`, optional
        For multi-component templates, all K of them (``sky`` being the
        first), with ``coefficients``.
    coefficients : `numpy.ndarray`, optional
        (n_inputs, K): each input's fitted coefficients on ``templates``.
        With both, the report adds each input's ``coefficients`` and
        ``model_residual_rms``, its RMS residual from its own K-component
        model (``residual_rms`` stays the residual from ``sky`` alone).

    Returns
    -------
    report : `dict`
        JSON-compatible, with ``schema_version``.
    """
    values = np.asarray(sky.image.array, dtype=np.float64)
    choice = BinSizeChoice.fromMetadata(sky.metadata)
    if choice is not None and backgrounds and backgrounds[0][0][0].getStatsImage().bbox.shape != values.shape:
        # The inputs were measured at the finest candidate; compare them at the chosen size.
        backgrounds = [rebin_background(background, choice.binSize) for background in backgrounds]
    noise = np.sqrt(np.asarray(sky.variance.array, dtype=np.float64))
    no_data = sky.mask.get("NO_DATA") if "NO_DATA" in sky.mask.schema.names else np.zeros(values.shape, bool)
    inputs = np.stack([b[0][0].getStatsImage().image.array.astype(np.float64) for b in backgrounds])
    residuals = inputs - values[None, :, :]
    residual_rms = clipped_rms(residuals)
    errors = np.stack([b[0][0].getStatsImage().variance.array.astype(np.float64) for b in backgrounds])
    with np.errstate(invalid="ignore"):
        residual_rms_map = np.sqrt(np.nanmean(residuals**2, axis=0))
        # The stats image's variance plane holds each bin's standard error (afw's convention).
        noise_rms = np.sqrt(np.nanmean(errors**2, axis=(1, 2)))
    finite_noise = noise[np.isfinite(noise) & ~no_data]
    report: dict[str, Any] = {
        "schema_version": QUALITY_SCHEMA_VERSION,
        "n_inputs_used": len(backgrounds),
        "inputs_used": [int(e) for e in exposure_ids],
        "inputs_rejected": list(rejected),
        "inputs_dropped": list(dropped),
        "n_bins": int(values.size),
        "nan_filled_fraction": float(no_data.mean()),
        "noise_median": float(np.median(finite_noise)) if finite_noise.size else None,
        "noise_map": _finite_list(noise),
        "residual_rms": {str(int(e)): float(r) for e, r in zip(exposure_ids, residual_rms, strict=True)},
        "residual_rms_map": _finite_list(residual_rms_map),
        "residual_clip": list(RESIDUAL_CLIP),
        "noise_rms": {str(int(e)): float(n) for e, n in zip(exposure_ids, noise_rms, strict=True)},
    }
    if choice is not None:
        report["bin_size_choice"] = choice.asDict()
    if variance_explained is not None:
        report["variance_explained"] = [float(v) for v in variance_explained]
    if templates is not None and coefficients is not None:
        stack = np.stack([np.asarray(t.image.array, dtype=np.float64) for t in templates])
        coefficients = np.asarray(coefficients, dtype=np.float64).reshape(len(backgrounds), len(templates))
        model = np.einsum("ik,kyx->iyx", coefficients, stack)
        model_rms = clipped_rms(inputs - model)
        report["n_components"] = len(templates)
        report["coefficients"] = {
            str(int(e)): [float(c) for c in row] for e, row in zip(exposure_ids, coefficients, strict=True)
        }
        report["model_residual_rms"] = {
            str(int(e)): float(r) for e, r in zip(exposure_ids, model_rms, strict=True)
        }
    return report
