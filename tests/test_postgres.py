"""A PostgreSQL registry: creation, the build pipeline through pipetask, concurrent writers."""

from __future__ import annotations

import socket
import subprocess

import numpy as np
import pytest
from lsst.daf.butler import Config
from lsst.daf.butler.registry import MissingCollectionError

from conftest import (
    APPLY_PIPELINE,
    BUILD_PIPELINE,
    SEED,
    assert_identical_frames,
    check,
    make_synthetic_repo,
    read_every_dataset,
    sky_frames,
    tool,
    tool_env,
)
from lsst.skyframes.build import CpSkyImageConfig
from lsst.skyframes.camera_overrides import camera_sized_config
from lsst.skyframes.certify import certify_calibrations
from lsst.skyframes.correction import register_correction_inputs
from lsst.skyframes.ingest import define_visit_detectors
from lsst.skyframes.repo import RepoConfigError, calib_collection, create_repo
from lsst.skyframes.simulate import ExposurePlan, define_planned_exposure, simulate_science_visit

VISIT = 5000


@pytest.fixture(scope="module")
def pg_repo(postgres, tmp_path_factory):
    """A synthetic repository whose registry is in PostgreSQL, created with the command line."""
    url = postgres.create_database("skyframes_build")
    root = tmp_path_factory.mktemp("postgres") / "repo"
    result = subprocess.run(
        [tool("skyframes"), "create-repo", str(root), "--db", url],
        capture_output=True,
        text=True,
        env=tool_env(),
    )
    check(result, "skyframes create-repo --db")
    # The repository records the URL without any password (that comes from $LSST_DB_AUTH).
    assert Config(str(root / "butler.yaml"))["registry", "db"] == url
    # make_synthetic_repo calls create_repo again, which opens the identical repository.
    return make_synthetic_repo(root, db_url=url)


def test_build_pipeline_on_postgres(pg_repo, reference_build):
    check(
        pg_repo.pipetask("-o", "build", "--output-run", "build/run", "--register-dataset-types"),
        "pipetask run of BuildSkyFrame on PostgreSQL",
    )
    counts = read_every_dataset(pg_repo.butler(), "build/run")
    n_det, n_exp = len(pg_repo.camera), len(pg_repo.plans)
    assert counts["sky"] == n_det
    assert counts["cpSkyObjectMask"] == counts["cpSkyExpResidualBackground"] == n_det * n_exp
    assert counts["cpSkyExpScale"] == n_exp
    # Same inputs as the SQLite reference repository: the registry must not change a bit.
    reference_repo, reference_run = reference_build
    assert_identical_frames(sky_frames(pg_repo, "build/run"), sky_frames(reference_repo, reference_run))


def test_apply_pipeline_on_postgres(pg_repo):
    """Certify the PostgreSQL build's sky frames and apply them to a visit with ApplySkyFrame."""
    if not any(ref.datasetType.name == "sky" for ref in _refs(pg_repo, "build/run")):
        check(
            pg_repo.pipetask("-o", "build", "--output-run", "build/run", "--register-dataset-types"),
            "pipetask run of BuildSkyFrame on PostgreSQL",
        )
    camera = pg_repo.camera
    butler = pg_repo.butler(writeable=True)
    assert certify_calibrations(butler, "build/run") == len(camera)

    # One held-out visit, ingested as a calibration pipeline leaves it.
    plan = ExposurePlan(
        exposure_id=VISIT,
        physical_filter=camera.physical_filters[0],
        sky_level=1500.0,
        gradient=(8e-4, -5e-4),
        obs_start="2026-11-20T03:00:00",
    )
    define_planned_exposure(butler, camera, plan)
    register_correction_inputs(butler, "visits")
    visit = simulate_science_visit(camera, plan, seed=SEED + 1, n_stars=10, n_galaxies=2)
    define_visit_detectors(butler, camera.instrument, VISIT, list(visit))
    for detector_id, science in visit.items():
        data_id = {"instrument": camera.instrument, "visit": VISIT, "detector": detector_id}
        butler.put(science.image, "preliminary_visit_image", data_id, run="visits")
        butler.put(science.background, "preliminary_visit_image_background", data_id, run="visits")

    fp_config = camera_sized_config(CpSkyImageConfig().largeScaleBackground, camera, 1)
    result = pg_repo.pipetask(
        "-o",
        "skycorr",
        "--output-run",
        "skycorr/run",
        "--register-dataset-types",
        # bgModel1 as the build's large-scale model (see tests/test_apply_pipeline.py).
        "-c",
        f"skyCorr:bgModel1.xSize={fp_config.xSize}",
        "-c",
        f"skyCorr:bgModel1.ySize={fp_config.ySize}",
        pipeline=APPLY_PIPELINE,
        inputs=f"visits,{calib_collection(camera.instrument)}",
    )
    check(result, "pipetask run of ApplySkyFrame on PostgreSQL")
    counts = read_every_dataset(pg_repo.butler(), "skycorr/run")
    assert counts["skyCorr"] == len(camera)
    assert counts["skyCorr_visit_mosaic"] == 1
    for detector in camera:
        data_id = {"instrument": camera.instrument, "visit": VISIT, "detector": detector.id}
        sky_corr = pg_repo.butler().get("skyCorr", data_id, collections="skycorr/run")
        assert np.isfinite(sky_corr.getImage().array).all()


