"""FocalPlaneBackground against analytic truth.

The synthetic camera is 3x3 detectors of 1024 pixels of 0.015 mm with 64-pixel
gaps, so it spans (3 * 1024 + 2 * 64) * 0.015 = 48 mm on each axis. Bins are a
quarter of a detector (256 pixels, 3.84 mm); the grid starts at the outer
pixel edge of the corner detector, which is the centre of bin 1, so bin
boundaries fall on pixel edges there.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from astropy.io import fits
from lsst.images import Box, Image, MaskedImage
from lsst.pex.config import FieldValidationError

from lsst.skyframes.background import ApproximateControl, BackgroundList
from lsst.skyframes.camera import Camera, DetectorGeometry, make_synthetic_camera
from lsst.skyframes.errors import BackgroundFileError, BoxMismatchError, NoDataError
from lsst.skyframes.focal_plane import FocalPlaneBackground, FocalPlaneBackgroundConfig, _fill_lines
from lsst.skyframes.interpolate import (
    Interpolate,
    UndersampleStyle,
    interpolate_lines,
    lookupMaxInterpStyle,
    lookupMinInterpPoints,
)
from lsst.skyframes.mask_planes import default_mask_schema

PIXEL = 0.015
SIZE = 1024 * PIXEL / 4  # 3.84 mm = 256 pixels
# Field f = A + B fx + C fy (fx, fy in mm).
A, B, C = 100.0, 0.5, -0.3


def make_config(**overrides) -> FocalPlaneBackgroundConfig:
    config = FocalPlaneBackgroundConfig()
    config.xSize = SIZE
    config.ySize = SIZE
    config.pixelSize = PIXEL
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


def linear(fx, fy):
    return A + B * fx + C * fy


def pixel_positions(detector: DetectorGeometry) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0 : detector.height, 0 : detector.width]
    return detector.pixel_to_focal_plane(x, y)


def field_image(detector, field, dtype=np.float64, start=(0, 0)) -> MaskedImage:
    """The detector's image of a focal-plane field, with its bbox at ``start``."""
    values = np.asarray(field(*pixel_positions(detector)), dtype=dtype)
    values = np.broadcast_to(values, detector.shape).copy()
    bbox = Box.from_shape(detector.shape, start=start)
    return MaskedImage(Image(values, bbox=bbox), mask_schema=default_mask_schema())


def constant_image(detector, value=7.0, seed=0, start=(0, 0)) -> MaskedImage:
    """A constant image with masked 1e6 "sources" and a few NaN pixels."""
    image = field_image(detector, lambda fx, fy: np.full(np.shape(fx), value), np.float32, start)
    rng = np.random.default_rng(seed)
    sources = rng.random(detector.shape) < 0.02
    image.image.array[sources] = 1e6
    image.mask.set("DETECTED", sources)
    image.image.array[rng.random(detector.shape) < 0.001] = np.nan
    return image


def accumulate(config, camera, make_image) -> FocalPlaneBackground:
    background = FocalPlaneBackground.fromCamera(config, camera)
    for detector in camera:
        background.addCcd(make_image(detector), detector)
    return background


def bin_centroids(background, camera):
    """Per bin of the grid: the number of pixels whose centre falls in it and
    the mean focal-plane position of those pixels, found by brute force.
    """
    nx, ny = background.dims
    count = np.zeros(nx * ny)
    sum_x = np.zeros(nx * ny)
    sum_y = np.zeros(nx * ny)
    for detector in camera:
        fx, fy = pixel_positions(detector)
        i = np.floor((fx - background.fpMin[0]) / background.config.xSize + 1.5).astype(int)
        j = np.floor((fy - background.fpMin[1]) / background.config.ySize + 1.5).astype(int)
        label = (j * nx + i).ravel()
        count += np.bincount(label, minlength=nx * ny)
        sum_x += np.bincount(label, weights=fx.ravel(), minlength=nx * ny)
        sum_y += np.bincount(label, weights=fy.ravel(), minlength=nx * ny)
    with np.errstate(invalid="ignore"):
        return count.reshape(ny, nx), (sum_x / count).reshape(ny, nx), (sum_y / count).reshape(ny, nx)


