"""ApplySkyFrame through the real ``pipetask run`` on a small synthetic repository.

Build exposures are ingested and turned into certified sky frames by BuildSkyFrame
(``pipetask run``), then held-out visits are ingested as ``preliminary_visit_image`` with
their ``preliminary_visit_image_background`` and corrected by ApplySkyFrame. The sizes and
configuration follow tests/test_correction.py (see its docstring for why).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from lsst.daf.butler import Butler, CollectionType, Timespan

from conftest import tool, tool_env
from lsst.skyframes.build import CpSkyImageConfig
from lsst.skyframes.camera import make_synthetic_camera
from lsst.skyframes.certify import certify_calibrations
from lsst.skyframes.correction import (
    FocalPlaneCoverageError,
    register_correction_inputs,
)
from lsst.skyframes.focal_plane import resolve_focal_plane_config
from lsst.skyframes.ingest import ingest_image
from lsst.skyframes.repo import calib_collection, create_repo, register_camera
from lsst.skyframes.simulate import (
    ExposurePlan,
    exposure_header,
    plan_exposures,
    put_science_visit,
    simulate_detector,
    simulate_science_visit,
)
from lsst.skyframes.truth import large_scale_residual, visit_sky_level

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "pipelines" / "BuildSkyFrame.yaml"
APPLY = ROOT / "pipelines" / "ApplySkyFrame.yaml"
SEED = 17
AMPLITUDE = 0.3
LEVEL = 1500.0
OBJECTS = {"n_stars": 40, "n_galaxies": 8}
VISIT, VISIT_MISSING, VISIT_MASKED = 5000, 5001, 5002


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([tool("pipetask"), "run", *args], capture_output=True, text=True, env=tool_env())


def _plan(camera, exposure_id: int) -> ExposurePlan:
    return ExposurePlan(
        exposure_id=exposure_id,
        physical_filter=camera.physical_filters[0],
        sky_level=LEVEL,
        gradient=(8e-4, -5e-4),
        obs_start=f"2026-11-20T03:{exposure_id - VISIT:02d}:00",
    )


def _apply_options(fp_config) -> list[str]:
    # bgModel1 as the build's model, 16x16 scale samples per detector (test_correction.py).
    return [
        "-c",
        f"skyCorr:bgModel1.xSize={fp_config.xSize}",
        "-c",
        f"skyCorr:bgModel1.ySize={fp_config.ySize}",
        "-c",
        "skyCorr:sky.xNumSamples=16",
        "-c",
        "skyCorr:sky.yNumSamples=16",
    ]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("apply") / "repo")
    camera = make_synthetic_camera(n_x=2, n_y=2, size=256, gap_px=32)
    butler = create_repo(root)
    register_camera(butler, camera)
    for plan in plan_exposures(10, camera.physical_filters[0], seed=SEED):
        for detector in camera:
            exposure = simulate_detector(detector, plan, seed=SEED, amplitude=AMPLITUDE, **OBJECTS)
            ingest_image(
                butler, camera, exposure.image, exposure_header(detector, plan), source="sim", run="raw"
            )
    inputs = f"raw,{calib_collection(camera.instrument)}"
    result = _run(
        ["-b", root, "-i", inputs, "-o", "skybuild", "-p", str(BUILD), "--register-dataset-types"]
        + ["-c", "parameters:xBinSize=8", "-c", "parameters:yBinSize=8"]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    butler = Butler.from_config(root, writeable=True)
    assert certify_calibrations(butler, "skybuild") == 4

    # Held-out visits, ingested the way a calibration pipeline leaves them.
    register_correction_inputs(butler, "visits")
    truth = {}
    for visit_id, detectors in ((VISIT, None), (VISIT_MISSING, [0, 1, 3]), (VISIT_MASKED, None)):
        plan = _plan(camera, visit_id)
        visit = simulate_science_visit(
            camera, plan, seed=SEED + 1, amplitude=AMPLITUDE, detector_ids=detectors, **OBJECTS
        )
        for science in visit.values():
            if visit_id == VISIT_MASKED:
                science.image.mask.set("BAD", np.ones(science.image.bbox.shape, dtype=bool))
        put_science_visit(butler, camera, plan, visit, "visits")
        truth[visit_id] = visit

    # A calibration collection whose sky frame of detector 3 is missing.
    calib = calib_collection(camera.instrument)
    butler.registry.registerCollection("partial_calib", CollectionType.CALIBRATION)
    keep = [
        ref
        for ref in butler.query_datasets("sky", collections="skybuild", explain=False)
        if ref.dataId["detector"] != 3
    ]
    keep += butler.query_datasets("camera", collections=calib, explain=False)
    butler.registry.certify("partial_calib", keep, Timespan(None, None))
    fp_config = resolve_focal_plane_config(CpSkyImageConfig().largeScaleBackground, camera)
    return camera, root, truth, fp_config


@pytest.fixture(scope="module")
def corrected(repo):
    camera, root, _, fp_config = repo
    calib = calib_collection(camera.instrument)
    common = ["-b", root, "-i", f"visits,{calib}", "-p", str(APPLY), *_apply_options(fp_config)]
    with_sky = _run(
        [
            *common,
            "-o",
            "skycorr/sky",
            "-d",
            f"visit IN ({VISIT}, {VISIT_MISSING})",
            "--register-dataset-types",
        ]
    )
    assert with_sky.returncode == 0, with_sky.stdout[-3000:] + with_sky.stderr[-5000:]
    without = _run([*common, "-o", "skycorr/nosky", "-d", f"visit = {VISIT}", "-c", "skyCorr:doSky=False"])
    assert without.returncode == 0, without.stdout[-3000:] + without.stderr[-5000:]
    return Butler.from_config(root)


def _residual_rms(butler, collection, camera, truth) -> tuple[float, list]:
    residuals = []
    skycorr = []
    for detector in camera:
        data_id = {"instrument": camera.instrument, "visit": VISIT, "detector": detector.id}
        image = butler.get("preliminary_visit_image", data_id, collections="visits")
        background = butler.get("skyCorr", data_id, collections=collection)
        skycorr.append(background)
        corrected = image.image.array - background.getImage().array
        residuals.append(large_scale_residual(corrected, truth[detector.id].truth, image.mask.get("BAD")))
    values = np.concatenate([r.ravel() for r in residuals])
    return float(np.sqrt(np.nanmean(values**2))), skycorr


def test_sky_frames_correct_the_visit(repo, corrected):
    camera, _, truth, fp_config = repo
    rms_sky, skycorr = _residual_rms(corrected, "skycorr/sky", camera, truth[VISIT])
    rms_models, _ = _residual_rms(corrected, "skycorr/nosky", camera, truth[VISIT])
    assert rms_models > 5 * rms_sky, (rms_models, rms_sky)
    # input background (negated), bgModel1, sky frame, bgModel2
    assert all(len(bg) == 4 for bg in skycorr)
    metadata = corrected.get(
        "skyCorr_metadata", instrument=camera.instrument, visit=VISIT, collections="skycorr/sky"
    )
    scale = metadata["skyCorr"]["skyFrameScale"]
    expected = visit_sky_level(camera, _plan(camera, VISIT), fp_config, AMPLITUDE)
    assert scale == pytest.approx(expected, rel=0.005)
    mosaic = corrected.get(
        "skyCorr_visit_mosaic", instrument=camera.instrument, visit=VISIT, collections="skycorr/sky"
    )
    assert mosaic.array.shape == (68, 68)
    plot = corrected.getURI(
        "skyCorr_visit_mosaic_plot", instrument=camera.instrument, visit=VISIT, collections="skycorr/sky"
    )
    assert plot.exists() and plot.getExtension() == ".png"


def test_visit_missing_a_detector_runs(repo, corrected):
    camera, _, _, _ = repo
    refs = corrected.query_datasets(
        "skyCorr",
        collections="skycorr/sky",
        where=f"instrument = '{camera.instrument}' AND visit = {VISIT_MISSING}",
        explain=False,
    )
    assert sorted(ref.dataId["detector"] for ref in refs) == [0, 1, 3]


def test_missing_sky_frame_names_the_detector(repo, corrected):
    camera, root, _, fp_config = repo
    result = _run(
        ["-b", root, "-i", "visits,partial_calib", "-o", "skycorr/partial", "-p", str(APPLY)]
        + ["-d", f"visit = {VISIT}", *_apply_options(fp_config)]
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "MissingSkyFrameError" in output
    assert "No sky frame for detector(s) 3 (R11)" in output


def test_fully_masked_visit_reports_partial_outputs(repo, corrected):
    from lsst.pipe.base import Pipeline
    from lsst.pipe.base.simple_pipeline_executor import SimplePipelineExecutor

    camera, root, _, fp_config = repo
    butler = Butler.from_config(root, writeable=True)
    pipeline = Pipeline.from_uri(str(APPLY))
    pipeline.addConfigOverride("skyCorr", "bgModel1.xSize", fp_config.xSize)
    pipeline.addConfigOverride("skyCorr", "bgModel1.ySize", fp_config.ySize)

    def executor(run: str, raise_on_partial_outputs: bool) -> SimplePipelineExecutor:
        butler.registry.registerRun(run)
        work = Butler.from_config(
            butler=butler, collections=["visits", calib_collection(camera.instrument)], run=run
        )
        return SimplePipelineExecutor.from_pipeline(
            pipeline,
            where=f"instrument = '{camera.instrument}' AND visit = {VISIT_MASKED}",
            butler=work,
            raise_on_partial_outputs=raise_on_partial_outputs,
        )

    # pipetask's default: the chained error fails the quantum.
    with pytest.raises(FocalPlaneCoverageError, match="bgModel1: no focal-plane bin"):
        executor("skycorr/masked", True).run(register_dataset_types=True)
    # --no-raise-on-partial-outputs: a qualified success with nothing written but the
    # annotated task metadata.
    executor("skycorr/masked-lenient", False).run(register_dataset_types=True)
    data_id = {"instrument": camera.instrument, "visit": VISIT_MASKED}
    metadata = butler.get("skyCorr_metadata", data_id, collections="skycorr/masked-lenient")
    failure = metadata["skyCorr"]["failure"]
    assert failure["type"].endswith("FocalPlaneCoverageError")
    assert failure["metadata"]["model"] == "bgModel1"
    assert not butler.query_datasets(
        "skyCorr", collections="skycorr/masked-lenient", explain=False, find_first=False
    )
