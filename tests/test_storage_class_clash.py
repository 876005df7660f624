"""A connection whose dataset type the repository already holds with an afw storage class.

Rubin repositories register ``skyCorr`` as ``Background`` (afw's BackgroundList), ``sky`` as
``ExposureF`` and so on; daf_butler cannot convert those to or from skyframes' storage classes.
Graph building must refuse such a pipeline before any quantum runs, naming the dataset type,
both storage classes and the ``-c LABEL:connections.NAME=...`` override, and the override must
then run. The repository is small (2x2 detectors of 128 px, one visit) and ApplySkyFrame runs with
doSky=False, so no sky frames have to be built first.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from lsst.daf.butler import Butler, DatasetType
from lsst.pipe.base import Pipeline
from lsst.pipe.base.pipeline_graph import IncompatibleDatasetTypeError

from conftest import APPLY_PIPELINE, BUILD_PIPELINE, INSTRUMENT, camera_env, tool
from lsst.skyframes.background import BackgroundList
from lsst.skyframes.camera import make_synthetic_camera
from lsst.skyframes.connections import check_storage_classes
from lsst.skyframes.correction import register_correction_inputs
from lsst.skyframes.errors import StorageClassClashError
from lsst.skyframes.repo import calib_collection, create_repo, register_camera
from lsst.skyframes.simulate import ExposurePlan, put_science_visit, simulate_science_visit
from lsst.skyframes.truth import large_scale_residual

VISIT = 5000
LEVEL = 1500.0
MODEL_SIZE = 3.0  # mm: bgModel1 of about a detector (128 px of 0.01 mm plus gaps)
OVERRIDE = "-c skyCorr:connections.skyCorr=skyCorr_skyframes"
SKYCORR_DIMENSIONS = ("instrument", "visit", "detector")


def _options() -> list[str]:
    return [
        "-c",
        "skyCorr:doSky=False",
        "-c",
        f"skyCorr:bgModel1.xSize={MODEL_SIZE}",
        "-c",
        f"skyCorr:bgModel1.ySize={MODEL_SIZE}",
    ]


def _run(root: str, camera, *args: str) -> subprocess.CompletedProcess:
    command = [
        tool("pipetask"),
        "run",
        "-b",
        root,
        "-i",
        f"visits,{calib_collection(camera.instrument)}",
        "-p",
        str(APPLY_PIPELINE),
        "--instrument",
        INSTRUMENT,
        "--register-dataset-types",
        *_options(),
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, env=camera_env(Path(root) / "camera.yaml"), timeout=300
    )


def _contents(butler: Butler) -> tuple[set[str], int]:
    """Every collection and the number of datasets in the repository."""
    collections = set(butler.collections.query("*"))
    n_datasets = sum(
        len(butler.query_all_datasets(c, find_first=False, limit=None))
        for c in collections
        if butler.collections.get_info(c).type.name == "RUN"
    )
    return collections, n_datasets


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("clash") / "repo")
    camera = make_synthetic_camera(n_x=2, n_y=2, size=128, gap_px=16)
    butler = create_repo(root)
    register_camera(butler, camera)
    camera.to_yaml(Path(root) / "camera.yaml")
    register_correction_inputs(butler, "visits")
    plan = ExposurePlan(
        exposure_id=VISIT,
        physical_filter=camera.physical_filters[0],
        sky_level=LEVEL,
        gradient=(8e-4, -5e-4),
        obs_start="2026-11-20T03:00:00",
    )
    visit = simulate_science_visit(camera, plan, seed=3, background_bin_size=64, n_stars=5, n_galaxies=1)
    put_science_visit(butler, camera, plan, visit, "visits")
    # As a Rubin repository holds it: afw's BackgroundList, declared by daf_butler without afw.
    butler.registry.registerDatasetType(
        DatasetType("skyCorr", SKYCORR_DIMENSIONS, "Background", universe=butler.dimensions)
    )
    return camera, root, visit


@pytest.fixture(scope="module")
def clash(repo):
    camera, root, _ = repo
    before = _contents(Butler.from_config(root))
    result = _run(root, camera, "-o", "clash")
    return result, before


def test_graph_build_names_the_clash_and_the_fix(clash):
    result, _ = clash
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-4000:]
    output = result.stdout + result.stderr
    assert "StorageClassClashError" in output
    assert (
        "dataset type 'skyCorr' is registered with storage class 'Background', which daf_butler cannot "
        "convert to or from the task's; task 'skyCorr' (SkyCorrectionTask) writes it as "
        "'SkyBackgroundList' (connection 'skyCorr')." in output
    )
    assert f"e.g.: {OVERRIDE}\n" in output
    # Refused before the graph existed: no quantum was even planned.
    assert "Executed" not in output and "QuantumGraph contains" not in output


def test_nothing_is_written(repo, clash):
    _, root, _ = repo
    _, before = clash
    butler = Butler.from_config(root)
    assert _contents(butler) == before
    assert "clash" not in before[0]
    assert butler.get_dataset_type("skyCorr").storageClass_name == "Background"


def test_the_override_runs_and_restores_the_subtracted_background(repo, clash):
    camera, root, visit = repo
    result = _run(root, camera, "-o", "renamed", *OVERRIDE.split())
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    butler = Butler.from_config(root)
    assert butler.query_datasets("skyCorr", collections="renamed", explain=False) == []
    residuals = []
    for detector in camera:
        data_id = {"instrument": camera.instrument, "visit": VISIT, "detector": detector.id}
        skycorr = butler.get("skyCorr_skyframes", data_id, collections="renamed")
        image = butler.get("preliminary_visit_image", data_id, collections="visits")
        # The first elements undo the background already subtracted, exactly.
        subtracted = visit[detector.id].background
        restored = BackgroundList(*list(skycorr)[: len(subtracted)]).getImage().array
        np.testing.assert_array_equal(restored, -subtracted.getImage().array)
        corrected = image.image.array - skycorr.getImage().array
        residuals.append(large_scale_residual(corrected, visit[detector.id].truth, image.mask.get("BAD")))
    rms = float(np.sqrt(np.nanmean(np.concatenate([r.ravel() for r in residuals]) ** 2)))
    # Focal-plane models only (doSky=False): what bgModel2 does not absorb of the sky-frame
    # patterns (amplitude 0.1 of a 1500 sky, +-150) stays; measured 14.8 (seed 3), bound twice that.
    assert rms < 0.2 * 0.1 * LEVEL, rms


@pytest.fixture(scope="module")
def apply_graph():
    pipeline = Pipeline.from_uri(str(APPLY_PIPELINE))
    pipeline.addConfigOverride("skyCorr", "bgModel1.xSize", MODEL_SIZE)
    pipeline.addConfigOverride("skyCorr", "bgModel1.ySize", MODEL_SIZE)
    return pipeline.to_graph()


def test_inputs_with_afw_storage_classes_name_the_input_override(repo, apply_graph):
    _, root, _ = repo
    universe = Butler.from_config(root).dimensions
    registered = {
        "preliminary_visit_image": DatasetType(
            "preliminary_visit_image", SKYCORR_DIMENSIONS, "ExposureF", universe=universe
        ),
        "sky": DatasetType(
            "sky",
            ("instrument", "physical_filter", "detector"),
            "ExposureF",
            universe=universe,
            isCalibration=True,
        ),
    }
    with pytest.raises(StorageClassClashError) as caught:
        check_storage_classes(apply_graph, dataset_types=registered)
    assert isinstance(caught.value, IncompatibleDatasetTypeError)  # what pipe_base's callers catch
    assert set(caught.value.clashes) == {
        ("preliminary_visit_image", "ExposureF", "MaskedImageV2"),
        ("sky", "ExposureF", "MaskedImageV2"),
    }
    message = str(caught.value)
    assert "reads it as 'MaskedImageV2' (connection 'calExps')" in message
    assert "-c skyCorr:connections.calExps=preliminary_visit_image_skyframes" in message
    assert "-c skyCorr:connections.skyFrames=sky_skyframes" in message


def test_matching_storage_classes_pass(repo, apply_graph):
    _, root, _ = repo
    universe = Butler.from_config(root).dimensions
    registered = {
        "preliminary_visit_image": DatasetType(
            "preliminary_visit_image", SKYCORR_DIMENSIONS, "MaskedImageV2", universe=universe
        ),
        "skyCorr": DatasetType("skyCorr", SKYCORR_DIMENSIONS, "SkyBackgroundList", universe=universe),
    }
    assert check_storage_classes(apply_graph, dataset_types=registered) is None


def test_a_clash_inside_the_build_renames_producer_and_consumers(repo):
    _, root, _ = repo
    universe = Butler.from_config(root).dimensions
    registered = {
        "cpSkyObjectMask": DatasetType(
            "cpSkyObjectMask", ("instrument", "exposure", "detector"), "ExposureF", universe=universe
        ),
    }
    graph = Pipeline.from_uri(str(BUILD_PIPELINE)).to_graph()
    with pytest.raises(StorageClassClashError) as caught:
        check_storage_classes(graph, dataset_types=registered)
    # One clash per skyframes connection using it: the producer and both consumers.
    assert caught.value.clashes == (("cpSkyObjectMask", "ExposureF", "SkyObjectMask"),) * 3
    renamed = "=cpSkyObjectMask_skyframes"
    assert (
        f"e.g.: -c cpSkyImage:connections.objectMask{renamed} -c "
        f"cpSkySubtractBackground:connections.objectMask{renamed} -c "
        f"cpSkyCombine:connections.inputExpHandles{renamed}\n" in str(caught.value)
    )