def rendered(background, detector, start=(0, 0)) -> np.ndarray:
    bg_list = background.toCcdBackground(detector, Box.from_shape(detector.shape, start=start))
    return bg_list.getImage().array


@pytest.fixture(scope="module")
def camera() -> Camera:
    return make_synthetic_camera()


@pytest.fixture(scope="module")
def linear_background(camera) -> FocalPlaneBackground:
    return accumulate(make_config(interpolation="LINEAR"), camera, lambda d: field_image(d, linear))


def rotated_camera() -> Camera:
    """An unrotated, a 90-degree and a 30-degree detector, well apart.

    Rectangular (not square) detectors, so that a wrong axis swap shows.
    """
    detectors = [
        DetectorGeometry(
            id=k,
            name=f"D{k}",
            width=600,
            height=400,
            centre_mm=centre,
            pixel_size_mm=PIXEL,
            rotation_deg=angle,
        )
        for k, (centre, angle) in enumerate([((0.0, 0.0), 0.0), ((16.0, 1.0), 90.0), ((33.0, -2.0), 30.0)])
    ]
    return Camera("Rotated", tuple(detectors))


# --- Config ---------------------------------------------------------------------


def test_config_defaults_and_validation():
    config = FocalPlaneBackgroundConfig()
    assert config.pixelSize == 1.0
    assert config.minFrac == 0.1
    assert list(config.mask) == ["BAD", "SAT", "INTRP", "DETECTED", "DETECTED_NEGATIVE", "EDGE", "NO_DATA"]
    assert config.interpolation == "AKIMA_SPLINE"
    assert config.doSmooth is False
    assert config.smoothScale == 2.0
    assert config.binning == 64
    with pytest.raises(FieldValidationError, match="xSize"):
        config.validate()  # no default bin size
    with pytest.raises(FieldValidationError):
        config.xSize = 0.0
    with pytest.raises(FieldValidationError):
        config.ySize = -1.0
    with pytest.raises(FieldValidationError):
        config.interpolation = "CUBIC_SPLINE"
    make_config().validate()


# --- Geometry ---------------------------------------------------------------------


def test_geometry_from_camera(camera):
    background = FocalPlaneBackground.fromCamera(make_config(), camera)
    # Outer pixel edges: centres at -16.32, 0, 16.32 mm (pitch 1088 px), half
    # a detector (7.68 mm) either side.
    x_min = -(1088 + 512) * PIXEL
    width = (3 * 1024 + 2 * 64) * PIXEL
    assert background.fpMin == pytest.approx((x_min, x_min), abs=1e-12)
    expected = math.ceil(width / SIZE) + 2
    assert expected == 15  # 48 / 3.84 = 12.5 -> 13 bins + 2 padding
    assert background.dims == (expected, expected)
    assert background.values.shape == background.numbers.shape == (15, 15)
    assert background.values.dtype == np.float64
    sx, sy = background.focalPlaneToSample(*background.fpMin)
    assert (sx, sy) == (1.0, 1.0)
    sx, sy = background.focalPlaneToSample(x_min + 2.5 * SIZE, x_min + 0.25 * SIZE)
    assert sx == pytest.approx(3.5) and sy == pytest.approx(1.25)
    fx, fy = background.sampleToFocalPlane(3.5, 1.25)
    assert fx == pytest.approx(x_min + 2.5 * SIZE) and fy == pytest.approx(x_min + 0.25 * SIZE)


def test_clone_and_from_similar(camera):
    background = accumulate(make_config(), camera, constant_image)
    empty = FocalPlaneBackground.fromSimilar(background)
    assert (empty.dims, empty.fpMin, empty.config) == (background.dims, background.fpMin, background.config)
    assert not empty.numbers.any() and not empty.values.any()
    copy = background.clone()
    np.testing.assert_array_equal(copy.values, background.values)
    copy.values[:] = 0
    assert background.values.any()


# --- Accumulation ------------------------------------------------------------------


