"""Multi-component sky templates from a robust principal-component analysis.

DES (Bernstein et al. 2017) models the sky of an exposure as a linear
combination of a few focal-plane templates rather than one scaled sky frame:
the pattern changes with e.g. the Moon's position or fringing, and one frame
cannot follow that.  This module builds such templates from the same inputs
as today's sky frame (each exposure's normalised residual background,
`SkyMeasurementTask.measureBackground` of the residual image divided by the
sky level) and applies them.

Format
------
The ``K`` templates of a detector are ``K`` sky-frame "exposures" with the
layout of the single-frame ``sky`` calib (a `lsst.images.MaskedImage` with one
pixel per bin and the ``BOX.*``/``ALGORITHM`` metadata written by
`SkyMeasurementTask.backgroundToExposure`), each with metadata
``SKY_COMPONENT = k`` (1-based) and ``SKY_NCOMPONENTS = K``.  Component 1 is
exactly what `SkyMeasurementTask.averageBackgrounds` makes from the
non-rejected exposures, so anything that reads a single ``sky`` (e.g.
`SkyCorrectionTask`) can use it unchanged; components 2..K are zero-mean-ish
variation patterns in the same units (fraction of the sky level per unit
coefficient), with bins no exposure measured set to 0.

In a butler (`~lsst.skyframes.build.CpSkyCombineTask` with ``nComponents`` >
1, e.g. ``pipelines/BuildSkyTemplates.yaml``) each detector gets two
calibrations: ``sky``, component 1 in the format above (storage class
``MaskedImageV2``), and ``sky_components``, all K templates as one
`~lsst.skyframes.background.BackgroundList` (storage class
``SkyBackgroundList``: afw's BackgroundList FITS layout, three HDUs per
element, element k-1 being template k as a `BackgroundMI` whose stats image
is the template's one-pixel-per-bin image). `SkyCorrectionTask` with
``nComponents`` = K' ≤ K uses the first K' elements.
"""

from __future__ import annotations

__all__ = [
    "RobustPcaResult",
    "SkyPcaConfig",
    "PCA_BYTES_PER_ENTRY",
    "SkyPcaTask",
    "fit_component_scales",
    "pca_memory_bytes",
    "robust_pca",
    "subtract_components",
]

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from lsst.images import Image, MaskedImage
from lsst.pex.config import Config, ConfigurableField, Field, RangeField
from lsst.pipe.base import Struct, Task
from lsst.utils.timer import timeMethod

from ._least_squares import clipped_least_squares
from .background import BackgroundList
from .errors import BoxMismatchError, NoDataError, ProblemTooLargeError
from .images import image_and_mask, require_same_bbox
from .mask_planes import default_mask_schema
from .sky_measurement import REFERENCE_IQR_TO_SIGMA, SkyMeasurementConfig, SkyMeasurementTask
from .statistics import IQR_TO_SIGMA, Property, bad_pixel_mask, binned_statistics, stack_statistics

# Peak bytes of robust_pca per (exposure, bin) entry (see pca_memory_bytes).
PCA_BYTES_PER_ENTRY = 120


@dataclasses.dataclass
class RobustPcaResult:
    """Result of `robust_pca`.

    Attributes
    ----------
    templates : `numpy.ndarray`
        (K, n_bins) float64.  Row 0 is the per-bin clipped mean of the kept
        exposures; rows 1.. are unit-norm principal directions of the
        residuals, orthogonal to row 0.  NaN in bins no kept exposure measured.
    coefficients : `numpy.ndarray`
        (n_exposures, K): each exposure's least-squares coefficients on the
        templates over its good (finite, unclipped) bins; the first is ≈ 1 for
        normalised inputs.  NaN for an exposure without enough good bins.
    variance_explained : `numpy.ndarray`
        (K,): for the kept exposures, the drop of the residual sum of squares
        (over good bins) as each component is added in turn, as a fraction
        of the total sum of squares of the data.  Sums to ≤ 1.
    rejected_exposures : `list` [`tuple` [`int`, `str`]]
        (index, reason) for every exposure left out of the templates.
    residual_rms : `numpy.ndarray`
        (n_exposures,): RMS over unclipped finite bins of data − rank-K model.
    excess_rms : `numpy.ndarray`
        (n_exposures,): the part of ``residual_rms`` not explained by the
        bins' noise, ``sqrt(max(rms² − mean noise², 0))`` over the same bins
        (equal to ``residual_rms`` without ``noise``): the fractional
        residual compared with ``max_residual_fraction``.
    clipped : `numpy.ndarray`
        (n_exposures, n_bins) bool: finite entries clipped as outliers.
    """

    templates: np.ndarray
    coefficients: np.ndarray
    variance_explained: np.ndarray
    rejected_exposures: list[tuple[int, str]]
    residual_rms: np.ndarray
    excess_rms: np.ndarray
    clipped: np.ndarray


