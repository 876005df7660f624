"""BackgroundMI / BackgroundList against analytic fields."""

import numpy as np
import pytest
from lsst.images import Box, Image, MaskedImage

from lsst.skyframes import (
    BackgroundControl,
    BackgroundList,
    BackgroundMI,
    Interpolate,
    StatisticsControl,
    UndersampleStyle,
    makeBackground,
)
from lsst.skyframes.errors import BoxMismatchError, NoDataError, UnsupportedStyleError
from lsst.skyframes.mask_planes import default_mask_schema

SPLINE_STYLES = ["LINEAR", "NATURAL_SPLINE", "CUBIC_SPLINE", "AKIMA_SPLINE"]


def linear_field(bbox: Box, a: float = 100.0, bx: float = 0.03, by: float = -0.02) -> np.ndarray:
    y, x = np.mgrid[bbox.y.min : bbox.y.max + 1, bbox.x.min : bbox.x.max + 1]
    return a + bx * x + by * y


def masked(array: np.ndarray, bbox: Box) -> MaskedImage:
    return MaskedImage(Image(array.astype(np.float32), bbox=bbox), mask_schema=default_mask_schema())


@pytest.mark.parametrize("style", SPLINE_STYLES)
def test_linear_field_round_trip(style):
    # A linear field's bin mean is its value at the bin centre, so binning with
    # MEAN and rendering must give the field back everywhere, including the
    # margins beyond the outer bin centres (extrapolation).
    bbox = Box.from_shape((203, 317), start=(-40, 1000))
    truth = linear_field(bbox)
    control = BackgroundControl(style, 9, 6, "REDUCE_INTERP_ORDER", StatisticsControl(), "MEAN")
    background = makeBackground(masked(truth, bbox), control)
    rendered = background.getImageF()
    assert rendered.bbox == bbox
    assert rendered.array.dtype == np.float32
    np.testing.assert_allclose(rendered.array, truth, rtol=1e-6)