def test_constant_field(camera):
    config = make_config()
    # Images with a non-zero bbox origin: pixels are indexed by the detector grid.
    background = accumulate(config, camera, lambda d: constant_image(d, seed=d.id, start=(-7, 300)))
    count, _, _ = bin_centroids(background, camera)
    touched = background.numbers > 0
    # Every touched bin holds 7.0 exactly; sources, NaN and 1e6 pixels did not get in.
    np.testing.assert_array_equal(background.values[touched] / background.numbers[touched], 7.0)
    # N counts the unmasked finite pixels only.
    assert np.all(background.numbers <= count)
    assert np.all(background.numbers[touched] > 0.95 * count[touched])
    assert np.array_equal(touched, count > 0)
    np.testing.assert_array_equal(background.getStatsImage(), 7.0)
    for detector in camera:
        model = rendered(background, detector, start=(10, -20))
        np.testing.assert_allclose(model, 7.0, rtol=1e-6)


def test_linear_field_bin_values_are_the_field_at_the_pixel_centroid(camera, linear_background):
    background = linear_background
    count, cx, cy = bin_centroids(background, camera)
    np.testing.assert_array_equal(background.numbers, count)
    full = count == 256 * 256
    # Full bins along each axis: 2-4 (first detector), 6-8 (second; its
    # pixels start 1088 px from the grid origin), 10-13 (third, whose edges
    # fall on bin boundaries).
    assert full.sum() == 10 * 10
    touched = count > 0
    mean = background.values[touched] / background.numbers[touched]
    # A fully covered bin's pixel centroid is its centre...
    centre_x, centre_y = background.sampleToFocalPlane(*np.meshgrid(np.arange(15.0), np.arange(15.0)))
    np.testing.assert_allclose(cx[full], centre_x[full], rtol=0, atol=1e-9)
    np.testing.assert_allclose(cy[full], centre_y[full], rtol=0, atol=1e-9)
    # ... and every bin (partial ones at gaps and edges included) holds the
    # field at the centroid of the pixels it received: the field is linear and
    # the clipping removes nothing from a bounded ramp.
    np.testing.assert_allclose(mean, linear(cx[touched], cy[touched]), rtol=1e-9)


def test_linear_field_rendered_per_detector(camera, linear_background):
    background = linear_background
    stats = background.getStatsImage()
    assert np.isfinite(stats).all()
    # Tolerance from the geometry. A good bin holds f at the centroid of its
    # pixels; here partial bins are half-covered detector edges (centroid a
    # quarter bin off the centre) or gap bins (closer), so each bin is within
    # eps = (|B| xSize + |C| ySize) / 4 of f at its centre. LINEAR filling
    # interpolates (error <= eps) or extrapolates one bin into the padding
    # (error <= 2 eps); bilinear sampling and LINEAR rendering of the binned
    # model average those. Hence |error| <= (|B| xSize + |C| ySize) / 2 (the
    # gradient times half a bin), plus (|B| + |C|) * pixel for the half-pixel
    # offset between where the binned model is sampled, (i + 0.5) * binning,
    # and where the renderer places its bin centres, (i + 0.5) * binning - 0.5.
    bound = (abs(B) * SIZE + abs(C) * SIZE) / 2 + (abs(B) + abs(C)) * PIXEL
    # Where the bilinear sampling only sees full bins on every detector
    # (local pixels 255.5..767.5, 192..704 and 128..896 along each axis of
    # the three detectors of a row, see the previous test), with one binned
    # pixel (64 px) of margin for the renderer, only the half-pixel offset
    # and float32 rounding remain.
    inner = slice(256 + 64, 704 - 64)
    inner_bound = (abs(B) + abs(C)) * PIXEL / 2 + 1e-4
    errors = []
    for detector in camera:
        error = np.abs(rendered(background, detector) - linear(*pixel_positions(detector)))
        assert error.max() <= bound
        assert error[inner, inner].max() <= inner_bound
        errors.append(error)
    assert np.median(np.concatenate(errors)) < 0.05 * bound


def test_gap_bins_are_interpolated():
    # 640-pixel gaps: two bins of each gap column/row see no pixel at all.
    camera = make_synthetic_camera(gap_px=640)
    background = accumulate(make_config(interpolation="LINEAR"), camera, lambda d: field_image(d, linear))
    count, _, _ = bin_centroids(background, camera)
    empty = count == 0
    nx, ny = background.dims
    interior = np.zeros_like(empty)
    interior[1:-1, 1:-1] = True
    gap = empty & interior
    assert gap.sum() > 20
    stats = background.getStatsImage()
    assert np.isfinite(stats).all()
    fx, fy = background.sampleToFocalPlane(*np.meshgrid(np.arange(float(nx)), np.arange(float(ny))))
    # The neighbours of a gap are full bins or half-covered ones (centroid a
    # quarter bin off), and LINEAR interpolation between them keeps the error
    # within the neighbours' errors.
    bound = (abs(B) * SIZE + abs(C) * SIZE) / 4
    error = np.abs(stats - linear(fx, fy))
    assert error[gap].max() <= bound + 1e-9
    assert np.median(error[gap]) < bound


