"""One-dimensional interpolation and background-grid rendering as afw does them.

This module re-implements the numerics of ``lsst.afw.math.Interpolate`` (which
wraps GSL's ``gsl_interp`` for every style but ``CONSTANT``) and the rendering
step of ``lsst.afw.math.BackgroundMI::getImageF``, which turns a grid of
per-bin background values into a full-resolution image by interpolating first
along y (one line per bin column), then along x (one line per image row).

The styles behave exactly as afw's:

- ``LINEAR``: piecewise linear;
- ``NATURAL_SPLINE`` and ``CUBIC_SPLINE``: both the natural cubic spline
  (GSL's ``gsl_interp_cspline``: zero second derivative at both end nodes);
- ``AKIMA_SPLINE``: GSL's non-periodic ``gsl_interp_akima``, including its
  handling of a node whose Akima weights are both zero (see `_akima_kernel`);
- ``CONSTANT``: afw's own step function through the midpoints of the samples
  (see `_constant_pieces`).

Beyond the outer nodes every non-constant style extrapolates as afw does:
with the second-order Taylor expansion of the end segment's polynomial about
the end node.

Every style is reduced to the same representation: a table of cubic
polynomials, one per "piece" (the segments between nodes plus one
extrapolation piece beyond each end), evaluated at an offset from the piece's
origin.  All lines sharing the same nodes share the piece boundaries, so the
piece of each evaluation point is found once for all lines.  Numba kernels,
parallel over lines, build the coefficient tables and run the hot loop, a
Horner evaluation per output pixel written straight into the output dtype.
"""

from __future__ import annotations

__all__ = [
    "Interpolate",
    "UndersampleStyle",
    "interpolate_lines",
    "lookupMaxInterpStyle",
    "lookupMinInterpPoints",
    "render_grid",
    "stringToInterpStyle",
    "stringToUndersampleStyle",
]

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numba import prange

from ._jit import njit
from .errors import UndersampledError, UnsupportedStyleError

if TYPE_CHECKING:
    import numpy.typing as npt


class Interpolate(enum.IntEnum):
    """Interpolation styles, with afw's names and numbers.

    The numbers are those of ``lsst.afw.math.Interpolate.Style``; they are
    written to background files, so they must not change.
    """

    UNKNOWN = -1
    CONSTANT = 0
    LINEAR = 1
    NATURAL_SPLINE = 2
    CUBIC_SPLINE = 3
    CUBIC_SPLINE_PERIODIC = 4
    AKIMA_SPLINE = 5
    AKIMA_SPLINE_PERIODIC = 6


class UndersampleStyle(enum.IntEnum):
    """What to do when there are too few points for the interpolation style.

    The numbers are those of ``lsst.afw.math.UndersampleStyle``.
    """

    THROW_EXCEPTION = 0
    REDUCE_INTERP_ORDER = 1
    INCREASE_NXNYSAMPLE = 2


# Minimum number of points of each supported style; the periodic styles and
# UNKNOWN are deliberately absent (they are not implemented).
_MIN_POINTS = {
    Interpolate.CONSTANT: 1,
    Interpolate.LINEAR: 2,
    Interpolate.NATURAL_SPLINE: 3,
    Interpolate.CUBIC_SPLINE: 3,
    Interpolate.AKIMA_SPLINE: 5,
}


def stringToInterpStyle(style: str | Interpolate) -> Interpolate:
    """Convert an interpolation style name to an `Interpolate` member.

    Parameters
    ----------
    style : `str` or `Interpolate`
        Member name, case-sensitive as in afw (``"AKIMA_SPLINE"``), or
        ``"NONE"`` (the pex_config spelling of "no interpolation", which maps
        to ``UNKNOWN``), or an `Interpolate` member, returned unchanged.

    Returns
    -------
    style : `Interpolate`
        The matching style.

    Raises
    ------
    UnsupportedStyleError
        Raised if ``style`` is not one of the names above.
    """
    if isinstance(style, Interpolate):
        return style
    if isinstance(style, str):
        if style == "NONE":
            return Interpolate.UNKNOWN
        try:
            return Interpolate[style]
        except KeyError:
            pass
    allowed = ", ".join([*Interpolate.__members__, "NONE"])
    raise UnsupportedStyleError(f"Unknown interpolation style {style!r}; expected one of {allowed}.")


