"""Faults during production: a build killed mid-run and resumed, a corrupted input file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest
from lsst.daf.butler import Butler, MissingDatasetTypeError
from lsst.daf.butler.registry import MissingCollectionError

from conftest import (
    BUILD_PIPELINE,
    SEED,
    assert_identical_frames,
    check,
    read_every_dataset,
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
            while _count(repo.root, "cpSkyMaskedIsrExp", run) < 2:
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
    assert 2 <= killed["cpSkyMaskedIsrExp"] < n_det * n_exp
    assert "sky" not in killed

    result = check(repo.pipetask("-o", "restart", "--output-run", run, *RESUME_FLAGS), "resumed pipetask run")
    # The finished quanta were not run again.
    planned = re.search(r"QuantumGraph contains (\d+) quanta", result.stderr + result.stdout)
    assert planned is not None and int(planned.group(1)) < n_det * n_exp + n_exp + n_det * n_exp + n_det

    resumed = read_every_dataset(repo.butler(), run)
    assert resumed["sky"] == n_det
    assert resumed["cpSkyMaskedIsrExp"] == resumed["cpSkyImage_metadata"] == n_det * n_exp
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


def test_one_corrupted_input_fails_alone(corrupted):
    repo, plans, bad, path = corrupted
    ids = ", ".join(str(plan.exposure_id) for plan in plans)
    result = repo.pipetask(
        "-o",
        "fault",
        "--output-run",
        "fault/run",
        "-d",
        f"instrument = '{repo.instrument}' AND exposure IN ({ids})",
        pipeline=f"{BUILD_PIPELINE}#step1",
        inputs=f"raw-fault,{calib_collection(repo.instrument)}",
    )
    output = result.stdout + result.stderr
    # pipetask reports the failure in its exit code, after running every other quantum
    # (--fail-fast is off by default).
    assert result.returncode != 0, output[-3000:]
    assert path in output, f"the error output does not name {path}:\n{output[-5000:]}"
    assert re.search(r"Executed 7 quanta successfully, 1 failed", output), output[-3000:]

    butler = repo.butler()
    counts = read_every_dataset(butler, "fault/run")
    assert counts["cpSkyMaskedIsrExp"] == counts["cpSkyDetectorBackground"] == 2 * len(repo.camera) - 1
    produced = {
        (ref.dataId["exposure"], ref.dataId["detector"])
        for ref in butler.query_datasets("cpSkyMaskedIsrExp", collections="fault/run")
    }
    assert (bad["exposure"], bad["detector"]) not in produced
    assert len(produced) == 2 * len(repo.camera) - 1
