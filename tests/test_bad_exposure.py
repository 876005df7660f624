"""One bad input costs only itself: builds through ``pipetask run`` with spoilt inputs.

The repository (2x2 detectors of 128 px, 5 exposures) has one exposure whose every pixel
is NaN, and one detector of another exposure likewise. The truth for the sky frames is a
second, independent build that leaves the NaN exposure out with ``-d`` (the README's
recipe for excluding an exposure by hand).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import (
    assert_identical_frames,
    check,
    make_synthetic_repo,
    run_tool,
    sky_frames,
)

N_EXPOSURES = 5
EXPOSURES = list(range(1000, 1000 + N_EXPOSURES))  # plan_exposures numbers them from 1000
NAN_EXPOSURE = 1001  # every pixel of every detector NaN
NAN_DETECTOR = (1003, 1)  # one detector of an otherwise good exposure
DROP_REASON = "none of the exposure's 4 detector(s) has a usable pixel"


def _spoil(detector, plan, image) -> bool:
    if plan.exposure_id == NAN_EXPOSURE or (plan.exposure_id, detector.id) == NAN_DETECTOR:
        image.image.array[...] = np.nan
        return True
    return False


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The spoilt repository, a build of everything, and a build without the NaN exposure."""
    repo = make_synthetic_repo(
        tmp_path_factory.mktemp("bad-exposure") / "repo", n_exposures=N_EXPOSURES, spoil=_spoil
    )
    assert [plan.exposure_id for plan in repo.plans] == EXPOSURES
    everything = check(
        repo.pipetask("-o", "with-bad", "--register-dataset-types"), "build with the bad exposure"
    )
    without = check(
        repo.pipetask("-o", "without-bad", "-d", f"exposure != {NAN_EXPOSURE}"), "build without it"
    )
    return repo, everything, without


def _quality(repo, collection: str, detector: int) -> dict:
    return repo.butler().get(
        "sky_quality",
        instrument=repo.instrument,
        detector=detector,
        physical_filter=repo.plans[0].physical_filter,
        collections=collection,
    )


def test_nan_exposure_is_dropped_with_a_warning_and_exit_code_0(builds):
    repo, everything, _ = builds
    output = everything.stdout + everything.stderr
    # check() asserted exit code 0; the warning names the exposure, its filter and the cause.
    physical_filter = repo.plans[0].physical_filter
    assert f"Dropping exposure {NAN_EXPOSURE} (physical_filter {physical_filter}) from the sky" in output
    assert DROP_REASON in output
    butler = repo.butler()
    scale = butler.get(
        "cpSkyExpScale", instrument=repo.instrument, exposure=NAN_EXPOSURE, collections="with-bad"
    )
    assert scale["scale"] is None and DROP_REASON in scale["dropped"]
    # Only the NaN exposure lost its merged background and residuals; the NaN detector kept its quanta.
    merged = {
        ref.dataId["exposure"] for ref in butler.query_datasets("cpSkyExpBackground", collections="with-bad")
    }
    assert merged == set(EXPOSURES) - {NAN_EXPOSURE}
    residuals = {
        (ref.dataId["exposure"], ref.dataId["detector"])
        for ref in butler.query_datasets("cpSkyExpResidualBackground", collections="with-bad")
    }
    assert residuals == {(e, d.id) for e in EXPOSURES if e != NAN_EXPOSURE for d in repo.camera}


def test_sky_frames_equal_a_build_without_the_exposure(builds):
    repo, _, _ = builds
    with_bad, without = sky_frames(repo, "with-bad"), sky_frames(repo, "without-bad")
    assert sorted(with_bad) == [d.id for d in repo.camera]
    # Two independent builds; equal bit for bit in image, mask and variance.
    assert_identical_frames(with_bad, without)
    for detector, planes in with_bad.items():
        # Not a vacuous comparison: every frame holds the simulated pattern.
        assert np.isfinite(planes["image"]).all() and np.std(planes["image"]) > 1e-3, detector
        assert np.array_equal(planes["image"], without[detector]["image"])


def test_quality_report_lists_the_drop_and_the_rejected_detector(builds):
    repo, _, _ = builds
    bad_exposure, bad_detector = NAN_DETECTOR
    good = [e for e in EXPOSURES if e != NAN_EXPOSURE]
    for detector in repo.camera:
        report = _quality(repo, "with-bad", detector.id)
        assert report["schema_version"] == 4
        [dropped] = report["inputs_dropped"]
        assert dropped["exposure"] == NAN_EXPOSURE and DROP_REASON in dropped["reason"]
        if detector.id == bad_detector:
            # The NaN detector costs only its own (exposure, detector).
            assert report["inputs_used"] == [e for e in good if e != bad_exposure]
            assert report["inputs_rejected"] == [
                {"exposure": bad_exposure, "reason": "no finite bin (fully masked or all NaN)"}
            ]
        else:
            assert report["inputs_used"] == good and report["inputs_rejected"] == []
        # A build that leaves the exposure out with -d has nothing to report about it.
        assert _quality(repo, "without-bad", detector.id)["inputs_dropped"] == []


def test_report_names_the_exposures_left_out(builds, tmp_path):
    repo, _, _ = builds
    result = run_tool(
        "skyframes", "report", repo.root, "--collection", "with-bad", "--output", str(tmp_path / "q.png")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    physical_filter = repo.plans[0].physical_filter
    assert (
        f"{physical_filter} exposure {NAN_EXPOSURE}, dropped before the combination (detectors 0, 1, 2, 3)"
        in (result.stdout)
    )
    assert (
        f"{physical_filter} exposure {NAN_DETECTOR[0]}, rejected (detector {NAN_DETECTOR[1]})"
        in result.stdout
    )
    assert (tmp_path / f"q_{physical_filter}.png").stat().st_size > 0


def test_a_build_of_only_bad_exposures_fails_naming_the_count(builds):
    repo, _, _ = builds
    result = repo.pipetask("-o", "only-bad", "-d", f"exposure = {NAN_EXPOSURE}")
    output = result.stdout + result.stderr
    # No sky frame can be made: the combination runs anyway and says why, for every detector.
    assert result.returncode != 0, output[-3000:]
    assert output.count(
        "would be built from 0 exposure(s) (0 rejected, 1 dropped before the combination"
    ) >= len(repo.camera), output[-5000:]
    assert f"exposure {NAN_EXPOSURE}: cpSkyScaleMeasure: {DROP_REASON}" in output
    assert "fewer than minExposures = 1" in output
