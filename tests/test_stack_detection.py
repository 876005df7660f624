# This file is part of skyframes.
#
# Developed for the LSST Data Management System.
# Use of this source code is governed by a 3-clause BSD-style
# license that can be found in the LICENSE file.

"""Stack detection against truth: a fixed field of faint stars seen through dithers.

The stars peak at 0.5 sigma of one exposure's noise: smoothed by the PSF
(sigma 1.5 px) that is a signal to noise of 1.3 in one exposure and 5.9 in
the stack of 20, so a 3-sigma detection on the stack reaches out to where
the smoothed profile is half its peak (2.5 px), about 3.2 px once grown by
one (a cross), which holds about 90 % of a star's light. The response has a
deep dust spot that single-exposure detection would flag in every exposure.
"""

import numpy as np
import pytest
from scipy import ndimage

from lsst.skyframes.errors import BoxMismatchError, NoDataError
from lsst.skyframes.stack_detection import measure_offsets, response_residuals, stack_detections

SIZE = 128
FIELD = SIZE + 24  # dithers of up to 24 px, as a build's are small against a detector
N = 20
SKY = 1000.0
PSF = 1.5


def _scene(seed: int = 4, n_bright: int = 0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SIZE, :SIZE]
    response = 1.0 + 0.1 * x / SIZE - 0.2 * ((y - 40) ** 2 + (x - 90) ** 2 <= 16)
    # A fixed field of point sources, peak 0.5 sigma of one exposure's noise; n_bright more at
    # 10 sigma, which the dithers can be measured from (the faint ones are too faint for that).
    field = np.zeros((FIELD, FIELD))
    positions = rng.integers(4, FIELD - 4, size=(40, 2))
    field[positions[:, 0], positions[:, 1]] = 2.0 * np.pi * PSF**2  # unit peak once smoothed
    bright = rng.integers(4, FIELD - 4, size=(n_bright, 2))
    field[bright[:, 0], bright[:, 1]] += 20.0 * 2.0 * np.pi * PSF**2
    field = ndimage.gaussian_filter(field, PSF) * 0.5 * np.sqrt(SKY)
    offsets = [tuple(int(v) for v in rng.integers(0, FIELD - SIZE, 2)) for _ in range(N)]
    images = []
    for y0, x0 in offsets:
        stars = field[y0 : y0 + SIZE, x0 : x0 + SIZE]
        expected = SKY * response + stars
        images.append(expected + rng.standard_normal(expected.shape) * np.sqrt(expected))
    return images, offsets, field, response


def test_stack_finds_faint_stars_and_not_the_response():
    images, offsets, field, response = _scene()
    residuals = response_residuals(images, [SKY] * N)
    masks = stack_detections(residuals, images, offsets, psf_sigma=PSF)
    # Where all 20 exposures overlap, the masks would cover about 90 % of the star light for a
    # noiseless stack (see the module's docstring); the stack's noise trims the detections' edges,
    # to 78-86 % over seeds 4-11. Single-exposure detection at the same threshold: 2-4 %.
    stars = [field[y0 : y0 + SIZE, x0 : x0 + SIZE] for y0, x0 in offsets]
    on_grid = np.zeros(field.shape, bool)
    coverage = np.zeros(field.shape, int)
    for mask, (y0, x0) in zip(masks, offsets, strict=True):
        on_grid[y0 : y0 + SIZE, x0 : x0 + SIZE] |= mask
        coverage[y0 : y0 + SIZE, x0 : x0 + SIZE] += 1
    full = coverage == N
    assert field[full & on_grid].sum() > 0.75 * field[full].sum()
    covered = coverage > 0
    # Little sky masked beside the stars (the field's own footprint, grown, is what is allowed).
    footprint = ndimage.binary_dilation(field > 0.05 * field.max(), iterations=2)
    assert (on_grid & ~footprint & covered).sum() < 0.01 * covered.sum()
    # The dust spot, which one exposure's detection finds every time, is masked only under stars.
    spot = response < 0.9
    near_stars = [ndimage.binary_dilation(s > 0.05 * field.max(), iterations=2) for s in stars]
    assert not any((mask & spot & ~near).any() for mask, near in zip(masks, near_stars, strict=True))
    # One exposure alone at the same threshold finds almost none of that light.
    alone = stack_detections(residuals[:1], images[:1], [(0, 0)], psf_sigma=PSF)[0]
    assert stars[0][alone].sum() < 0.1 * stars[0].sum()