def test_image_must_match_detector(camera):
    background = FocalPlaneBackground.fromCamera(make_config(), camera)
    detector = camera[0]
    small = MaskedImage(Image(np.zeros((1000, 1024), np.float32)), mask_schema=default_mask_schema())
    with pytest.raises(BoxMismatchError, match="R00"):
        background.addCcd(small, detector)
    with pytest.raises(BoxMismatchError, match="bbox"):
        background.toCcdBackground(detector, Box.from_shape((1024, 1000)))


def test_plain_image_is_unmasked(camera):
    background = FocalPlaneBackground.fromCamera(make_config(), camera)
    detector = camera[4]
    background.addCcd(Image(np.full(detector.shape, 3.0, np.float32)), detector)
    assert background.numbers.sum() == 1024 * 1024
    np.testing.assert_array_equal(
        background.values[background.numbers > 0], 3.0 * background.numbers[background.numbers > 0]
    )


# --- minFrac --------------------------------------------------------------------------


def corner_image(detector):
    """Constant 7, except 100 in the pixels of bin (1, 1) of the corner detector."""
    image = field_image(detector, lambda fx, fy: np.full(np.shape(fx), 7.0))
    if detector.id == 0:
        image.image.array[:128, :128] = 100.0  # 128 x 128 px: a quarter of bin (1, 1)
    return image


def test_min_frac(camera):
    # Bin (1, 1) holds 128 * 128 pixels, a quarter of a bin: good at minFrac
    # 0.1, bad (and filled from its neighbours, all 7) at minFrac 0.3.
    kept = accumulate(make_config(minFrac=0.1), camera, corner_image)
    assert kept.numbers[1, 1] == 128 * 128
    assert kept.getStatsImage()[1, 1] == 100.0
    dropped = accumulate(make_config(minFrac=0.3), camera, corner_image)
    stats = dropped.getStatsImage()
    assert stats[1, 1] == pytest.approx(7.0, abs=1e-12)
    np.testing.assert_allclose(stats, 7.0, atol=1e-12)


def test_no_good_bin_raises(camera):
    def masked(detector):
        image = constant_image(detector)
        image.mask.set("BAD", np.ones(detector.shape, dtype=bool))
        return image

    background = accumulate(make_config(), camera, masked)
    assert not background.numbers.any()
    with pytest.raises(NoDataError, match=r"all 225 bins.*minFrac.*Lower minFrac.*bigger bins.*mask"):
        background.getStatsImage()
    with pytest.raises(NoDataError, match="minFrac"):
        background.toCcdBackground(camera[0], Box.from_shape((1024, 1024)))
    # Bins that are all partial fail at minFrac 1: 128 x 128 px of one detector.
    lonely = Camera("Lonely", (DetectorGeometry(0, "D", 128, 128, (0.0, 0.0), PIXEL),))
    background = accumulate(make_config(minFrac=1.0), lonely, constant_image)
    with pytest.raises(NoDataError, match="threshold|minFrac"):
        background.getStatsImage()


# --- Rotation --------------------------------------------------------------------------


def test_rotated_detectors_constant_field():
    camera = rotated_camera()
    config = make_config(xSize=SIZE / 2, ySize=SIZE / 2)  # 128-pixel bins
    background = accumulate(config, camera, constant_image)
    touched = background.numbers > 0
    np.testing.assert_array_equal(background.values[touched] / background.numbers[touched], 7.0)
    np.testing.assert_array_equal(background.getStatsImage(), 7.0)
    for detector in camera:
        np.testing.assert_allclose(rendered(background, detector), 7.0, rtol=1e-6)