def _masked_lstsq(data: np.ndarray, weights: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Per-row least squares of ``data`` on the rows of ``basis`` over ``weights``.

    Vectorised over rows with batched normal equations; a pseudo-inverse
    gives NaN-free (minimum-norm) answers for rows with too few good bins,
    which the caller flags separately.
    """
    w = weights.astype(np.float64)
    normal = np.einsum("kb,ib,lb->ikl", basis, w, basis)
    rhs = np.einsum("kb,ib->ik", basis, np.where(weights, data, 0.0))
    return np.einsum("ikl,il->ik", np.linalg.pinv(normal), rhs)


def _nan_quartiles(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and third quartiles of each column, ignoring NaN.

    The same numbers as ``np.nanpercentile(values, [25, 75], axis=0)``
    (linear interpolation) from one sort of the whole array: nanpercentile
    loops over columns in Python, which took minutes for a focal plane of
    bins.  NaN for a column without finite values.
    """
    ordered = np.sort(values, axis=0)  # NaN sort last
    n = np.isfinite(values).sum(axis=0)
    quartiles = []
    for q in (0.25, 0.75):
        position = q * (n - 1)
        below = np.clip(np.floor(position).astype(np.intp), 0, None)
        above = np.minimum(below + 1, np.maximum(n - 1, 0))
        low = np.take_along_axis(ordered, below[None, :], axis=0)[0]
        high = np.take_along_axis(ordered, above[None, :], axis=0)[0]
        with np.errstate(invalid="ignore"):
            value = low + (position - below) * (high - low)
        quartiles.append(np.where(n > 0, value, np.nan))
    return quartiles[0], quartiles[1]


def _leading_directions(residual: np.ndarray, n_rank: int) -> np.ndarray:
    """The ``n_rank`` leading right singular vectors of a short, wide matrix.

    From the eigenvectors of the small Gram matrix ``R Rᵀ`` (n_exposures²)
    rather than an SVD of R itself: the same directions (up to sign) without
    an n_exposures × n_bins workspace, several times faster for a whole focal
    plane of bins.
    """
    gram = residual @ residual.T
    values, vectors = np.linalg.eigh(gram)
    order = np.argsort(values)[::-1][:n_rank]
    singular = np.sqrt(np.clip(values[order], 0.0, None))
    directions = vectors[:, order].T @ residual
    # A direction with no variance (fewer independent exposures than
    # components) is left zero rather than divided by zero.
    scale = np.where(singular > singular.max(initial=0.0) * 1e-12, singular, np.inf)
    return directions / scale[:, None]


def _outliers(
    data: np.ndarray, finite: np.ndarray, model: np.ndarray, keep: np.ndarray, clip: float
) -> np.ndarray:
    """Finite entries whose residual exceeds ``clip`` × the bin's robust sigma.

    The sigma of each bin is `~lsst.skyframes.statistics.IQR_TO_SIGMA` × IQR
    of the kept exposures' residuals in that bin, so the threshold follows how
    much the bin varies after the model.
    """
    error = np.where(finite & keep[:, None], data - model, np.nan)
    low, high = _nan_quartiles(error)
    sigma = IQR_TO_SIGMA * (high - low)
    with np.errstate(invalid="ignore"):
        return finite & (np.abs(data - model) > clip * sigma[None, :])


def _fix_signs(vectors: np.ndarray) -> np.ndarray:
    """Make each row's largest-magnitude entry positive, so results are reproducible."""
    index = np.argmax(np.abs(vectors), axis=1)
    signs = np.sign(vectors[np.arange(len(vectors)), index])
    signs[signs == 0] = 1.0
    return vectors * signs[:, None]


def robust_pca(
    data: np.ndarray,
    n_components: int,
    *,
    clip: float = 3.0,
    n_iter: int = 5,
    max_bad_fraction: float = 0.2,
    max_residual_fraction: float | None = 0.005,
    noise: np.ndarray | None = None,
) -> RobustPcaResult:
    """Robust principal components of normalised residual-background vectors.

    Parameters
    ----------
    data : `numpy.ndarray`
        (n_exposures, n_bins): each row one exposure's normalised residual
        background, all detectors' bins concatenated (the whole focal plane).
        NaN marks missing bins.
    n_components : `int`
        Number K of templates, ≥ 1.
    clip : `float`, optional
        Entries whose residual from the rank-K model exceeds ``clip`` × the
        bin's robust sigma (0.7413 × IQR across the kept exposures) are
        outliers: they are replaced by the model before the next SVD and left
        out of the coefficient fits.
    n_iter : `int`, optional
        Rounds of [mean, fill, SVD, fit, clip, reject].
    max_bad_fraction : `float`, optional
        An exposure with more than this fraction of its finite bins clipped
        is rejected (a localised artefact: satellite trail, ghost, bad amp).
    max_residual_fraction : `float` or `None`, optional
        An exposure whose RMS residual from the rank-K model (over its
        unclipped bins) exceeds this
        fraction of the sky level is rejected (DES: 0.005).  `None` disables
        the test.  Note that with K too small for the data's variation every
        exposure may fail it.
    noise : `numpy.ndarray`, optional
        (n_exposures, n_bins): the standard error of each entry (the
        ``variance`` plane of a background's stats image, which holds a
        sigma as afw's does). With it the residual compared with
        ``max_residual_fraction`` is the RMS in excess of the noise, so that
        the test measures structure the K components miss rather than the
        noise of small bins (a 16-px bin of a 1000 e⁻ sky alone has a
        fractional noise of 0.002; an 8-px bin 0.004). DES's 128-px blocks
        make the noise negligible, which this reproduces for any bin size.

    Returns
    -------
    result : `RobustPcaResult`

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised if no bin is finite, or too few exposures survive to make K
        components.
    ValueError
        Raised for a non-2-d ``data`` or ``n_components`` < 1.

    Notes
    -----
    Component 1 is the per-bin MEANCLIP (3 sigma, 3 iterations) over the
    finite entries of the kept exposures, the statistic of
    `SkyMeasurementTask.averageBackgrounds`, so with no exposure rejected it
    equals today's sky frame bin for bin; the outlier clipping of the
    low-rank model deliberately does not feed into it.  Rejection is
    re-evaluated every round (not cumulative), so an exposure that looked bad
    against components distorted by an artefact in the first round comes back
    once the artefact's exposure is out.
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"robust_pca needs a 2-d (n_exposures, n_bins) array; got shape {data.shape}.")
    if n_components < 1:
        raise ValueError(f"robust_pca needs n_components >= 1; got {n_components}.")
    n_exp, n_bins = data.shape
    if noise is not None:
        noise = np.asarray(noise, dtype=np.float64)
        if noise.shape != data.shape:
            raise ValueError(
                f"robust_pca: noise has shape {noise.shape} but data {data.shape}; pass one per entry."
            )
    finite = np.isfinite(data)
    # Columns no exposure measured carry no information; work without them.
    columns = finite.any(axis=0)
    if not columns.any():
        raise NoDataError("robust_pca: no bin of any exposure is finite.")
    d = data[:, columns]
    fin = finite[:, columns]
    empty = ~fin.any(axis=1)
    good = fin.copy()
    keep = ~empty
    n_rank = n_components - 1
    model = None
    if n_rank:
        # Start from outliers of the rank-1 (mean) model, so that a strong
        # artefact in one exposure is clipped before the first SVD rather
        # than captured by it as a component of its own.
        mean = stack_statistics(d[keep][:, None, :], ~fin[keep][:, None, :], Property.MEANCLIP).value[0]
        mean = np.where(np.isfinite(mean), mean, 0.0)
        model = _masked_lstsq(d, fin, mean[None, :]) @ mean[None, :]
        good = fin & ~_outliers(d, fin, model, keep, clip)
    for _ in range(n_iter):
        if keep.sum() < n_components:
            raise NoDataError(
                f"robust_pca: only {int(keep.sum())} of {n_exp} exposures survive rejection, too few for "
                f"{n_components} components; use fewer components, more exposures or looser thresholds "
                "(maxResidualFraction)."
            )
        stats = stack_statistics(d[keep][:, None, :], ~fin[keep][:, None, :], Property.MEANCLIP)
        mean = stats.value[0]
        # A bin only rejected exposures measured: its mean is unknown; 0
        # keeps the algebra finite and it is NaN in the output.
        mean = np.where(np.isfinite(mean), mean, 0.0)
        basis = mean[None, :]
        if n_rank:
            # Missing and outlying entries take the current model's value so
            # the SVD sees complete, artefact-free rows.
            filled = np.where(good, d, mean[None, :] if model is None else model)
            scale0 = filled @ mean / max(float(mean @ mean), np.finfo(float).tiny)
            residual = filled[keep] - scale0[keep, None] * mean[None, :]
            basis = np.vstack([mean, _fix_signs(_leading_directions(residual, n_rank))])
        coefficients = _masked_lstsq(d, good, basis)
        model = coefficients @ basis
        error = np.where(fin, d - model, np.nan)
        clipped = _outliers(d, fin, model, keep, clip)
        good = fin & ~clipped
        n_finite = fin.sum(axis=1)
        bad_fraction = clipped.sum(axis=1) / np.maximum(n_finite, 1)
        # RMS over the unclipped bins: a few bins spoilt by e.g. a bright
        # star's halo are handled by clipping (and max_bad_fraction), while
        # this catches exposures that the K components cannot describe.
        squares = np.where(good, error, 0.0) ** 2
        n_good = np.maximum(good.sum(axis=1), 1)
        rms = np.sqrt(squares.sum(axis=1) / n_good)
        excess = rms
        if noise is not None:
            noise_squares = np.where(good & np.isfinite(noise[:, columns]), noise[:, columns], 0.0) ** 2
            excess = np.sqrt(np.maximum(rms**2 - noise_squares.sum(axis=1) / n_good, 0.0))
        too_clipped = bad_fraction > max_bad_fraction
        too_rough = (
            np.zeros(n_exp, dtype=bool)
            if max_residual_fraction is None
            else ~(excess <= max_residual_fraction)
        )
        too_rough &= ~empty
        keep = ~(empty | too_clipped | too_rough)

    rejected: list[tuple[int, str]] = []
    for index in np.flatnonzero(~keep):
        if empty[index]:
            reason = "no finite bin"
        elif too_clipped[index]:
            reason = f"{bad_fraction[index]:.1%} of bins clipped (> max_bad_fraction {max_bad_fraction:.1%})"
        else:
            reason = (
                f"fractional RMS residual {excess[index]:.4f}{' beyond noise' if noise is not None else ''} "
                f"from the {n_components}-component model > {max_residual_fraction}"
            )
        rejected.append((int(index), reason))

    if keep.sum() < n_components:
        raise NoDataError(
            f"robust_pca: only {int(keep.sum())} of {n_exp} exposures survive rejection, too few for "
            f"{n_components} components; use fewer components, more exposures or looser thresholds."
        )
    # The last round's rejections change the mean: refit on the final set.
    final_mean = stack_statistics(d[keep][:, None, :], ~fin[keep][:, None, :], Property.MEANCLIP).value[0]
    basis = np.vstack([np.where(np.isfinite(final_mean), final_mean, 0.0), basis[1:]])
    coefficients = _masked_lstsq(d, good, basis)

    # Variance explained: sequential drop of the kept exposures' residual sum
    # of squares over good bins, as a fraction of their total sum of squares.
    weights = good[keep]
    total = float(np.sum(np.where(weights, d[keep], 0.0) ** 2))
    previous = total
    explained = np.empty(n_components)
    for k in range(n_components):
        partial = _masked_lstsq(d[keep], weights, basis[: k + 1]) @ basis[: k + 1]
        remaining = float(np.sum(np.where(weights, d[keep] - partial, 0.0) ** 2))
        explained[k] = (previous - remaining) / total if total > 0 else 0.0
        previous = remaining
    templates = np.full((n_components, n_bins), np.nan)
    templates[0, columns] = final_mean
    templates[1:, columns] = basis[1:]
    coefficients[empty] = np.nan
    clipped_full = np.zeros((n_exp, n_bins), dtype=bool)
    clipped_full[:, columns] = clipped
    return RobustPcaResult(
        templates=templates,
        coefficients=coefficients,
        variance_explained=explained,
        rejected_exposures=rejected,
        residual_rms=np.where(empty, np.nan, rms),
        excess_rms=np.where(empty, np.nan, excess),
        clipped=clipped_full,
    )


class SkyPcaConfig(Config):
    """Configuration of `SkyPcaTask`."""

    nComponents = RangeField[int](
        doc="Number of sky templates per detector; 1 gives today's single sky frame.", default=1, min=1
    )
    clip = RangeField[float](
        doc="Outlier threshold of the low-rank model, in robust sigmas of each bin.",
        default=3.0,
        min=0.0,
        inclusiveMin=False,
    )
    nIter = RangeField[int](doc="Rounds of the robust PCA (fill, SVD, clip, reject).", default=5, min=1)
    maxBadFraction = RangeField[float](
        doc="Reject an exposure with more than this fraction of its bins clipped.",
        default=0.2,
        min=0.0,
        max=1.0,
    )
    maxResidualFraction = Field[float](
        doc="Reject an exposure whose RMS residual from the K-component model, in excess of the bins' "
        "noise (their stats error), exceeds this fraction of the sky level (DES: 0.005); None disables.",
        default=0.005,
        optional=True,
    )
    maxMemoryGiB = RangeField[float](
        doc="Refuse (ProblemTooLargeError) a PCA whose working arrays are estimated to need more than "
        "this: about PCA_BYTES_PER_ENTRY bytes per exposure and bin of the whole focal plane.",
        default=16.0,
        min=0.0,
        inclusiveMin=False,
    )
    sky = ConfigurableField(target=SkyMeasurementTask, doc="Background binning and combination.")


def pca_memory_bytes(n_exposures: int, n_bins: int) -> int:
    """Estimated peak memory of `robust_pca` on an (n_exposures, n_bins) problem.

    ``PCA_BYTES_PER_ENTRY`` per entry: the data, its noise and about a dozen
    float64 working arrays of that size (model, filled data, residuals, the
    quartile sort, masks); measured at about 116 bytes per entry (peak RSS,
    50 x 393216 and 100 x 100000 entries).
    """
    return int(PCA_BYTES_PER_ENTRY * n_exposures * n_bins)


def _detector_values(bgs: Sequence[BackgroundList | None], detector: object) -> tuple[np.ndarray, np.ndarray]:
    """(n_exposures, n_bins) stats values and their errors of one detector, NaN for bad or missing."""
    present = [bg for bg in bgs if bg is not None]
    if not present:
        raise NoDataError(f"SkyPcaTask: detector {detector} has no background for any exposure.")
    for bg in present:
        if len(bg) != 1:
            raise ValueError(
                f"SkyPcaTask: detector {detector} has a background list of length {len(bg)}; "
                "pass single-element lists from measureBackground."
            )
    first = present[0][0][0]
    bbox, grid = first.getImageBBox(), first.getStatsImage().bbox
    n_bins = grid.shape[0] * grid.shape[1]
    rows, errors = [], []
    for index, bg in enumerate(bgs):
        if bg is None:
            rows.append(np.full(n_bins, np.nan))
            errors.append(np.full(n_bins, np.nan))
            continue
        background = bg[0][0]
        if background.getImageBBox() != bbox or background.getStatsImage().bbox != grid:
            raise BoxMismatchError(
                f"SkyPcaTask: detector {detector} exposure {index} covers {background.getImageBBox()} "
                f"with bins {background.getStatsImage().bbox}, others {bbox} with {grid}."
            )
        stats = background.getStatsImage()
        values = np.asarray(stats.image.array, dtype=np.float64).copy()
        if "BAD" in stats.mask.schema.names:
            values[stats.mask.get("BAD")] = np.nan
        rows.append(values.ravel())
        # The stats image's variance plane holds the bin's standard error (afw's convention).
        errors.append(np.asarray(stats.variance.array, dtype=np.float64).ravel())
    return np.stack(rows), np.stack(errors)


class SkyPcaTask(Task):
    """Build K sky templates per detector from all detectors' residual backgrounds.

    The robust PCA runs on the whole focal plane at once (each exposure's
    detectors concatenated), so one set of coefficients per exposure describes
    every detector, as the templates are later fitted per visit.
    """

    ConfigClass = SkyPcaConfig
    _DefaultName = "skyPca"
    config: SkyPcaConfig

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.makeSubtask("sky")

    @timeMethod
    def run(
        self,
        backgrounds: Mapping[int, Sequence[BackgroundList | None]],
        exposureIds: Sequence[int],
        *,
        nComponents: int | None = None,
        sky: SkyMeasurementTask | None = None,
    ) -> Struct:
        """Make the templates.

        Parameters
        ----------
        backgrounds : `~collections.abc.Mapping` [`int`, sequence of `BackgroundList` or `None`]
            Per detector id, one single-element normalised residual background
            per exposure, in the order of ``exposureIds``; `None` where the
            exposure lacks the detector.
        exposureIds : sequence of `int`
            The exposures.
        nComponents : `int`, optional
            Number of templates; ``config.nComponents`` if `None`.
            (`~lsst.skyframes.build.CpSkyCombineTask` passes its own
            ``nComponents``, so there is one place to set it in a pipeline.)
        sky : `SkyMeasurementTask`, optional
            Task whose ``averageBackgrounds`` and ``backgroundToExposure``
            make the sky-frame images; the ``sky`` subtask if `None`.
            `~lsst.skyframes.build.CpSkyCombineTask` passes its own, so that
            component 1 is combined exactly as its single sky frame.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``skyFrames``: dict detector → list of K `MaskedImage` (see the
            module docstring for the format); ``varianceExplained`` (K,);
            ``coefficients`` (n_exposures, K); ``rejectedExposures``: list of
            (exposure id, reason); ``usedExposures``: list of ids.

        Raises
        ------
        lsst.skyframes.errors.NoDataError
            Raised for empty inputs or too few usable exposures.
        ValueError
            Raised if a detector's sequence length differs from ``exposureIds``.
        """
        ids = [int(e) for e in exposureIds]
        n_comp = self.config.nComponents if nComponents is None else int(nComponents)
        if n_comp < 1:
            raise ValueError(f"SkyPcaTask.run needs nComponents >= 1; got {n_comp}.")
        sky = self.sky if sky is None else sky
        if not backgrounds or not ids:
            raise NoDataError("SkyPcaTask.run needs at least one detector and one exposure.")
        detectors = sorted(backgrounds)
        blocks, noise = [], []
        for det in detectors:
            if len(backgrounds[det]) != len(ids):
                raise ValueError(
                    f"SkyPcaTask: detector {det} has {len(backgrounds[det])} backgrounds for "
                    f"{len(ids)} exposures; pass None for a missing one."
                )
            values, errors = _detector_values(backgrounds[det], det)
            blocks.append(values)
            noise.append(errors)
        sizes = [block.shape[1] for block in blocks]
        needed = pca_memory_bytes(len(ids), sum(sizes))
        if needed > self.config.maxMemoryGiB * 2**30:
            raise ProblemTooLargeError(
                f"SkyPcaTask: {len(ids)} exposures x {sum(sizes)} bins of {len(detectors)} detectors need "
                f"about {needed / 2**30:.1f} GiB, more than maxMemoryGiB = {self.config.maxMemoryGiB:g}. "
                "Use coarser bins for the residual backgrounds (e.g. pipetask -c parameters:xBinSize=128 "
                "-c parameters:yBinSize=128 with pipelines/BuildSkyTemplates.yaml, DES's 128-px blocks: 16x "
                "fewer bins than 32 px), fewer exposures per build, or raise pca.maxMemoryGiB on a bigger "
                "machine."
            )
        result = robust_pca(
            np.concatenate(blocks, axis=1),
            n_comp,
            clip=self.config.clip,
            n_iter=self.config.nIter,
            max_bad_fraction=self.config.maxBadFraction,
            max_residual_fraction=self.config.maxResidualFraction,
            noise=np.concatenate(noise, axis=1),
        )
        rejected = {index for index, _ in result.rejected_exposures}
        frames: dict[int, list[MaskedImage]] = {}
        starts = np.cumsum([0, *sizes])
        for det, start, stop in zip(detectors, starts[:-1], starts[1:], strict=True):
            used = [bg for i, bg in enumerate(backgrounds[det]) if bg is not None and i not in rejected]
            # Component 1 is made exactly as today's sky frame, so single-frame
            # consumers see no difference.
            first = sky.averageBackgrounds(used)
            background = used[0][0][0]
            grid = background.getStatsImage().bbox
            components = [first]
            for k in range(1, n_comp):
                values = result.templates[k, start:stop].reshape(grid.shape)
                missing = ~np.isfinite(values)
                mask = default_mask_schema()
                stats = MaskedImage(
                    Image(np.where(missing, 0.0, values).astype(np.float32), bbox=grid),
                    mask_schema=mask,
                )
                stats.mask.set("NO_DATA", missing)
                stats.variance.array[...] = 0.0
                components.append(sky.backgroundToExposure(stats, background.getImageBBox()))
            for k, frame in enumerate(components, start=1):
                frame.metadata["SKY_COMPONENT"] = k
                frame.metadata["SKY_NCOMPONENTS"] = n_comp
            frames[det] = components
        self.metadata["varianceExplained"] = [float(v) for v in result.variance_explained]
        self.metadata["nRejected"] = len(result.rejected_exposures)
        return Struct(
            skyFrames=frames,
            varianceExplained=result.variance_explained,
            coefficients=result.coefficients,
            rejectedExposures=[(ids[i], reason) for i, reason in result.rejected_exposures],
            usedExposures=[e for i, e in enumerate(ids) if i not in rejected],
        )


def _as_background(template: MaskedImage | BackgroundList) -> BackgroundList:
    if isinstance(template, BackgroundList):
        return template
    return SkyMeasurementTask.exposureToBackground(template)


def _component_samples(
    image: MaskedImage, templates: Sequence[BackgroundList], config: SkyMeasurementConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Samples of one detector: (n_samples,) image and (n_samples, K) templates.

    The boxes, statistic and mask planes are those of
    `SkyMeasurementTask.measureScale`; the image is measured once for all
    components.
    """
    pixels, mask = image_and_mask(image)
    height, width = pixels.bbox.shape
    x_edges = np.linspace(0, width, min(config.xNumSamples, width) + 1).astype(int)
    y_edges = np.linspace(0, height, min(config.yNumSamples, height) + 1).astype(int)
    stats = config.stats

    def sample(array: np.ndarray, bad: np.ndarray | None) -> np.ndarray:
        result = binned_statistics(
            array, bad, x_edges, y_edges, stats.statistic, clip=stats.clip, n_iter=stats.nIter
        )
        return result.value.T.ravel()

    bad = bad_pixel_mask(mask, list(stats.mask)) if mask is not None else None
    columns = []
    for template in templates:
        rendered = template.getImage()
        require_same_bbox(pixels.bbox, rendered.bbox, "fit_component_scales image and template")
        columns.append(sample(rendered.array, None))
    return sample(pixels.array, bad), np.stack(columns, axis=1)


def fit_component_scales(
    images: Sequence[MaskedImage],
    templates_per_detector: Sequence[Sequence[MaskedImage | BackgroundList]],
    sky_config: SkyMeasurementConfig | None = None,
) -> np.ndarray:
    """Fit one set of K template coefficients to all detectors of a visit.

    Parameters
    ----------
    images : sequence of `lsst.images.MaskedImage`
        The visit's detector images (after any large-scale model).
    templates_per_detector : sequence of sequences
        For each image, its K templates (sky-frame exposures from
        `SkyPcaTask` or their `BackgroundList`s), same order everywhere.
    sky_config : `SkyMeasurementConfig`, optional
        Sample boxes (``xNumSamples``, ``yNumSamples``), their statistic and
        the rejection (``skyRej``, ``skyIter``).

    Returns
    -------
    coefficients : `numpy.ndarray`
        (K,) float64: image ≈ Σ_k c_k · template_k.

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised if fewer finite sample sets than components remain.
    ValueError
        Raised if the inputs' lengths or component counts disagree.

    Notes
    -----
    Linear least squares without intercept over every detector's samples;
    ``skyIter`` rounds reject samples whose residual exceeds ``skyRej`` ×
    0.741 × IQR of the kept residuals (the reference's constant,
    `~lsst.skyframes.sky_measurement.REFERENCE_IQR_TO_SIGMA`), cumulatively:
    the fit of `SkyMeasurementTask.solveScales` (the same code), which with
    one template gives the same number bit for bit.
    """
    config = sky_config if sky_config is not None else SkyMeasurementConfig()
    if len(images) != len(templates_per_detector):
        raise ValueError(
            f"fit_component_scales got {len(images)} images but {len(templates_per_detector)} template sets."
        )
    if not images:
        raise NoDataError("fit_component_scales needs at least one image.")
    n_comp = {len(t) for t in templates_per_detector}
    if len(n_comp) != 1 or 0 in n_comp:
        raise ValueError(
            f"fit_component_scales: every detector needs the same K ≥ 1 templates; got {n_comp}."
        )
    ys, xs = [], []
    for image, templates in zip(images, templates_per_detector, strict=True):
        y, x = _component_samples(image, [_as_background(t) for t in templates], config)
        ys.append(y)
        xs.append(x)
    return clipped_least_squares(
        np.concatenate(ys),
        np.concatenate(xs),
        n_iter=config.skyIter,
        rejection=config.skyRej,
        iqr_to_sigma=REFERENCE_IQR_TO_SIGMA,
        too_few_message=lambda kept, components: (
            f"fit_component_scales: {kept} usable samples for {components} components; "
            "check the image masks or use more sample boxes (xNumSamples, yNumSamples)."
        ),
    )


def subtract_components(
    image: MaskedImage,
    templates: Sequence[MaskedImage | BackgroundList],
    coefficients: Sequence[float],
    bgList: BackgroundList | None = None,
) -> None:
    """Subtract Σ_k c_k · template_k from an image, in place.

    Parameters
    ----------
    image : `lsst.images.MaskedImage`
        Image to correct; only its image plane changes.
    templates : sequence of `MaskedImage` or `BackgroundList`
        The detector's K templates.
    coefficients : sequence of `float`
        K coefficients from `fit_component_scales`.
    bgList : `BackgroundList`, optional
        If given, each scaled template is appended (as
        `SkyMeasurementTask.subtractSkyFrame` does), so the list keeps
        describing everything subtracted.

    Raises
    ------
    ValueError
        Raised if the numbers of templates and coefficients differ.
    lsst.skyframes.errors.NoDataError
        Raised for a non-finite coefficient.
    """
    if len(templates) != len(coefficients):
        raise ValueError(
            f"subtract_components got {len(templates)} templates but {len(coefficients)} coefficients."
        )
    task = SkyMeasurementTask()
    for template, coefficient in zip(templates, coefficients, strict=True):
        task.subtractSkyFrame(image, _as_background(template), float(coefficient), bgList)
