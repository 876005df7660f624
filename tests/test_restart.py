"""Faults during production: a build killed mid-run and resumed, a corrupted input file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest
from lsst.daf.butler import Butler, MissingDatasetTypeError
from lsst.daf.butler.registry import MissingCollectionError

from conftest import (
    BUILD_PIPELINE,
    SEED,
    assert_identical_frames,
    check,
    read_every_dataset,
    run_tool,
    simulate_inputs,
    sky_frames,
)
from lsst.skyframes.ingest import ingest_image
from lsst.skyframes.repo import calib_collection
from lsst.skyframes.simulate import exposure_header

# The resume command: --extend-run writes into the killed run, --skip-existing-in skips the quanta
# that finished there (their metadata dataset exists), --clobber-outputs removes the outputs that
# the killed quantum had already registered so it can run again.
RESUME_FLAGS = ("--extend-run", "--skip-existing-in", "restart/run", "--clobber-outputs")


def _count(root: str, dataset_type: str, run: str) -> int:
    # A fresh butler each time: a long-lived one may cache that the run does not exist yet.
    butler = Butler.from_config(root)
    try:
        return len(butler.query_datasets(dataset_type, collections=run, explain=False))
    except (MissingCollectionError, MissingDatasetTypeError):
        return 0


def test_killed_run_resumes_to_identical_frames(reference_build, tmp_path):
    repo, reference_run = reference_build
    run = "restart/run"
    log = tmp_path / "killed.log"
    with open(log, "w") as stream:
        process = repo.popen_pipetask(
            "-o", "restart", "--output-run", run, stdout=stream, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 180
            # Two outputs of step 1 means its first quantum is done and the second is under way.
            while _count(repo.root, "cpSkyObjectMask", run) < 2:
                assert process.poll() is None, f"pipetask ended before it could be killed:\n{log.read_text()}"
                assert time.monotonic() < deadline, "pipetask wrote no cpSkyMaskedIsrExp in 180 s"
                time.sleep(0.05)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL

    butler = repo.butler()
    n_det, n_exp = len(repo.camera), len(repo.plans)
    killed = read_every_dataset(butler, run)  # nothing half-written is visible
    assert 2 <= killed["cpSkyObjectMask"] < n_det * n_exp
    assert "sky" not in killed

    result = check(repo.pipetask("-o", "restart", "--output-run", run, *RESUME_FLAGS), "resumed pipetask run")
    # The finished quanta were not run again.
    planned = re.search(r"QuantumGraph contains (\d+) quanta", result.stderr + result.stdout)
    assert planned is not None and int(planned.group(1)) < n_det * n_exp + n_exp + n_det * n_exp + n_det

    resumed = read_every_dataset(repo.butler(), run)
    assert resumed["sky"] == n_det
    assert resumed["cpSkyObjectMask"] == resumed["cpSkyImage_metadata"] == n_det * n_exp
    assert_identical_frames(sky_frames(repo, run), sky_frames(repo, reference_run))


@pytest.fixture(scope="module")
def corrupted(reference_build):
    """Two exposures' inputs ingested again into a run of their own, one file overwritten with garbage."""
    repo, _ = reference_build
    butler = repo.butler(writeable=True)
    plans = repo.plans[:2]
    for detector, plan, image in simulate_inputs(repo.camera, plans):
        ingest_image(
            butler,
            repo.camera,
            image,
            exposure_header(detector, plan),
            source=f"simulated exposure {plan.exposure_id} detector {detector.id} (seed {SEED})",
            run="raw-fault",
        )
    bad = {"instrument": repo.instrument, "exposure": plans[1].exposure_id, "detector": 2}
    path = butler.getURI("post_isr_image", bad, collections="raw-fault").ospath
    size = os.path.getsize(path)
    with open(path, "r+b") as stream:
        # Same size, so nothing but the content says it is wrong.
        stream.write(os.urandom(size))
    return repo, plans, bad, path


def _fault_query(repo, plans) -> str:
    ids = ", ".join(str(plan.exposure_id) for plan in plans)
    return f"instrument = '{repo.instrument}' AND exposure IN ({ids})"


