"""Choosing a sky frame's bin size from its inputs, by cross-validation.

A sky frame binned coarsely averages down the noise of its inputs but cannot
hold structure finer than its bins; binned finely it holds the structure but
also more noise.  Which size is best depends on the camera and on how many
exposures there are, so with ``background.binSizeChoice = "crossValidated"``
`SkyMeasurementTask` measures every input at the finest candidate size, and
`choose_bin_size` estimates, for each candidate, the mean-square error of the
sky frame made from all the inputs at that size:

1. The inputs are split into two disjoint halves (even and odd positions), and
   each half is combined (the per-bin clipped mean) at every candidate size,
   each input first being rebinned from the finest grid (`rebin_values`).
2. Each half's sky frame at a candidate size is rendered at full resolution,
   as it would be applied, and averaged over the finest bins; it is compared
   with the other half's sky frame at the finest size, whose noise is
   independent of it.  The mean-square difference, averaged over both ways
   round, is *structure* (what the candidate's bins cannot hold) plus the
   candidate's own noise in one half plus the finest grid's noise in one half.
3. The noises come from the halves' differences: half the mean-square
   difference between the two halves' frames, at the finest size and at the
   candidate's (rendered, on the finest bins).
4. The error of the frame from all inputs is the structure plus the
   candidate's noise scaled from a half to the whole stack (noise variance
   going as one over the number of inputs).  The candidate with the lowest
   error is chosen.

All quantities are means over the finest bins that both halves measured, in
the units of the inputs (the sky level, for normalised exposures).  The
structure estimate is unbiased, so it may come out slightly negative where
there is none.
"""

from __future__ import annotations

__all__ = [
    "BIN_SIZE_METADATA_KEY",
    "BinSizeChoice",
    "choose_bin_size",
    "measurement_bin_edges",
    "overlap_weights",
    "rebin_background",
    "rebin_values",
]

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lsst.images import Box, Image, Mask, MaskedImage

from .background import BackgroundControl, BackgroundList, BackgroundMI
from .errors import NoDataError
from .interpolate import Interpolate, UndersampleStyle, render_grid
from .statistics import Property, bin_centres, bin_edges, binned_statistics

BIN_SIZE_METADATA_KEY = "BINSIZE"
"""Metadata key of the bin size a cross-validated sky frame was made at."""

# Metadata keys of the error budget, one card per candidate: e.g. ``CVERR.16``.
_BUDGET_KEYS = {"error": "CVERR", "structure": "CVSTRUCT", "noise": "CVNOISE"}


@dataclasses.dataclass(frozen=True)
class BinSizeChoice:
    """A bin size chosen by cross-validation, with its error budget.

    Attributes
    ----------
    binSize : `int`
        The chosen size (pixels, the same along x and y).
    candidates : `tuple` [`int`, ...]
        The candidate sizes, finest first.
    error : `tuple` [`float`, ...]
        Estimated mean-square error of the sky frame from all inputs at each
        candidate: ``structure + noise``.
    structure : `tuple` [`float`, ...]
        Mean-square structure each candidate's bins cannot hold (measured on
        the finest bins; unbiased, so it can be slightly negative).
    noise : `tuple` [`float`, ...]
        Mean-square noise of each candidate's sky frame from all inputs.
    """

    binSize: int
    candidates: tuple[int, ...]
    error: tuple[float, ...]
    structure: tuple[float, ...]
    noise: tuple[float, ...]

    def toMetadata(self, metadata: Any) -> None:
        """Record the choice in a sky frame's metadata.

        ``BINSIZE`` is the chosen size; ``CVERR.<size>``, ``CVSTRUCT.<size>``
        and ``CVNOISE.<size>`` hold the budget of each candidate.
        """
        metadata[BIN_SIZE_METADATA_KEY] = int(self.binSize)
        for field, prefix in _BUDGET_KEYS.items():
            for size, value in zip(self.candidates, getattr(self, field), strict=True):
                metadata[f"{prefix}.{size}"] = float(value)

    @classmethod
    def fromMetadata(cls, metadata: Any) -> BinSizeChoice | None:
        """Read a choice back from a sky frame's metadata (`None` if it has none)."""
        if metadata is None or BIN_SIZE_METADATA_KEY not in metadata:
            return None
        prefix = _BUDGET_KEYS["error"] + "."
        candidates = sorted(int(key[len(prefix) :]) for key in metadata if str(key).startswith(prefix))
        budget = {
            field: tuple(float(metadata[f"{key}.{size}"]) for size in candidates)
            for field, key in _BUDGET_KEYS.items()
        }
        return cls(int(metadata[BIN_SIZE_METADATA_KEY]), tuple(candidates), **budget)

    def asDict(self) -> dict[str, Any]:
        """Return the choice as JSON-compatible values, with RMS figures beside the mean squares."""
        return {
            "bin_size": int(self.binSize),
            "candidates": [int(size) for size in self.candidates],
            "error_ms": [float(v) for v in self.error],
            "structure_ms": [float(v) for v in self.structure],
            "noise_ms": [float(v) for v in self.noise],
            "error_rms": [float(np.sqrt(max(v, 0.0))) for v in self.error],
        }


