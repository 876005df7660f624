"""The whole build chain through the real ``pipetask run`` command line."""

import dataclasses
import datetime
import os
import shutil
import subprocess
import sys
from pathlib import Path

import astropy.time
import astropy.units as u
import numpy as np
import pytest
from lsst.daf.butler import Butler

from lsst.skyframes.build import CpSkyImageConfig
from lsst.skyframes.camera import make_synthetic_camera
from lsst.skyframes.camera_overrides import camera_sized_config
from lsst.skyframes.ingest import write_processed_fits
from lsst.skyframes.repo import calib_collection
from lsst.skyframes.simulate import exposure_header, plan_exposures, simulate_detector
from lsst.skyframes.sky_measurement import SkyMeasurementConfig
from lsst.skyframes.truth import expected_noise, good_pixel_counts, noiseless_sky_frames

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipelines" / "BuildSkyFrame.yaml"
SEED = 11
PIXEL_RUN = "skybuild-pixel"
# The same with sky.maxDetectedFraction: detected pixels keep their values in cpSkyCombine's stack.
FRACTION_RUN = "skybuild-pixel-fraction"


def _bin(name: str) -> str:
    # The console scripts live beside the interpreter running the tests.
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Run the README's commands: create-repo, register, ingest, pipetask run, certify."""
    tmp = tmp_path_factory.mktemp("build")
    root = str(tmp / "repo")
    camera = make_synthetic_camera(n_x=2, n_y=2, size=256, gap_px=32)
    camera_file = tmp / "camera.yaml"
    camera.to_yaml(camera_file)
    # Exposure times differ (they do not change the simulated pixels), so that the header's
    # CPP_INPUT_EXPT_<i> and DATE-END can be told apart from a constant.
    plans = [
        dataclasses.replace(plan, exposure_time=15.0 + 5.0 * index)
        for index, plan in enumerate(plan_exposures(10, camera.physical_filters[0], seed=SEED))
    ]
    files = []
    for plan in plans:
        for detector in camera:
            simulated = simulate_detector(detector, plan, seed=SEED, n_stars=40, n_galaxies=8)
            path = tmp / f"image_{plan.exposure_id}_{detector.id}.fits"
            write_processed_fits(path, simulated.image, exposure_header(detector, plan))
            files.append(str(path))
    # SKYFRAMES_CAMERA: the camera of --instrument's overrides, as in the README.
    env = dict(os.environ, PYTHONUNBUFFERED="1", SKYFRAMES_CAMERA=str(camera_file))
    inputs = f"raw,{calib_collection(camera.instrument)}"
    commands = [
        [_bin("skyframes"), "create-repo", root],
        [_bin("skyframes"), "register", root, str(camera_file)],
        [_bin("skyframes"), "ingest", root, "--camera", str(camera_file), "--run", "raw", *files],
        [_bin("pipetask"), "run", "-b", root, "-i", inputs, "-o", "skybuild", "-p", str(PIPELINE)]
        + ["--instrument", "lsst.skyframes.instrument.SkyFramesInstrument", "--register-dataset-types"],
        [_bin("skyframes"), "certify", root, "skybuild", "--begin", "2026-10-01T00:00:00"],
    ]
    started = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        assert result.returncode == 0, (command[:2], result.stdout[-3000:], result.stderr[-5000:])
    assert "4 'sky' datasets newly certified" in result.stdout
    finished = datetime.datetime.now(datetime.UTC)
    # cpSkyCombine again, alone, with combineLevel='pixel', from the first run's outputs.
    pixel = [_bin("pipetask"), "run", "-b", root, "-i", f"skybuild,{inputs}", "-o", PIXEL_RUN]
    pixel += ["-p", f"{PIPELINE}#cpSkyCombine", "-c", "cpSkyCombine:combineLevel=pixel"]
    pixel += ["--instrument", "lsst.skyframes.instrument.SkyFramesInstrument"]
    result = subprocess.run(pixel, capture_output=True, text=True, env=env)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-5000:])
    fraction = [*pixel[: pixel.index(PIXEL_RUN)], FRACTION_RUN, *pixel[pixel.index(PIXEL_RUN) + 1 :]]
    fraction += ["-c", "cpSkyCombine:sky.maxDetectedFraction=0.9"]
    result = subprocess.run(fraction, capture_output=True, text=True, env=env)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-5000:])
    return camera, root, plans, (started, finished)


@pytest.mark.parametrize("combine_level", ["bin", "pixel", "pixel, maxDetectedFraction"])
def test_sky_frames_match_truth_within_noise(built, combine_level):
    camera, root, plans, _ = built
    butler = Butler.from_config(root)
    fp_config = camera_sized_config(CpSkyImageConfig().largeScaleBackground, camera, 1)
    truth = noiseless_sky_frames(camera, plans, focal_plane_config=fp_config, bin_size=(32, 32))
    planes = SkyMeasurementConfig().background.mask
    # Look the calibration up the way a later science exposure would: by its data ID and time.
    later = plans[-1].exposure_id
    for detector in camera:
        if combine_level == "bin":
            sky = butler.get(
                "sky",
                instrument=camera.instrument,
                exposure=later,
                detector=detector.id,
                collections=[calib_collection(camera.instrument), "raw"],
            )
        else:
            sky = butler.get(
                "sky",
                instrument=camera.instrument,
                physical_filter=plans[0].physical_filter,
                detector=detector.id,
                collections=PIXEL_RUN if combine_level == "pixel" else FRACTION_RUN,
            )
        assert sky.metadata["OBSTYPE"] == "SKY"
        assert sky.metadata["SKY_NINPUTS"] == len(plans)
        assert sky.metadata["BOX.MAXX"] == detector.width - 1
        # Expected noise from the pixels the build actually used (after its object masking).
        counts = [
            good_pixel_counts(
                butler.get(
                    "cpSkyObjectMask",
                    instrument=camera.instrument,
                    exposure=plan.exposure_id,
                    detector=detector.id,
                    collections="skybuild",
                ),
                (32, 32),
                planes,
            )
            for plan in plans
        ]
        noise = expected_noise([plan.sky_level for plan in plans], counts)
        error = sky.image.array - truth[detector.id]
        # Light of faint galaxy wings outside the detection footprints raises every bin a
        # little: bound that offset (as a fraction of the sky) apart from the pattern's error.
        offset = float(error.mean())
        assert abs(offset) < 2e-3, (detector.name, offset)
        rms = float(np.sqrt(np.mean(((error - offset) / noise) ** 2)))
        assert rms < 3, (detector.name, rms)
        # The pattern itself is far above the noise, so this is not a vacuous comparison.
        assert np.std(truth[detector.id]) > 10 * noise.mean()


