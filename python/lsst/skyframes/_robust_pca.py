"""The robust PCA of `lsst.skyframes.pca`, streamed over chunks of bins.

Every step of the robust PCA is either a statistic of one bin across the
exposures (the clipped mean, the robust sigma of the residuals, the outlier
test) or a sum over bins (least-squares normal equations, the exposures'
Gram matrix, residual sums of squares).  So the (n_exposures, n_bins) problem
is worked in chunks of columns, each read again when a step needs it, and
what is kept between the passes is small:

- per bin, float64: the current and the previous round's K templates and
  the robust sigma of each bin (2K + 1 rows of the focal plane), which
  define the previous model and its clipping, so that the good entries and
  the fill values of any chunk are recomputed rather than stored;
- per exposure: the coefficients, the normal equations (K x K each) and
  the n_kept x n_kept Gram matrix of the residuals;
- one chunk's working arrays at a time (see ``PCA_CHUNK_ENTRIES`` in
  `lsst.skyframes.pca`).

The numbers are those of the dense computation up to the order in which
sums over bins are added (relative differences ~1e-15).
"""

from __future__ import annotations

__all__ = ["Chunk", "RobustPcaResult", "chunked_robust_pca", "directions_from_gram", "nan_quartiles"]

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .errors import NoDataError
from .statistics import IQR_TO_SIGMA, Property, stack_statistics


@dataclasses.dataclass
class RobustPcaResult:
    """Result of `~lsst.skyframes.pca.robust_pca`.

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
    clipped : `numpy.ndarray` or `None`
        (n_exposures, n_bins) bool: finite entries clipped as outliers;
        `None` where it was not asked for (`~lsst.skyframes.pca.SkyPcaTask`,
        whose memory must not grow with n_exposures x n_bins).
    """

    templates: np.ndarray
    coefficients: np.ndarray
    variance_explained: np.ndarray
    rejected_exposures: list[tuple[int, str]]
    residual_rms: np.ndarray
    excess_rms: np.ndarray
    clipped: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Columns ``[start, stop)`` of the problem and how to read them.

    Attributes
    ----------
    start, stop : `int`
        The chunk's bins in the whole focal plane's bin vector.
    read : callable
        Returns ``(values, noise)``: (n_exposures, stop − start) float64
        values, NaN where missing, and their standard errors of the same
        shape, or `None` without noise.  Called once per pass, so it should
        read from what is already in memory.
    """

    start: int
    stop: int
    read: Callable[[], tuple[np.ndarray, np.ndarray | None]]


@dataclasses.dataclass
class _Block:
    """One chunk as read, restricted to the bins some exposure measured."""

    data: np.ndarray
    finite: np.ndarray
    noise: np.ndarray | None
    # Where the block's columns are in the bin vector: a slice when the chunk
    # is complete, which avoids copies of the per-bin arrays.
    columns: slice | np.ndarray


def _blocks(chunks: Sequence[Chunk], measured: np.ndarray) -> Iterator[_Block]:
    for chunk in chunks:
        here = measured[chunk.start : chunk.stop]
        if not here.any():
            continue
        values, noise = chunk.read()
        if here.all():
            columns: slice | np.ndarray = slice(chunk.start, chunk.stop)
        else:
            columns = chunk.start + np.flatnonzero(here)
            values = values[:, here]
            noise = None if noise is None else noise[:, here]
        yield _Block(values, np.isfinite(values), noise, columns)


def _clipped_mean(block: _Block, keep: np.ndarray) -> np.ndarray:
    """Per-bin MEANCLIP of the kept exposures (NaN where none measured the bin)."""
    return stack_statistics(
        block.data[keep][:, None, :], ~block.finite[keep][:, None, :], Property.MEANCLIP
    ).value[0]


def _zero_nan(values: np.ndarray) -> np.ndarray:
    # A bin only rejected exposures measured has an unknown mean: 0 keeps the
    # algebra finite, and the bin is NaN in the output.
    return np.where(np.isfinite(values), values, 0.0)


def nan_quartiles(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _robust_sigma(block: _Block, model: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`~lsst.skyframes.statistics.IQR_TO_SIGMA` × IQR of the kept exposures' residuals, per bin.

    The clipping threshold thus follows how much each bin varies after the model.
    """
    error = np.where(block.finite & keep[:, None], block.data - model, np.nan)
    low, high = nan_quartiles(error)
    return IQR_TO_SIGMA * (high - low)