def stringToUndersampleStyle(style: str | UndersampleStyle) -> UndersampleStyle:
    """Convert an undersample style name to an `UndersampleStyle` member.

    Parameters
    ----------
    style : `str` or `UndersampleStyle`
        Member name, case-sensitive as in afw (``"REDUCE_INTERP_ORDER"``), or
        an `UndersampleStyle` member, returned unchanged.

    Returns
    -------
    style : `UndersampleStyle`
        The matching style.

    Raises
    ------
    UnsupportedStyleError
        Raised if ``style`` is not a member name.
    """
    if isinstance(style, UndersampleStyle):
        return style
    if isinstance(style, str):
        try:
            return UndersampleStyle[style]
        except KeyError:
            pass
    allowed = ", ".join(UndersampleStyle.__members__)
    raise UnsupportedStyleError(f"Unknown undersample style {style!r}; expected one of {allowed}.")


def lookupMinInterpPoints(style: str | Interpolate) -> int:
    """Return the minimum number of points an interpolation style needs.

    Parameters
    ----------
    style : `str` or `Interpolate`
        Interpolation style (see `stringToInterpStyle`).

    Returns
    -------
    n_points : `int`
        1 for ``CONSTANT``, 2 for ``LINEAR``, 3 for ``NATURAL_SPLINE`` and
        ``CUBIC_SPLINE``, 5 for ``AKIMA_SPLINE``.

    Raises
    ------
    UnsupportedStyleError
        Raised for ``UNKNOWN``, the periodic styles, or an unknown name.
    """
    style = stringToInterpStyle(style)
    try:
        return _MIN_POINTS[style]
    except KeyError:
        supported = ", ".join(s.name for s in _MIN_POINTS)
        raise UnsupportedStyleError(
            f"Interpolation style {style.name} is not supported; use one of {supported}."
        ) from None


def lookupMaxInterpStyle(n: int) -> Interpolate:
    """Return the highest-order interpolation style usable with ``n`` points.

    Parameters
    ----------
    n : `int`
        Number of points.

    Returns
    -------
    style : `Interpolate`
        ``CONSTANT`` for 1, ``LINEAR`` for 2, ``CUBIC_SPLINE`` for 3 or 4,
        ``AKIMA_SPLINE`` for 5 or more.

    Raises
    ------
    UndersampledError
        Raised if ``n < 1``: nothing can be interpolated through no points.
    """
    if n < 1:
        raise UndersampledError(f"Cannot interpolate through {n} points; at least 1 is needed.")
    if n == 1:
        return Interpolate.CONSTANT
    if n == 2:
        return Interpolate.LINEAR
    if n <= 4:
        return Interpolate.CUBIC_SPLINE
    return Interpolate.AKIMA_SPLINE


