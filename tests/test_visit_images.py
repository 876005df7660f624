"""lsst.images VisitImages as SkyCorrectionTask inputs: detectors and backgrounds from the images.

The visit and sky frames are test_correction's (a 2x2 camera of 256 px detectors); each detector
becomes a VisitImage built with lsst.images alone (`lsst.skyframes.visit_images.make_visit_image`):
its detector (a CameraFrameSet made through lsst.images' serialization model), a Gaussian PSF, the
band, and the background the simulated calibration subtracted as BackgroundMap entry "subtracted".
The task then runs with no camera and no separate backgrounds.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from lsst.images import Box, VisitImage
from lsst.images.fields import SplineField

import test_correction
from lsst.skyframes.background import BackgroundList
from lsst.skyframes.camera import DetectorGeometry
from lsst.skyframes.correction import SkyCorrectionTask
from lsst.skyframes.errors import BackgroundEntryError, VisitImageError
from lsst.skyframes.truth import visit_sky_level
from lsst.skyframes.visit_images import (
    camera_from_visit_images,
    detector_geometry,
    lsst_images_detector,
    make_visit_image,
    subtracted_background,
    with_correction,
)

# test_correction's visit and sky frames, through the same helpers.
AMPLITUDE = test_correction.AMPLITUDE
correct = test_correction.correct
make_config = test_correction.make_config
residual_rms = test_correction.residual_rms
visit_plan = test_correction.visit_plan
frames = test_correction.frames
visit = test_correction.visit

PSF_SIGMA = 1.8


def visit_images(frames, visit, **kwargs) -> dict[int, VisitImage]:
    plan = visit_plan(frames.camera)
    return {
        d: make_visit_image(
            visit[d].image,
            frames.camera[d],
            band=frames.camera.band_of(plan.physical_filter),
            physical_filter=plan.physical_filter,
            psf_sigma=PSF_SIGMA,
            subtracted=kwargs.get("subtracted", visit[d].background),
            instrument=frames.camera.instrument,
            visit=plan.exposure_id,
        )
        for d in sorted(visit)
    }


def run_visit_images(frames, images, **fields):
    ids = sorted(images)
    task = SkyCorrectionTask(config=make_config(frames, **fields))
    result = task.run(
        calExps=[images[d].copy() for d in ids],
        calBkgs=None,
        skyFrames=[frames.skies[d] for d in ids],
        camera=None,
        detectorIds=ids,
    )
    return result, task, ids


@pytest.fixture(scope="module")
def images(frames, visit):
    return visit_images(frames, visit)


@pytest.fixture(scope="module")
def through_visit_images(frames, images):
    return run_visit_images(frames, images)


@pytest.fixture(scope="module")
def through_masked_images(frames, visit):
    return correct(frames, visit)


# --- detectors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rotation", [0.0, 90.0, 30.0, -135.0])
def test_detector_geometry_round_trips(rotation):
    geometry = DetectorGeometry(
        id=7,
        name="S07",
        width=200,
        height=120,
        centre_mm=(12.5, -3.25),
        pixel_size_mm=0.01,
        rotation_deg=rotation,
        physical_type="ITL",
    )
    detector = lsst_images_detector(geometry, instrument="SkyCam", visit=12)
    assert detector_geometry(detector) == geometry
    # The lsst.images transform is the geometry's pixel -> focal-plane map.
    x, y = np.array([0.0, 199.0, 37.5]), np.array([0.0, 119.0, 80.25])
    fp = detector.to_focal_plane.apply_forward(x=x, y=y)
    np.testing.assert_allclose(
        np.stack([fp.x, fp.y]), np.stack(geometry.pixel_to_focal_plane(x, y)), atol=1e-12
    )


def test_camera_from_visit_images(frames, images):
    camera = camera_from_visit_images(images.values())
    assert camera.instrument == frames.camera.instrument
    assert tuple(camera) == tuple(frames.camera)
    assert camera.physical_filters == (visit_plan(frames.camera).physical_filter,)


def test_unrepresentable_input_is_refused(frames, visit):
    with pytest.raises(VisitImageError, match="pass lsst.images VisitImages"):
        camera_from_visit_images([visit[0].image])
    with pytest.raises(VisitImageError, match="purpose"):
        lsst_images_detector(
            DetectorGeometry(
                id=1, name="A", width=8, height=8, centre_mm=(0, 0), pixel_size_mm=0.01, purpose="SPARE"
            ),
            instrument="SkyCam",
        )


# --- the task with VisitImages, no camera, no calBkgs ------------------------------------------------------


def test_same_scale_and_residual_as_the_masked_image_path(
    frames, visit, through_visit_images, through_masked_images
):
    a, task, ids = through_visit_images
    b = through_masked_images[0]
    expected = visit_sky_level(frames.camera, visit_plan(frames.camera), frames.focal_plane, AMPLITUDE)
    # Measured: 1535.44 on both paths (the entry renders the subtracted 2x2-bin background to 6e-5).
    assert a.skyFrameScale == pytest.approx(expected, rel=0.005)
    assert a.skyFrameScale == pytest.approx(b.skyFrameScale, rel=1e-5)
    assert task.metadata["skyFrameScale"] == a.skyFrameScale
    rms_a, rms_b = residual_rms(a, visit, ids), residual_rms(b, visit, ids)
    # Measured 3.877 on both; 32 px bins of a 1500 e sky have ~1.5 e of noise.
    assert rms_a == pytest.approx(rms_b, rel=0.01)


def test_restored_background_is_the_entry_exactly(images, through_visit_images):
    result, _, ids = through_visit_images
    for d, corrected, bg in zip(ids, result.correctedExp, result.skyCorr, strict=True):
        entry = images[d].backgrounds["subtracted"].field.render(images[d].bbox).array.astype(np.float32)
        assert len(bg) == 4  # restored entry, bgModel1, sky frame, bgModel2
        np.testing.assert_array_equal(BackgroundList(bg[0]).getImage().array, -entry)
        np.testing.assert_allclose(
            images[d].image.array - bg.getImage().array, corrected.image.array, atol=0.02
        )
        assert isinstance(corrected, VisitImage) and corrected.detector.id == d


def test_missing_entry_names_entries_and_config(frames, visit):
    bare = visit_images(frames, visit, subtracted=None)
    with pytest.raises(BackgroundEntryError, match="visitImageBackgroundEntry") as err:
        run_visit_images(frames, bare)
    assert err.value.entry == "subtracted" and err.value.present == ()
    assert "none" in str(err.value)
    # None: nothing was subtracted, nothing restored.
    result, _, _ = run_visit_images(frames, bare, visitImageBackgroundEntry=None)
    assert all(len(bg) == 3 for bg in result.skyCorr)


def test_camera_none_needs_visit_images(frames, visit):
    task = SkyCorrectionTask(config=make_config(frames))
    with pytest.raises(VisitImageError, match="pass the camera"):
        task.run([visit[0].image.copy()], None, [frames.skies[0]], None, [0])


def test_subtracted_background_is_a_full_resolution_element(images):
    bg = subtracted_background(images[0])
    assert len(bg) == 1 and bg[0][0].getStatsImage().bbox.shape == images[0].bbox.shape
    with pytest.raises(BackgroundEntryError, match=r"\['subtracted'\]"):
        subtracted_background(images[0], "skyCorr")


# --- the corrected VisitImage ----------------------------------------------------------------------------


def test_with_correction_round_trips_through_fits(tmp_path, images, through_visit_images):
    result, _, ids = through_visit_images
    for d, corrected, bg in zip(ids, result.correctedExp, result.skyCorr, strict=True):
        path = tmp_path / f"corrected_{d}.fits"
        with_correction(images[d], bg).write(str(path))
        back = VisitImage.read(str(path))
        # The task subtracts element by element in float32, with_correction the rendered sum.
        np.testing.assert_allclose(back.image.array, corrected.image.array, atol=0.02)
        assert back.backgrounds.subtracted.name == "skyCorr"
        assert set(back.backgrounds) == {"subtracted", "skyCorr"}
        assert detector_geometry(back.detector) == detector_geometry(images[d].detector)
        assert back.psf.sigma == PSF_SIGMA and back.band == images[d].band
        # The entry is the task's models, the terms after the restored background.
        terms = BackgroundList(*list(bg)[1:]).getImage().array
        rendered = back.backgrounds["skyCorr"].field.render(back.bbox).array
        difference = rendered - terms
        # Measured: max 0.18-0.34, rms 0.02 (the pixel noise is 39), all from the sky-frame
        # element (NATURAL_SPLINE, resampled at 4 nodes per bin; through its own bins with
        # lsst.images' Akima splines it was up to 8.5, rms 0.69).
        assert np.sqrt(np.mean(difference**2)) < 0.05
        assert np.abs(difference).max() < 0.5
        with pytest.raises(VisitImageError, match="already has"):
            with_correction(back, bg)


def test_with_correction_is_exact_for_akima_elements(images, through_visit_images):
    result, _, ids = through_visit_images
    bg = result.skyCorr[0]
    for element in (bg[1], bg[3]):  # bgModel1, bgModel2: Akima splines
        assert element[1].name == "AKIMA_SPLINE"
        rendered = element[0].toSplineField().render(images[ids[0]].bbox).array
        # Measured 1.4e-4 and 1.8e-7 (float32 round-off of 1600 e).
        np.testing.assert_allclose(rendered, BackgroundList(element).getImage().array, atol=1e-3)


def test_with_correction_refuses_a_foreign_skycorr(images, through_visit_images):
    result, _, ids = through_visit_images
    with pytest.raises(VisitImageError, match="do not cancel"):
        with_correction(images[ids[1]], result.skyCorr[0])


def test_entry_in_instrumental_units_is_converted(frames, visit):
    """Rubin keeps backgrounds in electrons beside nJy pixels; photometric_scaling converts them."""
    (electrons,) = visit_images(frames, {0: visit[0]}).values()
    field = electrons.backgrounds["subtracted"].field * u.electron
    nano_jansky = make_visit_image(
        visit[0].image, frames.camera[0], band="r", psf_sigma=PSF_SIGMA, subtracted=field, unit=u.nJy
    )
    with pytest.raises(VisitImageError, match="photometric_scaling"):
        subtracted_background(nano_jansky)
    # A constant 2.5 nJy/electron: one node is a constant SplineField.
    bbox = nano_jansky.bbox
    nano_jansky.photometric_scaling = SplineField(
        Box.factory[0 : bbox.y.size, 0 : bbox.x.size],
        np.array([[2.5]]),
        y=np.array([127.5]),
        x=np.array([127.5]),
        unit=u.nJy / u.electron,
    )
    expected = (2.5 * field.render(bbox).array).astype(np.float32)
    np.testing.assert_array_equal(subtracted_background(nano_jansky).getImage().array, expected)


def test_one_node_per_pixel_renders_the_correction_exactly(images, through_visit_images):
    result, _, ids = through_visit_images
    bg = result.skyCorr[0]
    entry = with_correction(images[ids[0]], bg, nodes_per_bin=10**6).backgrounds["skyCorr"]
    terms = BackgroundList(*list(bg)[1:]).getImage().array
    # Float32 round-off of a 1600 e sum.
    np.testing.assert_allclose(entry.field.render(images[ids[0]].bbox).array, terms, atol=1e-3)
    assert entry.field.unit == images[ids[0]].unit


def test_visit_images_read_from_fits_give_the_same_correction(tmp_path, frames, images, through_visit_images):
    """The detectors and entries as lsst.images reads them from files, not as built in memory."""
    read = {}
    for d, image in images.items():
        image.write(str(tmp_path / f"visit_image_{d}.fits"))
        read[d] = VisitImage.read(str(tmp_path / f"visit_image_{d}.fits"))
    result, _, _ = run_visit_images(frames, read)
    expected = through_visit_images[0]
    assert result.skyFrameScale == expected.skyFrameScale
    for ours, theirs in zip(result.skyCorr, expected.skyCorr, strict=True):
        np.testing.assert_array_equal(ours.getImage().array, theirs.getImage().array)


# --- what the task says about its inputs -------------------------------------------------------------------


def test_images_without_backgrounds_are_said_to_have_had_nothing_subtracted(frames, visit, caplog):
    ids = sorted(visit)
    task = SkyCorrectionTask(config=make_config(frames))
    with caplog.at_level("WARNING"):
        task.run(
            [visit[d].image.copy() for d in ids], None, [frames.skies[d] for d in ids], frames.camera, ids
        )
    said = [r for r in caplog.records if "nothing was subtracted" in r.getMessage()]
    assert len(said) == 1  # once per visit, not per detector
    assert "preliminary_visit_image_background" in said[0].getMessage()


def test_visit_images_say_what_was_subtracted(frames, images, caplog):
    with caplog.at_level("WARNING"):
        run_visit_images(frames, images)
    assert not [r for r in caplog.records if "nothing was subtracted" in r.getMessage()]


def test_corrected_visit_images_need_visit_image_inputs(frames, visit):
    ids = sorted(visit)
    task = SkyCorrectionTask(config=make_config(frames, doWriteCorrectedVisitImage=True))
    with pytest.raises(
        VisitImageError, match="doWriteCorrectedVisitImage=True needs lsst.images VisitImages"
    ):
        task.run(
            [visit[d].image.copy() for d in ids],
            [visit[d].background for d in ids],
            [frames.skies[d] for d in ids],
            frames.camera,
            ids,
        )


def test_detector_ids_must_be_the_attached_detectors(frames, images):
    ids = sorted(images)
    task = SkyCorrectionTask(config=make_config(frames))
    with pytest.raises(VisitImageError, match="differ from the detectors attached"):
        task.run([images[d].copy() for d in ids], None, [frames.skies[d] for d in ids], None, ids[::-1])


def test_corrected_visit_images_from_the_task(frames, images):
    result, _, ids = run_visit_images(frames, images, doWriteCorrectedVisitImage=True, correctionEntry="mine")
    for d, corrected, out, bg in zip(
        ids, result.correctedExp, result.correctedVisitImage, result.skyCorr, strict=True
    ):
        assert out.detector.id == d
        # The task's corrected pixels, its input's entries plus its own.
        np.testing.assert_array_equal(out.image.array, corrected.image.array)
        assert set(out.backgrounds) == {"subtracted", "mine"} and out.backgrounds.subtracted.name == "mine"
        terms = BackgroundList(*list(bg)[1:]).getImage().array
        assert np.abs(out.backgrounds["mine"].field.render(out.bbox).array - terms).max() < 0.5
        assert "mine" not in corrected.backgrounds  # a copy: correctedExp keeps the input's map