def test_sky_header_records_the_inputs_as_cp_pipe_does(built):
    """cp_pipe's calibration header, against the ingested exposures' plan (UTC starts, exposure times)."""
    camera, root, plans, (started, finished) = built
    butler = Butler.from_config(root)
    # Truth, from the plan: ingest reads DATE-OBS as UTC; the header is in TAI, each input dated
    # by the middle of its exposure (afw's VisitInfo date), the range from first start to last end.
    begins = {plan.exposure_id: astropy.time.Time(plan.obs_start, scale="utc").tai for plan in plans}
    ends = {plan.exposure_id: begins[plan.exposure_id] + plan.exposure_time * u.s for plan in plans}
    first, last = plans[0].exposure_id, plans[-1].exposure_id
    average = begins[first] + (ends[last] - begins[first]) / 2
    for detector in camera:
        sky = butler.get(
            "sky",
            instrument=camera.instrument,
            detector=detector.id,
            physical_filter=plans[0].physical_filter,
            collections="skybuild",
        )
        header = sky.metadata
        assert header["OBSTYPE"] == "SKY"
        created = datetime.datetime.fromisoformat(header["CALIB_CREATION_DATETIME"])
        created = created.replace(tzinfo=datetime.UTC)
        assert started <= created <= finished
        local = created.astimezone()
        assert header["CALIB_CREATION_DATE"] == local.strftime("%Y-%m-%d")
        assert header["CALIB_CREATION_TIME"] == local.strftime("%X %Z")
        assert header["SKY_NINPUTS"] == len(plans)
        for index, plan in enumerate(plans):
            middle = begins[plan.exposure_id] + plan.exposure_time / 2 * u.s
            assert header[f"CPP_INPUT_{index}"] == plan.exposure_id
            assert header[f"CPP_INPUT_DATE_{index}"] == middle.to_value("fits")
            assert header[f"CPP_INPUT_EXPT_{index}"] == plan.exposure_time
        assert f"CPP_INPUT_{len(plans)}" not in header
        assert header["TIMESYS"] == "TAI"
        expected = {"OBS": begins[first], "BEG": begins[first], "END": ends[last], "AVG": average}
        for suffix, date in expected.items():
            assert header[f"DATE-{suffix}"] == date.isot, suffix
            assert header[f"MJD-{suffix}"] == pytest.approx(date.mjd, abs=1e-3 / 86400), suffix
        # 37 s of leap seconds between UTC and TAI: the header is not in the ingested UTC.
        assert header["DATE-BEG"] == "2026-11-01T03:00:37.000"


def test_certify_twice_is_harmless(built):
    camera, root, _, _ = built
    result = subprocess.run(
        [_bin("skyframes"), "certify", root, "skybuild", "--begin", "2026-10-01T00:00:00"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "No new 'sky' to certify" in result.stdout


def test_quality_reports_and_figures(built, tmp_path):
    camera, root, plans, _ = built
    butler = Butler.from_config(root)
    for detector in camera:
        report = butler.get(
            "sky_quality",
            instrument=camera.instrument,
            detector=detector.id,
            physical_filter=plans[0].physical_filter,
            collections="skybuild",
        )
        assert report["schema_version"] == 4
        assert sorted(report["inputs_used"]) == [plan.exposure_id for plan in plans]
        assert report["inputs_rejected"] == [] and report["inputs_dropped"] == []
        assert 0.0 <= report["nan_filled_fraction"] < 0.05
        # The combination's own error should be of the order of the Poisson expectation
        # (10 exposures of ~1000-2500 e-/px, ~600 good pixels per 32-px bin): ~3e-4.
        assert 1e-4 < report["noise_median"] < 1e-3
        assert set(report["residual_rms"]) == {str(plan.exposure_id) for plan in plans}
        assert len(report["noise_map"]) == 8 and len(report["noise_map"][0]) == 8
    result = subprocess.run(
        [_bin("skyframes"), "report", root, "--collection", "skybuild", "--output", str(tmp_path / "q.png")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") >= len(camera) + 2
    assert (tmp_path / f"q_{plans[0].physical_filter}.png").stat().st_size > 0
    for args, name in (
        (["sky"], "fp.png"),
        (["sky", "--data-id", "detector=1", f"physical_filter={plans[0].physical_filter}"], "one.png"),
    ):
        out = tmp_path / name
        result = subprocess.run(
            [
                _bin("skyframes"),
                "plot",
                root,
                *args[:1],
                "--collection",
                "skybuild",
                *args[1:],
                "--output",
                str(out),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        assert out.stat().st_size > 0