def measurement_bin_edges(length: int, bin_size: int) -> np.ndarray:
    """Return the bin edges `SkyMeasurementTask.measureBackground` uses along one axis.

    Parameters
    ----------
    length : `int`
        Image size along the axis.
    bin_size : `int`
        Configured bin size.

    Returns
    -------
    edges : `numpy.ndarray`
        afw's layout of ``max(int(length/bin_size + 0.5), 1)`` bins (rounded
        half up, unlike the ceiling used elsewhere in the Rubin pipelines).
    """
    return bin_edges(length, max(int(length / bin_size + 0.5), 1))


def overlap_weights(fine_edges: np.ndarray, coarse_edges: np.ndarray) -> np.ndarray:
    """Return how many pixels each fine bin shares with each coarse bin.

    Parameters
    ----------
    fine_edges, coarse_edges : `numpy.ndarray`
        Bin edges along one axis, over the same length.

    Returns
    -------
    weights : `numpy.ndarray`
        ``(n_coarse, n_fine)`` overlaps in pixels; each column sums to the
        fine bin's width.
    """
    lower = np.maximum(coarse_edges[:-1, None], fine_edges[None, :-1])
    upper = np.minimum(coarse_edges[1:, None], fine_edges[None, 1:])
    return np.clip(upper - lower, 0, None).astype(np.float64)