def _outliers(block: _Block, model: np.ndarray, sigma: np.ndarray, clip: float) -> np.ndarray:
    """Finite entries whose residual exceeds ``clip`` × their bin's robust sigma."""
    with np.errstate(invalid="ignore"):
        return block.finite & (np.abs(block.data - model) > clip * sigma[None, :])


@dataclasses.dataclass
class _Model:
    """A round's rank-K model and clipping, from which any chunk's good entries are recomputed."""

    coefficients: np.ndarray  # (n_exposures, K)
    basis: np.ndarray  # (K, n_bins)
    sigma: np.ndarray  # (n_bins,)
    clip: float

    def values(self, block: _Block) -> np.ndarray:
        return self.coefficients @ self.basis[:, block.columns]

    def good(self, block: _Block) -> tuple[np.ndarray, np.ndarray]:
        """(good entries, model values) of a block: finite and not clipped."""
        values = self.values(block)
        return block.finite & ~_outliers(block, values, self.sigma[block.columns], self.clip), values


def _good_and_fill(state: _Model | None, block: _Block) -> tuple[np.ndarray, np.ndarray | None]:
    """The good entries of a block and the values that replace the others (none before any model)."""
    return (block.finite, None) if state is None else state.good(block)


def _residual(
    block: _Block, state: _Model | None, keep: np.ndarray, scale: np.ndarray, mean: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(good entries, kept rows of the filled data minus their scaled mean) of a block.

    Missing and outlying entries take the current model's value so the SVD
    sees complete, artefact-free rows.
    """
    good, fill = _good_and_fill(state, block)
    filled = np.where(good, block.data, fill)
    return good, filled[keep] - scale[keep, None] * mean[block.columns][None, :]


def _normal_equations(
    data: np.ndarray, weights: np.ndarray, basis: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row normal matrices (rows, K, K) and right-hand sides (rows, K) over ``weights``."""
    w = weights.astype(np.float64)
    normal = np.einsum("kb,ib,lb->ikl", basis, w, basis)
    rhs = np.einsum("kb,ib->ik", basis, np.where(weights, data, 0.0))
    return normal, rhs


def _solve(normal: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Batched least-squares solution of the normal equations.

    A pseudo-inverse gives NaN-free (minimum-norm) answers for rows with too
    few good bins, which the caller flags separately.
    """
    return np.einsum("ikl,il->ik", np.linalg.pinv(normal), rhs)


def directions_from_gram(gram: np.ndarray, n_rank: int) -> tuple[np.ndarray, np.ndarray]:
    """The leading right singular vectors of R as a projection of its rows, from ``gram = R Rᵀ``.

    Parameters
    ----------
    gram : `numpy.ndarray`
        (n, n) Gram matrix of a short, wide matrix R (n rows).
    n_rank : `int`
        Number of directions.

    Returns
    -------
    projection : `numpy.ndarray`
        (n_rank, n): the leading left singular vectors, so that the
        directions are ``(projection @ R) / scale[:, None]``.
    scale : `numpy.ndarray`
        (n_rank,): the singular values, ``inf`` for a direction with no
        variance (fewer independent rows than directions), which is left
        zero rather than divided by zero.

    Notes
    -----
    The same directions (up to sign) as an SVD of R, without an n × n_bins
    workspace; R can be streamed, in chunks of columns, into both the Gram
    matrix and the projection.
    """
    values, vectors = np.linalg.eigh(gram)
    order = np.argsort(values)[::-1][:n_rank]
    singular = np.sqrt(np.clip(values[order], 0.0, None))
    scale = np.where(singular > singular.max(initial=0.0) * 1e-12, singular, np.inf)
    return vectors[:, order].T, scale


def _sign_flips(vectors: np.ndarray) -> np.ndarray:
    """±1 per row making its largest-magnitude entry positive, so results are reproducible."""
    index = np.argmax(np.abs(vectors), axis=1)
    signs = np.sign(vectors[np.arange(len(vectors)), index])
    signs[signs == 0] = 1.0
    return signs


def _too_few(kept: int, n_exp: int, n_components: int, hint: str) -> NoDataError:
    return NoDataError(
        f"robust_pca: only {kept} of {n_exp} exposures survive rejection, too few for "
        f"{n_components} components; use fewer components, more exposures or looser thresholds{hint}."
    )


def chunked_robust_pca(
    chunks: Sequence[Chunk],
    n_exposures: int,
    n_bins: int,
    n_components: int,
    *,
    clip: float,
    n_iter: int,
    max_bad_fraction: float,
    max_residual_fraction: float | None,
    has_noise: bool,
    want_clipped: bool,
) -> RobustPcaResult:
    """`~lsst.skyframes.pca.robust_pca` over column chunks (see the module docstring).

    Parameters
    ----------
    chunks : sequence of `Chunk`
        Disjoint chunks covering bins ``0 .. n_bins - 1``.
    n_exposures, n_bins : `int`
        The problem's shape.
    n_components : `int`
        K ≥ 1.
    clip, n_iter, max_bad_fraction, max_residual_fraction
        As for `~lsst.skyframes.pca.robust_pca`.
    has_noise : `bool`
        Whether the chunks return noise (the excess-RMS test and its wording).
    want_clipped : `bool`
        Whether to return the (n_exposures, n_bins) clipped mask.

    Returns
    -------
    result : `RobustPcaResult`
    """
    n_exp = n_exposures
    n_rank = n_components - 1
    n_finite = np.zeros(n_exp, dtype=np.int64)
    measured = np.zeros(n_bins, dtype=bool)
    for chunk in chunks:
        finite = np.isfinite(chunk.read()[0])
        n_finite += finite.sum(axis=1)
        measured[chunk.start : chunk.stop] = finite.any(axis=0)
    # Bins no exposure measured carry no information; every pass skips them.
    if not measured.any():
        raise NoDataError("robust_pca: no bin of any exposure is finite.")
    empty = n_finite == 0
    keep = ~empty

    def blocks() -> Iterator[_Block]:
        return _blocks(chunks, measured)

    state: _Model | None = None
    sigma = np.full(n_bins, np.nan)
    if n_rank:
        # Start from outliers of the rank-1 (mean) model, so that a strong
        # artefact in one exposure is clipped before the first SVD rather
        # than captured by it as a component of its own.
        mean = np.zeros((1, n_bins))
        normal, rhs = np.zeros((n_exp, 1, 1)), np.zeros((n_exp, 1))
        for block in blocks():
            mean[0, block.columns] = _zero_nan(_clipped_mean(block, keep))
            n, r = _normal_equations(block.data, block.finite, mean[:, block.columns])
            normal += n
            rhs += r
        state = _Model(_solve(normal, rhs), mean, sigma, clip)
        for block in blocks():
            sigma[block.columns] = _robust_sigma(block, state.values(block), keep)

    for _ in range(n_iter):
        if keep.sum() < n_components:
            raise _too_few(int(keep.sum()), n_exp, n_components, " (maxResidualFraction)")
        basis = np.zeros((n_components, n_bins))
        normal, rhs = np.zeros((n_exp, n_components, n_components)), np.zeros((n_exp, n_components))
        # Pass 1: the clipped mean; with K > 1 also each exposure's scale on it.
        projected, mean_square = np.zeros(n_exp), 0.0
        for block in blocks():
            good, fill = _good_and_fill(state, block)
            mean = _zero_nan(_clipped_mean(block, keep))
            basis[0, block.columns] = mean
            if n_rank:
                projected += np.where(good, block.data, fill) @ mean
                mean_square += float(mean @ mean)
            else:
                n, r = _normal_equations(block.data, good, basis[:, block.columns])
                normal += n
                rhs += r
        if n_rank:
            scale0 = projected / max(mean_square, np.finfo(float).tiny)

            # Pass 2: the kept exposures' Gram matrix of the residuals from the mean.
            gram = np.zeros((int(keep.sum()), int(keep.sum())))
            for block in blocks():
                rows = _residual(block, state, keep, scale0, basis[0])[1]
                gram += rows @ rows.T
            projection, singular = directions_from_gram(gram, n_rank)
            # Pass 3: the directions, and the normal equations of the new basis
            # (over the previous round's good entries) before the signs are fixed.
            for block in blocks():
                good, rows = _residual(block, state, keep, scale0, basis[0])
                basis[1:, block.columns] = (projection @ rows) / singular[:, None]
                n, r = _normal_equations(block.data, good, basis[:, block.columns])
                normal += n
                rhs += r
            signs = np.concatenate([[1.0], _sign_flips(basis[1:])])
            basis[1:] *= signs[1:, None]
            # Flipping a basis row flips its terms exactly: the same sums as
            # accumulating with the fixed signs.
            normal *= signs[None, :, None] * signs[None, None, :]
            rhs *= signs[None, :]
        coefficients = _solve(normal, rhs)
        # Pass 4: clip against the new model, and judge each exposure.
        state = _Model(coefficients, basis, sigma, clip)
        n_clipped = np.zeros(n_exp, dtype=np.int64)
        n_good = np.zeros(n_exp, dtype=np.int64)
        squares, noise_squares = np.zeros(n_exp), np.zeros(n_exp)
        for block in blocks():
            model = state.values(block)
            # Overwrites the previous round's sigma, which nothing needs any more.
            block_sigma = _robust_sigma(block, model, keep)
            sigma[block.columns] = block_sigma
            clipped = _outliers(block, model, block_sigma, clip)
            good = block.finite & ~clipped
            n_clipped += clipped.sum(axis=1)
            n_good += good.sum(axis=1)
            # RMS over the unclipped bins: a few bins spoilt by e.g. a bright
            # star's halo are handled by clipping (and max_bad_fraction), while
            # this catches exposures that the K components cannot describe.
            squares += (np.where(good, block.data - model, 0.0) ** 2).sum(axis=1)
            if block.noise is not None:
                noise_squares += (np.where(good & np.isfinite(block.noise), block.noise, 0.0) ** 2).sum(
                    axis=1
                )
        bad_fraction = n_clipped / np.maximum(n_finite, 1)
        n_good = np.maximum(n_good, 1)
        rms = np.sqrt(squares / n_good)
        excess = np.sqrt(np.maximum(rms**2 - noise_squares / n_good, 0.0)) if has_noise else rms
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
                f"fractional RMS residual {excess[index]:.4f}{' beyond noise' if has_noise else ''} "
                f"from the {n_components}-component model > {max_residual_fraction}"
            )
        rejected.append((int(index), reason))
    if keep.sum() < n_components:
        raise _too_few(int(keep.sum()), n_exp, n_components, "")

    # The last round's rejections change the mean: refit on the final set,
    # over the last round's good entries.
    assert state is not None
    final_mean = np.full(n_bins, np.nan)
    normal, rhs = np.zeros((n_exp, n_components, n_components)), np.zeros((n_exp, n_components))
    total = 0.0
    clipped_full = np.zeros((n_exp, n_bins), dtype=bool) if want_clipped else None

    def final_basis(block: _Block) -> np.ndarray:
        return np.vstack([_zero_nan(final_mean[block.columns]), state.basis[1:, block.columns]])

    for block in blocks():
        good = state.good(block)[0]
        final_mean[block.columns] = _clipped_mean(block, keep)
        n, r = _normal_equations(block.data, good, final_basis(block))
        normal += n
        rhs += r
        total += float(np.sum(np.where(good[keep], block.data[keep], 0.0) ** 2))
        if clipped_full is not None:
            clipped_full[:, block.columns] = block.finite & ~good
    coefficients = _solve(normal, rhs)

    # Variance explained: sequential drop of the kept exposures' residual sum
    # of squares over good bins, as a fraction of their total sum of squares.
    # The fit on the first k templates has the leading k x k normal equations.
    partial = [_solve(normal[keep, : k + 1, : k + 1], rhs[keep, : k + 1]) for k in range(n_components)]
    remaining = np.zeros(n_components)
    for block in blocks():
        weights = state.good(block)[0][keep]
        data = block.data[keep]
        basis = final_basis(block)
        for k in range(n_components):
            model = partial[k] @ basis[: k + 1]
            remaining[k] += float(np.sum(np.where(weights, data - model, 0.0) ** 2))
    explained = np.empty(n_components)
    previous = total
    for k in range(n_components):
        explained[k] = (previous - remaining[k]) / total if total > 0 else 0.0
        previous = remaining[k]

    templates = state.basis
    templates[0] = final_mean
    templates[1:, ~measured] = np.nan
    coefficients[empty] = np.nan
    return RobustPcaResult(
        templates=templates,
        coefficients=coefficients,
        variance_explained=explained,
        rejected_exposures=rejected,
        residual_rms=np.where(empty, np.nan, rms),
        excess_rms=np.where(empty, np.nan, excess),
        clipped=clipped_full,
    )
