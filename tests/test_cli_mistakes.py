"""Ordinary mistakes on the ``skyframes`` command line: one-line messages, nothing half-done.

Each test makes the mistake as a user would, then checks the exit code, the message and the
repository afterwards (what is certified, and for which validity range).
"""

from __future__ import annotations

import shutil
import subprocess

import astropy.time
import pytest
from lsst.daf.butler import Butler, MissingCollectionError, MissingDatasetTypeError

from conftest import ROOT, SyntheticRepo, tool, tool_env
from lsst.skyframes.certify import validity_range
from lsst.skyframes.cli import main
from lsst.skyframes.errors import ValidityRangeError
from lsst.skyframes.repo import calib_collection


@pytest.fixture
def built(reference_build, tmp_path) -> tuple[SyntheticRepo, str]:
    """A writeable copy of the session's reference build (certify writes into it)."""
    repo, run = reference_build
    root = tmp_path / "repo"
    shutil.copytree(repo.root, root)
    return SyntheticRepo(str(root), repo.camera, repo.plans), run


def _certified(root: str, instrument: str) -> list:
    butler = Butler.from_config(root)
    try:
        return list(
            butler.registry.queryDatasetAssociations("sky", collections=[calib_collection(instrument)])
        )
    except (MissingCollectionError, MissingDatasetTypeError):  # nothing was ever certified
        return []


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("window", "phrase"),
    [
        (["--begin", "2026-10-02T00:00:00", "--end", "2026-10-01T00:00:00"], "is inverted"),
        (["--begin", "2026-10-01T00:00:00", "--end", "2026-10-01T00:00:00"], "is empty"),
        (["--begin", "yesterday"], "'yesterday' is not a time"),
        (["--end", "2026-13-45"], "'2026-13-45' is not a time"),
    ],
)
def test_certify_refuses_a_bad_validity_range(built, capsys, window, phrase):
    repo, run = built
    code, out, err = _run(["certify", repo.root, run, *window], capsys)
    assert code == 2
    assert phrase in err and err.count("\n") == 1 and "Traceback" not in err
    assert _certified(repo.root, repo.instrument) == []


def test_certify_range_is_tai_and_found_only_inside(built, capsys):
    repo, run = built
    begin, end = "2026-10-01T00:00:00", "2027-10-01T00:00:00"
    code, out, _ = _run(["certify", repo.root, run, "--begin", begin, "--end", end], capsys)
    assert code == 0 and f"{len(repo.camera)} 'sky' datasets newly certified" in out
    associations = _certified(repo.root, repo.instrument)
    assert len(associations) == len(repo.camera)
    for association in associations:
        assert association.timespan.begin == astropy.time.Time(begin, scale="tai")
        assert association.timespan.end == astropy.time.Time(end, scale="tai")
    # A lookup inside the range finds the frame, one after its end does not.
    butler = Butler.from_config(repo.root)
    data_id = {"instrument": repo.instrument, "detector": 0, "physical_filter": repo.plans[0].physical_filter}
    calib = calib_collection(repo.instrument)
    inside = validity_range("2027-01-01T00:00:00", "2027-01-01T00:01:00")
    after = validity_range("2027-10-01T00:00:01", "2027-10-01T00:01:00")
    assert butler.find_dataset("sky", data_id, collections=calib, timespan=inside) is not None
    assert butler.find_dataset("sky", data_id, collections=calib, timespan=after) is None


def test_validity_range_rejects_inverted_times():
    with pytest.raises(ValidityRangeError, match="inverted"):
        validity_range(astropy.time.Time("2026-01-02", scale="tai"), "2026-01-01")


def test_certify_unknown_collection_and_repository(built, capsys, tmp_path):
    repo, _ = built
    code, _, err = _run(["certify", repo.root, "no/such/run"], capsys)
    assert code == 2 and "Collection 'no/such/run' does not exist" in err and "query-collections" in err
    code, _, err = _run(["certify", str(tmp_path / "nowhere"), "run"], capsys)
    assert code == 2 and "No butler repository at" in err and "skyframes create-repo" in err
    assert _certified(repo.root, repo.instrument) == []


def test_certify_of_a_run_without_sky_frames(built, capsys):
    repo, _ = built
    code, _, err = _run(["certify", repo.root, "raw"], capsys)
    assert code == 2 and "No 'sky' datasets in collection 'raw'" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["register", "{root}", "{missing}"],
        ["ingest", "{root}", "--camera", "{missing}", "x.fits"],
    ],
)
def test_missing_camera_file(built, capsys, tmp_path, argv):
    repo, _ = built
    missing = str(tmp_path / "camera.yaml")
    code, _, err = _run([a.format(root=repo.root, missing=missing) for a in argv], capsys)
    assert code == 2 and f"Camera file {missing} does not exist" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "{root}", "--collection", "x"],
        ["plot", "{root}", "sky", "--collection", "x"],
        ["register", "{root}", str(ROOT / "tests" / "data" / "camera.yaml")],
        ["ingest", "{root}", "--camera", str(ROOT / "tests" / "data" / "camera.yaml"), "x.fits"],
    ],
)
def test_missing_repository(capsys, tmp_path, argv):
    code, _, err = _run([a.format(root=tmp_path / "nowhere") for a in argv], capsys)
    assert code == 2 and "No butler repository at" in err


def test_report_and_plot_of_an_unknown_collection(built, capsys):
    repo, _ = built
    for argv in (
        ["report", repo.root, "--collection", "nope"],
        ["plot", repo.root, "sky", "--collection", "nope"],
    ):
        code, _, err = _run(argv, capsys)
        assert code == 2 and "Collection 'nope' does not exist" in err


def test_plot_without_the_data_id_keys_it_needs(built, capsys, tmp_path):
    repo, run = built
    out = tmp_path / "residual.png"
    argv = ["plot", repo.root, "cpSkyExpResidualBackground", "--collection", run, "--output", str(out)]
    code, _, err = _run(argv, capsys)
    assert code == 2 and not out.exists()
    assert "choose one with --data-id" in err and "detector=..." in err and "exposure=..." in err
    exposure = repo.plans[0].exposure_id
    assert str(exposure) in err  # the values to choose from are listed
    code, _, err = _run([*argv, "--data-id", "detector=1", f"exposure={exposure}"], capsys)
    assert code == 0, err
    assert out.read_bytes().startswith(b"\x89PNG")
    code, _, err = _run([*argv, "--data-id", "detector"], capsys)
    assert code == 2 and "is not KEY=VALUE" in err


def test_plot_of_an_unknown_dataset_type(built, capsys, tmp_path):
    repo, run = built
    code, _, err = _run(["plot", repo.root, "skyy", "--collection", run], capsys)
    assert code == 2 and "skyy" in err and "Traceback" not in err


def test_the_console_script_prints_one_line(built, tmp_path):
    """The same messages from the installed command, with no traceback."""
    repo, run = built
    result = subprocess.run(
        [tool("skyframes"), "certify", repo.root, run, "--begin", "2027-01-01", "--end", "2026-01-01"],
        capture_output=True,
        text=True,
        env=tool_env(),
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        result.stderr.startswith("skyframes certify: The validity range") and "Traceback" not in result.stderr
    )
    assert _certified(repo.root, repo.instrument) == []