def rebin_values(
    values: np.ndarray, errors: np.ndarray | None, y_weights: np.ndarray, x_weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Average fine bins into coarse ones, by the pixels they share.

    Parameters
    ----------
    values : `numpy.ndarray`
        ``(..., ny_fine, nx_fine)`` bin values; NaN bins are left out.
    errors : `numpy.ndarray` or `None`
        Their standard errors, same shape, propagated as independent.
    y_weights, x_weights : `numpy.ndarray`
        `overlap_weights` along each axis.

    Returns
    -------
    values, errors : `numpy.ndarray`
        ``(..., ny_coarse, nx_coarse)``: the area-weighted mean of each coarse
        bin's finite fine bins (NaN if it has none) and its error.

    Notes
    -----
    A coarse bin's value is the mean of its fine bins' statistics, not the
    statistic of its pixels: the same for ``MEAN`` with no masked pixels, and
    close to it for the clipped mean of a smooth sky.
    """
    good = np.isfinite(values)
    filled = np.where(good, values, 0.0)
    weight = y_weights @ good.astype(np.float64) @ x_weights.T
    with np.errstate(invalid="ignore", divide="ignore"):
        coarse = (y_weights @ filled @ x_weights.T) / weight
        coarse_errors = None
        if errors is not None:
            squared = np.where(good & np.isfinite(errors), errors, 0.0) ** 2
            coarse_errors = np.sqrt((y_weights**2) @ squared @ (x_weights**2).T) / weight
            coarse_errors[weight == 0] = np.nan
    coarse[weight == 0] = np.nan
    return coarse, coarse_errors


def rebin_background(bgList: BackgroundList, bin_size: int) -> BackgroundList:
    """Rebin a single-element background list to another (coarser) bin size.

    Parameters
    ----------
    bgList : `BackgroundList`
        One element, as `SkyMeasurementTask.measureBackground` makes; its
        stats image's variance plane holds standard errors (afw's convention).
    bin_size : `int`
        The new bin size along both axes, laid out as `measurement_bin_edges`.

    Returns
    -------
    rebinned : `BackgroundList`
        One element with the same box, styles and statistics control; values
        and errors from `rebin_values` (``BAD`` bins left out), and each other
        mask plane set where any fine bin that contributed has it.
    """
    background, *styles = bgList[0]
    stats = background.getStatsImage()
    height, width = background.getImageBBox().shape
    ny, nx = stats.bbox.shape
    fine_x, fine_y = bin_edges(width, nx), bin_edges(height, ny)
    x_edges, y_edges = measurement_bin_edges(width, bin_size), measurement_bin_edges(height, bin_size)
    y_weights, x_weights = overlap_weights(fine_y, y_edges), overlap_weights(fine_x, x_edges)
    values = np.asarray(stats.image.array, dtype=np.float64)
    if "BAD" in stats.mask.schema.names:
        values = np.where(stats.mask.get("BAD"), np.nan, values)
    coarse, errors = rebin_values(values, np.asarray(stats.variance.array, np.float64), y_weights, x_weights)
    contributes_y, contributes_x = (y_weights > 0).astype(np.float64), (x_weights > 0).astype(np.float64)
    good = np.isfinite(values).astype(np.float64)
    mask = Mask(0, schema=stats.mask.schema, shape=coarse.shape)
    for name in stats.mask.schema.names:
        if name == "BAD":
            continue
        plane = stats.mask.get(name).astype(np.float64) * good
        mask.set(name, (contributes_y @ plane @ contributes_x.T) > 0)
    rebinned = MaskedImage(
        Image(coarse.astype(np.float32)), mask=mask, variance=Image(errors.astype(np.float32))
    )
    old = background.getBackgroundControl()
    control = BackgroundControl(
        old.getInterpStyle(),
        coarse.shape[1],
        coarse.shape[0],
        old.getUndersampleStyle(),
        old.getStatisticsControl(),
        old.getStatisticsProperty(),
    )
    return BackgroundList((BackgroundMI(background.getImageBBox(), rebinned, control), *styles))


def choose_bin_size(
    values: np.ndarray,
    bad: np.ndarray,
    bbox: Box,
    candidates: Sequence[int],
    style: Interpolate,
    combine: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> BinSizeChoice:
    """Choose the candidate bin size whose sky frame has the lowest estimated error.

    Parameters
    ----------
    values : `numpy.ndarray`
        ``(n_inputs, ny, nx)`` the inputs' bin values on the finest
        candidate's grid.
    bad : `numpy.ndarray`
        Same shape, True for bins to leave out.
    bbox : `lsst.images.Box`
        Full-resolution box the bins cover.
    candidates : sequence of `int`
        Candidate bin sizes; the inputs are binned at the smallest.
    style : `Interpolate`
        How the sky frame is rendered (``background.algorithm``).
    combine : callable
        ``combine(values, bad) -> (ny', nx')``: the combination across inputs
        (the clipped mean `SkyMeasurementTask.averageBackgrounds` uses), NaN
        where nothing was combined.

    Returns
    -------
    choice : `BinSizeChoice`

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised with fewer than two inputs (there are no halves to compare) or
        if the halves share no finite bin.
    """
    n_inputs = values.shape[0]
    if n_inputs < 2:
        raise NoDataError(
            f"binSizeChoice='crossValidated' compares sky frames from two halves of the inputs, but there "
            f"is {n_inputs} input; use binSizeChoice='fixed' or more exposures."
        )
    sizes = sorted(int(size) for size in candidates)
    height, width = bbox.shape
    fine_x, fine_y = measurement_bin_edges(width, sizes[0]), measurement_bin_edges(height, sizes[0])
    halves = (np.arange(0, n_inputs, 2), np.arange(1, n_inputs, 2))
    # Each half's frame at the finest size (the data) and rendered from each candidate (the model).
    data = [combine(values[h], bad[h]) for h in halves]
    models: list[list[np.ndarray]] = [[], []]
    for size in sizes:
        x_edges, y_edges = measurement_bin_edges(width, size), measurement_bin_edges(height, size)
        y_weights, x_weights = overlap_weights(fine_y, y_edges), overlap_weights(fine_x, x_edges)
        for half, model in zip(halves, models, strict=True):
            coarse, _ = rebin_values(np.where(bad[half], np.nan, values[half]), None, y_weights, x_weights)
            frame = combine(coarse, ~np.isfinite(coarse))
            model.append(_render_on_bins(frame, width, height, x_edges, y_edges, fine_x, fine_y, style))
    compared = np.isfinite(data[0]) & np.isfinite(data[1])
    for model in models:
        for rendered in model:
            compared &= np.isfinite(rendered)
    if not compared.any():
        raise NoDataError(
            "binSizeChoice='crossValidated': the two halves of the inputs have no finite bin in common; "
            "check that the inputs are not fully masked."
        )

    def mean_square(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean((a[compared] - b[compared]) ** 2))

    fine_noise_half = mean_square(data[0], data[1]) / 2
    # Noise variance goes as 1/n: from the mean of the halves' variances to the whole stack's.
    to_whole = (2.0 / n_inputs) / (1.0 / len(halves[0]) + 1.0 / len(halves[1]))
    errors, structures, noises = [], [], []
    for a_model, b_model in zip(models[0], models[1], strict=True):
        validated = (mean_square(a_model, data[1]) + mean_square(b_model, data[0])) / 2
        noise_half = mean_square(a_model, b_model) / 2
        structure = validated - fine_noise_half - noise_half
        noise = noise_half * to_whole
        structures.append(structure)
        noises.append(noise)
        errors.append(structure + noise)
    best = int(np.argmin(errors))
    return BinSizeChoice(sizes[best], tuple(sizes), tuple(errors), tuple(structures), tuple(noises))


def _render_on_bins(
    frame: np.ndarray,
    width: int,
    height: int,
    x_edges: np.ndarray,
    y_edges: np.ndarray,
    fine_x: np.ndarray,
    fine_y: np.ndarray,
    style: Interpolate,
) -> np.ndarray:
    """Render a frame as it would be applied and average it over the finest bins."""
    finite = np.isfinite(frame)
    if not finite.any():
        return np.full((len(fine_y) - 1, len(fine_x) - 1), np.nan)
    # Bins no input measured are filled with the median, as averageBackgrounds does.
    filled = np.where(finite, frame, np.median(frame[finite]))
    rendered = render_grid(
        bin_centres(width, len(x_edges) - 1),
        bin_centres(height, len(y_edges) - 1),
        filled,
        width,
        height,
        style,
        UndersampleStyle.REDUCE_INTERP_ORDER,
        dtype=np.float64,
    )
    return binned_statistics(rendered, None, fine_x, fine_y, Property.MEAN).value