def test_rotated_detectors_linear_field():
    camera = rotated_camera()
    config = make_config(xSize=SIZE / 2, ySize=SIZE / 2)
    background = accumulate(config, camera, lambda d: field_image(d, linear))
    count, cx, cy = bin_centroids(background, camera)
    np.testing.assert_array_equal(background.numbers, count)
    full = count >= 0.99 * 128 * 128
    # The rotated detector has fully covered bins of its own.
    fx, fy = background.sampleToFocalPlane(*np.nonzero(full)[::-1])
    assert np.any(fx > 33.0 - 3.0)
    touched = count > 0
    mean = background.values[touched] / background.numbers[touched]
    np.testing.assert_allclose(mean, linear(cx[touched], cy[touched]), rtol=1e-9)


@pytest.mark.parametrize("angle", [0.0, 90.0, 180.0, 270.0, -90.0])
def test_labelled_path_matches_rectangular_path(angle):
    detector = DetectorGeometry(0, "D", 600, 400, (1.0, -2.0), PIXEL, rotation_deg=angle)
    camera = Camera("One", (detector,))
    background = FocalPlaneBackground.fromCamera(make_config(xSize=SIZE / 2, ySize=SIZE / 3), camera)
    image = constant_image(detector)
    rng = np.random.default_rng(5)
    image.image.array[...] += rng.normal(0.0, 1.0, detector.shape).astype(np.float32)
    bad = image.mask.get("DETECTED")
    coef = background._pixel_to_sample(detector)
    swapped = angle % 180 == 90
    # The cross terms of an axis-aligned detector are exactly zero, so addCcd
    # takes the fast path.
    assert coef[0, 1 if swapped else 2] == 0.0 and coef[1, 2 if swapped else 1] == 0.0
    fast = background._rectangular_bins(image.image.array, bad, coef, swapped=swapped)
    slow = background._labelled_bins(image.image.array, bad, coef)

    def by_bin(result):
        i, j, mean, n = result
        keep = n > 0
        order = np.lexsort((i[keep], j[keep]))
        return [a[keep][order] for a in (i, j, mean, n)]

    fast_bins, slow_bins = by_bin(fast), by_bin(slow)
    nx, ny = background.dims
    assert fast_bins[0].size >= (nx - 2) * (ny - 2)  # the detector is all the camera
    for fast_part, slow_part in zip(fast_bins, slow_bins, strict=True):
        # Same pixels in the same order: identical statistics.
        np.testing.assert_array_equal(fast_part, slow_part)


def test_rotated_detector_image_axes():
    # On the 90-degree detector focal-plane x runs along -pixel y and
    # focal-plane y along pixel x, so the rendered model of the linear field
    # must have slopes (C, -B) * pixel along (x, y).
    camera = rotated_camera()
    # binning divides both detector sides: otherwise the renderer spreads
    # W // binning bins over all W pixels and stretches the model slightly
    # (as the reference does).
    config = make_config(interpolation="LINEAR", xSize=SIZE / 4, ySize=SIZE / 4, binning=20)
    background = accumulate(config, camera, lambda d: field_image(d, linear))
    for detector in camera:
        model = rendered(background, detector)
        assert model.shape == (400, 600)
        # Away from the edges, whose partial bins flatten the model.
        y, x = np.mgrid[100:300, 100:500]
        design = np.stack([np.ones(x.size), x.ravel(), y.ravel()], axis=1)
        inner = model[100:300, 100:500].ravel().astype(float)
        _, slope_x, slope_y = np.linalg.lstsq(design, inner, rcond=None)[0]
        theta = math.radians(detector.rotation_deg)
        # d f / d x_pixel = pixel * (B cos + C sin); d f / d y_pixel = pixel * (C cos - B sin)
        expected_x = PIXEL * (B * math.cos(theta) + C * math.sin(theta))
        expected_y = PIXEL * (C * math.cos(theta) - B * math.sin(theta))
        assert slope_x == pytest.approx(expected_x, rel=0.01, abs=1e-5)
        assert slope_y == pytest.approx(expected_y, rel=0.01, abs=1e-5)
        truth = linear(*pixel_positions(detector))
        assert np.median(np.abs(model - truth)) < (abs(B) + abs(C)) * SIZE / 4 / 4


# --- Smoothing --------------------------------------------------------------------------


