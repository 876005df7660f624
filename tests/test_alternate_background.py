"""includeAlternateBackground: a focal-plane background and sky level per physical type.

The simulated camera is a row of four detectors, two "E2V" and two "ITL" (as LSSTCam's
rafts are of one make each), whose ITL sensors see the sky 3-12 % brighter than the E2V
ones, by an amount that changes from exposure to exposure (the sky's colour). With a
model per type, each type's sky level absorbs its response, so the sky frames are those
of a sky both types see alike (the truth below is made without any response). One model
over both types cannot follow the step between the types: the detectors beside it get a
residual that depends on the response, and their sky frames miss the truth by tens of
sigma. The per-exposure steps are shared by both builds (cpSkyImage has no option).
"""

from __future__ import annotations

import dataclasses
import subprocess

import numpy as np
import pytest
from lsst.daf.butler import Butler
from lsst.pipe.base import Pipeline
from lsst.pipe.base.pipelineIR import ContractError

from conftest import BUILD_PIPELINE, INSTRUMENT, RAW_RUN, camera_env, check, tool
from lsst.skyframes.build import (
    CpSkyCombineTask,
    CpSkyImageTask,
    CpSkyScaleMeasureConfig,
    CpSkyScaleMeasureTask,
    CpSkySubtractBackgroundConfig,
    CpSkySubtractBackgroundTask,
)
from lsst.skyframes.camera import make_synthetic_camera
from lsst.skyframes.camera_overrides import camera_config
from lsst.skyframes.errors import CameraError, ConfigMismatchError, NoDataError
from lsst.skyframes.focal_plane import FocalPlaneBackground, FocalPlaneBackgroundConfig
from lsst.skyframes.ingest import ingest_image, register_input
from lsst.skyframes.repo import calib_collection, create_repo, register_camera
from lsst.skyframes.simulate import exposure_header, plan_exposures, simulate_detector
from lsst.skyframes.sky_measurement import SkyMeasurementConfig
from lsst.skyframes.truth import expected_noise, good_pixel_counts, noiseless_sky_frames, visit_sky_level

SIZE = 128
PIXEL_MM = 0.015
BIN = (32, 32)
TYPES = ["E2V", "E2V", "ITL", "ITL"]
# Detectors 1 and 2 sit either side of the step between the types; 0 and 3 are a bin away.
BESIDE_THE_STEP = (1, 2)
ITL_RESPONSE = (1.03, 1.12)
SEED = 5


def _camera(types=TYPES):
    return make_synthetic_camera(n_x=len(types), n_y=1, size=SIZE, gap_px=8, physical_types=types)


def _plans(camera, n=6):
    return plan_exposures(n, camera.physical_filters[0], seed=SEED, type_response_range={"ITL": ITL_RESPONSE})


def _simulate(detector, plan):
    return simulate_detector(detector, plan, seed=3, n_stars=10, n_galaxies=2)


def _focal_plane_config() -> FocalPlaneBackgroundConfig:
    """One-detector bins, set explicitly (as the reference's pipelines set them)."""
    config = FocalPlaneBackgroundConfig()
    config.xSize = config.ySize = SIZE * PIXEL_MM
    config.pixelSize = PIXEL_MM
    return config


def _image_task(camera) -> CpSkyImageTask:
    # The generic instrument's masking (as pipetask --instrument), the focal plane set explicitly.
    config = camera_config(CpSkyImageTask, camera)
    fp = _focal_plane_config()
    for name in ("xSize", "ySize", "pixelSize"):
        setattr(config.largeScaleBackground, name, getattr(fp, name))
    return CpSkyImageTask(config=config)


def _truth(camera, plans):
    """Sky frames of a sky both types see alike, modelled per type."""
    alike = [dataclasses.replace(plan, type_responses=()) for plan in plans]
    return noiseless_sky_frames(
        camera,
        alike,
        focal_plane_config=_focal_plane_config(),
        bin_size=BIN,
        include_alternate_background=True,
    )


def _errors(frames, truth, noise):
    """Per detector: (mean error, RMS error / noise about that mean, RMS error / noise)."""
    result = {}
    for detector_id, frame in frames.items():
        error = frame - truth[detector_id]
        offset = float(error.mean())
        result[detector_id] = (
            offset,
            float(np.sqrt(np.mean(((error - offset) / noise[detector_id]) ** 2))),
            float(np.sqrt(np.mean((error / noise[detector_id]) ** 2))),
        )
    return result