def test_residuals_hold_the_objects_and_nan_where_bad():
    images, offsets, field, response = _scene(seed=9)
    bad = [np.zeros((SIZE, SIZE), bool) for _ in range(N)]
    bad[3][10, 20] = True
    residuals = response_residuals(images, [SKY] * N, bad)
    assert np.isnan(residuals[3][10, 20])
    y0, x0 = offsets[0]
    stars = field[y0 : y0 + SIZE, x0 : x0 + SIZE]
    # The residual is the star light plus noise: its mean over the stars matches their light.
    bright = stars > 0.5 * stars.max()
    assert residuals[0][bright].mean() == pytest.approx(stars[bright].mean(), rel=0.25)


def test_refusals():
    images, offsets, _, _ = _scene()
    with pytest.raises(NoDataError, match="at least 3"):
        response_residuals(images[:2], [SKY, SKY])
    with pytest.raises(BoxMismatchError, match="one of each"):
        response_residuals(images, [SKY] * (N - 1))
    with pytest.raises(BoxMismatchError, match="exposure 1"):
        response_residuals([images[0], images[1][:-1], images[2]], [SKY] * 3)
    with pytest.raises(ValueError, match="sky level"):
        response_residuals(images[:3], [SKY, 0.0, SKY])
    with pytest.raises(NoDataError):
        stack_detections([], [], [])
    with pytest.raises(BoxMismatchError, match="one of each"):
        stack_detections(images[:2], images[:1], offsets[:2])
    with pytest.raises(BoxMismatchError, match="negative|below and"):
        stack_detections(images[:1], images[:1], [(-1, 0)])
    with pytest.raises(ValueError, match="threshold"):
        stack_detections(images[:1], images[:1], [(0, 0)], threshold=0.0)
    nothing = np.full((4, 4), np.nan)
    with pytest.raises(NoDataError, match="finite pixel"):
        stack_detections([nothing], [nothing], [(0, 0)])


def _masked_images(images):
    from lsst.images import Box, Image, Mask, MaskedImage

    from lsst.skyframes.mask_planes import default_mask_schema

    bbox = Box.from_shape((SIZE, SIZE))
    return [
        MaskedImage(
            Image(image.astype(np.float32), bbox=bbox),
            mask=Mask(0, schema=default_mask_schema(), bbox=bbox),
            variance=Image(np.clip(image, 1.0, None).astype(np.float32), bbox=bbox),
        )
        for image in images
    ]


def test_offsets_are_measured_from_the_objects():
    images, offsets, _, _ = _scene(seed=5, n_bright=10)
    residuals = response_residuals(images, [SKY] * N)
    measured, significances = measure_offsets(residuals, images, max_offset=32)
    true = np.array(offsets)
    assert measured == [tuple(o) for o in (true - true.min(axis=0)).tolist()]
    assert min(significances[1:]) > 10
    # Pure noise has no peak to find: nothing is placed but the first image.
    rng = np.random.default_rng(1)
    noise = [rng.standard_normal((SIZE, SIZE)) for _ in range(4)]
    placed, _ = measure_offsets(noise, [np.ones((SIZE, SIZE))] * 4, max_offset=32)
    assert placed[0] == (0, 0) and placed[1:] == [None] * 3


