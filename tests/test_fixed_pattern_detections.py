# This file is part of skyframes.
#
# Developed for the LSST Data Management System.
# Use of this source code is governed by a 3-clause BSD-style
# license that can be found in the LICENSE file.

"""maxDetectedFraction: detections of the response itself are kept in the pixel stack.

The truth is an analytic response: a gentle gradient with compact dust spots
(-8 %) and one hot column (+6 %).  Object detection on a single exposure would
flag those in every exposure, so each input flags them (DETECTED_NEGATIVE on
the spots, DETECTED on the column) besides the stars it really holds.  The
stars move between inputs, the response does not.
"""

import numpy as np
import pytest
from lsst.images import Box, Image, Mask, MaskedImage
from lsst.pex.config import FieldValidationError

from lsst.skyframes import SkyMeasurementTask
from lsst.skyframes.build import CpSkyCombineConfig, CpSkyCombineTask, CpSkySubtractBackgroundConfig
from lsst.skyframes.errors import BoxMismatchError
from lsst.skyframes.mask_planes import default_mask_schema
from lsst.skyframes.object_mask import ObjectMask
from lsst.skyframes.pixel_stack import PixelStackBins, ignore_fixed_detections

SIZE = 64
BIN = 16
N_INPUTS = 20
SIGMA = 1e-3
STAR = 0.5