def test_smoothing_keeps_a_constant_field(camera):
    # Gaps and edges leave bad bins; normalising by the smoothed weights keeps 7.
    config = make_config(doSmooth=True, smoothScale=1.5, xSize=SIZE / 4, ySize=SIZE / 4)
    background = accumulate(config, camera, constant_image)
    assert (background.numbers == 0).any()
    np.testing.assert_allclose(background.getStatsImage(), 7.0, rtol=1e-12)


def test_smoothing_spreads_a_spike_with_gaussian_weights(camera):
    config = make_config(doSmooth=True, smoothScale=1.0, xSize=SIZE / 2, ySize=SIZE / 2)
    background = FocalPlaneBackground.fromCamera(config, camera)
    nx, ny = background.dims
    assert (nx, ny) == (27, 27)
    base, spike, n = 10.0, 50.0, 1e4
    background.numbers[...] = n
    background.values[...] = base * n
    background.values[13, 13] = (base + spike) * n
    stats = background.getStatsImage()
    # scipy's kernel: sigma 1, truncated at 4 sigma, normalised; separable.
    offsets = np.arange(-4, 5)
    weights = np.exp(-0.5 * offsets**2)
    weights /= weights.sum()
    expected = np.full((ny, nx), base)
    expected[9:18, 9:18] += spike * np.outer(weights, weights)
    np.testing.assert_allclose(stats, expected, rtol=0, atol=1e-12)


def test_smoothing_leaves_far_bins_bad_then_fills_them(camera):
    # Only one detector: bins more than 4 sigma from it get no smoothed weight
    # and are filled by interpolation instead.
    config = make_config(doSmooth=True, smoothScale=0.5, interpolation="LINEAR")
    background = FocalPlaneBackground.fromCamera(config, camera)
    background.addCcd(constant_image(camera[0]), camera[0])
    np.testing.assert_allclose(background.getStatsImage(), 7.0, rtol=1e-12)


# --- Filling --------------------------------------------------------------------------


def naive_fill(values, bad, style):
    """Row by row, then column by column, as the reference does it."""
    values = values.copy()
    values[bad] = np.nan
    positions = np.arange(values.shape[1], dtype=float)
    for row, row_bad in zip(values, bad, strict=True):
        good = ~row_bad
        n = int(good.sum())
        if 0 < n < row.size:
            use = style if n >= lookupMinInterpPoints(style) else lookupMaxInterpStyle(n)
            row[row_bad] = interpolate_lines(positions[good], row[good], positions[row_bad], use)
    still = np.isnan(values)
    positions = np.arange(values.shape[0], dtype=float)
    for column, column_bad in zip(values.T, still.T, strict=True):
        good = ~column_bad
        n = int(good.sum())
        if 0 < n < column.size:
            use = style if n >= lookupMinInterpPoints(style) else lookupMaxInterpStyle(n)
            column[column_bad] = interpolate_lines(positions[good], column[good], positions[column_bad], use)
    return values


@pytest.mark.parametrize("style", ["CONSTANT", "LINEAR", "NATURAL_SPLINE", "AKIMA_SPLINE"])
def test_fill_matches_row_then_column_reference(style):
    rng = np.random.default_rng(2)
    values = rng.normal(0.0, 1.0, (14, 12))
    bad = rng.random(values.shape) < 0.4
    bad[0] = True  # a row without good bins: filled by the column step
    bad[1] = True
    bad[1, 3] = False  # one good bin: CONSTANT
    bad[2] = True
    bad[2, [2, 9]] = False  # two: LINEAR
    bad[3] = bad[4]  # a shared pattern, batched
    bad[5] = True
    bad[5, [1, 4, 8]] = False  # three: a cubic spline
    expected = naive_fill(values, bad, Interpolate[style])
    result = values.copy()
    result[bad] = np.nan
    _fill_lines(result, bad, Interpolate[style])
    _fill_lines(result.T, np.isnan(result).T, Interpolate[style])
    np.testing.assert_allclose(result, expected, rtol=1e-13, atol=1e-13)
    assert np.isfinite(result).all()


# --- toCcdBackground --------------------------------------------------------------------