def test_task_masks_the_stack_detections_with_measured_offsets():
    from lsst.skyframes.stack_detection import STACK_MASK_PLANE, CpSkyStackDetectTask

    images, offsets, field, _ = _scene(seed=6, n_bright=10)
    result = CpSkyStackDetectTask().run(_masked_images(images), exposureIds=list(range(100, 100 + N)))
    true = np.array(offsets)
    assert result.offsets == [tuple(o) for o in (true - true.min(axis=0)).tolist()]
    light = covered = 0.0
    for mask, (y0, x0) in zip(result.outputMasks, offsets, strict=True):
        stars = field[y0 : y0 + SIZE, x0 : x0 + SIZE]
        covered += stars[mask.get(STACK_MASK_PLANE)].sum()
        light += stars.sum()
    # Near the grid's edges fewer exposures overlap, so the whole images fall short of the
    # 75 % of light that test_stack_finds_faint_stars_and_not_the_response requires where all do.
    assert covered > 0.6 * light


def test_task_with_too_few_exposures_writes_empty_masks(caplog):
    from lsst.skyframes.stack_detection import STACK_MASK_PLANE, CpSkyStackDetectTask

    images, _, _, _ = _scene(seed=6)
    with caplog.at_level("WARNING"):
        result = CpSkyStackDetectTask().run(_masked_images(images[:2]))
    assert "a stack needs 3" in caplog.text
    assert not any(mask.get(STACK_MASK_PLANE).any() for mask in result.outputMasks)
    with pytest.raises(NoDataError):
        CpSkyStackDetectTask().run([])


def test_mask_objects_uses_a_given_detection():
    from lsst.skyframes.masking import MaskObjectsTask

    images, _, _, _ = _scene(seed=7)
    image = _masked_images(images[:1])[0]
    image.mask.set("DETECTED", np.ones((SIZE, SIZE), bool))  # a detection the image came with
    given = np.zeros((SIZE, SIZE), bool)
    given[10:20, 30:40] = True
    task = MaskObjectsTask()
    task.config.clearDetected = False
    before = image.image.array.copy()
    result = task.run(image, ["BAD"], detections=given)
    np.testing.assert_array_equal(result.detected, given)
    np.testing.assert_array_equal(image.mask.get("DETECTED"), given)
    changed = image.image.array != before
    assert changed[given].all() and not changed[~given].any()
    with pytest.raises(BoxMismatchError, match="shape"):
        task.run(image, detections=given[:-1])


def test_cpskyimage_takes_the_stack_mask_only_when_configured():
    from lsst.skyframes.build import CpSkyImageConfig, CpSkyImageConnections, CpSkyImageTask
    from lsst.skyframes.camera import make_synthetic_camera
    from lsst.skyframes.errors import ConfigMismatchError

    camera = make_synthetic_camera(1, 1, SIZE)
    images, _, _, _ = _scene(seed=8)
    config = CpSkyImageConfig()
    assert "stackMask" not in CpSkyImageConnections(config=config).inputs
    given = np.zeros((SIZE, SIZE), bool)
    given[40:60, 40:60] = True
    with pytest.raises(ConfigMismatchError, match="doUseStackMask"):
        CpSkyImageTask(config=config).run(_masked_images(images[:1])[0], camera, camera[0], stackMask=given)
    config.doUseStackMask = True
    assert "stackMask" in CpSkyImageConnections(config=config).inputs
    with pytest.raises(ConfigMismatchError, match="doUseStackMask"):
        CpSkyImageTask(config=config).run(_masked_images(images[:1])[0], camera, camera[0])
    config.maskTask.clearDetected = False  # as the instrument's overrides set it
    image = _masked_images(images[:1])[0]
    before = image.image.array.copy()
    result = CpSkyImageTask(config=config).run(image, camera, camera[0], stackMask=given)
    # The given detection, and nothing else, is what masking flagged and replaced.
    np.testing.assert_array_equal(result.objectMask.mask.get("DETECTED"), given)
    changed = image.image.array != before
    assert changed[given].all() and not changed[~given].any()