def test_bin_centres_follow_afw_layout_and_bbox_origin():
    bbox = Box.from_shape((50, 103), start=(7, -3))
    stats = masked(np.zeros((4, 7)), Box.from_shape((4, 7)))
    background = BackgroundMI(bbox, stats)
    # end_i = min(((i+1)*W + n//2)//n, W); centre = origin + size/2 - 0.5, plus bbox minimum.
    ends = [min(((i + 1) * 103 + 3) // 7, 103) for i in range(7)]
    origins = [0, *ends[:-1]]
    expected = [o + (e - o) / 2 - 0.5 - 3 for o, e in zip(origins, ends, strict=True)]
    np.testing.assert_allclose(background.getBinCentersX(), expected)
    ends_y = [min(((i + 1) * 50 + 2) // 4, 50) for i in range(4)]
    origins_y = [0, *ends_y[:-1]]
    expected_y = [o + (e - o) / 2 - 0.5 + 7 for o, e in zip(origins_y, ends_y, strict=True)]
    np.testing.assert_allclose(background.getBinCentersY(), expected_y)


def test_stats_image_is_shared():
    bbox = Box.from_shape((64, 64))
    background = makeBackground(masked(np.full((64, 64), 5.0), bbox), BackgroundControl("LINEAR", 4, 4))
    np.testing.assert_allclose(background.getImageF().array, 5.0)
    background.getStatsImage().image.array *= 3
    np.testing.assert_allclose(background.getImageF().array, 15.0)


def test_masked_pixels_are_ignored_by_name():
    bbox = Box.from_shape((64, 64))
    image = masked(np.full((64, 64), 10.0), bbox)
    image.image.array[10:20, 10:20] = 1e6
    image.mask.set("DETECTED", image.image.array > 1e5)
    control = BackgroundControl(
        "LINEAR", 4, 4, statisticsControl=StatisticsControl(andMask=["DETECTED", "NOPE"])
    )
    background = makeBackground(image, control)
    np.testing.assert_array_equal(background.getStatsImage().image.array, 10.0)


def test_too_many_bins_is_an_error():
    bbox = Box.from_shape((10, 10))
    with pytest.raises(BoxMismatchError, match="bins"):
        makeBackground(masked(np.zeros((10, 10)), bbox), BackgroundControl("LINEAR", 11, 2))
    with pytest.raises(ValueError, match="nxSample"):
        BackgroundControl("LINEAR", 0, 2)


def test_background_list_sum_clone_and_access():
    bbox = Box.from_shape((80, 120), start=(5, 5))
    first = makeBackground(masked(linear_field(bbox, 10, 0.1, 0.0), bbox), BackgroundControl("LINEAR", 6, 4))
    second = makeBackground(
        masked(linear_field(bbox, 1, 0.0, 0.2), bbox), BackgroundControl("AKIMA_SPLINE", 6, 5)
    )
    bg_list = BackgroundList(first)
    bg_list.append((second, "AKIMA_SPLINE", "REDUCE_INTERP_ORDER", -1, 0, 0, False))
    assert len(bg_list) == 2
    assert bg_list[1][1] is Interpolate.AKIMA_SPLINE
    assert bg_list[1][2] is UndersampleStyle.REDUCE_INTERP_ORDER
    assert [element[0] for element in bg_list] == [first, second]
    truth = linear_field(bbox, 10, 0.1, 0.0) + linear_field(bbox, 1, 0.0, 0.2)
    np.testing.assert_allclose(bg_list.getImage().array, truth, rtol=1e-6)

    clone = bg_list.clone()
    clone[0][0].getStatsImage().image.array[:] = 0
    np.testing.assert_allclose(bg_list.getImage().array, truth, rtol=1e-6)
    np.testing.assert_allclose(clone.getImage().array, truth - linear_field(bbox, 10, 0.1, 0.0), rtol=1e-5)


def test_background_list_errors():
    with pytest.raises(NoDataError, match="empty"):
        BackgroundList().getImage()
    with pytest.raises(TypeError, match="7-tuple"):
        BackgroundList().append((1, 2, 3))
    a = makeBackground(masked(np.ones((20, 20)), Box.from_shape((20, 20))), BackgroundControl("LINEAR", 2, 2))
    b = makeBackground(masked(np.ones((20, 21)), Box.from_shape((20, 21))), BackgroundControl("LINEAR", 2, 2))
    with pytest.raises(BoxMismatchError, match="element 1"):
        BackgroundList(a, b).getImage()
    chebyshev = BackgroundList((a, "LINEAR", "REDUCE_INTERP_ORDER", 0, 1, 1, True))
    with pytest.raises(UnsupportedStyleError, match="CHEBYSHEV"):
        chebyshev.getImage()
    with pytest.raises(UnsupportedStyleError):
        a.getImageF("NONE")


def test_all_nan_bins_render_nan_and_partial_nan_is_dropped():
    bbox = Box.from_shape((60, 90))
    truth = linear_field(bbox, 3, 0.05, 0.02)
    image = masked(truth, bbox)
    # Fully mask the pixels of one bin: that bin is NaN and interpolation goes around it.
    image.mask.set("BAD", np.pad(np.ones((15, 15), bool), ((15, 30), (30, 45))))
    control = BackgroundControl(
        "LINEAR", 6, 4, statisticsControl=StatisticsControl(andMask=["BAD"]), prop="MEAN"
    )
    background = makeBackground(image, control)
    stats = background.getStatsImage().image.array
    assert np.isnan(stats[1, 2]) and np.isfinite(np.delete(stats.ravel(), 1 * 6 + 2)).all()
    assert np.isnan(background.getStatsImage().variance.array[1, 2])
    np.testing.assert_allclose(background.getImageF().array, truth, rtol=1e-6)
    image.mask.set("BAD")
    assert np.isnan(makeBackground(image, control).getImageF().array).all()


def test_spline_field_and_background_map_conversion():
    bbox = Box.from_shape((120, 160), start=(3, 11))
    y, x = np.mgrid[bbox.y.min : bbox.y.max + 1, bbox.x.min : bbox.x.max + 1]
    truth = 50 + 5 * np.sin(x / 40.0) * np.cos(y / 50.0)
    background = makeBackground(masked(truth, bbox), BackgroundControl("AKIMA_SPLINE", 8, 6, prop="MEAN"))
    field = background.toSplineField()
    np.testing.assert_array_equal(field.x, background.getBinCentersX())
    np.testing.assert_array_equal(field.y, background.getBinCentersY())
    np.testing.assert_array_equal(field.data, background.getStatsImage().image.array)
    inner = Box.from_shape(
        (int(field.y[-1]) - int(np.ceil(field.y[0])), int(field.x[-1]) - int(np.ceil(field.x[0]))),
        start=(int(np.ceil(field.y[0])), int(np.ceil(field.x[0]))),
    )
    ours = background.getImageF()[inner].array
    np.testing.assert_allclose(field.render(inner).array, ours, rtol=1e-5)
    bg_map = BackgroundList(background).toBackgroundMap("sky")
    assert bg_map.subtracted is not None
    assert list(bg_map) == ["sky"]


def test_afw_conversion_needs_afw():
    background = makeBackground(
        masked(np.ones((8, 8)), Box.from_shape((8, 8))), BackgroundControl("LINEAR", 2, 2)
    )
    with pytest.raises(ImportError, match="lsst.afw"):
        background.toAfw()