def _refs(repo, collection: str) -> list:
    try:
        return repo.butler().query_all_datasets(collection, find_first=False, limit=None)
    except MissingCollectionError:
        return []


def test_concurrent_pipetask_runs(pg_repo, reference_build):
    """Two pipetask processes write different runs of one PostgreSQL repository at the same time."""
    exposures = [plan.exposure_id for plan in pg_repo.plans]
    halves = {"a": exposures[: len(exposures) // 2], "b": exposures[len(exposures) // 2 :]}
    processes = {}
    for name, ids in halves.items():
        query = f"instrument = '{pg_repo.instrument}' AND exposure IN ({', '.join(map(str, ids))})"
        processes[name] = pg_repo.popen_pipetask(
            "-d",
            query,
            "-o",
            f"concurrent/{name}",
            "--output-run",
            f"concurrent/{name}/run",
            # Both register the step's dataset types at once when the build test has not yet.
            "--register-dataset-types",
            pipeline=f"{BUILD_PIPELINE}#step1",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    outputs = {name: process.communicate(timeout=300) for name, process in processes.items()}
    for name, process in processes.items():
        check(
            subprocess.CompletedProcess(process.args, process.returncode, *outputs[name]),
            f"concurrent pipetask run {name}",
        )

    butler = pg_repo.butler()
    reference_repo, reference_run = reference_build
    reference = reference_repo.butler()
    n_det = len(pg_repo.camera)
    for name, ids in halves.items():
        run = f"concurrent/{name}/run"
        counts = read_every_dataset(butler, run)
        assert counts["cpSkyObjectMask"] == counts["cpSkyDetectorBackground"] == n_det * len(ids)
        written = {
            ref.dataId["exposure"] for ref in butler.query_datasets("cpSkyObjectMask", collections=run)
        }
        assert written == set(ids)
        # Each process wrote its own exposures' object masks, the same as one uninterrupted process
        # did from the same inputs in the SQLite reference repository.
        for exposure in ids:
            for detector in pg_repo.camera:
                data_id = {"instrument": pg_repo.instrument, "exposure": exposure, "detector": detector.id}
                got = butler.get("cpSkyObjectMask", data_id, collections=run)
                expected = reference.get("cpSkyObjectMask", data_id, collections=reference_run)
                assert np.array_equal(got.replaced, expected.replaced), data_id
                assert got.values.tobytes() == expected.values.tobytes(), data_id
                assert np.array_equal(got.mask.array, expected.mask.array), data_id


def test_create_repo_checks_the_database(postgres, tmp_path):
    """Database problems are RepoConfigErrors naming the fix, and leave no half-made repository."""
    url = postgres.create_database("skyframes_no_gist", btree_gist=False)
    root = tmp_path / "no_gist"
    with pytest.raises(RepoConfigError, match="btree_gist"):
        create_repo(root, db_url=url)
    assert not root.exists()

    unreachable = url.replace(f":{postgres.port}/", f":{_closed_port(postgres.port)}/")
    with pytest.raises(RepoConfigError, match="Cannot connect"):
        create_repo(tmp_path / "unreachable", db_url=unreachable)
    assert not (tmp_path / "unreachable").exists()

    # A second repository in a database that already holds one.
    taken = postgres.create_database("skyframes_taken")
    create_repo(tmp_path / "first", db_url=taken)
    with pytest.raises(RepoConfigError, match="already holds tables"):
        create_repo(tmp_path / "second", db_url=taken)
    assert not (tmp_path / "second").exists()
    # The first is intact and opens again with the same settings.
    assert create_repo(tmp_path / "first", db_url=taken).registry.queryCollections() == []
    with pytest.raises(RepoConfigError, match="different configuration"):
        create_repo(tmp_path / "first", db_url=url)


def _closed_port(avoid: int) -> int:
    # A port that was free a moment ago: nothing listens there, so connections are refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert port != avoid
    return port