@pytest.fixture(scope="module")
def masked():
    """cpSkyImage's outputs for every exposure and detector of the two-type camera."""
    camera = _camera()
    plans = _plans(camera)
    task = _image_task(camera)
    outputs = {
        (plan.exposure_id, d.id): task.run(_simulate(d, plan).image, camera, d)
        for plan in plans
        for d in camera
    }
    planes = SkyMeasurementConfig().background.mask
    noise = {
        d.id: expected_noise(
            [plan.sky_level for plan in plans],
            [good_pixel_counts(outputs[plan.exposure_id, d.id].maskedExp, BIN, planes) for plan in plans],
        )
        for d in camera
    }
    return camera, plans, outputs, noise


def _build(camera, plans, outputs, alternate: bool):
    """Run the build after cpSkyImage on ``outputs``, with or without includeAlternateBackground."""
    scale_config = CpSkyScaleMeasureConfig()
    scale_config.includeAlternateBackground = alternate
    subtract_config = CpSkySubtractBackgroundConfig()
    subtract_config.includeAlternateBackground = alternate
    scale_task = CpSkyScaleMeasureTask(config=scale_config)
    subtract_task = CpSkySubtractBackgroundTask(config=subtract_config)
    residuals = {d.id: [] for d in camera}
    records = []
    for plan in plans:
        backgrounds = [outputs[plan.exposure_id, d.id].maskedBkg for d in camera]
        extra = {"camera": camera, "inputDims": [{"detector": d.id} for d in camera]} if alternate else {}
        merged = scale_task.run(backgrounds, **extra)
        records.append(merged.outputScale)
        for d in camera:
            extra = {"inputBkgAlternate": merged.outputBkgAlternate} if alternate else {}
            image = outputs[plan.exposure_id, d.id].maskedExp.copy()
            result = subtract_task.run(image, merged.outputBkg, merged.outputScale, d, **extra)
            residuals[d.id].append(result.outputBkg)
    combine = CpSkyCombineTask()
    frames = {d.id: combine.run(residuals[d.id]).outputCalib.image.array for d in camera}
    return frames, records


def test_each_type_is_recovered_and_one_model_over_both_is_worse(masked):
    camera, plans, outputs, noise = masked
    truth = _truth(camera, plans)
    per_type = _errors(_build(camera, plans, outputs, alternate=True)[0], truth, noise)
    mixed = _errors(_build(camera, plans, outputs, alternate=False)[0], truth, noise)
    for d in camera:
        # The pattern is far above the noise: recovering it is not vacuous.
        assert np.std(truth[d.id]) > 10 * noise[d.id].mean(), d.name
        offset, rms, _ = per_type[d.id]
        # Faint galaxy wings outside the detections raise every bin a little (as in
        # test_build_pipeline); the pattern itself is recovered to the noise.
        assert abs(offset) < 2e-3, (d.name, d.physical_type, offset)
        assert rms < 4, (d.name, d.physical_type, rms)
    for detector_id in BESIDE_THE_STEP:
        offset, rms, total = mixed[detector_id]
        # The type step, smoothed by the one model, leaves about half of the mean
        # response difference (~4 % of the sky) across the detectors beside it.
        assert abs(offset) > 5e-3, (detector_id, offset)
        assert rms > 3 * per_type[detector_id][1], (detector_id, rms, per_type[detector_id])
        assert total > 10 and total > 5 * per_type[detector_id][2], (detector_id, total)


