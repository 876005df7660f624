"""ApplySkyFrame through the real ``pipetask run`` on a small synthetic repository.

Build exposures are ingested and turned into certified sky frames by BuildSkyFrame
(``pipetask run``), then held-out visits are ingested as ``preliminary_visit_image`` with
their ``preliminary_visit_image_background`` and corrected by ApplySkyFrame: a whole visit,
one missing a detector, one fully masked, one whose detector 2 lacks its background, and one
ingested without backgrounds (with a uniform ``background_to_photometric_ratio``). The sizes
and configuration follow tests/test_correction.py (see its docstring for why).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from lsst.daf.butler import Butler, CollectionType, Timespan
from lsst.images import Image

from conftest import INSTRUMENT, camera_env, tool
from lsst.skyframes.build import CpSkyImageConfig
from lsst.skyframes.camera import make_synthetic_camera
from lsst.skyframes.camera_overrides import camera_sized_config
from lsst.skyframes.certify import certify_calibrations
from lsst.skyframes.correction import (
    FocalPlaneCoverageError,
    SkyCorrectionConfig,
    register_correction_inputs,
)
from lsst.skyframes.ingest import ingest_image
from lsst.skyframes.instrument import SkyFramesInstrument
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
VISIT, VISIT_MISSING, VISIT_MASKED, VISIT_NO_BACKGROUND, VISIT_RAW = 5000, 5001, 5002, 5003, 5004
RATIO = 1.1


def _run(root: str, args: list[str]) -> subprocess.CompletedProcess:
    """``pipetask run -b root`` with the instrument's camera-sized models (camera file in the repo)."""
    command = [tool("pipetask"), "run", "-b", root, "--instrument", INSTRUMENT, *args]
    env = camera_env(Path(root) / "camera.yaml")
    return subprocess.run(command, capture_output=True, text=True, env=env)


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
    camera.to_yaml(Path(root) / "camera.yaml")  # SKYFRAMES_CAMERA of the pipetask runs
    for plan in plan_exposures(10, camera.physical_filters[0], seed=SEED):
        for detector in camera:
            exposure = simulate_detector(detector, plan, seed=SEED, amplitude=AMPLITUDE, **OBJECTS)
            ingest_image(
                butler, camera, exposure.image, exposure_header(detector, plan), source="sim", run="raw"
            )
    inputs = f"raw,{calib_collection(camera.instrument)}"
    result = _run(
        root,
        ["-i", inputs, "-o", "skybuild", "-p", str(BUILD), "--register-dataset-types"]
        + ["-c", "parameters:xBinSize=8", "-c", "parameters:yBinSize=8"],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    butler = Butler.from_config(root, writeable=True)
    assert certify_calibrations(butler, "skybuild") == 4

    # Held-out visits, ingested the way a calibration pipeline leaves them.
    with_ratio = SkyCorrectionConfig()
    with_ratio.doApplyFlatBackgroundRatio = True
    register_correction_inputs(butler, "visits", with_ratio)
    truth = {}
    visits = (VISIT, VISIT_MISSING, VISIT_MASKED, VISIT_NO_BACKGROUND, VISIT_RAW)
    for visit_id in visits:
        plan = _plan(camera, visit_id)
        visit = simulate_science_visit(
            camera,
            plan,
            seed=SEED + 1,
            amplitude=AMPLITUDE,
            detector_ids=[0, 1, 3] if visit_id == VISIT_MISSING else None,
            # VISIT_RAW: images from which nothing was subtracted, ingested without backgrounds.
            background_bin_size=None if visit_id == VISIT_RAW else 128,
            **OBJECTS,
        )
        for science in visit.values():
            if visit_id == VISIT_MASKED:
                science.image.mask.set("BAD", np.ones(science.image.bbox.shape, dtype=bool))
        put_science_visit(butler, camera, plan, visit, "visits")
        truth[visit_id] = visit
    # Detector 2 of VISIT_NO_BACKGROUND lacks its background; VISIT_RAW has a uniform ratio image.
    data_id = {"instrument": camera.instrument, "visit": VISIT_NO_BACKGROUND, "detector": 2}
    lacking = butler.find_dataset("preliminary_visit_image_background", data_id, collections="visits")
    butler.pruneDatasets([lacking], disassociate=True, unstore=True, purge=True)
    for detector in camera:
        bbox = truth[VISIT_RAW][detector.id].image.bbox
        ratio = Image(np.full(bbox.shape, RATIO, dtype=np.float32), bbox=bbox)
        data_id = {"instrument": camera.instrument, "visit": VISIT_RAW, "detector": detector.id}
        butler.put(ratio, "background_to_photometric_ratio", data_id, run="visits")

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
    fp_config = camera_sized_config(CpSkyImageConfig().largeScaleBackground, camera, 1)
    return camera, root, truth, fp_config


@pytest.fixture(scope="module")
def corrected(repo):
    camera, root, _, fp_config = repo
    calib = calib_collection(camera.instrument)
    common = ["-i", f"visits,{calib}", "-p", str(APPLY), *_apply_options(fp_config)]
    with_sky = _run(
        root,
        [
            *common,
            "-o",
            "skycorr/sky",
            "-d",
            f"visit IN ({VISIT}, {VISIT_MISSING}, {VISIT_NO_BACKGROUND}, {VISIT_RAW})",
            "--register-dataset-types",
        ],
    )
    assert with_sky.returncode == 0, with_sky.stdout[-3000:] + with_sky.stderr[-5000:]
    without = _run(
        root, [*common, "-o", "skycorr/nosky", "-d", f"visit = {VISIT}", "-c", "skyCorr:doSky=False"]
    )
    assert without.returncode == 0, without.stdout[-3000:] + without.stderr[-5000:]
    return Butler.from_config(root)


def _residual_rms(butler, collection, camera, truth, visit=VISIT, detectors=None) -> tuple[float, list]:
    """RMS against the truth of the corrected images of ``detectors`` (all by default)."""
    residuals = []
    skycorr = []
    for detector_id in camera.detector_ids if detectors is None else detectors:
        data_id = {"instrument": camera.instrument, "visit": visit, "detector": detector_id}
        image = butler.get("preliminary_visit_image", data_id, collections="visits")
        background = butler.get("skyCorr", data_id, collections=collection)
        skycorr.append(background)
        corrected = image.image.array - background.getImage().array
        residuals.append(large_scale_residual(corrected, truth[detector_id].truth, image.mask.get("BAD")))
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


def _metadata(butler, camera, visit: int, collection: str):
    data_id = {"instrument": camera.instrument, "visit": visit}
    return butler.get("skyCorr_metadata", data_id, collections=collection)["skyCorr"]


def _corrected_detectors(butler, camera, visit: int, collection: str) -> list[int]:
    where = f"instrument = '{camera.instrument}' AND visit = {visit}"
    refs = butler.query_datasets("skyCorr", collections=collection, where=where, explain=False)
    return sorted(ref.dataId["detector"] for ref in refs)


def test_detector_without_background_is_skipped_and_named(repo, corrected):
    camera, _, truth, _ = repo
    assert _corrected_detectors(corrected, camera, VISIT_NO_BACKGROUND, "skycorr/sky") == [0, 1, 3]
    metadata = _metadata(corrected, camera, VISIT_NO_BACKGROUND, "skycorr/sky")
    assert metadata["skippedDetectors"].to_dict() == {"2": "preliminary_visit_image_background"}
    # The three others are corrected: against the truth, the sky frame takes out most of the
    # pattern the focal-plane models leave, as on a visit of those three detectors alone
    # (VISIT_MISSING: the same detectors and sky, its own noise and objects).
    rms = {
        visit: _residual_rms(corrected, "skycorr/sky", camera, truth[visit], visit, (0, 1, 3))[0]
        for visit in (VISIT_NO_BACKGROUND, VISIT_MISSING)
    }
    rms_models, _ = _residual_rms(corrected, "skycorr/nosky", camera, truth[VISIT])
    assert rms_models > 4 * rms[VISIT_NO_BACKGROUND], (rms_models, rms)
    assert rms[VISIT_NO_BACKGROUND] == pytest.approx(rms[VISIT_MISSING], rel=0.15), rms


def test_detector_without_sky_frame_is_skipped(repo, corrected):
    """The reference leaves a detector without a sky calibration out of the visit."""
    camera, root, _, fp_config = repo
    result = _run(
        root,
        ["-i", "visits,partial_calib", "-o", "skycorr/partial", "-p", str(APPLY)]
        + ["-d", f"visit = {VISIT}", *_apply_options(fp_config)],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "3 (R11): no sky" in result.stdout + result.stderr
    butler = Butler.from_config(root)
    assert _corrected_detectors(butler, camera, VISIT, "skycorr/partial") == [0, 1, 2]
    assert _metadata(butler, camera, VISIT, "skycorr/partial")["skippedDetectors"].to_dict() == {"3": "sky"}


def test_visit_ingested_without_backgrounds_restores_nothing(repo, corrected):
    """No background for any detector: the images are taken as having had nothing subtracted."""
    camera, _, truth, _ = repo
    assert _corrected_detectors(corrected, camera, VISIT_RAW, "skycorr/sky") == [0, 1, 2, 3]
    assert _metadata(corrected, camera, VISIT_RAW, "skycorr/sky")["skippedDetectors"].to_dict() == {}
    rms, skycorr = _residual_rms(corrected, "skycorr/sky", camera, truth[VISIT_RAW], VISIT_RAW)
    rms_models, _ = _residual_rms(corrected, "skycorr/nosky", camera, truth[VISIT])
    assert rms_models > 5 * rms, (rms_models, rms)
    assert all(len(bg) == 3 for bg in skycorr)  # bgModel1, sky frame, bgModel2: nothing restored


def test_flat_background_ratio_through_pipetask(repo, corrected):
    """A ratio image of 1.1 read from the butler scales the fitted sky-frame scale by 1.1."""
    camera, root, _, fp_config = repo
    calib = calib_collection(camera.instrument)
    result = _run(
        root,
        ["-i", f"visits,{calib}", "-o", "skycorr/ratio", "-p", str(APPLY)]
        + ["-d", f"visit = {VISIT_RAW}", *_apply_options(fp_config)]
        + ["-c", "skyCorr:doApplyFlatBackgroundRatio=True", "--register-dataset-types"],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    butler = Butler.from_config(root)
    scale = _metadata(butler, camera, VISIT_RAW, "skycorr/ratio")["skyFrameScale"]
    plain = _metadata(butler, camera, VISIT_RAW, "skycorr/sky")["skyFrameScale"]
    # Nothing was subtracted from these images, so every step is linear in the ratio.
    assert scale / plain == pytest.approx(RATIO, rel=1e-4), (scale, plain)


def test_fully_masked_visit_reports_partial_outputs(repo, corrected):
    from lsst.pipe.base import Pipeline
    from lsst.pipe.base.simple_pipeline_executor import SimplePipelineExecutor

    camera, root, _, fp_config = repo
    butler = Butler.from_config(root, writeable=True)
    pipeline = Pipeline.from_uri(str(APPLY))
    pipeline.addInstrument(SkyFramesInstrument.from_camera(camera))
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
