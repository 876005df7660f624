"""Ingest of processed images: headers, bad files, idempotence, the command line."""

import subprocess
import sys

import astropy.time
import numpy as np
import pytest
from astropy.io import fits

from lsst.skyframes.camera import make_synthetic_camera
from lsst.skyframes.ingest import ingest_files, read_processed_image, write_processed_fits
from lsst.skyframes.repo import create_repo, register_camera
from lsst.skyframes.simulate import exposure_header, plan_exposures, simulate_detector


@pytest.fixture
def setup(tmp_path):
    camera = make_synthetic_camera(n_x=2, n_y=1, size=64)
    butler = create_repo(str(tmp_path / "repo"))
    register_camera(butler, camera)
    plans = plan_exposures(2, camera.physical_filters[0], seed=3)
    files = []
    for plan in plans:
        for detector in camera:
            path = tmp_path / f"img_{plan.exposure_id}_{detector.id}.fits"
            image = simulate_detector(detector, plan, seed=3, n_stars=5, n_galaxies=0).image
            write_processed_fits(path, image, exposure_header(detector, plan))
            files.append(str(path))
    return camera, butler, plans, files, tmp_path


def test_round_trip_of_plain_fits(setup):
    camera, _, plans, files, _ = setup
    image, header = read_processed_image(files[0])
    original = simulate_detector(camera[0], plans[0], seed=3, n_stars=5, n_galaxies=0).image
    np.testing.assert_array_equal(image.image.array, original.image.array)
    np.testing.assert_array_equal(image.mask.get("DETECTED"), original.mask.get("DETECTED"))
    np.testing.assert_array_equal(image.variance.array, original.variance.array)
    assert header["EXPID"] == plans[0].exposure_id and header["DETECTOR"] == 0


def test_ingest_idempotent_and_bad_files_reported(setup):
    camera, butler, plans, files, tmp_path = setup
    missing_key = tmp_path / "missing.fits"
    with fits.open(files[0]) as hdul:
        del hdul[0].header["FILTER"]
        hdul.writeto(missing_key)
    corrupt = tmp_path / "corrupt.fits"
    corrupt.write_bytes(b"SIMPLE  = T" + b"\0" * 100)
    wrong_detector = tmp_path / "wrong.fits"
    with fits.open(files[0]) as hdul:
        hdul[0].header["DETECTOR"] = 99
        hdul.writeto(wrong_detector)

    report = ingest_files(
        butler, camera, [*files, str(missing_key), str(corrupt), str(wrong_detector)], run="raw"
    )
    assert sorted(report.ingested) == sorted(files)
    assert set(report.failed) == {str(missing_key), str(corrupt), str(wrong_detector)}
    assert "FILTER" in report.failed[str(missing_key)]
    assert "99" in report.failed[str(wrong_detector)]
    refs = butler.query_datasets("post_isr_image", collections="raw")
    assert len(refs) == 4
    exposures = {record.id: record for record in butler.query_dimension_records("exposure")}
    assert set(exposures) == {plan.exposure_id for plan in plans}
    assert all(record.timespan is not None for record in exposures.values())

    again = ingest_files(butler, camera, files, run="raw")
    assert again.ingested == [] and sorted(again.skipped) == sorted(files) and not again.failed
    assert len(butler.query_datasets("post_isr_image", collections="raw")) == 4


def test_command_line_ingest_summary_and_exit_code(setup):
    camera, _, _, files, tmp_path = setup
    camera_file = tmp_path / "camera.yaml"
    camera.to_yaml(camera_file)
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"garbage")
    cmd = [
        sys.executable,
        "-m",
        "lsst.skyframes.cli",
        "ingest",
        str(tmp_path / "repo"),
        "--camera",
        str(camera_file),
    ]
    result = subprocess.run([*cmd, *files[:2], str(bad)], capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert "2 ingested, 0 already present (skipped), 1 failed" in result.stdout
    assert "bad.fits" in result.stderr
    result = subprocess.run([*cmd, *files[:2]], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "0 ingested, 2 already present" in result.stdout


def test_visit_images_are_stored_per_visit(setup):
    camera, butler, plans, files, _ = setup
    report = ingest_files(
        butler, camera, files[:2], run="visits", dataset_type="preliminary_visit_image", per_visit=True
    )
    assert len(report.ingested) == 2 and not report.failed
    dataset_type = butler.get_dataset_type("preliminary_visit_image")
    assert set(dataset_type.dimensions.required) == {"instrument", "visit", "detector"}
    refs = butler.query_datasets("preliminary_visit_image", collections="visits")
    assert {ref.dataId["visit"] for ref in refs} == {plans[0].exposure_id}
    regions = butler.query_dimension_records(
        "visit_detector_region", instrument=camera.instrument, visit=plans[0].exposure_id
    )
    assert {record.detector for record in regions} == {0, 1}


@pytest.mark.parametrize(("timesys", "offset_s"), [(None, 0.0), ("UTC", 0.0), ("TAI", -37.0)])
def test_start_time_is_read_in_the_headers_time_scale(setup, timesys, offset_s):
    """DATE-OBS is UTC unless TIMESYS says otherwise; TAI runs 37 s ahead of UTC in 2026."""
    camera, butler, plans, _, tmp_path = setup
    header = exposure_header(camera[0], plans[0])
    if timesys is not None:
        header["TIMESYS"] = timesys
    path = tmp_path / "timed.fits"
    write_processed_fits(path, simulate_detector(camera[0], plans[0], seed=3).image, header)
    assert not ingest_files(butler, camera, [str(path)], run="timed").failed
    (record,) = butler.query_dimension_records(
        "exposure", instrument=camera.instrument, exposure=plans[0].exposure_id
    )
    as_utc = astropy.time.Time(plans[0].obs_start, scale="utc")
    assert (record.timespan.begin - as_utc).to_value("s") == pytest.approx(offset_s, abs=1e-3)


def test_unknown_time_scale_is_refused(setup):
    camera, butler, plans, _, tmp_path = setup
    header = exposure_header(camera[0], plans[0]) | {"TIMESYS": "GPS"}
    path = tmp_path / "gps.fits"
    write_processed_fits(path, simulate_detector(camera[0], plans[0], seed=3).image, header)
    report = ingest_files(butler, camera, [str(path)], run="timed")
    assert "TIMESYS = 'GPS'" in report.failed[str(path)]
