"""The one clipped least-squares fit behind solveScales and fit_component_scales."""

from __future__ import annotations

import numpy as np
import pytest
from lsst.images import Image, MaskedImage

from lsst.skyframes import SkyMeasurementConfig, SkyMeasurementTask
from lsst.skyframes._least_squares import clipped_least_squares
from lsst.skyframes.errors import NoDataError
from lsst.skyframes.mask_planes import default_mask_schema
from lsst.skyframes.pca import fit_component_scales
from lsst.skyframes.sky_measurement import REFERENCE_IQR_TO_SIGMA


def samples(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and sky samples with noise, outliers and a NaN: rejection has work to do."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 80))
    sky = rng.uniform(0.5, 1.5, n)
    image = 2.5 * sky + rng.normal(0.0, 0.01, n)
    outliers = rng.integers(0, n, n // 5)
    image[outliers] += rng.normal(0.0, 3.0, outliers.size)
    image[rng.integers(0, n)] = np.nan
    return image, sky


def fit(image: np.ndarray, sky: np.ndarray, config: SkyMeasurementConfig) -> np.ndarray:
    return clipped_least_squares(
        image,
        sky,
        n_iter=config.skyIter,
        rejection=config.skyRej,
        iqr_to_sigma=REFERENCE_IQR_TO_SIGMA,
        too_few_message=lambda kept, components: "too few",
    )


@pytest.mark.parametrize("seed", range(20))
def test_one_component_is_solve_scales_bit_for_bit(seed):
    image, sky = samples(seed)
    task = SkyMeasurementTask()
    expected = task.solveScales([(image[:5], sky[:5]), (image[5:], sky[5:])])
    # As one column or as a 1-d array.
    assert fit(image, sky, task.config)[0] == expected
    assert fit(image, sky[:, None], task.config)[0] == expected
    # Rejection did something, so the comparison covers it.
    assert expected != float(np.nansum(image * sky) / np.sum(sky[np.isfinite(image)] ** 2))


def test_fit_component_scales_with_one_template_is_solve_scales():
    """The K-template fit of pca on one template gives solveScales' number on measureScale's samples."""
    config = SkyMeasurementConfig()
    config.background.xBinSize = config.background.yBinSize = 16
    task = SkyMeasurementTask(config=config)
    y, x = np.mgrid[0:64, 0:64]
    rng = np.random.default_rng(4)
    images, templates = [], []
    for detector in range(3):
        pattern = 1.0 + 0.003 * x + 0.002 * (detector + 1) * y
        frame = MaskedImage(Image(pattern.astype(np.float32)), mask_schema=default_mask_schema())
        templates.append([task.measureBackground(frame)])
        pixels = 1234.0 * pattern + rng.normal(0.0, 2.0, pattern.shape)
        pixels[rng.integers(0, 64, 4), rng.integers(0, 64, 4)] += 3000.0
        images.append(MaskedImage(Image(pixels.astype(np.float32)), mask_schema=default_mask_schema()))
    scale = task.solveScales(
        [task.measureScale(image, t[0]) for image, t in zip(images, templates, strict=True)]
    )
    coefficients = fit_component_scales(images, templates, config)
    assert coefficients.shape == (1,)
    assert coefficients[0] == scale
    assert scale == pytest.approx(1234.0, rel=1e-3)


def test_several_components_reject_outliers():
    rng = np.random.default_rng(8)
    x = rng.uniform(0.5, 1.5, (200, 3))
    truth = np.array([2.0, -0.5, 0.25])
    y = x @ truth + rng.normal(0.0, 1e-3, 200)
    y[[4, 50, 120]] += [5.0, -7.0, 3.0]
    coefficients = clipped_least_squares(
        y,
        x,
        n_iter=3,
        rejection=3.0,
        iqr_to_sigma=REFERENCE_IQR_TO_SIGMA,
        too_few_message=lambda kept, components: "x",
    )
    np.testing.assert_allclose(coefficients, truth, atol=1e-3)


def test_too_few_and_zero_templates():
    def message(kept: int, components: int) -> str:
        return f"{kept} for {components}"

    with pytest.raises(NoDataError, match="1 for 2"):
        clipped_least_squares(
            np.array([1.0, np.nan]),
            np.ones((2, 2)),
            n_iter=3,
            rejection=3.0,
            iqr_to_sigma=REFERENCE_IQR_TO_SIGMA,
            too_few_message=message,
        )
    zero = {"n_iter": 3, "rejection": 3.0, "iqr_to_sigma": REFERENCE_IQR_TO_SIGMA, "too_few_message": message}
    with pytest.raises(NoDataError, match="all zero"):
        clipped_least_squares(np.ones(4), np.zeros(4), zero_message="all zero", **zero)
    # Without a message the coefficient of a zero template is 0, as lstsq's minimum-norm answer.
    assert clipped_least_squares(np.ones(4), np.zeros(4), **zero)[0] == 0.0
