"""ObjectMask: what object masking changed, stored compactly, gives the masked image back exactly."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from lsst.images import Box, Image, MaskedImage

from lsst.skyframes.build import CpSkyImageConfig, CpSkyImageTask
from lsst.skyframes.camera import make_synthetic_camera
from lsst.skyframes.errors import BoxMismatchError, ObjectMaskFileError
from lsst.skyframes.mask_planes import default_mask_schema
from lsst.skyframes.object_mask import ObjectMask
from lsst.skyframes.simulate import plan_exposures, simulate_detector


@pytest.fixture(scope="module")
def masked():
    """A simulated 256² input, cpSkyImage's run on it, and a copy of the input taken before."""
    camera = make_synthetic_camera(n_x=1, n_y=1, size=256)
    (plan,) = plan_exposures(1, camera.physical_filters[0], seed=3)
    image = simulate_detector(camera[0], plan, seed=3, n_stars=30, n_galaxies=4).image
    before = image.copy()
    result = CpSkyImageTask(config=CpSkyImageConfig()).run(inputExp=image, camera=camera, detector=camera[0])
    return before, result


def _same_masked_image(got: MaskedImage, expected: MaskedImage) -> None:
    assert got.bbox == expected.bbox
    assert got.image.array.tobytes() == expected.image.array.tobytes()
    assert list(got.mask.schema.names) == list(expected.mask.schema.names)
    assert np.array_equal(got.mask.array, expected.mask.array)


def test_the_input_and_its_object_mask_give_the_masked_image_bit_for_bit(masked, tmp_path):
    before, result = masked
    object_mask = result.objectMask
    # Masking did replace pixels and set planes, so this is not the input compared with itself.
    assert 0 < object_mask.replaced.sum() < object_mask.replaced.size
    assert not np.array_equal(before.image.array, result.maskedExp.image.array)
    path = tmp_path / "object_mask.fits"
    object_mask.writeFits(path)
    read = ObjectMask.readFits(path)
    _same_masked_image(read.applyTo(before.image.copy()), result.maskedExp)
    # Applying it to the masked image itself changes nothing (cp_pipe's masked copy as the input).
    _same_masked_image(read.applyTo(result.maskedExp.image.copy()), result.maskedExp)
    # Far smaller than the image it describes (image, mask, variance: 10 bytes per pixel).
    assert path.stat().st_size < 0.5 * 10 * before.image.array.size + 20_000


def test_exact_for_nan_and_signed_zeros(tmp_path):
    bbox = Box.from_shape((4, 4), start=(10, 20))
    before = np.array(
        [[1.0, np.nan, 0.0, 4.0], [5.0, 6.0, -0.0, 8.0], [9.0, 10.0, 11.0, 12.0], [np.nan, 0.0, 2.0, 3.0]],
        dtype=np.float32,
    )
    after = before.copy()
    after[0, 1] = 7.5  # NaN replaced by a value
    after[0, 0] = np.nan  # a value replaced by NaN
    after[0, 2] = -0.0  # +0 replaced by -0 (== says equal)
    after[1, 1] = 6.0  # replaced by an equal value: not a change
    masked = MaskedImage(Image(after, bbox=bbox), mask_schema=default_mask_schema())
    masked.mask.set("DETECTED", after != after)
    object_mask = ObjectMask.fromMasking(before, masked)
    assert sorted(zip(*np.nonzero(object_mask.replaced), strict=True)) == [(0, 0), (0, 1), (0, 2)]
    path = tmp_path / "exact.fits"
    object_mask.writeFits(path)
    rebuilt = ObjectMask.readFits(path).applyTo(Image(before.copy(), bbox=bbox))
    assert rebuilt.image.array.tobytes() == after.tobytes()
    assert rebuilt.bbox == bbox
    assert np.array_equal(rebuilt.mask.get("DETECTED"), np.isnan(after))


def test_nothing_replaced_round_trips(tmp_path):
    image = MaskedImage(Image(np.ones((5, 7), np.float32)), mask_schema=default_mask_schema())
    object_mask = ObjectMask.fromMasking(image.image.array.copy(), image)
    assert not object_mask.replaced.any()
    object_mask.writeFits(tmp_path / "none.fits")
    read = ObjectMask.readFits(tmp_path / "none.fits")
    assert read.values.size == 0 and read.bbox == image.bbox


def test_a_mask_of_another_image_is_refused(masked):
    _, result = masked
    other = Image(np.zeros((256, 255), np.float32))
    with pytest.raises(BoxMismatchError, match="apply an object mask to the image it was made from"):
        result.objectMask.applyTo(other)
    with pytest.raises(BoxMismatchError, match="one value per replaced pixel"):
        ObjectMask(result.objectMask.mask, result.objectMask.replaced, np.zeros(3, np.float32))
    with pytest.raises(BoxMismatchError, match="must describe the same image"):
        ObjectMask(result.objectMask.mask, np.zeros((2, 2), bool), np.zeros(0, np.float32))


def test_damaged_files_are_refused_by_name(masked, tmp_path):
    _, result = masked
    good = tmp_path / "good.fits"
    result.objectMask.writeFits(good)
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ObjectMaskFileError, match="truncated.fits"):
        ObjectMask.readFits(truncated)
    not_fits = tmp_path / "not_fits.fits"
    not_fits.write_text("hello")
    with pytest.raises(ObjectMaskFileError, match="not_fits.fits"):
        ObjectMask.readFits(not_fits)
    with pytest.raises(ObjectMaskFileError, match="not found"):
        ObjectMask.readFits(tmp_path / "missing.fits")
    newer = tmp_path / "newer.fits"
    with fits.open(good) as hdul:
        hdul[0].header["OMASKVER"] = 99
        hdul.writeto(newer)
    with pytest.raises(ObjectMaskFileError, match="OMASKVER is 99"):
        ObjectMask.readFits(newer)
    foreign = tmp_path / "foreign.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((3, 3)))]).writeto(foreign)
    with pytest.raises(ObjectMaskFileError, match="no OMASKVER"):
        ObjectMask.readFits(foreign)


def test_the_variance_plane_is_read_only_where_it_is_used(masked):
    """Masking with thresholdType='stdev' gives the same result without the input's variance."""
    before, _ = masked
    assert CpSkyImageTask().needsVariance  # the reference's pixel_stdev
    config = CpSkyImageConfig()
    config.maskTask.detection.thresholdType = "stdev"
    task = CpSkyImageTask(config=config)
    assert not task.needsVariance
    config_written = CpSkyImageConfig()
    config_written.maskTask.detection.thresholdType = "stdev"
    config_written.doWriteMaskedExp = True
    assert CpSkyImageTask(config=config_written).needsVariance
    camera = make_synthetic_camera(n_x=1, n_y=1, size=256)
    full = task.run(inputExp=before.copy(), camera=camera, detector=camera[0])
    without = MaskedImage(before.image.copy(), mask=before.mask.copy())
    assert not np.array_equal(without.variance.array, before.variance.array)
    planes_only = task.run(inputExp=without, camera=camera, detector=camera[0])
    _same_masked_image(planes_only.maskedExp, full.maskedExp)
    assert full.maskedBkg.values.tobytes() == planes_only.maskedBkg.values.tobytes()
    assert full.maskedBkg.numbers.tobytes() == planes_only.maskedBkg.numbers.tobytes()