def test_scale_record_holds_each_types_sky_level(masked):
    camera, plans, outputs, _ = masked
    _, records = _build(camera, plans, outputs, alternate=True)
    fp_config = _focal_plane_config()
    for plan, record in zip(plans, records, strict=True):
        assert set(record) == {
            "scale",
            "nDetectors",
            "dropped",
            "detectorType",
            "scaleAlternate",
            "detectorTypeAlternate",
        }
        # The first type in sorted order is the primary, as in the reference.
        assert (record["detectorType"], record["detectorTypeAlternate"]) == ("E2V", "ITL")
        assert record["nDetectors"] == 4 and record["dropped"] is None
        # Each level is the median of a stats image whose bins beyond its own type's two
        # detectors are extrapolated, which amplifies the per-detector biases of object
        # masking (up to 1.7 % here; a camera whose types cover many bins does better).
        for key, physical_type in (("scale", "E2V"), ("scaleAlternate", "ITL")):
            expected = visit_sky_level(camera, plan, fp_config, physical_type=physical_type)
            assert record[key] == pytest.approx(expected, rel=2.5e-2), (plan.exposure_id, key)
        # The ratio of the levels follows the ITL response of the exposure (3-12 %).
        ratio = record["scaleAlternate"] / record["scale"]
        alike = dataclasses.replace(plan, type_responses=())
        pattern_ratio = visit_sky_level(camera, alike, fp_config, physical_type="ITL") / visit_sky_level(
            camera, alike, fp_config, physical_type="E2V"
        )
        assert ratio / pattern_ratio == pytest.approx(plan.response_of("ITL"), rel=1.5e-2)


def test_option_off_writes_the_record_of_today(masked):
    camera, plans, outputs, _ = masked
    _, records = _build(camera, plans, outputs, alternate=False)
    fp_config = _focal_plane_config()
    for plan, record in zip(plans, records, strict=True):
        assert set(record) == {"scale", "nDetectors", "dropped"}
        assert record["scale"] == pytest.approx(visit_sky_level(camera, plan, fp_config), rel=1e-2)


def test_one_physical_type_with_the_option_changes_nothing():
    """A camera of one type: the option merges the same detectors, bit for bit (as the reference)."""
    camera = _camera(["CCD"] * 3)
    (plan,) = plan_exposures(1, camera.physical_filters[0], seed=SEED)
    task = _image_task(camera)
    outputs = {(plan.exposure_id, d.id): task.run(_simulate(d, plan).image, camera, d) for d in camera}
    on_frames, (on_record,) = _build(camera, [plan], outputs, alternate=True)
    off_frames, (off_record,) = _build(camera, [plan], outputs, alternate=False)
    assert on_record == off_record and set(on_record) == {"scale", "nDetectors", "dropped"}
    for detector_id, frame in off_frames.items():
        assert on_frames[detector_id].tobytes() == frame.tobytes()
    config = CpSkyScaleMeasureConfig()
    config.includeAlternateBackground = True
    backgrounds = [outputs[plan.exposure_id, d.id].maskedBkg for d in camera]
    result = CpSkyScaleMeasureTask(config=config).run(
        backgrounds, camera=camera, inputDims=[{"detector": d.id} for d in camera]
    )
    assert result.outputBkgAlternate is None


# --- Mistakes ----------------------------------------------------------------------------------------


def _alternate_tasks():
    scale_config, subtract_config = CpSkyScaleMeasureConfig(), CpSkySubtractBackgroundConfig()
    scale_config.includeAlternateBackground = subtract_config.includeAlternateBackground = True
    return CpSkyScaleMeasureTask(config=scale_config), CpSkySubtractBackgroundTask(config=subtract_config)


def test_mistakes_name_the_input_and_the_fix(masked):
    camera, plans, outputs, _ = masked
    exposure = plans[0].exposure_id
    backgrounds = [outputs[exposure, d.id].maskedBkg for d in camera]
    dims = [{"detector": d.id} for d in camera]
    scale_task, subtract_task = _alternate_tasks()
    with pytest.raises(ConfigMismatchError, match="Pass camera= and inputDims="):
        scale_task.run(backgrounds)
    with pytest.raises(ConfigMismatchError, match="3 inputDims for 4 backgrounds"):
        scale_task.run(backgrounds, camera=camera, inputDims=dims[:3])
    three = _camera(["E2V", "ITL", "ITL", "WFS"])
    with pytest.raises(CameraError, match=r"3 physical types \{'E2V': 1, 'ITL': 2, 'WFS': 1\}"):
        scale_task.run(backgrounds, camera=three, inputDims=dims)

    # An exposure whose ITL detectors hold no usable pixel is dropped (in a pipeline) saying so.
    empty = [
        bg if d.physical_type == "E2V" else FocalPlaneBackground.fromSimilar(bg)
        for bg, d in zip(backgrounds, camera, strict=True)
    ]
    with pytest.raises(NoDataError, match="2 detector\\(s\\) of physical type 'ITL' has a usable pixel"):
        scale_task.run(empty, camera=camera, inputDims=dims)

    merged = scale_task.run(backgrounds, camera=camera, inputDims=dims)
    itl = camera[2]
    image = outputs[exposure, itl.id].maskedExp
    # A subtraction step without the option would normalise the ITL detectors by the E2V level.
    plain = CpSkySubtractBackgroundTask()
    with pytest.raises(ConfigMismatchError, match="includeAlternateBackground=True"):
        plain.run(image.copy(), merged.outputBkg, merged.outputScale, itl)
    with pytest.raises(NoDataError, match="pass inputBkgAlternate"):
        subtract_task.run(image.copy(), merged.outputBkg, merged.outputScale, itl)
    other = dataclasses.replace(itl, physical_type="WFS")
    with pytest.raises(ConfigMismatchError, match="physical type 'WFS'"):
        subtract_task.run(
            image.copy(), merged.outputBkg, merged.outputScale, other, merged.outputBkgAlternate
        )
    # The E2V detectors need no alternate background.
    e2v = camera[1]
    subtract_task.run(outputs[exposure, e2v.id].maskedExp.copy(), merged.outputBkg, merged.outputScale, e2v)


