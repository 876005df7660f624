"""The README's notebook example runs and gives the advertised numbers."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def notebook_blocks() -> list[str]:
    """The Python blocks of the README's "In a notebook" section, in order."""
    text = README.read_text()
    section = text[text.index("## In a notebook") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_notebook_example_runs(tmp_path, monkeypatch):
    blocks = notebook_blocks()
    assert blocks, "README lost its notebook example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - our own README
    # The example simulates a science image at a sky level of 1000.
    assert namespace["scale"] == pytest.approx(1000.0, rel=2e-3)
    assert len(namespace["bgList"]) == 1
    assert (tmp_path / "sky_frame.png").stat().st_size > 0


def test_notebook_templates_example_runs(tmp_path, monkeypatch):
    blocks = notebook_blocks()
    assert len(blocks) >= 2, "README lost its multi-component example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0] + blocks[1], str(README), "exec"), namespace)  # noqa: S102 - our own README
    visit = namespace["visit"]
    # Truth: after subtracting the fitted templates the image is objects plus noise, so the
    # sky left over (image minus the known objects, in 16-px bin means) is a small fraction
    # of the 3000 e sky, whereas the second pattern alone varies by tens of percent of it.
    import numpy as np

    from lsst.skyframes.statistics import bin_edges, binned_statistics

    leftover = visit.image.image.array - visit.objects
    edges = bin_edges(128, 8)
    means = binned_statistics(leftover, None, edges, edges, "MEAN").value
    print(f"leftover sky RMS {np.sqrt(np.mean(means**2)) / 3000:.5f} of the sky")
    assert np.sqrt(np.mean(means**2)) < 0.005 * 3000
    assert len(namespace["coefficients"]) == 2 and namespace["result"].rejectedExposures == []


def test_fits_files_to_visit_images_as_written(tmp_path, monkeypatch):
    """The README's recipe for users with FITS files: ingest, make VisitImages, apply."""
    import subprocess
    import sys

    import numpy as np
    from lsst.daf.butler import Butler
    from lsst.images import VisitImage

    from lsst.skyframes.camera import make_synthetic_camera
    from lsst.skyframes.ingest import write_processed_fits
    from lsst.skyframes.simulate import ExposurePlan, exposure_header, simulate_detector
    from lsst.skyframes.visit_images import detector_geometry

    text = README.read_text()
    section = text[text.index("If what you have is FITS files") :]
    ingest = re.search(r"```text\n(skyframes ingest .*?)```", section, flags=re.DOTALL).group(1)
    block = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)
    visit_images = text[text.index("### VisitImages") :]
    apply = re.search(r"```text\n(pipetask run .*?)```", visit_images, flags=re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    camera = make_synthetic_camera(n_x=2, n_y=1, size=128, gap_px=16)
    assert camera.instrument == "SkyCam"  # the name the block reads the camera by
    camera.to_yaml("camera.yaml")
    plan = ExposurePlan(
        exposure_id=7000,
        physical_filter=camera.physical_filters[0],
        sky_level=1200.0,
        gradient=(5e-4, 3e-4),
        obs_start="2026-11-20T03:00:00",
    )
    (tmp_path / "images").mkdir()
    truth = {}
    for detector in camera:
        truth[detector.id] = simulate_detector(detector, plan, seed=5, n_stars=0, n_galaxies=0).image
        write_processed_fits(
            f"images/{detector.id}.fits", truth[detector.id], exposure_header(detector, plan)
        )
    bindir = Path(sys.executable).parent
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path)}

    def shell(command: str) -> None:
        result = subprocess.run(
            command.replace("\\\n", " ").replace("REPO", "repo"),
            shell=True,  # noqa: S602 - the README's own commands, globs included
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-4000:])

    shell("skyframes create-repo REPO && skyframes register REPO camera.yaml")
    shell(ingest)
    exec(compile(block.replace('"REPO"', '"repo"'), str(README), "exec"), {})  # noqa: S102 - our own README
    butler = Butler.from_config("repo")
    for detector in camera:
        data_id = {"instrument": "SkyCam", "visit": 7000, "detector": detector.id}
        uri = butler.getURI("preliminary_visit_image", data_id, collections="visit_images")
        image = VisitImage.read(uri.ospath)  # lsst.images alone
        assert detector_geometry(image.detector) == detector
        assert image.physical_filter == plan.physical_filter and image.band == camera.band_of(
            plan.physical_filter
        )
        np.testing.assert_array_equal(image.image.array, truth[detector.id].image.array)
        np.testing.assert_array_equal(image.variance.array, truth[detector.id].variance.array)
    # The README's pipetask command, with the recipe's option and no sky frames built here.
    command = apply.replace("pipelines/", f"{README.parent / 'pipelines'}/")
    options = [
        "-c skyCorr:visitImageBackgroundEntry=None -c skyCorr:doSky=False -c skyCorr:doPlotMosaics=False",
        # An object-free sky, whose simulated pattern (10 % of the sky) object detection would
        # take for objects on these 128-px detectors.
        "-c skyCorr:doMaskObjects=False",
        # bgModel1 of the README's two 4096-px detectors: the 2x1 camera of 0.015-mm pixels.
        "-c skyCorr:bgModel1.xSize=4.0 -c skyCorr:bgModel1.ySize=4.0 -c skyCorr:bgModel1.pixelSize=0.015",
    ]
    shell(" ".join([command.strip(), *options]))
    for detector in camera:
        data_id = {"instrument": "SkyCam", "visit": 7000, "detector": detector.id}
        corrected = butler.get("skyCorr_visit_image", data_id, collections="skycorr")
        skycorr = butler.get("skyCorr", data_id, collections="skycorr")
        assert len(skycorr) == 2  # nothing restored: bgModel1, bgModel2
        np.testing.assert_allclose(
            corrected.image.array, truth[detector.id].image.array - skycorr.getImage().array, atol=0.02
        )
        # The sky (1200 e, a gradient, the detector's pattern) is gone, to the noise (35 e a pixel).
        assert abs(float(np.median(corrected.image.array))) < 5.0
