"""Ingest never loses or corrupts data: the mistakes users make with ``skyframes ingest``.

Every test runs the command line (in-process through ``lsst.skyframes.cli.main``, and for
each kind of message at least once as the ``skyframes`` console script in a subprocess) on a
repository of its own, then checks the exit code, the message and the repository afterwards:
which datasets exist and whose pixels they hold, the collections (no empty RUN collection) and
the exposure records (unchanged by a refused file).
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from lsst.daf.butler import Butler
from lsst.images import Image, MaskedImage

from conftest import tool, tool_env
from lsst.skyframes.camera import Camera, make_synthetic_camera
from lsst.skyframes.cli import main
from lsst.skyframes.ingest import (
    DIGEST_KEY,
    REPLACES_ID_KEY,
    REPLACES_SOURCE_KEY,
    SOURCE_KEY,
    VARIANCE_KEY,
    ingest_files,
    read_processed_image,
    write_processed_fits,
)
from lsst.skyframes.mask_planes import default_mask_schema
from lsst.skyframes.repo import create_repo, register_camera
from lsst.skyframes.simulate import exposure_header, noiseless_sky, plan_exposures, simulate_detector

RUN = "skyframes/raw"
DATASET_TYPE = "post_isr_image"


@dataclasses.dataclass
class Env:
    """A repository with a registered camera, its camera file, and a place for input files."""

    root: Path
    camera: Camera
    camera_file: Path
    files: Path

    def butler(self) -> Butler:
        return Butler.from_config(str(self.root), writeable=True)

    def write(self, name: str, exposure: int = 0, detector: int = 0, *, edit=None, **header) -> Path:
        """Write a simulated image of a planned exposure; ``edit(image)`` may change it first."""
        plan = plan_exposures(2, self.camera.physical_filters[0], seed=7)[exposure]
        geometry = self.camera[detector]
        image = simulate_detector(geometry, plan, seed=7, n_stars=3, n_galaxies=0).image
        if edit is not None:
            edit(image)
        path = self.files / name
        write_processed_fits(path, image, exposure_header(geometry, plan) | header)
        return path

    def ingest(self, capsys, *args, camera: Path | None = None) -> tuple[int, str, str]:
        """Run ``skyframes ingest`` in-process; return the exit code, stdout and stderr."""
        code = main(["ingest", str(self.root), "--camera", str(camera or self.camera_file), *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    def datasets(self) -> dict[tuple[int, int], MaskedImage]:
        """Every ingested image, by (exposure, detector)."""
        butler = self.butler()
        if RUN not in butler.collections.query("*"):
            return {}
        refs = butler.query_datasets(DATASET_TYPE, collections=RUN, explain=False)
        return {(ref.dataId["exposure"], ref.dataId["detector"]): butler.get(ref) for ref in refs}

    def state(self) -> tuple:
        """Collections, dataset ids and exposure records: what a refused ingest must leave as it was."""
        butler = self.butler()
        collections = sorted(butler.collections.query("*"))
        refs = (
            butler.query_datasets(DATASET_TYPE, collections=RUN, explain=False) if RUN in collections else []
        )
        exposures = sorted(
            (r.id, r.physical_filter, r.exposure_time, r.timespan.begin.isot)
            for r in butler.query_dimension_records("exposure", explain=False)
        )
        return collections, sorted(str(ref.id) for ref in refs), exposures


def make_env(tmp_path: Path, *, size: int = 32, n_x: int = 2) -> Env:
    camera = make_synthetic_camera(n_x=n_x, n_y=1, size=size)
    root = tmp_path / "repo"
    register_camera(create_repo(str(root)), camera)
    camera_file = tmp_path / "camera.yaml"
    camera.to_yaml(camera_file)
    files = tmp_path / "files"
    files.mkdir()
    return Env(root, camera, camera_file, files)


@pytest.fixture
def env(tmp_path) -> Env:
    return make_env(tmp_path)


def run_skyframes(*args: str | Path) -> subprocess.CompletedProcess:
    """Run the ``skyframes`` console script as a user would."""
    return subprocess.run(
        [tool("skyframes"), *map(str, args)], capture_output=True, text=True, env=tool_env(), timeout=120
    )


def assert_same_planes(stored: MaskedImage, path: Path) -> None:
    """Assert a stored dataset holds exactly the planes of a file."""
    expected, _ = read_processed_image(str(path))
    assert stored.bbox == expected.bbox
    assert stored.image.array.tobytes() == expected.image.array.tobytes()
    assert stored.variance.array.tobytes() == expected.variance.array.tobytes()
    for name in expected.mask.schema.names:
        np.testing.assert_array_equal(stored.mask.get(name), expected.mask.get(name))


def failed_lines(err: str) -> dict[str, str]:
    """The ``FAILED <path>: <reason>`` lines of stderr, by path."""
    prefix = "FAILED "
    return {
        line[len(prefix) :].split(": ", 1)[0]: line for line in err.splitlines() if line.startswith(prefix)
    }


def add_one_adu(image: MaskedImage) -> None:
    image.image.array[3, 4] += 1.0


def flag_one_pixel_bad(image: MaskedImage) -> None:
    bad = image.mask.get("BAD")
    assert not bad[5, 6]
    bad[5, 6] = True
    image.mask.set("BAD", bad)


def double_one_variance(image: MaskedImage) -> None:
    image.variance.array[7, 8] *= 2.0


# --- Same data ID, different content ----------------------------------------------------------------


def test_changed_pixels_are_refused_naming_both_files_and_replaced_with_the_option(env, capsys):
    first, other = env.write("first.fits"), env.write("other_detector.fits", detector=1)
    assert env.ingest(capsys, first, other)[0] == 0
    (ref,) = [
        r for r in env.butler().query_datasets(DATASET_TYPE, collections=RUN) if r.dataId["detector"] == 0
    ]
    before = env.state()

    changed = env.write("changed.fits", edit=add_one_adu)
    code, out, err = env.ingest(capsys, changed, other)
    assert code == 1
    (failed,) = [line for line in err.splitlines() if line.startswith("FAILED")]
    assert str(changed) in failed and str(first) in failed and "--replace" in failed
    assert "0 ingested, 1 already present (skipped), 1 failed" in out
    assert env.state() == before
    assert_same_planes(env.datasets()[(1000, 0)], first)

    code, out, _ = env.ingest(capsys, changed, "--replace")
    assert code == 0
    assert f"REPLACED dataset {ref.id} (ingested from {first}) with {changed}" in out
    assert "1 ingested (1 replacing a dataset), 0 already present (skipped), 0 failed" in out
    stored = env.datasets()
    assert sorted(stored) == [(1000, 0), (1000, 1)]
    assert_same_planes(stored[(1000, 0)], changed)
    assert_same_planes(stored[(1000, 1)], other)
    metadata = stored[(1000, 0)].metadata
    assert metadata[SOURCE_KEY] == str(changed)
    assert metadata[REPLACES_ID_KEY] == str(ref.id) and metadata[REPLACES_SOURCE_KEY] == str(first)
    butler = env.butler()
    assert butler.get_dataset(ref.id) is None
    assert env.state()[2] == before[2]  # exposure records untouched
    assert not [p for p in env.root.rglob("*") if ".skyframes-replacing-" in str(p)]


def test_every_plane_counts_and_identical_content_is_skipped(env, capsys):
    first = env.write("first.fits")
    assert env.ingest(capsys, first)[0] == 0
    before = env.state()
    copy = env.files / "copy_of_first.fits"
    copy.write_bytes(first.read_bytes())
    changed = [
        env.write(f"{change.__name__}.fits", edit=change)
        for change in (add_one_adu, flag_one_pixel_bad, double_one_variance)
    ]

    code, out, err = env.ingest(capsys, copy, *changed)
    assert code == 1
    assert "0 ingested, 1 already present (skipped), 3 failed" in out
    failed = failed_lines(err)
    assert set(failed) == {str(path) for path in changed}
    for line in failed.values():
        assert "with other pixels, mask or variance" in line and str(first) in line and "--replace" in line
    assert env.state() == before
    assert_same_planes(env.datasets()[(1000, 0)], first)


def test_dataset_ingested_without_a_digest_is_compared_by_content(env, capsys):
    first = env.write("first.fits")
    image, header = read_processed_image(str(first))
    butler = env.butler()
    # As an ingest before digests were recorded left it: no SKYFRAMES.* metadata.
    report = ingest_files(butler, env.camera, [str(first)], run=RUN)
    (ref,) = butler.query_datasets(DATASET_TYPE, collections=RUN)
    butler.pruneDatasets([ref], disassociate=True, unstore=True, purge=True)
    butler.put(image, DATASET_TYPE, ref.dataId, run=RUN)
    assert report.ingested == [str(first)] and DIGEST_KEY not in env.datasets()[(1000, 0)].metadata

    code, out, _ = env.ingest(capsys, first)
    assert code == 0 and "0 ingested, 1 already present (skipped), 0 failed" in out
    changed = env.write("changed.fits", edit=add_one_adu)
    code, _, err = env.ingest(capsys, changed)
    assert code == 1 and "an unrecorded source" in err and "--replace" in err
    assert_same_planes(env.datasets()[(1000, 0)], first)


def test_replacement_that_fails_to_write_puts_the_old_dataset_back(env, monkeypatch):
    first = env.write("first.fits")
    butler = env.butler()
    ingest_files(butler, env.camera, [str(first)], run=RUN)
    (old,) = butler.query_datasets(DATASET_TYPE, collections=RUN)
    before = env.state()

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(butler._datastore, "put", disk_full)
    changed = env.write("changed.fits", edit=add_one_adu)
    report = ingest_files(butler, env.camera, [str(changed)], run=RUN, replace=True)
    assert list(report.failed) == [str(changed)] and "No space left" in report.failed[str(changed)]
    assert env.state() == before
    (ref,) = env.butler().query_datasets(DATASET_TYPE, collections=RUN)
    assert ref.id == old.id
    assert_same_planes(env.datasets()[(1000, 0)], first)
    assert env.datasets()[(1000, 0)].metadata[SOURCE_KEY] == str(first)
    assert not [p for p in env.root.rglob("*") if ".skyframes-replacing-" in str(p)]


def test_write_that_fails_leaves_neither_dataset_nor_records(env, monkeypatch):
    butler = env.butler()
    before = env.state()

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(butler._datastore, "put", disk_full)
    path = env.write("first.fits")
    report = ingest_files(butler, env.camera, [str(path)], run=RUN)
    assert list(report.failed) == [str(path)]
    assert env.state() == before
    assert RUN not in before[0] and before[1:] == ([], [])


# --- Conflicting exposure records ----------------------------------------------------------------------


def test_conflicting_exposure_is_refused_and_the_batch_goes_on(env, capsys):
    first = env.write("first.fits")
    assert env.ingest(capsys, first)[0] == 0
    records_before = env.state()[2]
    conflicts = {
        env.write(f"{key}.fits", detector=1, **{key: value}): shown
        for key, value, shown in [
            ("DATE-OBS", "2026-11-02T03:00:00", "DATE-OBS=2026-11-01T03:00:00"),
            ("FILTER", "SkyCam-i", "FILTER='SkyCam-r'"),
            ("EXPTIME", 15.0, "EXPTIME=30"),
        ]
    }
    later = env.write("later.fits", exposure=1)

    code, out, err = env.ingest(capsys, *conflicts, later)
    assert code == 1, err
    assert "ConflictingDefinitionError" not in err
    failed = failed_lines(err)
    assert set(failed) == {str(path) for path in conflicts}
    for path, shown in conflicts.items():
        line = failed[str(path)]
        assert "exposure 1000 is already defined" in line and shown in line
        assert f"(from {first})" in line and "EXPID" in line
    assert "1 ingested, 0 already present (skipped), 3 failed" in out
    stored = env.datasets()
    assert sorted(stored) == [(1000, 0), (1001, 0)]
    assert_same_planes(stored[(1000, 0)], first)
    assert_same_planes(stored[(1001, 0)], later)
    records_after = env.state()[2]
    assert records_after[0] == records_before[0] and len(records_after) == 2


# --- The camera ---------------------------------------------------------------------------------------


def _edited_camera(env: Env, path: Path, **changes) -> Path:
    data = env.camera.to_json_dict()
    data.update(changes.pop("top", {}))
    for key, value in changes.items():
        data["detectors"][0]["bbox"][key] = value
    Camera.from_json_dict(data).to_yaml(path)
    return path


def test_camera_that_differs_from_the_registered_one_is_refused_before_writing(env, tmp_path, capsys):
    taller = _edited_camera(env, tmp_path / "taller.yaml", height=40)
    # An image that fits the edited camera, so only the camera check stands in its way.
    path = env.write("tall.fits", edit=None)
    with fits.open(path) as hdul:
        tall = fits.HDUList([hdu.copy() for hdu in hdul])
    for hdu in tall:
        hdu.data = np.vstack([hdu.data, hdu.data[:8]])
    tall.writeto(path, overwrite=True)
    unregistered = _edited_camera(env, tmp_path / "other.yaml", top={"instrument": "OtherCam"})
    before = env.state()

    code, out, err = env.ingest(capsys, path, camera=taller)
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(f"skyframes ingest: Camera file {taller} differs from the camera registered")
    assert "detector 0 (R00) size: 32x32 px registered, 32x40 px given" in line
    assert "Nothing was written" in line and "skyframes register" in line
    assert env.state() == before

    code, _, err = env.ingest(capsys, path, camera=unregistered)
    assert code == 2
    assert "Instrument 'OtherCam' is not registered" in err and "skyframes register" in err
    assert env.state() == before

    # The same detectors and filters listed in another order are the same camera.
    data = env.camera.to_json_dict()
    data["detectors"].reverse()
    reordered = tmp_path / "reordered.yaml"
    Camera.from_json_dict(data).to_yaml(reordered)
    good = env.write("good.fits")
    assert env.ingest(capsys, good, camera=reordered)[0] == 0
    assert_same_planes(env.datasets()[(1000, 0)], good)


# --- Unusable images and missing variance ------------------------------------------------------------


def _all_nan(image: MaskedImage) -> None:
    image.image.array[...] = np.nan


def _all_bad(image: MaskedImage) -> None:
    image.mask.set("BAD", np.ones(image.bbox.shape, dtype=bool))


def _nan_or_no_data(image: MaskedImage) -> None:
    image.image.array[::2] = np.nan
    no_data = np.zeros(image.bbox.shape, dtype=bool)
    no_data[1::2] = True
    image.mask.set("NO_DATA", no_data)


def test_unusable_images_are_refused(env, capsys):
    before = env.state()
    unusable = {
        env.write(f"{edit.__name__[1:]}.fits", edit=edit): reason
        for edit, reason in [
            (_all_nan, "every pixel is NaN or infinite"),
            (_all_bad, "every finite pixel is masked BAD"),
            (_nan_or_no_data, "every finite pixel is masked BAD or NO_DATA"),
        ]
    }
    good = env.write("good.fits", detector=1)
    code, out, err = env.ingest(capsys, *unusable, good)
    assert code == 1, err
    failed = failed_lines(err)
    assert set(failed) == {str(path) for path in unusable}
    for path, reason in unusable.items():
        assert reason in failed[str(path)] and "leave the file out" in failed[str(path)]
    assert "1 ingested, 0 already present (skipped), 3 failed" in out
    stored = env.datasets()
    assert list(stored) == [(1000, 1)]
    assert_same_planes(stored[(1000, 1)], good)
    assert before[2] == [] and [record[0] for record in env.state()[2]] == [1000]


def _poisson_image(env: Env, gain: float, read_noise: float, seed: int) -> tuple[np.ndarray, ...]:
    """Return ADU pixels with Poisson and read noise of known gain, their true mean and variance (ADU²)."""
    plan = plan_exposures(2, env.camera.physical_filters[0], seed=7)[0]
    electrons = noiseless_sky(env.camera[0], plan)
    rng = np.random.default_rng(seed)
    counted = rng.poisson(electrons) + rng.normal(0.0, read_noise, electrons.shape)
    return (counted / gain).astype(np.float32), electrons / gain, (electrons + read_noise**2) / gain**2


def _write_without_variance(env: Env, name: str, pixels: np.ndarray, exposure: int = 0, **header) -> Path:
    plan = plan_exposures(2, env.camera.physical_filters[0], seed=7)[exposure]
    path = env.files / name
    image = MaskedImage(Image(pixels), mask_schema=default_mask_schema())
    write_processed_fits(path, image, exposure_header(env.camera[0], plan) | header)
    with fits.open(path, mode="update") as hdul:
        del hdul["VARIANCE"]
    return path


@pytest.mark.parametrize(
    "gain, read_noise, options",
    [(2.5, 6.0, []), (1.7, 0.0, ["--key-gain", "EGAIN", "--key-read-noise", "RON"])],
)
def test_missing_variance_is_estimated_from_the_gain_and_matches_truth(
    tmp_path, capsys, caplog, gain, read_noise, options
):
    env = make_env(tmp_path, size=128, n_x=1)
    pixels, mean, truth = _poisson_image(env, gain, read_noise, seed=11)
    header = {"EGAIN": gain} if options else {"GAIN": gain, "RDNOISE": read_noise}
    path = _write_without_variance(env, "no_variance.fits", pixels, **header)

    code, out, _ = env.ingest(capsys, path, *options)
    assert code == 0
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"{path}: no VARIANCE HDU; variance estimated: Poisson")
    expected = "EGAIN=1.7 e-/ADU, no RON key, read noise 0" if options else "GAIN=2.5 e-/ADU, RDNOISE=6 e-"
    assert expected in warning
    assert "1 ingested, 0 already present (skipped), 0 failed, 1 with warnings" in out
    stored = env.datasets()[(1000, 0)]
    assert stored.image.array.tobytes() == pixels.tobytes()
    assert "Poisson" in stored.metadata[VARIANCE_KEY]
    variance = stored.variance.array.astype(np.float64)
    # Against the true variance, on average and pixel by pixel (each pixel's estimate carries the
    # Poisson noise of its own count, 1/sqrt(2000) = 2%).
    assert variance.mean() / truth.mean() == pytest.approx(1.0, abs=0.005)
    assert np.median(variance / truth) == pytest.approx(1.0, abs=0.005)
    assert np.percentile(np.abs(variance / truth - 1), 90) < 0.05
    # And against the scatter of the pixels about their true mean.
    assert np.mean((pixels - mean) ** 2) / variance.mean() == pytest.approx(1.0, abs=0.04)


def test_missing_variance_without_gain_uses_the_measured_background_noise(tmp_path, capsys):
    env = make_env(tmp_path, size=256, n_x=1)
    pixels, _, truth = _poisson_image(env, gain=2.0, read_noise=5.0, seed=12)
    # Bright unmasked stars and a masked bad column must not inflate the estimate.
    pixels[100:104, 50:54] += 5000.0
    pixels[10:14, 200:204] += 20000.0
    path = _write_without_variance(env, "no_gain.fits", pixels)

    code, out, _ = env.ingest(capsys, path)
    assert code == 0 and "1 with warnings" in out
    stored = env.datasets()[(1000, 0)].variance.array
    assert np.all(stored == stored[0, 0])
    sky = np.ones(pixels.shape, dtype=bool)
    sky[100:104, 50:54] = sky[10:14, 200:204] = False
    assert stored[0, 0] / truth[sky].mean() == pytest.approx(1.0, abs=0.04)
    assert "no GAIN key; constant background noise" in env.datasets()[(1000, 0)].metadata[VARIANCE_KEY]


# --- Failed ingests leave nothing behind ---------------------------------------------------------------


def _truncated(env: Env) -> Path:
    path = env.write("truncated.fits")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _missing_key(env: Env) -> Path:
    path = env.write("missing_key.fits")
    with fits.open(path, mode="update") as hdul:
        del hdul[0].header["FILTER"]
    return path


def _unknown_detector(env: Env) -> Path:
    path = env.write("unknown_detector.fits")
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["DETECTOR"] = 42
    return path


def _wrong_shape(env: Env) -> Path:
    path = env.write("wrong_shape.fits")
    with fits.open(path) as hdul:
        hdus = fits.HDUList([hdu.copy() for hdu in hdul])
    for hdu in hdus:
        hdu.data = hdu.data[:, :20]
    hdus.writeto(path, overwrite=True)
    return path


def _in_missing_directory(env: Env) -> Path:
    return env.files / "no_such_directory" / "image.fits"


def test_failed_ingest_leaves_no_run_collection(env, capsys):
    before = env.state()
    bad = {
        _truncated(env): "The file is truncated",
        _missing_key(env): "header key 'FILTER' (physical filter) is missing",
        _unknown_detector(env): "detector 42 is not in camera",
        _wrong_shape(env): "image is 20x32 px but detector 0 is 32x32",
        _in_missing_directory(env): "no such file",
    }
    code, out, err = env.ingest(capsys, *bad)
    assert code == 1, err
    failed = failed_lines(err)
    assert set(failed) == {str(path) for path in bad}
    for path, message in bad.items():
        assert message in failed[str(path)]
    assert "0 ingested, 0 already present (skipped), 5 failed" in out
    after = env.state()
    assert after == before and RUN not in after[0]
    assert DATASET_TYPE not in {t.name for t in env.butler().registry.queryDatasetTypes()}


# --- The console script, as a user runs it -------------------------------------------------------------


def test_console_script_reports_each_bad_file_and_ingests_the_rest(env, capsys):
    """One batch with a file of every per-file mistake: one line each, exit code 1, the rest ingested."""
    first = env.write("first.fits")
    assert env.ingest(capsys, first)[0] == 0
    records_before = env.state()[2]
    bad = {
        "changed": env.write("changed.fits", edit=add_one_adu),
        "conflicting": env.write("conflicting.fits", detector=1, **{"DATE-OBS": "2026-11-02T03:00:00"}),
        "nan": env.write("nan.fits", exposure=1, detector=1, edit=_all_nan),
        "truncated": _truncated(env),
        "absent": env.files / "absent.fits",
        "directory": env.files,
    }
    pixels, _, _ = _poisson_image(env, 2.0, 0.0, seed=3)
    no_variance = _write_without_variance(env, "no_variance.fits", pixels, exposure=1, GAIN=2.0)
    files = [first, *bad.values(), no_variance]
    result = run_skyframes("ingest", env.root, *files, "--camera", env.camera_file)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "1 ingested, 1 already present (skipped), 6 failed, 1 with warnings" in result.stdout
    failed = failed_lines(result.stderr)
    assert set(failed) == {str(path) for path in bad.values()}
    assert str(first) in failed[str(bad["changed"])] and "--replace" in failed[str(bad["changed"])]
    assert (
        "exposure 1000 is already defined with DATE-OBS=2026-11-01T03:00:00"
        in failed[str(bad["conflicting"])]
    )
    assert "every pixel is NaN or infinite" in failed[str(bad["nan"])]
    assert "The file is truncated" in failed[str(bad["truncated"])]
    assert "no such file" in failed[str(bad["absent"])]
    assert "is a directory" in failed[str(bad["directory"])]
    assert f"{no_variance}: no VARIANCE HDU; variance estimated: Poisson" in result.stderr
    stored = env.datasets()
    assert sorted(stored) == [(1000, 0), (1001, 0)]
    assert_same_planes(stored[(1000, 0)], first)
    assert stored[(1001, 0)].image.array.tobytes() == pixels.tobytes()
    assert env.state()[2][0] == records_before[0]


def test_console_script_errors_that_stop_an_ingest_are_one_line(env, tmp_path):
    """A camera other than the registered one, no camera file, no repository: exit code 2, one line."""
    good = env.write("good.fits")
    taller = _edited_camera(env, tmp_path / "taller.yaml", height=40)
    commands = {
        "taller": ["ingest", env.root, good, "--camera", taller],
        "no camera": ["ingest", env.root, good, "--camera", tmp_path / "no_camera.yaml"],
        "no repo": ["ingest", tmp_path / "no_repo", good, "--camera", env.camera_file],
    }
    before = env.state()
    # Started together: each command spends most of its time importing.
    running = {
        what: subprocess.Popen(
            [tool("skyframes"), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=tool_env(),
        )
        for what, args in commands.items()
    }
    lines = {}
    for what, process in running.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 2, (what, err)
        assert out == "" and len(err.strip().splitlines()) == 1, (what, err)
        lines[what] = err.strip()
    assert lines["taller"].startswith(
        f"skyframes ingest: Camera file {taller} differs from the camera registered"
    )
    assert "detector 0 (R00) size: 32x32 px registered, 32x40 px given" in lines["taller"]
    assert lines["no camera"] == (
        f"skyframes ingest: Camera file {tmp_path / 'no_camera.yaml'} does not exist; pass the camera's "
        "YAML description (see lsst.skyframes.camera; Camera.to_yaml writes one)."
    )
    assert lines["no repo"].startswith(f"skyframes ingest: No butler repository at {tmp_path / 'no_repo'}")
    assert "skyframes create-repo" in lines["no repo"]
    assert not (tmp_path / "no_repo").exists()
    assert env.state() == before and RUN not in before[0]