# --- Pipelines ---------------------------------------------------------------------------------------


LSSTCAM_LIKE = """\
description: >-
  The configuration cp_pipe's pipelines/LSSTCam/cpSky.yaml gives the sky-frame tasks, said again
  for skyframes' build pipeline: one-detector focal-plane bins of 4096 px of 0.01 mm, and a
  background and sky level per sensor make (E2V, ITL).
imports:
  - location: {build}
tasks:
  cpSkyImage:
    class: lsst.skyframes.build.CpSkyImageTask
    config:
      largeScaleBackground.xSize: 40.96
      largeScaleBackground.ySize: 40.96
      largeScaleBackground.pixelSize: 0.01
  cpSkyScaleMeasure:
    class: lsst.skyframes.build.CpSkyScaleMeasureTask
    config:
      includeAlternateBackground: true
  cpSkySubtractBackground:
    class: lsst.skyframes.build.CpSkySubtractBackgroundTask
    config:
      includeAlternateBackground: true
"""


def _edges(graph, label):
    task = graph.tasks[label]
    connections = {**task.inputs, **task.prerequisite_inputs, **task.outputs}
    return {name: edge.parent_dataset_type_name for name, edge in connections.items()}


def test_lsstcam_configuration_resolves_with_its_values(tmp_path):
    path = tmp_path / "cpSkyLSSTCam.yaml"
    path.write_text(LSSTCAM_LIKE.format(build=BUILD_PIPELINE))
    graph = Pipeline.from_uri(str(path)).to_graph()
    background = graph.tasks["cpSkyImage"].config.largeScaleBackground
    assert (background.xSize, background.ySize, background.pixelSize) == (40.96, 40.96, 0.01)
    # 4096 px of 0.01 mm per bin: at minFrac 0.1 a bin needs 0.1 * 4096 * 4096 good pixels.
    minimum = (
        background.minFrac
        * (background.xSize / background.pixelSize)
        * (background.ySize / background.pixelSize)
    )
    assert minimum == pytest.approx(0.1 * 4096**2)
    assert graph.tasks["cpSkyScaleMeasure"].config.includeAlternateBackground is True
    assert graph.tasks["cpSkySubtractBackground"].config.includeAlternateBackground is True
    scale, subtract = _edges(graph, "cpSkyScaleMeasure"), _edges(graph, "cpSkySubtractBackground")
    assert scale["outputBkgAlternate"] == subtract["inputBkgAlternate"] == "cpSkyExpBackgroundAlternate"
    assert scale["camera"] == "camera"
    # The bin size contracts of the imported pipeline still hold.
    assert graph.tasks["cpSkyCombine"].config.sky.background.xBinSize == 32


def test_default_graph_has_no_alternate_connections():
    graph = Pipeline.from_uri(str(BUILD_PIPELINE)).to_graph()
    assert "cpSkyExpBackgroundAlternate" not in graph.dataset_types
    assert set(_edges(graph, "cpSkyScaleMeasure")) == {"inputBkgs", "outputBkg", "outputScale"}
    assert "inputBkgAlternate" not in _edges(graph, "cpSkySubtractBackground")