def test_ccd_background_layout(camera, linear_background):
    detector = camera[0]
    bbox = Box.from_shape((1024, 1024), start=(5, -3))
    bg_list = linear_background.toCcdBackground(detector, bbox)
    assert isinstance(bg_list, BackgroundList) and len(bg_list) == 1
    bg, interp, undersample, approx, order_x, order_y, weighting = bg_list[0]
    assert interp == Interpolate.LINEAR
    assert undersample == UndersampleStyle.REDUCE_INTERP_ORDER
    assert approx == ApproximateControl.UNKNOWN
    assert (order_x, order_y, weighting) == (0, 0, False)
    assert bg.getImageBBox() == bbox
    stats = bg.getStatsImage()
    assert stats.bbox.shape == (16, 16)
    assert not stats.mask.get("BAD").any()
    np.testing.assert_array_equal(stats.variance.array, 0.0)
    # Binned pixel (i, j) is the field at detector pixel ((i + 0.5) * 64, (j + 0.5) * 64)
    # wherever the bilinear interpolation only uses full bins.
    fx, fy = detector.pixel_to_focal_plane(9.5 * 64, 6.5 * 64)
    assert stats.image.array[6, 9] == pytest.approx(linear(fx, fy), abs=1e-4)
    assert bg_list.getImage().bbox == bbox


def test_ccd_background_small_detector_and_outside_points():
    # A detector smaller than the binning still gets one binned pixel.
    camera = Camera("Tiny", (DetectorGeometry(0, "T", 40, 30, (0.0, 0.0), PIXEL),))
    background = accumulate(make_config(xSize=0.3, ySize=0.3), camera, constant_image)
    bg_list = background.toCcdBackground(camera[0], Box.from_shape((30, 40)))
    assert bg_list[0][0].getStatsImage().bbox.shape == (1, 1)
    # A detector half outside the grid: the outside binned pixels are BAD and
    # get the mean of the others.
    shifted = DetectorGeometry(1, "S", 640, 64, (0.0, 0.0), PIXEL)
    stats = background.toCcdBackground(shifted, Box.from_shape((64, 640)))[0][0].getStatsImage()
    bad = stats.mask.get("BAD")
    assert bad.any() and not bad.all()
    np.testing.assert_allclose(stats.image.array, 7.0, rtol=1e-6)
    far = DetectorGeometry(2, "F", 64, 64, (500.0, 0.0), PIXEL)
    with pytest.raises(NoDataError, match="outside"):
        background.toCcdBackground(far, Box.from_shape((64, 64)))


# --- merge ------------------------------------------------------------------------------


def noisy_image(detector):
    image = field_image(detector, linear, np.float32)
    rng = np.random.default_rng(detector.id)
    image.image.array[...] += rng.normal(0.0, 2.0, detector.shape).astype(np.float32)
    return image


def test_merge_equals_accumulating_everything(camera):
    config = make_config()
    together = accumulate(config, camera, noisy_image)
    first = FocalPlaneBackground.fromCamera(config, camera)
    second = FocalPlaneBackground.fromSimilar(first)
    for detector in camera:
        (first if detector.id % 2 else second).addCcd(noisy_image(detector), detector)
    assert first.merge(second) is first
    np.testing.assert_array_equal(first.numbers, together.numbers)
    np.testing.assert_allclose(first.values, together.values, rtol=1e-14)
    third = FocalPlaneBackground.fromSimilar(first)
    third += first
    np.testing.assert_array_equal(third.values, first.values)


def test_merge_mismatch_raises(camera):
    one = FocalPlaneBackground.fromCamera(make_config(), camera)
    other = FocalPlaneBackground.fromCamera(make_config(xSize=SIZE / 2), camera)
    with pytest.raises(BoxMismatchError, match=r"15x15 bins of 3.84x3.84 mm.*27x15 bins of 1.92x3.84 mm"):
        one.merge(other)
    shifted = FocalPlaneBackground(one.config, one.dims, (one.fpMin[0] + 1.0, one.fpMin[1]))
    with pytest.raises(BoxMismatchError, match="different grids"):
        one += shifted
    pixel = FocalPlaneBackground(make_config(pixelSize=0.01), one.dims, one.fpMin)
    with pytest.raises(BoxMismatchError, match="pixel size"):
        one.merge(pixel)


