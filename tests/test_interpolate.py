"""Interpolation styles and background-grid rendering against independent truths.

Every expectation here comes from outside `lsst.skyframes.interpolate`: exact
analytic fields, SciPy's splines, lsst.images' `SplineField`, or slow scalar
implementations written directly from afw's / GSL's definitions.
"""

import numpy as np
import pytest
from lsst.images import Box
from lsst.images.fields import SplineField
from scipy.interpolate import CubicSpline

from lsst.skyframes.errors import UndersampledError, UnsupportedStyleError
from lsst.skyframes.interpolate import (
    Interpolate,
    UndersampleStyle,
    interpolate_lines,
    lookupMaxInterpStyle,
    lookupMinInterpPoints,
    render_grid,
    stringToInterpStyle,
    stringToUndersampleStyle,
)

SPLINE_STYLES = ["LINEAR", "NATURAL_SPLINE", "CUBIC_SPLINE", "AKIMA_SPLINE"]
UNSUPPORTED_STYLES = [
    Interpolate.UNKNOWN,
    Interpolate.CUBIC_SPLINE_PERIODIC,
    Interpolate.AKIMA_SPLINE_PERIODIC,
]


# ---------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------


def afw_bin_centres(length: int, n_bins: int) -> np.ndarray:
    """Bin centres in local pixel coordinates, from afw's bin layout."""
    ends = np.array([min(((i + 1) * length + n_bins // 2) // n_bins, length) for i in range(n_bins)])
    origins = np.concatenate([[0], ends[:-1]])
    return origins + (ends - origins) / 2.0 - 0.5


def linear_extrapolated(x, y, points):
    """Piecewise-linear interpolation with linear extrapolation of the end segments."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    points = np.asarray(points, float)
    result = np.interp(points, x, y)
    left = points < x[0]
    right = points > x[-1]
    result[left] = y[0] + (y[1] - y[0]) / (x[1] - x[0]) * (points[left] - x[0])
    result[right] = y[-1] + (y[-1] - y[-2]) / (x[-1] - x[-2]) * (points[right] - x[-1])
    return result


def akima_scalar(x, y, point):
    """Akima spline as GSL's ``gsl_interp_akima`` defines it, one point at a time.

    Segment slopes ``m_i``; two extra slopes at each end extrapolated linearly;
    node derivative ``(|m_{i+1} - m_i| m_{i-1} + |m_{i-1} - m_{i-2}| m_i) / (sum
    of the weights)``; where both weights are zero GSL uses the slope of the
    segment being evaluated.  Hermite cubic on each segment; beyond the ends
    the end segment's second-order Taylor expansion about the end node.
    """
    n = len(x)
    m = {i: (y[i + 1] - y[i]) / (x[i + 1] - x[i]) for i in range(n - 1)}
    m[-1] = 2 * m[0] - m[1]
    m[-2] = 3 * m[0] - 2 * m[1]
    m[n - 1] = 2 * m[n - 2] - m[n - 3]
    m[n] = 3 * m[n - 2] - 2 * m[n - 3]

    def node_derivative(i, segment):
        w_next = abs(m[i + 1] - m[i])
        w_prev = abs(m[i - 1] - m[i - 2])
        if w_next + w_prev == 0.0:
            return m[segment]
        return (w_next * m[i - 1] + w_prev * m[i]) / (w_next + w_prev)

    def segment_derivatives(i, position):
        """Value, first and second derivative of segment i's cubic at position."""
        h = x[i + 1] - x[i]
        t0 = node_derivative(i, i)
        t1 = node_derivative(i + 1, i)
        c = (3 * m[i] - 2 * t0 - t1) / h
        d = (t0 + t1 - 2 * m[i]) / h**2
        u = position - x[i]
        return (y[i] + t0 * u + c * u**2 + d * u**3, t0 + 2 * c * u + 3 * d * u**2, 2 * c + 6 * d * u)

    if point < x[0]:
        _, d1, d2 = segment_derivatives(0, x[0])
        return y[0] + d1 * (point - x[0]) + 0.5 * d2 * (point - x[0]) ** 2
    if point > x[-1]:
        _, d1, d2 = segment_derivatives(n - 2, x[-1])
        return y[-1] + d1 * (point - x[-1]) + 0.5 * d2 * (point - x[-1]) ** 2
    i = min(int(np.searchsorted(x, point, side="right")) - 1, n - 2)
    return segment_derivatives(i, point)[0]


def constant_scalar(x, y, point):
    """afw's CONSTANT step function, written from its definition.

    Recentred points: r_0 = x_0 - (x_1 - x_0) / 2 with y_0; r_j = (x_{j-1} +
    x_j) / 2 with (y_{j-1} + y_j) / 2; r_n = x_{n-1} + (x_{n-1} - x_{n-2}) / 2
    with y_{n-1}.  Right-continuous steps; v_0 left of r_0, v_n from r_n on.
    """
    n = len(x)
    if n == 1:
        return y[0]
    r = [x[0] - (x[1] - x[0]) / 2]
    v = [y[0]]
    for j in range(1, n):
        r.append((x[j - 1] + x[j]) / 2)
        v.append((y[j - 1] + y[j]) / 2)
    r.append(x[n - 1] + (x[n - 1] - x[n - 2]) / 2)
    v.append(y[n - 1])
    if point < r[0]:
        return v[0]
    for j in range(n):
        if r[j] <= point < r[j + 1]:
            return v[j]
    return v[n]


def linear_field(x, y, a=100.0, bx=0.03, by=-0.02):
    return a + bx * x + by * y


# ---------------------------------------------------------------------------
# Names and lookups
# ---------------------------------------------------------------------------


def test_enum_numbers_match_afw():
    assert {s.name: int(s) for s in Interpolate} == {
        "UNKNOWN": -1,
        "CONSTANT": 0,
        "LINEAR": 1,
        "NATURAL_SPLINE": 2,
        "CUBIC_SPLINE": 3,
        "CUBIC_SPLINE_PERIODIC": 4,
        "AKIMA_SPLINE": 5,
        "AKIMA_SPLINE_PERIODIC": 6,
    }
    assert {s.name: int(s) for s in UndersampleStyle} == {
        "THROW_EXCEPTION": 0,
        "REDUCE_INTERP_ORDER": 1,
        "INCREASE_NXNYSAMPLE": 2,
    }


def test_string_to_style_round_trips_and_rejects_junk():
    for style in Interpolate:
        assert stringToInterpStyle(style.name) is style
        assert stringToInterpStyle(style) is style
    for style in UndersampleStyle:
        assert stringToUndersampleStyle(style.name) is style
        assert stringToUndersampleStyle(style) is style
    assert stringToInterpStyle("NONE") is Interpolate.UNKNOWN
    for junk in ["akima_spline", "AKIMA", "", "NONE ", 5, None]:
        with pytest.raises(UnsupportedStyleError, match="AKIMA_SPLINE"):
            stringToInterpStyle(junk)
    for junk in ["reduce_interp_order", "NONE", 1]:
        with pytest.raises(UnsupportedStyleError, match="REDUCE_INTERP_ORDER"):
            stringToUndersampleStyle(junk)


def test_lookup_min_points_and_max_style():
    assert [lookupMinInterpPoints(s) for s in ["CONSTANT", "LINEAR", "NATURAL_SPLINE", "CUBIC_SPLINE"]] == [
        1,
        2,
        3,
        3,
    ]
    assert lookupMinInterpPoints(Interpolate.AKIMA_SPLINE) == 5
    for style in UNSUPPORTED_STYLES:
        with pytest.raises(UnsupportedStyleError, match=style.name):
            lookupMinInterpPoints(style)
    expected = {1: "CONSTANT", 2: "LINEAR", 3: "CUBIC_SPLINE", 4: "CUBIC_SPLINE", 5: "AKIMA_SPLINE"}
    for n, name in expected.items():
        assert lookupMaxInterpStyle(n) is Interpolate[name]
    assert lookupMaxInterpStyle(1000) is Interpolate.AKIMA_SPLINE
    for n in (0, -3):
        with pytest.raises(UndersampledError):
            lookupMaxInterpStyle(n)


# ---------------------------------------------------------------------------
# One-dimensional styles
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["NATURAL_SPLINE", "CUBIC_SPLINE"])
@pytest.mark.parametrize("n", [3, 4, 11])
def test_natural_spline_matches_scipy_and_extrapolates_linearly(style, n):
    rng = np.random.default_rng(n)
    nodes = np.cumsum(rng.uniform(0.5, 3.0, n))
    values = rng.normal(size=(4, n))
    inside = np.concatenate([np.linspace(nodes[0], nodes[-1], 257), nodes])
    outside = np.concatenate(
        [np.linspace(nodes[0] - 7, nodes[0] - 1e-3, 20), np.linspace(nodes[-1] + 1e-3, nodes[-1] + 9, 20)]
    )
    points = np.concatenate([inside, outside])
    result = interpolate_lines(nodes, values, points, style)
    assert result.shape == (4, points.size) and result.dtype == np.float64
    for line, truth_values in zip(result, values, strict=True):
        spline = CubicSpline(nodes, truth_values, bc_type="natural")
        np.testing.assert_allclose(line[: inside.size], spline(inside), rtol=0, atol=1e-10)
        # A natural spline has zero curvature at the end nodes, so afw's
        # second-order extrapolation is linear in the end derivative.
        left = outside < nodes[0]
        truth = np.where(
            left,
            truth_values[0] + spline(nodes[0], 1) * (outside - nodes[0]),
            truth_values[-1] + spline(nodes[-1], 1) * (outside - nodes[-1]),
        )
        np.testing.assert_allclose(line[inside.size :], truth, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [5, 6, 13])
def test_akima_matches_scalar_definition_inside_and_outside(n):
    rng = np.random.default_rng(100 + n)
    nodes = np.cumsum(rng.uniform(0.2, 4.0, n))
    values = rng.normal(scale=10, size=(3, n))
    points = np.concatenate(
        [rng.uniform(nodes[0] - 10, nodes[-1] + 10, 400), nodes, [nodes[0] - 1e-9, nodes[-1] + 1e-9]]
    )
    result = interpolate_lines(nodes, values, points, "AKIMA_SPLINE")
    for line, truth_values in zip(result, values, strict=True):
        truth = np.array([akima_scalar(nodes, truth_values, p) for p in points])
        np.testing.assert_allclose(line, truth, rtol=1e-12, atol=1e-12 * np.abs(truth).max())


def test_akima_keeps_straight_runs_straight_like_gsl():
    # Where both Akima weights of a node vanish (straight runs either side of
    # it), GSL uses the slope of the segment being evaluated, so a ramp with
    # a kink is reproduced exactly, extrapolation included.  (Akima's
    # average of the two slopes would overshoot next to the kink.)
    nodes = np.arange(7.0)
    truth = lambda p: np.maximum(0.0, p - 2.0)  # noqa: E731
    points = np.linspace(-3, 9, 241)
    result = interpolate_lines(nodes, truth(nodes), points, "AKIMA_SPLINE")
    np.testing.assert_allclose(result, truth(points), rtol=0, atol=1e-14)
    scalar = [akima_scalar(nodes, truth(nodes), p) for p in points]
    np.testing.assert_allclose(result, scalar, rtol=0, atol=1e-14)


def test_linear_matches_numpy_and_extrapolates():
    rng = np.random.default_rng(7)
    nodes = np.cumsum(rng.uniform(0.5, 2.0, 6))
    values = rng.normal(size=(2, 6))
    points = np.linspace(nodes[0] - 5, nodes[-1] + 5, 301)
    result = interpolate_lines(nodes, values, points, Interpolate.LINEAR)
    for line, truth_values in zip(result, values, strict=True):
        np.testing.assert_allclose(
            line, linear_extrapolated(nodes, truth_values, points), rtol=1e-13, atol=1e-13
        )
    two = interpolate_lines(nodes[:2], values[:, :2], points, "LINEAR")
    np.testing.assert_allclose(two[1], linear_extrapolated(nodes[:2], values[1, :2], points), atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_constant_matches_afw_step_definition(n):
    rng = np.random.default_rng(n)
    nodes = np.cumsum(rng.uniform(1.0, 3.0, n))
    values = rng.normal(size=(3, n))
    if n > 1:
        steps = np.concatenate(
            [
                [1.5 * nodes[0] - 0.5 * nodes[1]],
                0.5 * (nodes[:-1] + nodes[1:]),
                [1.5 * nodes[-1] - 0.5 * nodes[-2]],
            ]
        )
    else:
        steps = nodes
    eps = 1e-9
    points = np.concatenate(
        [
            steps - eps,
            steps,
            steps + eps,
            nodes,
            [nodes[0] - 100, nodes[-1] + 100, nodes[0] - 3, nodes[-1] + 3],
        ]
    )
    result = interpolate_lines(nodes, values, points, "CONSTANT")
    for line, truth_values in zip(result, values, strict=True):
        truth = [constant_scalar(nodes, truth_values, p) for p in points]
        np.testing.assert_array_equal(line, truth)


@pytest.mark.parametrize("style", ["CONSTANT", *SPLINE_STYLES])
def test_interpolate_lines_points_in_any_order_and_at_nodes(style):
    rng = np.random.default_rng(3)
    nodes = np.cumsum(rng.uniform(0.5, 2.0, 8))
    values = rng.normal(size=(3, 8))
    points = rng.uniform(nodes[0] - 3, nodes[-1] + 3, 50)
    shuffled = interpolate_lines(nodes, values, points, style)
    order = np.argsort(points)
    np.testing.assert_array_equal(shuffled[:, order], interpolate_lines(nodes, values, points[order], style))
    with_nan = interpolate_lines(nodes, values, np.array([nodes[2], np.nan, nodes[0]]), style)
    assert np.isnan(with_nan[:, 1]).all() and np.isfinite(with_nan[:, [0, 2]]).all()
    one = interpolate_lines(nodes, values[0], points, style)
    assert one.shape == (50,)
    np.testing.assert_array_equal(one, shuffled[0])
    if style != "CONSTANT":
        # Every spline passes through its nodes, including the last one.
        np.testing.assert_allclose(interpolate_lines(nodes, values, nodes, style), values, rtol=0, atol=1e-13)


def test_interpolate_lines_errors():
    nodes = np.arange(4.0)
    values = np.ones((2, 4))
    with pytest.raises(UndersampledError, match="AKIMA_SPLINE.*5.*4"):
        interpolate_lines(nodes, values, nodes, "AKIMA_SPLINE")
    with pytest.raises(UndersampledError, match="LINEAR"):
        interpolate_lines(nodes[:1], values[:, :1], nodes, "LINEAR")
    for style in UNSUPPORTED_STYLES:
        with pytest.raises(UnsupportedStyleError):
            interpolate_lines(np.arange(9.0), np.ones((1, 9)), nodes, style)
    with pytest.raises(UnsupportedStyleError):
        interpolate_lines(nodes, values, nodes, "BICUBIC")
    with pytest.raises(ValueError, match="increasing"):
        interpolate_lines(nodes[::-1], values, nodes, "LINEAR")
    with pytest.raises(ValueError, match="values"):
        interpolate_lines(nodes, np.ones((2, 5)), nodes, "LINEAR")


# ---------------------------------------------------------------------------
# Grid rendering
# ---------------------------------------------------------------------------


WIDTH, HEIGHT, NX, NY = 317, 203, 9, 6  # unequal bins along both axes


def grid(width=WIDTH, height=HEIGHT, nx=NX, ny=NY):
    x_centres = afw_bin_centres(width, nx)
    y_centres = afw_bin_centres(height, ny)
    return x_centres, y_centres, np.meshgrid(x_centres, y_centres)


def pixel_field(width=WIDTH, height=HEIGHT, field=linear_field):
    y, x = np.mgrid[0:height, 0:width]
    return field(x.astype(float), y.astype(float))


def test_afw_bin_centres_are_unequal():
    x_centres = afw_bin_centres(WIDTH, NX)
    assert len(set(np.diff(x_centres))) > 1
    assert x_centres[0] > 0 and x_centres[-1] < WIDTH - 1  # margins are extrapolated


@pytest.mark.parametrize("style", SPLINE_STYLES)
def test_linear_field_renders_exactly_including_margins(style):
    x_centres, y_centres, (xg, yg) = grid()
    rendered = render_grid(
        x_centres, y_centres, linear_field(xg, yg), WIDTH, HEIGHT, style, "THROW_EXCEPTION"
    )
    assert rendered.shape == (HEIGHT, WIDTH) and rendered.dtype == np.float32
    np.testing.assert_allclose(rendered, pixel_field(), rtol=1e-6)
    rendered64 = render_grid(
        x_centres, y_centres, linear_field(xg, yg), WIDTH, HEIGHT, style, "THROW_EXCEPTION", dtype=np.float64
    )
    assert rendered64.dtype == np.float64
    np.testing.assert_allclose(rendered64, pixel_field(), rtol=1e-12)


def test_akima_matches_spline_field_inside_bin_centre_hull():
    width, height = 300, 250
    x_centres, y_centres, (xg, yg) = grid(width, height, nx=10, ny=8)
    field = 50 + 5 * np.sin(xg / 40.0) * np.cos(yg / 50.0) + 0.01 * xg + 3 * np.sin(xg * yg / 5000.0)
    rendered = render_grid(
        x_centres, y_centres, field, width, height, "AKIMA_SPLINE", "THROW_EXCEPTION", dtype=np.float64
    )
    spline_field = SplineField(
        Box.from_shape((height, width)), field.copy(), y=y_centres.copy(), x=x_centres.copy()
    )
    reference = spline_field.render().array
    rows = slice(int(np.ceil(y_centres[0])), int(np.floor(y_centres[-1])) + 1)
    cols = slice(int(np.ceil(x_centres[0])), int(np.floor(x_centres[-1])) + 1)
    np.testing.assert_allclose(rendered[rows, cols], reference[rows, cols], rtol=1e-5)


def test_linear_style_is_separable_linear_interpolation():
    # Independent truth for a non-linear field: np.interp along y through
    # each column's finite bins, then along x, extrapolating the end segments.
    x_centres, y_centres, (xg, yg) = grid()
    values = np.sin(xg / 30.0) + np.cos(yg / 20.0) ** 2
    values[2, 4] = np.nan  # one interior NaN bin
    values[0, 1] = np.nan  # and one at the edge of another column
    rendered = render_grid(
        x_centres, y_centres, values, WIDTH, HEIGHT, "LINEAR", "THROW_EXCEPTION", dtype=np.float64
    )
    rows = np.arange(HEIGHT)
    columns = np.array(
        [linear_extrapolated(y_centres[np.isfinite(c)], c[np.isfinite(c)], rows) for c in values.T]
    )
    truth = np.array([linear_extrapolated(x_centres, row, np.arange(WIDTH)) for row in columns.T])
    np.testing.assert_allclose(rendered, truth, rtol=1e-12, atol=1e-12)


def test_constant_style_is_separable_step_function():
    width, height = 40, 31
    x_centres, y_centres, (xg, yg) = grid(width, height, nx=5, ny=3)
    values = np.sin(xg) + 10 * np.cos(yg)
    rendered = render_grid(
        x_centres, y_centres, values, width, height, "CONSTANT", "THROW_EXCEPTION", dtype=float
    )
    columns = np.array([[constant_scalar(y_centres, c, y) for y in range(height)] for c in values.T])
    truth = np.array([[constant_scalar(x_centres, row, x) for x in range(width)] for row in columns.T])
    np.testing.assert_array_equal(rendered, truth)


@pytest.mark.parametrize("style", SPLINE_STYLES)
def test_nan_bins_are_dropped_from_their_column(style):
    x_centres, y_centres, (xg, yg) = grid()
    values = linear_field(xg, yg)
    values[3, 2] = np.nan  # 5 finite bins left: enough even for Akima
    rendered = render_grid(x_centres, y_centres, values, WIDTH, HEIGHT, style, "THROW_EXCEPTION")
    np.testing.assert_allclose(rendered, pixel_field(), rtol=1e-6)


@pytest.mark.parametrize("style", SPLINE_STYLES)
def test_fully_nan_column_is_dropped(style):
    x_centres, y_centres, (xg, yg) = grid()
    values = linear_field(xg, yg)
    values[:, 0] = np.nan  # the first column: the margin is extrapolated further
    values[:, 5] = np.nan
    values[1, 3] = np.nan
    rendered = render_grid(x_centres, y_centres, values, WIDTH, HEIGHT, style, "REDUCE_INTERP_ORDER")
    np.testing.assert_allclose(rendered, pixel_field(), rtol=1e-6)
    # afw cannot interpolate through an empty column unless it may reduce.
    with pytest.raises(UndersampledError, match="column 0"):
        render_grid(x_centres, y_centres, values, WIDTH, HEIGHT, style, "THROW_EXCEPTION")


def test_all_nan_grid_renders_nan():
    x_centres, y_centres, _ = grid()
    rendered = render_grid(
        x_centres, y_centres, np.full((NY, NX), np.nan), WIDTH, HEIGHT, "AKIMA_SPLINE", "REDUCE_INTERP_ORDER"
    )
    assert rendered.shape == (HEIGHT, WIDTH) and np.isnan(rendered).all()


def test_reduce_interp_order_on_small_grids():
    rng = np.random.default_rng(11)
    width, height = 64, 48

    def render(nx, ny, values, style, undersample):
        return render_grid(
            afw_bin_centres(width, nx), afw_bin_centres(height, ny), values, width, height, style, undersample
        )

    values = rng.normal(size=(4, 4))
    np.testing.assert_array_equal(
        render(4, 4, values, "AKIMA_SPLINE", "REDUCE_INTERP_ORDER"),
        render(4, 4, values, "CUBIC_SPLINE", "THROW_EXCEPTION"),
    )
    for nx, ny in [(7, 2), (2, 7)]:
        values = rng.normal(size=(ny, nx))
        np.testing.assert_array_equal(
            render(nx, ny, values, "AKIMA_SPLINE", "REDUCE_INTERP_ORDER"),
            render(nx, ny, values, "LINEAR", "THROW_EXCEPTION"),
        )
    for nx, ny in [(6, 1), (1, 6)]:
        values = rng.normal(size=(ny, nx))
        reduced = render(nx, ny, values, "NATURAL_SPLINE", "REDUCE_INTERP_ORDER")
        np.testing.assert_array_equal(reduced, render(nx, ny, values, "CONSTANT", "THROW_EXCEPTION"))
        # With a single bin along one axis the image is afw's step function
        # along the other.
        if ny == 1:
            x_centres = afw_bin_centres(width, nx)
            truth = [constant_scalar(x_centres, values[0], x) for x in range(width)]
            np.testing.assert_array_equal(reduced, np.broadcast_to(np.float32(truth), (height, width)))
        else:
            y_centres = afw_bin_centres(height, ny)
            truth = [constant_scalar(y_centres, values[:, 0], y) for y in range(height)]
            np.testing.assert_array_equal(
                reduced, np.broadcast_to(np.float32(truth)[:, None], (height, width))
            )


def test_column_with_two_finite_bins_is_interpolated_linearly():
    width, height = 120, 96
    x_centres, y_centres, (xg, yg) = grid(width, height, nx=7, ny=6)
    values = np.sin(xg / 17.0) * np.cos(yg / 23.0) + 0.1 * yg
    # Column 3 keeps only rows 1 and 4; with REDUCE_INTERP_ORDER afw draws a
    # straight line through them.  Filling the column with that line instead
    # must give the same image, since Akima reproduces collinear data.
    sparse = values.copy()
    sparse[[0, 2, 3, 5], 3] = np.nan
    slope = (values[4, 3] - values[1, 3]) / (y_centres[4] - y_centres[1])
    filled = values.copy()
    filled[:, 3] = values[1, 3] + slope * (y_centres - y_centres[1])
    kwargs = {"width": width, "height": height, "style": "AKIMA_SPLINE", "dtype": np.float64}
    np.testing.assert_allclose(
        render_grid(x_centres, y_centres, sparse, undersample_style="REDUCE_INTERP_ORDER", **kwargs),
        render_grid(x_centres, y_centres, filled, undersample_style="THROW_EXCEPTION", **kwargs),
        rtol=1e-10,
    )
    with pytest.raises(UndersampledError, match="column 3.*only 2 .*AKIMA_SPLINE.*5"):
        render_grid(x_centres, y_centres, sparse, undersample_style="THROW_EXCEPTION", **kwargs)
    # Like afw, the first short column (in x order) is the one reported.
    sparse[[0, 1], 5] = np.nan
    with pytest.raises(UndersampledError, match="column 3"):
        render_grid(x_centres, y_centres, sparse, undersample_style="THROW_EXCEPTION", **kwargs)
    with pytest.raises(UnsupportedStyleError, match="INCREASE_NXNYSAMPLE"):
        render_grid(x_centres, y_centres, sparse, undersample_style="INCREASE_NXNYSAMPLE", **kwargs)


def test_two_surviving_columns_are_interpolated_linearly_in_x():
    width, height = 120, 96
    x_centres, y_centres, (xg, yg) = grid(width, height, nx=7, ny=6)
    values = np.cos(yg / 15.0) + 0.05 * xg  # linear in x at every row
    sparse = values.copy()
    sparse[:, [0, 2, 3, 4, 6]] = np.nan
    kwargs = {"width": width, "height": height, "style": "AKIMA_SPLINE", "dtype": np.float64}
    np.testing.assert_allclose(
        render_grid(x_centres, y_centres, sparse, undersample_style="REDUCE_INTERP_ORDER", **kwargs),
        render_grid(x_centres, y_centres, values, undersample_style="THROW_EXCEPTION", **kwargs),
        rtol=1e-10,
    )


def test_undersampled_grid_errors():
    x_centres, y_centres, (xg, yg) = grid(nx=6, ny=4)
    values = linear_field(xg, yg)
    with pytest.raises(UndersampledError, match=r"6x4.*AKIMA_SPLINE.*5.*REDUCE_INTERP_ORDER"):
        render_grid(x_centres, y_centres, values, WIDTH, HEIGHT, "AKIMA_SPLINE", "THROW_EXCEPTION")
    with pytest.raises(UnsupportedStyleError, match="INCREASE_NXNYSAMPLE"):
        render_grid(x_centres, y_centres, values, WIDTH, HEIGHT, "AKIMA_SPLINE", "INCREASE_NXNYSAMPLE")
    # INCREASE_NXNYSAMPLE only complains when it would have to act.
    rendered = render_grid(x_centres, y_centres, values, WIDTH, HEIGHT, "CUBIC_SPLINE", "INCREASE_NXNYSAMPLE")
    np.testing.assert_allclose(rendered, pixel_field(), rtol=1e-6)
    for style in [*UNSUPPORTED_STYLES, "NONE"]:
        with pytest.raises(UnsupportedStyleError):
            render_grid(x_centres, y_centres, values, WIDTH, HEIGHT, style, "REDUCE_INTERP_ORDER")
    with pytest.raises(UnsupportedStyleError):
        render_grid(x_centres, y_centres, values, WIDTH, HEIGHT, "LINEAR", "SOMETIMES")
    with pytest.raises(ValueError, match="x_centres"):
        render_grid(x_centres[:-1], y_centres, values, WIDTH, HEIGHT, "LINEAR", "THROW_EXCEPTION")
