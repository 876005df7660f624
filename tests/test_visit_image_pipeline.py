"""ApplySkyFrame.yaml on a repository of lsst.images VisitImages, as Rubin's data products are.

The repository holds what a Rubin repository would and nothing of skyframes' own formats: the
instrument's dimension records, the sky frames (``sky``, certified), and each detector's
``preliminary_visit_image`` as a ``VisitImage`` built with lsst.images alone (its detector with
the focal-plane layout, a Gaussian PSF, the band, and the background the simulated calibration
subtracted as BackgroundMap entry "subtracted"). There is no ``camera`` dataset and no
``preliminary_visit_image_background``; as in a Rubin repository, both dataset types are
registered with afw storage classes, and the run renames the two connections as the README says.
The visit and the sky frames are test_correction's (a 2x2 camera of 256 px detectors), so the
pipeline's numbers can be set against the same visit through the Task with ``MaskedImage`` inputs
and against the simulation's truth.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from lsst.daf.butler import Butler, DatasetType
from lsst.images import VisitImage

import test_correction
import test_visit_images
from conftest import APPLY_PIPELINE, tool
from lsst.skyframes.background import BackgroundList
from lsst.skyframes.certify import certify_calibrations
from lsst.skyframes.ingest import define_visit_detectors
from lsst.skyframes.instrument import SkyFramesInstrument
from lsst.skyframes.repo import calib_collection, create_repo
from lsst.skyframes.simulate import define_planned_exposure
from lsst.skyframes.truth import large_scale_residual, visit_sky_level
from lsst.skyframes.visit_images import detector_geometry

frames = test_correction.frames
visit = test_correction.visit
visit_plan = test_correction.visit_plan
make_config = test_correction.make_config
residual_rms = test_correction.residual_rms
AMPLITUDE = test_correction.AMPLITUDE

VISITS_RUN = "visit_images"
SKY_RUN = "sky_frames"
DIMENSIONS = ("instrument", "visit", "detector")


def _config_options(frames) -> list[str]:
    """The -c options that give the pipeline test_correction's configuration (make_config).

    That is the generic instrument's overrides (camera-sized models; detection thresholds from
    the image's own noise, which the simulated sky-frame pattern dominates) and test_correction's
    bgModel1 and sky sampling, so the two paths can be compared number for number.
    """
    config = make_config(frames)
    names = [
        f"{model}.{name}" for model in ("bgModel1", "bgModel2") for name in ("xSize", "ySize", "pixelSize")
    ]
    names += ["sky.xNumSamples", "sky.yNumSamples"]
    names += ["maskObjects.detection.thresholdType", "maskObjects.detection.searchEdge"]
    options = ["-c", "skyCorr:doPlotMosaics=False", "-c", "skyCorr:doWriteCorrectedVisitImage=True"]
    for name in names:
        value = config
        for part in name.split("."):
            value = getattr(value, part)
        options += ["-c", f"skyCorr:{name}={value}"]
    return options


@pytest.fixture(scope="module")
def repo(tmp_path_factory, frames, visit):
    root = str(tmp_path_factory.mktemp("visit_image_pipeline") / "repo")
    camera = frames.camera
    plan = visit_plan(camera)
    butler = create_repo(root)
    # Dimension records only: the instrument, its detectors and filters (no camera dataset).
    SkyFramesInstrument.from_camera(camera).register(butler.registry)
    universe = butler.dimensions
    butler.registry.registerDatasetType(
        DatasetType("preliminary_visit_image", DIMENSIONS, "VisitImage", universe=universe)
    )
    butler.registry.registerDatasetType(
        DatasetType(
            "sky",
            ("instrument", "physical_filter", "detector"),
            "MaskedImageV2",
            universe=universe,
            isCalibration=True,
        )
    )
    # As a Rubin repository registers them, with afw storage classes daf_butler cannot convert:
    # the run below points these connections elsewhere, as the README says.
    butler.registry.registerDatasetType(
        DatasetType("preliminary_visit_image_background", DIMENSIONS, "Background", universe=universe)
    )
    butler.registry.registerDatasetType(
        DatasetType("camera", ("instrument",), "Camera", universe=universe, isCalibration=True)
    )
    for run in (VISITS_RUN, SKY_RUN):
        butler.registry.registerRun(run)
    for d, sky in frames.skies.items():
        butler.put(
            sky,
            "sky",
            instrument=camera.instrument,
            physical_filter=plan.physical_filter,
            detector=d,
            run=SKY_RUN,
        )
    certify_calibrations(butler, SKY_RUN)
    define_planned_exposure(butler, camera, plan)
    define_visit_detectors(butler, camera.instrument, plan.exposure_id, list(visit))
    # test_visit_images' VisitImages of the same visit, made with lsst.images alone.
    inputs = test_visit_images.visit_images(frames, visit)
    for d in sorted(inputs):
        butler.put(
            inputs[d],
            "preliminary_visit_image",
            instrument=camera.instrument,
            visit=plan.exposure_id,
            detector=d,
            run=VISITS_RUN,
        )
    return root, inputs


@pytest.fixture(scope="module")
def pipeline_run(repo, frames):
    root, _ = repo
    command = [
        tool("pipetask"),
        "run",
        "-b",
        root,
        "-i",
        f"{VISITS_RUN},{calib_collection(frames.camera.instrument)}",
        "-o",
        "skycorr",
        "-p",
        str(APPLY_PIPELINE),
        "--register-dataset-types",
        *_config_options(frames),
        # The README's renames for a Rubin repository: names with no datasets, so the
        # backgrounds and detectors come from the VisitImages.
        "-c",
        "skyCorr:connections.calBkgs=preliminary_visit_image_background_skyframes",
        "-c",
        "skyCorr:connections.camera=camera_skyframes",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


@pytest.fixture(scope="module")
def outputs(repo, frames, visit, pipeline_run):
    root, _ = repo
    butler = Butler.from_config(root, collections="skycorr")
    plan = visit_plan(frames.camera)
    data_ids = {
        d: {"instrument": frames.camera.instrument, "visit": plan.exposure_id, "detector": d} for d in visit
    }
    return {
        "skyCorr": {d: butler.get("skyCorr", data_id) for d, data_id in data_ids.items()},
        # The files as written: read with lsst.images alone, not through the butler.
        "visit_image": {
            d: VisitImage.read(butler.getURI("skyCorr_visit_image", data_id).ospath)
            for d, data_id in data_ids.items()
        },
        "metadata": butler.get(
            "skyCorr_metadata", instrument=frames.camera.instrument, visit=plan.exposure_id
        ),
    }


def test_no_warning_that_nothing_was_subtracted(pipeline_run):
    # The "subtracted" entries are the input backgrounds: nothing says they are missing.
    assert "nothing was subtracted" not in pipeline_run.stdout + pipeline_run.stderr


def test_fitted_scale_against_truth_and_the_masked_image_path(frames, visit, outputs):
    scale = outputs["metadata"]["skyCorr"]["skyFrameScale"]
    expected = visit_sky_level(frames.camera, visit_plan(frames.camera), frames.focal_plane, AMPLITUDE)
    # test_correction: 1535.44 against 1528.25 with MaskedImages and their backgrounds.
    assert scale == pytest.approx(expected, rel=0.005)
    through_masked_images = test_correction.correct(frames, visit)[0]
    assert scale == pytest.approx(through_masked_images.skyFrameScale, rel=1e-5)


def test_large_scale_residual_as_good_as_the_masked_image_path(repo, frames, visit, outputs):
    _, inputs = repo
    ids = sorted(visit)
    residuals = [
        large_scale_residual(
            inputs[d].image.array - outputs["skyCorr"][d].getImage().array,
            visit[d].truth,
            inputs[d].mask.get("BAD"),
        )
        for d in ids
    ]
    rms = float(np.sqrt(np.nanmean(np.concatenate([r.ravel() for r in residuals]) ** 2)))
    reference = residual_rms(test_correction.correct(frames, visit)[0], visit, ids)
    # Measured 3.877 on the Task's MaskedImage path; 32 px bins of a 1500 e sky have ~1.5 e of noise.
    assert rms == pytest.approx(reference, rel=0.01)


def test_restored_background_is_the_subtracted_entry(repo, outputs):
    _, inputs = repo
    for d, bg in outputs["skyCorr"].items():
        entry = inputs[d].backgrounds["subtracted"].field.render(inputs[d].bbox).array.astype(np.float32)
        assert len(bg) == 4  # restored entry, bgModel1, sky frame, bgModel2
        np.testing.assert_array_equal(BackgroundList(bg[0]).getImage().array, -entry)


def test_corrected_visit_image_reads_back_with_its_correction_entry(repo, outputs):
    _, inputs = repo
    for d, back in outputs["visit_image"].items():
        bg = outputs["skyCorr"][d]
        assert set(back.backgrounds) == {"subtracted", "skyCorr"}
        assert back.backgrounds.subtracted.name == "skyCorr"
        assert detector_geometry(back.detector) == detector_geometry(inputs[d].detector)
        # The task subtracts element by element in float32.
        np.testing.assert_allclose(back.image.array, inputs[d].image.array - bg.getImage().array, atol=0.02)
        terms = BackgroundList(*list(bg)[1:]).getImage().array
        difference = back.backgrounds["skyCorr"].field.render(back.bbox).array - terms
        # The stated tolerance (README): 0.34 e at most, rms 0.02 e, from the resampled sky frame.
        assert np.abs(difference).max() < 0.5 and np.sqrt(np.mean(difference**2)) < 0.05
        # image + correction - subtracted gives back the input.
        rebuilt = (
            back.image.array
            + back.backgrounds["skyCorr"].field.render(back.bbox).array
            - back.backgrounds["subtracted"].field.render(back.bbox).array
        )
        np.testing.assert_allclose(rebuilt, inputs[d].image.array, atol=0.5)