# --- FITS --------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path, camera):
    config = make_config(
        minFrac=0.25,
        interpolation="NATURAL_SPLINE",
        doSmooth=True,
        smoothScale=1.25,
        binning=32,
        mask=["BAD", "DETECTED"],
    )
    background = accumulate(config, camera, noisy_image)
    path = tmp_path / "fpbg.fits"
    background.writeFits(path)
    return background, path


def test_fits_round_trip_is_exact(saved):
    background, path = saved
    read = FocalPlaneBackground.readFits(str(path))
    assert read.dims == background.dims
    assert read.fpMin == background.fpMin
    np.testing.assert_array_equal(read.values, background.values)
    np.testing.assert_array_equal(read.numbers, background.numbers)
    assert read.config.compare(background.config)
    np.testing.assert_array_equal(read.getStatsImage(), background.getStatsImage())
    with fits.open(path) as hdul:
        assert hdul[0].header["FPBGVER"] == 1
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "VALUES", "NUMBERS"]
        assert hdul["VALUES"].data.dtype == np.dtype(">f8")
    assert os.listdir(path.parent) == ["fpbg.fits"]


def test_fits_missing_file(tmp_path):
    path = tmp_path / "nope.fits"
    with pytest.raises(BackgroundFileError, match="nope.fits"):
        FocalPlaneBackground.readFits(path)


def test_fits_corrupt_and_truncated_files(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(data[: len(data) - 4000])
    with pytest.raises(BackgroundFileError, match="truncated.fits"):
        FocalPlaneBackground.readFits(truncated)
    header_only = tmp_path / "header_only.fits"
    header_only.write_bytes(data[:2880])
    with pytest.raises(BackgroundFileError, match="header_only.fits"):
        FocalPlaneBackground.readFits(header_only)
    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(b"not a FITS file at all" * 200)
    with pytest.raises(BackgroundFileError, match="garbage.fits"):
        FocalPlaneBackground.readFits(garbage)


def test_fits_wrong_version_missing_keys_and_shapes(saved, tmp_path):
    background, path = saved

    def variant(name, edit):
        target = tmp_path / name
        with fits.open(path) as hdul:
            edit(hdul)
            hdul.writeto(target)
        return target

    wrong = variant("v2.fits", lambda h: h[0].header.__setitem__("FPBGVER", 2))
    with pytest.raises(BackgroundFileError, match=r"v2.fits.*version 2.*version 1"):
        FocalPlaneBackground.readFits(wrong)
    unversioned = variant("nover.fits", lambda h: h[0].header.remove("FPBGVER"))
    with pytest.raises(BackgroundFileError, match=r"nover.fits.*FPBGVER"):
        FocalPlaneBackground.readFits(unversioned)
    no_size = variant("nosize.fits", lambda h: h[0].header.remove("XSIZE"))
    with pytest.raises(BackgroundFileError, match=r"nosize.fits.*XSIZE"):
        FocalPlaneBackground.readFits(no_size)
    no_hdu = variant("nohdu.fits", lambda h: h.pop(2))
    with pytest.raises(BackgroundFileError, match=r"nohdu.fits.*NUMBERS"):
        FocalPlaneBackground.readFits(no_hdu)

    def shrink(hdul):
        hdul["VALUES"].data = hdul["VALUES"].data[:-1]

    wrong_shape = variant("shape.fits", shrink)
    with pytest.raises(BackgroundFileError, match=r"shape.fits.*VALUES"):
        FocalPlaneBackground.readFits(wrong_shape)
    bad_value = variant("badvalue.fits", lambda h: h[0].header.__setitem__("XSIZE", -1.0))
    with pytest.raises(BackgroundFileError, match="badvalue.fits"):
        FocalPlaneBackground.readFits(bad_value)


def test_failed_write_leaves_no_file(saved, tmp_path, monkeypatch):
    background, path = saved
    before = path.read_bytes()

    def broken_writeto(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", broken_writeto)
    with pytest.raises(OSError, match="disk full"):
        background.writeFits(path)
    new = tmp_path / "new.fits"
    with pytest.raises(OSError, match="disk full"):
        background.writeFits(new)
    monkeypatch.undo()
    assert not new.exists()
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(os.listdir(tmp_path)) == ["fpbg.fits"]

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        background.writeFits(new)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["fpbg.fits"]