@pytest.mark.parametrize("label", ["cpSkyScaleMeasure", "cpSkySubtractBackground"])
def test_contract_refuses_the_option_on_one_task(label):
    pipeline = Pipeline.from_uri(str(BUILD_PIPELINE))
    pipeline.addConfigOverride(label, "includeAlternateBackground", True)
    with pytest.raises(ContractError, match="includeAlternateBackground differs"):
        pipeline.to_graph()


@pytest.fixture(scope="module")
def pipetask_build(tmp_path_factory):
    """pipetask run of pipelines/BuildSkyFrame.yaml with the option on, on the two-type camera."""
    root = str(tmp_path_factory.mktemp("alternate") / "repo")
    camera = _camera()
    plans = _plans(camera)
    butler = create_repo(root)
    register_camera(butler, camera)
    register_input(butler, RAW_RUN)
    for plan in plans:
        for d in camera:
            header = exposure_header(d, plan)
            ingest_image(butler, camera, _simulate(d, plan).image, header, source="simulated", run=RAW_RUN)
    fp = _focal_plane_config()
    camera_file = tmp_path_factory.mktemp("alternate-camera") / "camera.yaml"
    camera.to_yaml(camera_file)
    # The generic instrument's overrides (masking as the Task-level build above), the focal plane
    # set explicitly.
    overrides = [
        "cpSkyScaleMeasure:includeAlternateBackground=True",
        "cpSkySubtractBackground:includeAlternateBackground=True",
        f"cpSkyImage:largeScaleBackground.xSize={fp.xSize}",
        f"cpSkyImage:largeScaleBackground.ySize={fp.ySize}",
        f"cpSkyImage:largeScaleBackground.pixelSize={fp.pixelSize}",
    ]
    command = [tool("pipetask"), "run", "-b", root, "-i", f"{RAW_RUN},{calib_collection(camera.instrument)}"]
    command += ["-o", "alternate", "-p", str(BUILD_PIPELINE), "--register-dataset-types"]
    command += ["--instrument", INSTRUMENT]
    for override in overrides:
        command += ["-c", override]
    check(
        subprocess.run(command, capture_output=True, text=True, env=camera_env(camera_file), timeout=600),
        "pipetask run",
    )
    return camera, plans, root


def test_pipetask_build_recovers_each_type(pipetask_build):
    camera, plans, root = pipetask_build
    butler = Butler.from_config(root, collections="alternate")
    truth = _truth(camera, plans)
    planes = SkyMeasurementConfig().background.mask
    frames, noise = {}, {}
    for d in camera:
        frames[d.id] = butler.get(
            "sky", instrument=camera.instrument, physical_filter=plans[0].physical_filter, detector=d.id
        ).image.array
        counts = [
            good_pixel_counts(
                butler.get(
                    "cpSkyObjectMask", instrument=camera.instrument, exposure=p.exposure_id, detector=d.id
                ),
                BIN,
                planes,
            )
            for p in plans
        ]
        noise[d.id] = expected_noise([p.sky_level for p in plans], counts)
    for d in camera:
        offset, rms, _ = _errors(frames, truth, noise)[d.id]
        assert abs(offset) < 2e-3 and rms < 4, (d.name, d.physical_type, offset, rms)
    for plan in plans:
        data_id = {"instrument": camera.instrument, "exposure": plan.exposure_id}
        record = butler.get("cpSkyExpScale", data_id)
        assert (record["detectorType"], record["detectorTypeAlternate"]) == ("E2V", "ITL")
        expected = visit_sky_level(camera, plan, _focal_plane_config(), physical_type="ITL")
        assert record["scaleAlternate"] == pytest.approx(expected, rel=2.5e-2)
        # Each type's background is the sum of its own detectors' (cpSkyDetectorBackground) alone.
        for name, physical_type in (("cpSkyExpBackground", "E2V"), ("cpSkyExpBackgroundAlternate", "ITL")):
            own = [
                butler.get("cpSkyDetectorBackground", data_id, detector=d.id).numbers
                for d in camera
                if d.physical_type == physical_type
            ]
            np.testing.assert_array_equal(butler.get(name, data_id).numbers, np.sum(own, axis=0))