def _response() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The response (normalised residual) and where its spots and hot column are."""
    y, x = np.mgrid[:SIZE, :SIZE]
    spots = np.zeros((SIZE, SIZE), bool)
    for cy, cx in ((7, 9), (22, 40), (41, 18), (55, 52), (30, 27), (12, 58)):
        spots |= (y - cy) ** 2 + (x - cx) ** 2 <= 6
    column = x == 35
    response = 1e-3 * x / SIZE - 0.08 * spots + 0.06 * column
    return response, spots, column


def _true_bins(response: np.ndarray) -> np.ndarray:
    n = SIZE // BIN
    return response.reshape(n, BIN, n, BIN).mean(axis=(1, 3))


def _inputs(seed: int = 11) -> tuple[list[MaskedImage], np.ndarray]:
    """Residual images: response + noise + stars (at 10 % of pixels, moving), with their detections."""
    response, spots, column = _response()
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(N_INPUTS):
        stars = rng.random((SIZE, SIZE)) < 0.10
        values = response + SIGMA * rng.standard_normal(response.shape) + STAR * stars
        mask = Mask(0, schema=default_mask_schema(), bbox=Box.from_shape(response.shape))
        mask.set("DETECTED", stars | column)
        mask.set("DETECTED_NEGATIVE", spots & ~stars)
        images.append(MaskedImage(Image(values.astype(np.float32)), mask=mask))
    return images, response


def _task(fraction: float | None) -> SkyMeasurementTask:
    task = SkyMeasurementTask()
    task.config.background.xBinSize = BIN
    task.config.background.yBinSize = BIN
    task.config.maxDetectedFraction = fraction
    return task


def _noise() -> float:
    # A bin's mean over the ~90 % of the inputs' pixels that no star covers.
    return SIGMA / np.sqrt(N_INPUTS * BIN * BIN * 0.9)


def test_fixed_detections_are_kept_and_stars_rejected():
    images, response = _inputs()
    truth = _true_bins(response)
    kept = _task(0.5).averageImages(images).image.array
    left_out = _task(None).averageImages(images).image.array
    # The option: within noise of the true bins although every input flags the spots and the column.
    assert np.max(np.abs(kept - truth)) < 5 * _noise()
    # The default leaves the spots and the column out of every bin that holds them.
    assert np.max(np.abs(left_out - truth)) > 100 * _noise()


def test_default_is_unchanged_by_holding_detections_apart():
    images, _ = _inputs(seed=4)
    task = _task(None)
    with_masks = task.averageImages(images).image.array
    # The same inputs as plain images with their detection flags given apart.
    plain, flags = [], []
    for image in images:
        values = image.image.array.copy()
        detected = image.mask.get("DETECTED") | image.mask.get("DETECTED_NEGATIVE")
        plain.append(Image(values))
        flags.append(detected)
    np.testing.assert_array_equal(task.averageImages(plain, detections=flags).image.array, with_masks)
    with pytest.raises(BoxMismatchError, match="detection"):
        task.averageImages(plain, detections=flags[:-1])
    with pytest.raises(BoxMismatchError, match="detection array 0"):
        task.averageImages(plain, detections=[f[:-1] for f in flags])
    # None stands for an image without detections, as an all-False array does.
    none_first = [None, *flags[1:]]
    cleared = [np.zeros_like(flags[0]), *flags[1:]]
    np.testing.assert_array_equal(
        task.averageImages(plain, detections=none_first).image.array,
        task.averageImages(plain, detections=cleared).image.array,
    )


def test_fraction_counts_only_inputs_that_hold_the_pixel():
    values = np.zeros((4, 1, 3))
    values[3, 0, 2] = np.nan
    bad = np.zeros((4, 1, 3), bool)
    bad[2, 0, 1] = True
    detected = np.zeros((4, 1, 3), bool)
    detected[:2, 0, 0] = True  # 2 of 4 inputs: not more than half
    detected[:2, 0, 1] = True  # 2 of the 3 inputs that hold it
    detected[:2, 0, 2] = True  # 2 of the 3 finite values
    leave_out = ignore_fixed_detections(values, bad, detected, 0.5)
    np.testing.assert_array_equal(leave_out[:, 0, 0], detected[:, 0, 0])
    np.testing.assert_array_equal(leave_out[:, 0, 1], bad[:, 0, 1])
    assert not leave_out[:, 0, 2].any()
    np.testing.assert_array_equal(ignore_fixed_detections(values, bad, detected, None), bad | detected)


def test_fraction_is_validated():
    edges = np.array([0, 4])
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="max_detected_fraction"):
            PixelStackBins(edges, edges, max_detected_fraction=fraction)
    with pytest.raises(FieldValidationError):
        SkyMeasurementTask().config.maxDetectedFraction = 1.0
    config = CpSkyCombineConfig()
    config.sky.maxDetectedFraction = 0.5
    with pytest.raises(FieldValidationError, match="combineLevel='pixel'"):
        config.validate()
    config.combineLevel = "pixel"
    config.validate()
    # cpSkySubtractBackground bins each exposure alone: the field would be silently ignored there.
    subtract = CpSkySubtractBackgroundConfig()
    subtract.sky.maxDetectedFraction = 0.9
    with pytest.raises(FieldValidationError, match="cpSkyCombine:sky.maxDetectedFraction"):
        subtract.validate()
    # skyCorr applies a finished frame: nothing there weighs detections across exposures.
    from lsst.skyframes.correction import SkyCorrectionConfig

    apply = SkyCorrectionConfig()
    apply.bgModel1.xSize = apply.bgModel1.ySize = 81.92
    apply.validate()
    apply.sky.maxDetectedFraction = 0.9
    with pytest.raises(FieldValidationError, match="SkyCorrectionTask.*cpSkyCombine:sky.maxDetectedFraction"):
        apply.validate()


def test_object_mask_keeps_detected_values_on_request():
    rng = np.random.default_rng(2)
    before = rng.normal(size=(8, 8)).astype(np.float32)
    after = before.copy()
    mask = Mask(0, schema=default_mask_schema(), bbox=Box.from_shape((8, 8)))
    detected = np.zeros((8, 8), bool)
    detected[2:4, 2:5] = True
    bad = np.zeros((8, 8), bool)
    bad[6, 1] = True
    mask.set("DETECTED", detected)
    mask.set("BAD", bad)
    after[detected | bad] = 7.0
    object_mask = ObjectMask.fromMasking(before, MaskedImage(Image(after.copy()), mask=mask))
    restored = object_mask.applyTo(Image(before.copy()), ("DETECTED", "DETECTED_NEGATIVE")).image.array
    np.testing.assert_array_equal(restored[detected], before[detected])
    np.testing.assert_array_equal(restored[bad], 7.0)
    np.testing.assert_array_equal(object_mask.applyTo(Image(before.copy())).image.array, after)


def test_cp_sky_combine_pixel_level_with_fraction_is_average_images():
    images, response = _inputs(seed=5)
    config = CpSkyCombineConfig()
    config.sky.background.xBinSize = BIN
    config.sky.background.yBinSize = BIN
    config.combineLevel = "pixel"
    config.sky.maxDetectedFraction = 0.5
    task = CpSkyCombineTask(config=config)
    residuals = [task.sky.measureBackground(image) for image in images]
    result = task.run(
        residuals, list(range(N_INPUTS)), residualImages=[lambda image=image: image for image in images]
    )
    expected = task.sky.averageImages(images).image.array
    np.testing.assert_array_equal(result.outputCalib.image.array, expected)
    assert np.max(np.abs(expected - _true_bins(response))) < 5 * _noise()