@pytest.fixture(scope="module")
def fault_run(corrupted) -> subprocess.CompletedProcess:
    """step1 of the build on the two exposures of `corrupted`, into ``fault/run`` (one quantum fails)."""
    repo, plans, _, _ = corrupted
    return repo.pipetask(
        "-o",
        "fault",
        "--output-run",
        "fault/run",
        "-d",
        _fault_query(repo, plans),
        pipeline=f"{BUILD_PIPELINE}#step1",
        inputs=f"raw-fault,{calib_collection(repo.instrument)}",
    )


def test_one_corrupted_input_fails_alone(corrupted, fault_run):
    repo, plans, bad, path = corrupted
    result = fault_run
    output = result.stdout + result.stderr
    # pipetask reports the failure in its exit code, after running every other quantum
    # (--fail-fast is off by default).
    assert result.returncode != 0, output[-3000:]
    assert path in output, f"the error output does not name {path}:\n{output[-5000:]}"
    assert re.search(r"Executed 7 quanta successfully, 1 failed", output), output[-3000:]

    butler = repo.butler()
    counts = read_every_dataset(butler, "fault/run")
    assert counts["cpSkyObjectMask"] == counts["cpSkyDetectorBackground"] == 2 * len(repo.camera) - 1
    produced = {
        (ref.dataId["exposure"], ref.dataId["detector"])
        for ref in butler.query_datasets("cpSkyObjectMask", collections="fault/run")
    }
    assert (bad["exposure"], bad["detector"]) not in produced
    assert len(produced) == 2 * len(repo.camera) - 1


def test_extend_run_without_the_bad_exposure_builds_from_one_input(corrupted, fault_run, tmp_path):
    """The README's recovery: finish the stopped run with -d "exposure != N"; one exposure is left."""
    repo, plans, bad, _ = corrupted
    good = plans[0].exposure_id
    result = check(
        repo.pipetask(
            "-o",
            "fault",
            "--extend-run",
            "-d",
            f"{_fault_query(repo, plans)} AND exposure != {bad['exposure']}",
            inputs=f"raw-fault,{calib_collection(repo.instrument)}",
        ),
        "pipetask run --extend-run without the bad exposure",
    )
    output = result.stdout + result.stderr
    assert output.count(
        "is built from 1 input(s): with fewer than 3 the clipped mean rejects nothing"
    ) == len(repo.camera), output[-3000:]
    butler = repo.butler()
    physical_filter = plans[0].physical_filter
    for detector in repo.camera:
        data_id = {"instrument": repo.instrument, "detector": detector.id}
        sky = butler.get("sky", data_id, physical_filter=physical_filter, collections="fault/run")
        assert sky.metadata["SKY_NINPUTS"] == 1 and sky.metadata["CPP_INPUT_0"] == good
        assert "CPP_INPUT_1" not in sky.metadata  # the excluded exposure is not an input
        # Truth: the clipped mean of one input is that input, bin for bin; a bin it did not
        # measure (all its pixels masked) takes the median of the others and is flagged NO_DATA.
        residual = butler.get("cpSkyExpResidualBackground", data_id, exposure=good, collections="fault/run")
        stats = residual[0][0].getStatsImage().image.array
        measured = np.isfinite(stats)
        assert measured.sum() >= stats.size - 2, stats
        assert np.array_equal(sky.image.array[measured], stats[measured])
        median = np.float32(np.median(stats[measured].astype(np.float64)))
        assert np.array_equal(sky.image.array[~measured], np.full((~measured).sum(), median))
        assert np.array_equal(sky.mask.get("NO_DATA"), ~measured)
        report = butler.get("sky_quality", data_id, physical_filter=physical_filter, collections="fault/run")
        assert report["inputs_used"] == [good] and report["inputs_dropped"] == []
        assert report["residual_rms"] == {str(good): 0.0}
    report = run_tool(
        "skyframes", "report", repo.root, "--collection", "fault/run", "--output", str(tmp_path / "q.png")
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert f"{physical_filter} detectors 0, 1, 2, 3: 1 input" in report.stdout, report.stdout
    assert (tmp_path / f"q_{physical_filter}.png").stat().st_size > 0