# ---------------------------------------------------------------------------
# Piecewise-cubic representation
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pieces:
    """Piecewise cubics sharing their piece boundaries across many lines.

    Piece ``k`` covers ``breaks[k - 1] <= x < breaks[k]`` (open-ended for the
    first and last piece) and its value is
    ``a + t * (b + t * (c + t * d))`` with ``t = x - origins[k]`` and
    ``(a, b, c, d) = coef[line, k]``.
    """

    breaks: np.ndarray
    """Sorted piece boundaries, shape ``(K - 1,)``."""

    origins: np.ndarray
    """Origin of each piece's polynomial, shape ``(K,)``."""

    coef: np.ndarray
    """Polynomial coefficients, shape ``(lines, K, 4)``, C-contiguous."""

    last_node: float | None
    """For spline styles the last node, which GSL evaluates with the last
    segment rather than the extrapolation piece; `None` for ``CONSTANT``.
    """

    def locate(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the piece index and the offset from its origin of each point.

        Parameters
        ----------
        points : `numpy.ndarray`
            Evaluation positions, float64.

        Returns
        -------
        index : `numpy.ndarray`
            Piece index of each point (int64).
        offset : `numpy.ndarray`
            ``points - origins[index]`` (float64).
        """
        index = np.searchsorted(self.breaks, points, side="right").astype(np.int64)
        if self.last_node is not None:
            # GSL evaluates exactly at the last node with the last segment
            # (its bsearch never returns the final node), not by extrapolating.
            index[points == self.last_node] = len(self.breaks) - 1
        return index, points - self.origins[index]


def _spline_pieces(nodes: np.ndarray, coef: np.ndarray) -> _Pieces:
    """Wrap the ``n + 1`` pieces of a spline style built by one of the kernels below.

    Piece 0 extrapolates left of ``nodes[0]``, piece ``i + 1`` is the segment
    starting at ``nodes[i]`` and piece ``n`` extrapolates right of
    ``nodes[-1]``.
    """
    return _Pieces(
        breaks=nodes, origins=np.concatenate([nodes[:1], nodes]), coef=coef, last_node=float(nodes[-1])
    )


# The kernels below fill ``coef[line]`` (shape ``(n + 1, 4)``) of every line
# in parallel.  They read the values of a line in place, so ``values`` may be
# a strided view (the transpose of the y-step output), and they never build
# whole-array temporaries: on a (4096, 128) x step that keeps coefficient
# building several times cheaper than the equivalent NumPy expressions.


@njit(cache=True)
def _set_end_pieces(row, y0, y_last, h_last):  # pragma: no cover - compiled
    """Fill the two extrapolation pieces of one line from its end segments.

    afw extrapolates with ``y0 + d (x - x0) + d2 (x - x0)**2 / 2``, where
    ``d`` and ``d2`` are the first and second derivatives of the end
    segment's polynomial at the end node: for the first segment those are
    its own ``b`` and ``2 c``; the last segment is evaluated at its right
    end, ``h_last`` from its origin.
    """
    n_pieces = row.shape[0]
    row[0, 0] = y0
    row[0, 1] = row[1, 1]
    row[0, 2] = row[1, 2]
    row[0, 3] = 0.0
    b = row[n_pieces - 2, 1]
    c = row[n_pieces - 2, 2]
    d = row[n_pieces - 2, 3]
    row[n_pieces - 1, 0] = y_last
    row[n_pieces - 1, 1] = b + h_last * (2.0 * c + 3.0 * d * h_last)
    row[n_pieces - 1, 2] = 0.5 * (2.0 * c + 6.0 * d * h_last)
    row[n_pieces - 1, 3] = 0.0


@njit(cache=True, parallel=True)
def _linear_kernel(nodes, values, coef):  # pragma: no cover - compiled
    """Piecewise-linear segments (``gsl_interp_linear``)."""
    n_lines, n = values.shape
    for line in prange(n_lines):
        row = coef[line]
        y = values[line]
        for i in range(n - 1):
            row[i + 1, 0] = y[i]
            row[i + 1, 1] = (y[i + 1] - y[i]) / (nodes[i + 1] - nodes[i])
            row[i + 1, 2] = 0.0
            row[i + 1, 3] = 0.0
        _set_end_pieces(row, y[0], y[n - 1], nodes[n - 1] - nodes[n - 2])


@njit(cache=True, parallel=True)
def _natural_spline_kernel(nodes, values, coef):  # pragma: no cover - compiled
    """Natural cubic spline segments (``gsl_interp_cspline``).

    With ``c_i`` half the second derivative at node ``i`` (GSL's
    convention), the interior ``c_i`` solve the symmetric, diagonally
    dominant tridiagonal system
    ``h_{i-1} c_{i-1} + 2 (h_{i-1} + h_i) c_i + h_i c_{i+1} = 3 (s_i - s_{i-1})``
    with ``c_0 = c_{n-1} = 0``, where ``h_i`` and ``s_i`` are the width and
    slope of segment ``i``.  The matrix depends on the nodes only, so it is
    factorised once (Thomas algorithm, stable without pivoting here) and
    each line only runs the forward and back substitutions.
    """
    n_lines, n = values.shape
    size = n - 2
    h = np.empty(n - 1)
    for i in range(n - 1):
        h[i] = nodes[i + 1] - nodes[i]
    # Factorisation: pivot[r] is the eliminated diagonal, upper[r] the
    # normalised super-diagonal of row r (unknown c_{r+1}).
    pivot = np.empty(size)
    upper = np.empty(size)
    for r in range(size):
        diagonal = 2.0 * (h[r] + h[r + 1])
        if r > 0:
            diagonal -= h[r] * upper[r - 1]
        pivot[r] = diagonal
        upper[r] = h[r + 1] / diagonal
    for line in prange(n_lines):
        y = values[line]
        row = coef[line]
        c = np.zeros(n)
        for r in range(size):
            rhs = 3.0 * ((y[r + 2] - y[r + 1]) / h[r + 1] - (y[r + 1] - y[r]) / h[r])
            if r > 0:
                rhs -= h[r] * c[r]
            c[r + 1] = rhs / pivot[r]
        for r in range(size - 2, -1, -1):
            c[r + 1] -= upper[r] * c[r + 2]
        for i in range(n - 1):
            slope = (y[i + 1] - y[i]) / h[i]
            row[i + 1, 0] = y[i]
            row[i + 1, 1] = slope - h[i] * (c[i + 1] + 2.0 * c[i]) / 3.0
            row[i + 1, 2] = c[i]
            row[i + 1, 3] = (c[i + 1] - c[i]) / (3.0 * h[i])
        _set_end_pieces(row, y[0], y[n - 1], h[n - 2])


@njit(cache=True, parallel=True)
def _akima_kernel(nodes, values, coef):  # pragma: no cover - compiled
    """Akima spline segments (GSL's non-periodic ``gsl_interp_akima``).

    The derivative at node ``i`` is Akima's weighted mean of the slopes
    either side, ``t_i = (1 - a_i) m_{i-1} + a_i m_i`` with
    ``a_i = |m_{i-1} - m_{i-2}| / (|m_{i+1} - m_i| + |m_{i-1} - m_{i-2}|)``;
    the two missing slopes at each end are extrapolated linearly
    (``m_{-1} = 2 m_0 - m_1``, ``m_{-2} = 3 m_0 - 2 m_1``, and likewise on
    the right).  Where that denominator is zero GSL does not take Akima's
    average ``(m_{i-1} + m_i) / 2``: a segment whose left node has a zero
    denominator is the straight line of slope ``m_i``, and a segment whose
    right node has one ends with slope ``m_i``, so straight runs of data stay
    straight up to a kink.  This kernel does the same, since afw calls GSL.
    """
    n_lines, n = values.shape
    for line in prange(n_lines):
        y = values[line]
        row = coef[line]
        m = np.empty(n + 3)  # m[i + 2] is the slope of segment i
        for i in range(n - 1):
            m[i + 2] = (y[i + 1] - y[i]) / (nodes[i + 1] - nodes[i])
        m[1] = 2.0 * m[2] - m[3]
        m[0] = 3.0 * m[2] - 2.0 * m[3]
        m[n + 1] = 2.0 * m[n] - m[n - 1]
        m[n + 2] = 3.0 * m[n] - 2.0 * m[n - 1]
        # Node derivative, or NaN where the weights vanish (the GSL rule).
        t = np.empty(n)
        for i in range(n):
            w_prev = abs(m[i + 1] - m[i])
            total = abs(m[i + 3] - m[i + 2]) + w_prev
            if total == 0.0:
                t[i] = np.nan
            else:
                alpha = w_prev / total
                t[i] = (1.0 - alpha) * m[i + 1] + alpha * m[i + 2]
        for i in range(n - 1):
            slope = m[i + 2]
            row[i + 1, 0] = y[i]
            if np.isnan(t[i]):
                row[i + 1, 1] = slope
                row[i + 1, 2] = 0.0
                row[i + 1, 3] = 0.0
            else:
                h = nodes[i + 1] - nodes[i]
                t_end = slope if np.isnan(t[i + 1]) else t[i + 1]
                row[i + 1, 1] = t[i]
                row[i + 1, 2] = (3.0 * slope - 2.0 * t[i] - t_end) / h
                row[i + 1, 3] = (t[i] + t_end - 2.0 * slope) / (h * h)
        _set_end_pieces(row, y[0], y[n - 1], nodes[n - 1] - nodes[n - 2])


def _constant_pieces(nodes: np.ndarray, values: np.ndarray) -> _Pieces:
    """Return the pieces of afw's ``CONSTANT`` step function.

    Notes
    -----
    afw "recentres" the samples: the steps sit at the midpoints between
    nodes and at half a spacing beyond each end node.  The value is ``y_0``
    up to the first midpoint, the mean ``(y_{j-1} + y_j) / 2`` of the two
    samples either side of midpoint ``j`` from there to the next midpoint
    (not ``y_j``), then ``(y_{n-2} + y_{n-1}) / 2`` up to half a spacing
    beyond ``x_{n-1}`` and ``y_{n-1}`` from there on; every step is closed
    on the left.  A single sample is a constant.
    """
    n_lines, n = values.shape
    if n == 1:
        coef = np.zeros((n_lines, 1, 4))
        coef[:, 0, 0] = values[:, 0]
        return _Pieces(breaks=np.empty(0), origins=np.zeros(1), coef=coef, last_node=None)
    breaks = np.empty(n + 1)
    breaks[0] = 0.5 * (3.0 * nodes[0] - nodes[1])
    breaks[1:-1] = 0.5 * (nodes[:-1] + nodes[1:])
    breaks[-1] = 0.5 * (3.0 * nodes[-1] - nodes[-2])
    coef = np.empty((n_lines, n + 2, 4))
    _constant_kernel(values, coef)
    return _Pieces(breaks=breaks, origins=np.zeros(n + 2), coef=coef, last_node=None)


@njit(cache=True, parallel=True)
def _constant_kernel(values, coef):  # pragma: no cover - compiled
    """Step values of afw's ``CONSTANT`` style, for ``n >= 2`` samples.

    Piece ``k`` (``k = 0 .. n + 1``) holds step value ``v_{k-1}``, with
    ``v_{-1} = v_0 = y_0`` covering everything left of the first step,
    ``v_j = (y_{j-1} + y_j) / 2`` and ``v_n = y_{n-1}``.
    """
    n_lines, n = values.shape
    for line in prange(n_lines):
        y = values[line]
        row = coef[line]
        row[:, 1:] = 0.0
        row[0, 0] = y[0]
        row[1, 0] = y[0]
        for j in range(1, n):
            row[j + 1, 0] = 0.5 * (y[j - 1] + y[j])
        row[n + 1, 0] = y[n - 1]


_SPLINE_KERNELS = {
    Interpolate.LINEAR: _linear_kernel,
    Interpolate.NATURAL_SPLINE: _natural_spline_kernel,
    Interpolate.CUBIC_SPLINE: _natural_spline_kernel,
    Interpolate.AKIMA_SPLINE: _akima_kernel,
}


def _build(nodes: np.ndarray, values: np.ndarray, style: Interpolate) -> _Pieces:
    """Build the pieces of ``style`` through ``values``.

    Parameters
    ----------
    nodes : `numpy.ndarray`
        ``(n,)`` strictly increasing float64 nodes, with ``n`` at least
        `lookupMinInterpPoints` of ``style``.
    values : `numpy.ndarray`
        ``(lines, n)`` float64 values (may be a strided view).
    style : `Interpolate`
        A supported style.

    Returns
    -------
    pieces : `_Pieces`
        The pieces of every line.
    """
    if style == Interpolate.CONSTANT:
        return _constant_pieces(nodes, values)
    coef = np.empty((values.shape[0], nodes.size + 1, 4))
    _SPLINE_KERNELS[style](nodes, values, coef)
    return _spline_pieces(nodes, coef)


@njit(cache=True, parallel=True)
def _evaluate_kernel(coef, starts, offset, out):  # pragma: no cover - compiled
    """Evaluate sorted points: ``out[line, j]`` for ``starts[k] <= j < starts[k + 1]``
    is piece ``k`` of ``line`` at ``offset[j]``.

    This is the hot loop of rendering, one Horner evaluation per output
    pixel written straight into the output's dtype.  Lines run in parallel;
    walking each piece's run of points keeps its four coefficients in
    registers and lets the inner loop vectorise.
    """
    n_lines = out.shape[0]
    n_pieces = starts.size - 1
    for line in prange(n_lines):
        row = out[line]
        for k in range(n_pieces):
            a = coef[line, k, 0]
            b = coef[line, k, 1]
            c = coef[line, k, 2]
            d = coef[line, k, 3]
            # Views indexed from zero: the compiler then knows no index is
            # negative (no wraparound test) and vectorises the loop.
            start = starts[k]
            stop = starts[k + 1]
            run = row[start:stop]
            t_run = offset[start:stop]
            for j in range(stop - start):
                t = t_run[j]
                run[j] = a + t * (b + t * (c + t * d))


def _evaluate(pieces: _Pieces, points: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Evaluate every line of ``pieces`` at ``points`` into ``out`` and return it.

    Parameters
    ----------
    pieces : `_Pieces`
        Lines to evaluate.
    points : `numpy.ndarray`
        ``(p,)`` float64 positions, any order.
    out : `numpy.ndarray`
        ``(lines, p)`` C-contiguous output array.

    Returns
    -------
    out : `numpy.ndarray`
        ``out``, filled.
    """
    order = None
    if np.any(points[1:] < points[:-1]) or np.isnan(points).any():
        # The kernel walks runs of sorted points; NaNs sort last, land in the
        # right extrapolation piece and evaluate to NaN.
        order = np.argsort(points, kind="stable")
        points = points[order]
    index, offset = pieces.locate(points)
    starts = np.searchsorted(index, np.arange(pieces.coef.shape[1] + 1)).astype(np.int64)
    if order is None and out.dtype in (np.float32, np.float64):
        _evaluate_kernel(pieces.coef, starts, offset, out)
    else:
        # The kernel is compiled for float outputs and sorted points only.
        scratch = np.empty(out.shape)
        _evaluate_kernel(pieces.coef, starts, offset, scratch)
        if order is None:
            out[...] = scratch
        else:
            out[:, order] = scratch
    return out


def _check_style(style: str | Interpolate, n_points: int) -> Interpolate:
    """Return the style after checking it is supported and has enough points."""
    style = stringToInterpStyle(style)
    minimum = lookupMinInterpPoints(style)
    if n_points < minimum:
        raise UndersampledError(
            f"{style.name} interpolation needs at least {minimum} points but got {n_points}; "
            f"use a lower-order style (at most {lookupMaxInterpStyle(max(n_points, 1)).name}) "
            "or supply more points."
        )
    return style


def interpolate_lines(
    nodes: npt.ArrayLike, values: npt.ArrayLike, points: npt.ArrayLike, style: str | Interpolate
) -> np.ndarray:
    """Interpolate many lines of values that share the same nodes.

    Parameters
    ----------
    nodes : array-like
        ``(n,)`` strictly increasing node positions.
    values : array-like
        ``(m, n)`` values of ``m`` independent lines at the nodes (a 1-d
        ``(n,)`` array is one line).  Must not contain NaN: callers drop NaN
        samples first.
    points : array-like
        ``(p,)`` positions to evaluate at, in any order; points beyond the
        outer nodes are extrapolated as afw does.
    style : `str` or `Interpolate`
        Interpolation style.

    Returns
    -------
    result : `numpy.ndarray`
        ``(m, p)`` float64 interpolated values (``(p,)`` for 1-d ``values``).

    Raises
    ------
    UndersampledError
        Raised if ``n`` is less than `lookupMinInterpPoints` of ``style``.
    UnsupportedStyleError
        Raised for ``UNKNOWN``, periodic or unknown styles.
    ValueError
        Raised if the shapes disagree or the nodes are not strictly
        increasing.
    """
    nodes = np.asarray(nodes, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    one_line = values.ndim == 1
    values = np.atleast_2d(values)
    if nodes.ndim != 1 or points.ndim != 1 or values.ndim != 2 or values.shape[1] != nodes.size:
        raise ValueError(
            f"Expected nodes (n,), values (m, n) and points (p,); got nodes {nodes.shape}, "
            f"values {values.shape}, points {points.shape}."
        )
    style = _check_style(style, nodes.size)
    if np.any(np.diff(nodes) <= 0.0):
        raise ValueError(f"Interpolation nodes must be strictly increasing; got {nodes}.")
    out = np.empty((values.shape[0], points.size))
    if values.shape[0] and points.size:
        _evaluate(_build(nodes, values, style), points, out)
    return out[0] if one_line else out


# ---------------------------------------------------------------------------
# Background grid rendering
# ---------------------------------------------------------------------------


def _line_style(
    style: Interpolate, undersample_style: UndersampleStyle, count: int, what: str
) -> Interpolate:
    """Return the style to use on one line with ``count`` valid points.

    Mirrors afw's per-line fallback: keep ``style`` if there are enough
    points, otherwise raise or reduce according to ``undersample_style``.
    """
    minimum = lookupMinInterpPoints(style)
    if count >= minimum:
        return style
    if undersample_style == UndersampleStyle.REDUCE_INTERP_ORDER:
        # Only reached with count < minimum, so this never raises the order.
        return lookupMaxInterpStyle(count)
    if undersample_style == UndersampleStyle.INCREASE_NXNYSAMPLE:
        raise UnsupportedStyleError(
            f"{what} has {count} non-NaN bins, too few for {style.name} (needs {minimum}), and the "
            "undersample style INCREASE_NXNYSAMPLE is not supported; use REDUCE_INTERP_ORDER."
        )
    raise UndersampledError(
        f"{what} has only {count} non-NaN bins but {style.name} interpolation needs {minimum}; "
        "mask fewer pixels, use larger bins, choose a lower-order style or use the undersample "
        "style REDUCE_INTERP_ORDER."
    )


def _column_name(index: int, x_centres: np.ndarray) -> str:
    """Name bin column ``index`` in error messages."""
    return f"Bin column {index} (x centre {x_centres[index]:g}) of the background grid"


def render_grid(
    x_centres: npt.ArrayLike,
    y_centres: npt.ArrayLike,
    values: npt.ArrayLike,
    width: int,
    height: int,
    style: str | Interpolate,
    undersample_style: str | UndersampleStyle,
    dtype: npt.DTypeLike = np.float32,
) -> np.ndarray:
    """Render a grid of background bin values to a full image, as afw does.

    Parameters
    ----------
    x_centres : array-like
        ``(nx,)`` strictly increasing bin centres along x, in local pixel
        coordinates (pixel ``i`` is centred on ``i``).
    y_centres : array-like
        ``(ny,)`` strictly increasing bin centres along y, likewise.
    values : array-like
        ``(ny, nx)`` bin values (row = y bin); NaN marks a bin without data.
    width, height : `int`
        Size of the image to render.
    style : `str` or `Interpolate`
        Interpolation style.
    undersample_style : `str` or `UndersampleStyle`
        What to do when a grid, a bin column or an image row has too few
        non-NaN bins for ``style``.
    dtype : `numpy.dtype`-like, optional
        Output dtype; float32 by default, as afw's ``getImageF``.

    Returns
    -------
    image : `numpy.ndarray`
        ``(height, width)`` rendered background.  All NaN if every bin is
        NaN (with ``REDUCE_INTERP_ORDER``).

    Raises
    ------
    UndersampledError
        Raised with ``THROW_EXCEPTION`` if the grid, or the non-NaN bins of a
        bin column, are too few for ``style``.
    UnsupportedStyleError
        Raised for ``UNKNOWN``, periodic or unknown styles, and for
        ``INCREASE_NXNYSAMPLE`` when it would have to act.
    ValueError
        Raised if the shapes disagree or the centres are not strictly
        increasing.

    Notes
    -----
    As in afw, each bin column is first interpolated along y through its
    non-NaN bins at every image row; a column with no such bin is dropped.
    Each image row is then interpolated along x through the surviving
    columns at every pixel.  A column (or the set of surviving columns) with
    too few points for ``style`` is handled per ``undersample_style``: raise,
    or use the highest style those points allow.

    Columns that share the same NaN pattern (normally all of them) are
    interpolated as one batch, and every image row shares the same nodes,
    so no Python loop runs over bins, rows or pixels.
    """
    style = stringToInterpStyle(style)
    undersample_style = stringToUndersampleStyle(undersample_style)
    x_centres = np.asarray(x_centres, dtype=np.float64)
    y_centres = np.asarray(y_centres, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    dtype = np.dtype(dtype)
    ny, nx = values.shape if values.ndim == 2 else (-1, -1)
    if values.ndim != 2 or x_centres.shape != (nx,) or y_centres.shape != (ny,) or nx == 0 or ny == 0:
        raise ValueError(
            f"Expected values (ny, nx) with ny, nx > 0, x_centres (nx,) and y_centres (ny,); got "
            f"values {values.shape}, x_centres {x_centres.shape}, y_centres {y_centres.shape}."
        )
    if np.any(np.diff(x_centres) <= 0.0) or np.any(np.diff(y_centres) <= 0.0):
        raise ValueError("Bin centres must be strictly increasing.")

    # Global check, before looking at any NaN (afw's doGetImage).
    minimum = lookupMinInterpPoints(style)
    if nx < minimum or ny < minimum:
        if undersample_style == UndersampleStyle.THROW_EXCEPTION:
            raise UndersampledError(
                f"The background grid of {nx}x{ny} bins (nx x ny) is too small for {style.name} "
                f"interpolation, which needs at least {minimum} bins along each axis; use more, "
                "smaller bins (larger nxSample/nySample), a lower-order style, or the undersample "
                "style REDUCE_INTERP_ORDER."
            )
        if undersample_style == UndersampleStyle.INCREASE_NXNYSAMPLE:
            raise UnsupportedStyleError(
                f"The background grid of {nx}x{ny} bins is too small for {style.name} and the "
                "undersample style INCREASE_NXNYSAMPLE is not supported; use REDUCE_INTERP_ORDER."
            )
        style = lookupMaxInterpStyle(min(nx, ny))

    out = np.empty((height, width), dtype=dtype)
    if width == 0 or height == 0:
        return out

    # y step: one batch per distinct NaN pattern of the bin columns.
    valid = ~np.isnan(values)
    if undersample_style != UndersampleStyle.REDUCE_INTERP_ORDER:
        # afw walks the columns in order and fails on the first short one.
        short = np.flatnonzero(valid.sum(axis=0) < lookupMinInterpPoints(style))
        if short.size:
            first = short[0]
            _line_style(style, undersample_style, int(valid[:, first].sum()), _column_name(first, x_centres))
    rows = np.arange(height, dtype=np.float64)
    patterns, group_of_column = np.unique(valid.T, axis=0, return_inverse=True)
    group_of_column = group_of_column.ravel()
    columns = np.empty((nx, height))
    kept = np.zeros(nx, dtype=bool)
    for group, pattern in enumerate(patterns):  # one pass per NaN pattern, normally one
        members = np.flatnonzero(group_of_column == group)
        count = int(pattern.sum())
        if count == 0:
            continue  # afw sets the column to NaN, then culls it in the x step
        column_style = _line_style(style, undersample_style, count, _column_name(members[0], x_centres))
        pieces = _build(y_centres[pattern], values[pattern][:, members].T, column_style)
        columns[members] = _evaluate(pieces, rows, np.empty((members.size, height)))
        kept[members] = True

    # x step: every image row has the same surviving columns, hence the same
    # nodes and piece boundaries.
    count = int(kept.sum())
    if count == 0:
        out.fill(np.nan)
        return out
    row_style = _line_style(style, undersample_style, count, "Every image row")
    pieces = _build(x_centres[kept], columns[kept].T, row_style)
    return _evaluate(pieces, np.arange(width, dtype=np.float64), out)
