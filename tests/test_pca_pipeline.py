"""Multi-component sky templates through the real ``pipetask run``: build, certify, apply.

Build exposures whose sky varies with two independent patterns (the second with a
random weight per exposure) are turned into K = 2 templates by BuildSkyTemplates with
``cpSkyTemplates:nComponents=2`` (one quantum for the whole focal plane), certified with
``skyframes certify``, and applied by ApplySkyFrame with ``skyCorr:nComponents`` 1 and
2 to held-out visits with a known weight. Scored against the simulation's truth.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from lsst.daf.butler import Butler

from conftest import INSTRUMENT, camera_env, check, tool, tool_env
from lsst.skyframes.build import CpSkyImageConfig
from lsst.skyframes.camera import make_synthetic_camera
from lsst.skyframes.camera_overrides import camera_sized_config
from lsst.skyframes.correction import register_correction_inputs
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
from lsst.skyframes.truth import large_scale_residual

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "pipelines" / "BuildSkyFrame.yaml"
TEMPLATES = ROOT / "pipelines" / "BuildSkyTemplates.yaml"
APPLY = ROOT / "pipelines" / "ApplySkyFrame.yaml"
SEED = 23
AMPLITUDE = 0.3
SECONDARY = 0.3
N_EXPOSURES = 24
LEVEL = 1500.0
OBJECTS = {"n_stars": 40, "n_galaxies": 8}
# Held-out visits: a strong second pattern, and none at all.
VISIT_TWO, VISIT_ONE = 6000, 6001
WEIGHTS = {VISIT_TWO: 0.8, VISIT_ONE: 0.0}
BIN = 8


def _run(program: str, args: list[str]) -> subprocess.CompletedProcess:
    env = tool_env()
    if program == "pipetask":
        # The instrument's camera-sized models; its camera is the file beside the repository's.
        root = args[args.index("-b") + 1]
        args = [*args, "--instrument", INSTRUMENT]
        env = camera_env(Path(root) / "camera.yaml")
    return subprocess.run([tool(program), *args], capture_output=True, text=True, env=env)


def _plan(camera, visit_id: int) -> ExposurePlan:
    return ExposurePlan(
        exposure_id=visit_id,
        physical_filter=camera.physical_filters[0],
        sky_level=LEVEL,
        gradient=(8e-4, -5e-4),
        obs_start=f"2026-11-20T04:{visit_id - VISIT_TWO:02d}:00",
        secondary_weight=WEIGHTS[visit_id],
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pca") / "repo")
    camera = make_synthetic_camera(n_x=2, n_y=2, size=256, gap_px=32)
    butler = create_repo(root)
    register_camera(butler, camera)
    camera.to_yaml(Path(root) / "camera.yaml")
    plans = plan_exposures(
        N_EXPOSURES, camera.physical_filters[0], seed=SEED, secondary_weight_range=(-1.0, 1.0)
    )
    for plan in plans:
        for detector in camera:
            exposure = simulate_detector(
                detector, plan, seed=SEED, amplitude=AMPLITUDE, secondary_amplitude=SECONDARY, **OBJECTS
            )
            ingest_image(
                butler, camera, exposure.image, exposure_header(detector, plan), source="sim", run="raw"
            )
    inputs = ["-i", f"raw,{calib_collection(camera.instrument)}"]
    # The bins of the residuals, set once for the steps that make and combine them.
    bins = ["-c", f"parameters:xBinSize={BIN}", "-c", f"parameters:yBinSize={BIN}"]
    check(
        _run(
            "pipetask",
            [
                "run",
                "-b",
                root,
                *inputs,
                "-o",
                "pca2",
                "-p",
                str(TEMPLATES),
                "--register-dataset-types",
                *bins,
            ]
            + ["-c", "cpSkyTemplates:nComponents=2"],
        ),
        "pipetask run BuildSkyTemplates",
    )
    # The same inputs combined the reference way (step 3 alone, nComponents=1).
    check(
        _run(
            "pipetask",
            ["run", "-b", root, "-i", "pca2", "-o", "single", "-p", f"{BUILD}#step3"]
            + ["--register-dataset-types", *bins],
        ),
        "pipetask run BuildSkyFrame#step3",
    )
    certified = _run("skyframes", ["certify", root, "pca2"])
    check(certified, "skyframes certify")

    butler = Butler.from_config(root, writeable=True)
    register_correction_inputs(butler, "visits")
    truth = {}
    for visit_id in WEIGHTS:
        plan = _plan(camera, visit_id)
        visit = simulate_science_visit(
            camera, plan, seed=SEED + 1, amplitude=AMPLITUDE, secondary_amplitude=SECONDARY, **OBJECTS
        )
        put_science_visit(butler, camera, plan, visit, "visits")
        truth[visit_id] = visit
    inputs = ["-i", f"visits,{calib_collection(camera.instrument)}"]
    fp_config = camera_sized_config(CpSkyImageConfig().largeScaleBackground, camera, 1)
    for k in (1, 2):
        check(
            _run(
                "pipetask",
                ["run", "-b", root, *inputs, "-o", f"corr{k}", "-p", str(APPLY), "--register-dataset-types"]
                + ["-c", f"skyCorr:nComponents={k}", "-c", "skyCorr:doPlotMosaics=False"]
                + ["-c", "skyCorr:sky.xNumSamples=16", "-c", "skyCorr:sky.yNumSamples=16"]
                # bgModel1 at the build's focal-plane bin size, as tests/test_apply_pipeline.py
                # explains: the default two-detector bins bias the fit on a 2x2 camera.
                + ["-c", f"skyCorr:bgModel1.xSize={fp_config.xSize}"]
                + ["-c", f"skyCorr:bgModel1.ySize={fp_config.ySize}"],
            ),
            f"pipetask run ApplySkyFrame nComponents={k}",
        )
    return camera, root, truth, certified.stdout


def _residual_rms(butler, camera, visit_id: int, visit, collection: str) -> float:
    values = []
    for detector_id, science in visit.items():
        data_id = {"instrument": camera.instrument, "visit": visit_id, "detector": detector_id}
        image = butler.get("preliminary_visit_image", data_id, collections="visits")
        sky_corr = butler.get("skyCorr", data_id, collections=collection)
        corrected = image.image.array - sky_corr.getImage().array
        values.append(large_scale_residual(corrected, science.truth, science.truth.image.mask.get("BAD")))
    return float(np.sqrt(np.nanmean(np.concatenate([v.ravel() for v in values]) ** 2)))


def test_one_quantum_per_filter_and_component_one_is_the_sky_frame(repo):
    camera, root, _, certify_output = repo
    butler = Butler.from_config(root)
    components = butler.query_datasets("sky_components", collections="pca2", explain=False)
    assert sorted(ref.dataId["detector"] for ref in components) == list(camera.detector_ids)
    # One cpSkyCombine quantum for the whole focal plane: its metadata has no detector.
    (metadata_ref,) = butler.query_datasets("cpSkyTemplates_metadata", collections="pca2", explain=False)
    assert "detector" not in metadata_ref.dataId.dimensions.names
    assert "4 'sky' datasets newly certified" in certify_output
    assert "4 'sky_components' datasets newly certified" in certify_output
    calib = [calib_collection(camera.instrument), "raw"]
    for detector in camera:
        data_id = {
            "instrument": camera.instrument,
            "detector": detector.id,
            "physical_filter": camera.physical_filters[0],
        }
        sky = butler.get("sky", data_id, collections="pca2")
        single = butler.get("sky", data_id, collections="single")
        templates = butler.get("sky_components", data_id, collections="pca2")
        assert len(templates) == 2
        # nComponents=1 is today's sky frame; with 2, component 1 is that frame bit for bit
        # (no exposure is rejected here) and the templates file starts with it.
        np.testing.assert_array_equal(sky.image.array, single.image.array)
        np.testing.assert_array_equal(templates[0][0].getStatsImage().image.array, sky.image.array)
        # Its calibration header is the single frame's (less the creation time): plan_exposures'
        # ids from 1000, 30-s exposures every 2 minutes from 03:00 UTC (TAI = UTC + 37 s).
        keys = ("OBSTYPE", "SKY_NINPUTS", "CPP_INPUT_", "TIMESYS", "DATE-", "MJD-")
        provenance = {k: v for k, v in sky.metadata.items() if k.startswith(keys)}
        assert len(provenance) == 2 + 3 * N_EXPOSURES + 1 + 8
        assert provenance == {k: v for k, v in single.metadata.items() if k.startswith(keys)}
        assert [sky.metadata[f"CPP_INPUT_{i}"] for i in range(N_EXPOSURES)] == [
            1000 + i for i in range(N_EXPOSURES)
        ]
        assert f"CPP_INPUT_{N_EXPOSURES}" not in sky.metadata
        assert sky.metadata["CPP_INPUT_DATE_1"] == "2026-11-01T03:02:52.000"
        assert sky.metadata["DATE-END"] == f"2026-11-01T03:{2 * N_EXPOSURES - 1:02d}:07.000"
        # Found by calibration lookup as a later visit would.
        found = butler.get(
            "sky_components",
            instrument=camera.instrument,
            detector=detector.id,
            exposure=VISIT_TWO,
            collections=calib,
        )
        np.testing.assert_array_equal(
            found[1][0].getStatsImage().image.array, templates[1][0].getStatsImage().image.array
        )


def _excess(report: dict, exposure: int, key: str) -> float:
    """An input's residual RMS in excess of its bins' noise."""
    rms, noise = report[key][str(exposure)], report["noise_rms"][str(exposure)]
    return float(np.sqrt(max(rms**2 - noise**2, 0.0)))


def test_quality_report_shows_the_second_component(repo):
    camera, root, _, _ = repo
    butler = Butler.from_config(root)
    for detector in camera:
        report = butler.get(
            "sky_quality",
            instrument=camera.instrument,
            detector=detector.id,
            physical_filter=camera.physical_filters[0],
            collections="pca2",
        )
        json.dumps(report)  # JSON-compatible as stored
        assert report["n_inputs_used"] == N_EXPOSURES and report["inputs_rejected"] == []
        assert report["n_components"] == 2 and len(report["variance_explained"]) == 2
        # The injected second pattern (weights uniform in -1..1, 30 % amplitude) is what is
        # left after the mean frame: beyond each input's own noise, the K=2 model must
        # explain most of its residual.
        single = np.median([_excess(report, e, "residual_rms") for e in report["inputs_used"]])
        model = np.median([_excess(report, e, "model_residual_rms") for e in report["inputs_used"]])
        print(f"detector {detector.id}: residual beyond noise from sky {single:.5f}, K=2 model {model:.5f}")
        assert model < single / 3


def test_two_components_remove_the_second_pattern(repo):
    camera, root, truth, _ = repo
    butler = Butler.from_config(root)
    rms = {k: _residual_rms(butler, camera, VISIT_TWO, truth[VISIT_TWO], f"corr{k}") for k in (1, 2)}
    print(f"two-pattern visit: large-scale residual RMS K=1 {rms[1]:.2f} e, K=2 {rms[2]:.2f} e")
    assert rms[1] / rms[2] >= 3.0
    metadata = butler.get(
        "skyCorr_metadata", instrument=camera.instrument, visit=VISIT_TWO, collections="corr2"
    )
    coefficients = metadata["skyCorr"].getArray("skyComponentCoefficients")
    assert len(coefficients) == 2 and metadata["skyCorr"]["skyFrameScale"] == coefficients[0]
    # skyCorr records every scaled template: input background (1) + bgModel1 + 2 templates + bgModel2.
    sky_corr = butler.get(
        "skyCorr", instrument=camera.instrument, visit=VISIT_TWO, detector=0, collections="corr2"
    )
    assert len(sky_corr) == 5


def test_extra_component_does_no_harm(repo):
    camera, root, truth, _ = repo
    butler = Butler.from_config(root)
    rms = {k: _residual_rms(butler, camera, VISIT_ONE, truth[VISIT_ONE], f"corr{k}") for k in (1, 2)}
    print(f"one-pattern visit: large-scale residual RMS K=1 {rms[1]:.2f} e, K=2 {rms[2]:.2f} e")
    assert rms[2] <= 1.05 * rms[1]


def test_report_and_plot_components(repo, tmp_path):
    camera, root, _, _ = repo
    report = _run("skyframes", ["report", root, "--collection", "pca2", "--output", str(tmp_path / "q.png")])
    check(report, "skyframes report")
    # The table gains the component columns for multi-component builds.
    assert "variance explained" in report.stdout and "K-model resid" in report.stdout
    for data_id in ([], ["detector=1", f"physical_filter={camera.physical_filters[0]}"]):
        out = tmp_path / f"components{len(data_id)}.png"
        plotted = _run(
            "skyframes",
            [
                "plot",
                root,
                "sky_components",
                "--collection",
                "pca2",
                "--output",
                str(out),
                "--data-id",
                *data_id,
            ],
        )
        check(plotted, "skyframes plot")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
