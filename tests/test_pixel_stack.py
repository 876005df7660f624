"""The per-pixel combination (combineLevel='pixel', SkyMeasurementTask.averageImages) against truth.

The response here has structure inside each 16-px bin (a 4 % step every fourth column, as a
readout channel's, and a dark row), whose true bin means are known exactly. The reference's
bin-level combination clips that structure and, when an input's masks fall where the response
is high (as detections whose background cannot follow the response do), biases each bin by the
pixels it lost; the per-pixel combination does neither.
"""

import numpy as np
import pytest
from lsst.images import Box, Image, Mask, MaskedImage
from lsst.pex.config import FieldValidationError

from lsst.skyframes import SkyMeasurementTask
from lsst.skyframes.build import CpSkyCombineConfig, CpSkyCombineConnections, CpSkyCombineTask
from lsst.skyframes.errors import BoxMismatchError, NoDataError
from lsst.skyframes.mask_planes import default_mask_schema
from lsst.skyframes.pixel_stack import PixelStackBins, strip_rows
from lsst.skyframes.statistics import stack_statistics

SIZE = 64
BIN = 16


def _pattern() -> np.ndarray:
    """Sub-bin structure: +4 % every fourth column, one dark row per bin, a gentle gradient."""
    y, x = np.mgrid[:SIZE, :SIZE]
    pattern = 0.04 * (x % 4 == 0) - 0.06 * (y % BIN == 5) + 0.002 * x / SIZE
    return pattern.astype(np.float64)


def _true_bins(pattern: np.ndarray) -> np.ndarray:
    n = SIZE // BIN
    return pattern.reshape(n, BIN, n, BIN).mean(axis=(1, 3))


def _inputs(pattern: np.ndarray, n: int, sigma: float, masked_fraction: float, seed: int = 3):
    """Normalised residual images: pattern + noise; DETECTED on pixels that lean to the high response."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        values = pattern + sigma * rng.standard_normal(pattern.shape)
        mask = Mask(0, schema=default_mask_schema(), bbox=Box.from_shape(pattern.shape))
        # Detections fall preferentially where the response is high (the step columns).
        odds = rng.random(pattern.shape) * (1.0 + 1.0 * (pattern > 0.02))
        mask.set("DETECTED", odds > np.quantile(odds, 1.0 - masked_fraction))
        images.append(MaskedImage(Image(values.astype(np.float32)), mask=mask))
    return images


def _task(**background) -> SkyMeasurementTask:
    task = SkyMeasurementTask()
    task.config.background.xBinSize = BIN
    task.config.background.yBinSize = BIN
    for field, value in background.items():
        setattr(task.config.background, field, value)
    return task


def test_noiseless_structure_inside_bins_is_kept_exactly():
    pattern = _pattern()
    images = _inputs(pattern, 5, sigma=0.0, masked_fraction=0.0)
    task = _task()
    truth = _true_bins(pattern)
    pixel = task.averageImages(images).image.array
    reference = task.averageBackgrounds([task.measureBackground(image) for image in images]).image.array
    np.testing.assert_allclose(pixel, truth, atol=1e-7)
    # The reference's clipping within a bin removes the step columns and the dark row.
    assert np.max(np.abs(reference - truth)) > 5e-3


def test_masks_that_follow_the_response_do_not_bias_the_bins():
    pattern = _pattern()
    sigma, n = 0.01, 12
    images = _inputs(pattern, n, sigma=sigma, masked_fraction=0.25)
    task = _task()
    truth = _true_bins(pattern)
    sky = task.averageImages(images)
    pixel = sky.image.array
    reference = task.averageBackgrounds([task.measureBackground(image) for image in images]).image.array
    # Noise of a bin's mean over every input's unmasked pixels.
    noise = sigma / np.sqrt(n * BIN * BIN * 0.75)
    assert np.sqrt(np.mean((pixel - truth) ** 2)) < 3 * noise
    assert np.sqrt(np.mean((reference - truth) ** 2)) > 10 * noise
    # The variance plane is the error of each bin's mean, close to that noise.
    np.testing.assert_allclose(np.sqrt(sky.variance.array), noise, rtol=0.2)


def test_strips_do_not_change_the_bins():
    rng = np.random.default_rng(8)
    values = rng.normal(1.0, 0.1, size=(7, 50, 40)).astype(np.float32)
    values[rng.random(values.shape) < 0.02] = 50.0  # outliers for the per-pixel clipping
    bad = rng.random(values.shape) < 0.1
    x_edges, y_edges = np.array([0, 13, 27, 40]), np.array([0, 20, 33, 50])
    whole = PixelStackBins(x_edges, y_edges)
    whole.add(0, values, bad)
    stripped = PixelStackBins(x_edges, y_edges)
    for y0 in range(0, 50, 7):
        stripped.add(y0, values[:, y0 : y0 + 7], bad[:, y0 : y0 + 7])
    a, b = whole.result(), stripped.result()
    np.testing.assert_allclose(a.value, b.value, rtol=1e-12)
    np.testing.assert_array_equal(a.count, b.count)
    # Each bin is the plain mean of the per-pixel clipped means (computed here with NumPy).
    combined = stack_statistics(values, bad, "MEANCLIP").value
    for j in range(3):
        for i in range(3):
            block = combined[y_edges[j] : y_edges[j + 1], x_edges[i] : x_edges[i + 1]]
            assert a.value[j, i] == pytest.approx(np.nanmean(block), rel=1e-12)


def test_pixel_stack_refuses_bad_strips_and_missing_rows():
    bins = PixelStackBins(np.array([0, 4, 8]), np.array([0, 4, 8]))
    with pytest.raises(BoxMismatchError, match="wide"):
        bins.add(0, np.zeros((2, 3, 5)), None)
    bins.add(0, np.ones((2, 3, 8)), None)
    with pytest.raises(BoxMismatchError, match="overlap"):
        bins.add(2, np.ones((2, 3, 8)), None)
    with pytest.raises(NoDataError, match="never added"):
        bins.result()
    assert strip_rows(100, 4096, 4096, 256 * 2**20) < 4096


def test_average_images_refuses_empty_and_mismatched_inputs():
    task = _task()
    with pytest.raises(NoDataError):
        task.averageImages([])
    images = _inputs(_pattern(), 2, sigma=0.01, masked_fraction=0.0)
    other = Image(np.zeros((SIZE, SIZE + 1), np.float32))
    with pytest.raises(BoxMismatchError, match="input 1"):
        task.averageImages([images[0], other])
    nothing = Image(np.full((SIZE, SIZE), np.nan, np.float32))
    with pytest.raises(NoDataError, match="usable pixel"):
        task.averageImages([nothing, nothing])


def test_cross_validated_bins_and_metadata():
    images = _inputs(_pattern(), 6, sigma=1e-4, masked_fraction=0.1)
    task = _task(binSizeChoice="crossValidated", binSizeCandidates=[4, 16])
    sky = task.averageImages(images)
    # Strong 4-px structure and little noise: the finest candidate.
    assert sky.metadata["BINSIZE"] == 4
    assert sky.image.array.shape == (SIZE // 4, SIZE // 4)


def _residuals(task, images):
    return [task.measureBackground(image) for image in images]


def test_cp_sky_combine_pixel_level_is_average_images():
    pattern = _pattern()
    images = _inputs(pattern, 6, sigma=0.01, masked_fraction=0.2)
    config = CpSkyCombineConfig()
    config.sky.background.xBinSize = BIN
    config.sky.background.yBinSize = BIN
    config.combineLevel = "pixel"
    task = CpSkyCombineTask(config=config)
    called = []

    def loader(index):
        def load():
            called.append(index)
            return images[index]

        return load

    result = task.run(
        _residuals(task.sky, images), list(range(6)), residualImages=[loader(i) for i in range(6)]
    )
    expected = task.sky.averageImages(images).image.array
    np.testing.assert_array_equal(result.outputCalib.image.array, expected)
    assert sorted(called) == list(range(6))  # each once
    assert result.outputCalib.metadata["SKY_NINPUTS"] == 6
    with pytest.raises(ValueError, match="loader"):
        task.run(_residuals(task.sky, images), list(range(6)))


def test_pixel_level_connections_and_config():
    config = CpSkyCombineConfig()
    assert "inputImages" not in CpSkyCombineConnections(config=config).inputs
    config.combineLevel = "pixel"
    connections = CpSkyCombineConnections(config=config)
    assert {"inputImages", "inputExpBackgrounds"} <= set(connections.inputs)
    config.nComponents = 2
    with pytest.raises(FieldValidationError, match="combineLevel='pixel'"):
        config.validate()
    with pytest.raises(FieldValidationError):
        config.combineLevel = "exposure"
