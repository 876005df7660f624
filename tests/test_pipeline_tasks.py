"""Every PipelineTask against pipe_base's own testing helpers (``lsst.pipe.base.testUtils``).

``lintConnections`` checks each connections class for pipe_base's common mistakes. Then
the whole build and one correction run quantum by quantum in one RUN collection (as
``makeQuantum`` expects): ``runTestQuantum`` runs each ``runQuantum`` with ``run`` mocked
and records what it hands over, the test runs ``run`` on exactly that, checks the result
with ``assertValidOutput`` and stores it for the next step. The inputs are those of the
session's reference build, so the ``sky`` frames this chain makes must equal the ones
``pipetask`` made, bit for bit.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import astropy.time
import lsst.pipe.base.testUtils
import numpy as np
import pytest
from lsst.daf.butler import Butler, DataCoordinate, DimensionUniverse
from lsst.pipe.base import Pipeline, QuantumContext
from lsst.pipe.base.testUtils import assertValidOutput, lintConnections, makeQuantum, runTestQuantum

from conftest import ROOT, assert_identical_frames, simulate_inputs, sky_frames
from lsst.skyframes.build import (
    CpSkyCombineConfig,
    CpSkyCombineTask,
    CpSkyImageTask,
    CpSkyScaleMeasureTask,
    CpSkySubtractBackgroundTask,
    InputExposure,
    calibration_header,
    input_exposures_of,
)
from lsst.skyframes.camera_overrides import camera_config
from lsst.skyframes.correction import SkyCorrectionConfig, SkyCorrectionTask
from lsst.skyframes.errors import MissingMetadataError
from lsst.skyframes.ingest import ingest_image
from lsst.skyframes.instrument import SkyFramesInstrument
from lsst.skyframes.repo import create_repo, register_camera
from lsst.skyframes.simulate import ExposurePlan, exposure_header, put_science_visit, simulate_science_visit

VISIT = 7000


def _combine_templates_config() -> CpSkyCombineConfig:
    config = CpSkyCombineConfig()
    config.nComponents = 2
    return config


def _skycorr_templates_config() -> SkyCorrectionConfig:
    config = SkyCorrectionConfig()
    config.nComponents = 2
    return config


def _alternate_config(task):
    config = task.ConfigClass()
    config.includeAlternateBackground = True
    return config


@pytest.mark.parametrize(
    "config",
    [
        CpSkyImageTask.ConfigClass(),
        CpSkyScaleMeasureTask.ConfigClass(),
        CpSkySubtractBackgroundTask.ConfigClass(),
        _alternate_config(CpSkyScaleMeasureTask),
        _alternate_config(CpSkySubtractBackgroundTask),
        CpSkyCombineConfig(),
        _combine_templates_config(),
        SkyCorrectionConfig(),
        _skycorr_templates_config(),
    ],
    ids=lambda c: (
        f"{type(c).__name__}-K{getattr(c, 'nComponents', 1)}"
        + ("-alternate" if getattr(c, "includeAlternateBackground", False) else "")
    ),
)
def test_connections_pass_pipe_base_lint(config):
    lintConnections(config.ConnectionsClass(config=config))


@pytest.fixture(autouse=True, scope="module")
def _implied_dimensions():
    """Let makeQuantum accept quantum dimensions that name an implied dimension.

    The build tasks have cp_pipe's quantum dimensions, e.g. (instrument, physical_filter,
    exposure, detector), where physical_filter is implied by exposure; pipe_base's
    ``makeQuantum`` compares those names with the data ID's *required* dimensions and so
    refuses every such quantum. Compare the required dimensions of both instead, which is
    what decides the quantum's data ID.
    """

    def same_required(universe, expected, actual):
        if universe.conform(list(expected)).required != universe.conform(list(actual)).required:
            raise ValueError(f"Mismatch in dimensions; expected {expected} but got {actual}.")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lsst.pipe.base.testUtils, "_checkDimensionsMatch", same_required)
        yield


RUN = "pipeline_tasks"


@dataclasses.dataclass
class Step:
    """One quantum: what runQuantum handed to run, and what run returned."""

    task: Any
    data_id: dict[str, Any]
    kwargs: dict[str, Any]
    result: Any


def _run_quantum(task, butler, data_id, io_data_ids) -> Step:
    """runQuantum with run mocked, then run on what it was handed; store the outputs."""

    def expand(ids):
        # Expanded data IDs carry the records the datastore's file template needs.
        if isinstance(ids, list):
            return [butler.registry.expandDataId(i) for i in ids]
        return butler.registry.expandDataId(ids)

    quantum = makeQuantum(
        task, butler, expand(data_id), {name: expand(ids) for name, ids in io_data_ids.items()}
    )
    mock = runTestQuantum(task, butler, quantum, mockRun=True)
    mock.assert_called_once()
    kwargs = mock.call_args.kwargs
    result = task.run(**kwargs)
    connections = task.config.ConnectionsClass(config=task.config)
    _, output_refs = connections.buildDatasetRefs(quantum)
    QuantumContext(butler, quantum).put(result, output_refs)
    return Step(task, dict(data_id), kwargs, result)


@pytest.fixture(scope="module")
def chain(reference_build, tmp_path_factory):
    """Every quantum of the build, then one visit's correction, in one RUN collection."""
    reference, _ = reference_build
    camera, plans = reference.camera, reference.plans
    root = str(tmp_path_factory.mktemp("pipeline_tasks") / "repo")
    butler = create_repo(root)
    register_camera(butler, camera, run=RUN)
    for detector, plan, image in simulate_inputs(camera, plans):
        ingest_image(butler, camera, image, exposure_header(detector, plan), source="simulated", run=RUN)
    for name in ("BuildSkyFrame.yaml", "ApplySkyFrame.yaml"):
        pipeline = Pipeline.from_uri(ROOT / "pipelines" / name)
        pipeline.addInstrument(SkyFramesInstrument.from_camera(camera))
        graph = pipeline.to_graph()
        graph.resolve(butler.registry)
        graph.register_dataset_types(butler)
    butler = Butler.from_config(root, writeable=True, collections=[RUN], run=RUN)
    instrument, physical_filter = camera.instrument, plans[0].physical_filter
    camera_id = {"instrument": instrument}
    steps: dict[str, list[Step]] = {"image": [], "scale": [], "subtract": [], "combine": [], "correct": []}
    # Configured as pipetask --instrument configures them (the reference build's command).
    image_task = CpSkyImageTask(config=camera_config(CpSkyImageTask, camera))
    scale_task = CpSkyScaleMeasureTask()
    subtract_task, combine_task = CpSkySubtractBackgroundTask(), CpSkyCombineTask()
    exposures = [plan.exposure_id for plan in plans]
    for exposure in exposures:
        per_exposure = {"instrument": instrument, "exposure": exposure}
        pairs = [per_exposure | {"detector": d.id} for d in camera]
        for pair in pairs:
            io = {"inputExp": pair, "camera": camera_id, "objectMask": pair, "maskedBkg": pair}
            steps["image"].append(_run_quantum(image_task, butler, pair, io))
        io = {"inputBkgs": pairs, "outputBkg": per_exposure, "outputScale": per_exposure}
        steps["scale"].append(_run_quantum(scale_task, butler, per_exposure, io))
        for pair in pairs:
            io = {
                "inputExp": pair,
                "objectMask": pair,
                "inputBkg": per_exposure,
                "inputScale": per_exposure,
                "camera": camera_id,
                "outputBkg": pair,
            }
            steps["subtract"].append(_run_quantum(subtract_task, butler, pair, io))
    combine_inputs = combine_task.config.ConnectionsClass(config=combine_task.config).inputs
    for detector in camera:
        calib = {"instrument": instrument, "physical_filter": physical_filter, "detector": detector.id}
        io = {
            "inputBkgs": [
                {"instrument": instrument, "exposure": e, "detector": detector.id} for e in exposures
            ],
            "outputCalib": calib,
            "outputQuality": calib,
        }
        if "inputScales" in combine_inputs:
            io["inputScales"] = [{"instrument": instrument, "exposure": e} for e in exposures]
        if "inputExpHandles" in combine_inputs:
            io["inputExpHandles"] = [
                {"instrument": instrument, "exposure": e, "detector": detector.id} for e in exposures
            ]
        steps["combine"].append(_run_quantum(combine_task, butler, calib, io))

    plan = ExposurePlan(
        exposure_id=7000,
        physical_filter=physical_filter,
        sky_level=1500.0,
        gradient=(5e-4, -3e-4),
        obs_start="2026-11-25T03:00:00",
    )
    visit = simulate_science_visit(camera, plan, seed=5, n_stars=10, n_galaxies=2)
    put_science_visit(butler, camera, plan, visit, RUN)
    correct_task = SkyCorrectionTask(config=camera_config(SkyCorrectionTask, camera))
    connections = correct_task.config.ConnectionsClass(config=correct_task.config)
    visit_id = {"instrument": instrument, "visit": plan.exposure_id}
    io = dict.fromkeys(connections.outputs, visit_id)
    per_detector = [visit_id | {"detector": d.id} for d in camera]
    io |= {"calExps": per_detector, "calBkgs": per_detector, "skyCorr": per_detector, "camera": camera_id}
    io["skyFrames"] = [
        {"instrument": instrument, "physical_filter": physical_filter, "detector": d.id} for d in camera
    ]
    steps["correct"].append(_run_quantum(correct_task, butler, visit_id, io))
    return root, steps


def test_every_quantum_hands_run_what_the_repository_holds(chain, reference_build):
    _, steps = chain
    reference, _ = reference_build
    for step in steps["image"]:
        assert step.kwargs["camera"] == reference.camera
    for step in steps["image"] + steps["subtract"]:
        assert step.kwargs["detector"].id == step.data_id["detector"]
    assert all(len(step.kwargs["inputBkgs"]) == len(reference.camera) for step in steps["scale"])
    exposures = sorted(plan.exposure_id for plan in reference.plans)
    assert all(sorted(step.kwargs["exposureIds"]) == exposures for step in steps["combine"])
    # The deferred inputExpHandles are not read: their exposure records date the inputs.
    for step in steps["combine"]:
        dated = step.kwargs["inputExposures"]
        assert sorted(dated) == exposures
        for plan in reference.plans:
            exposure = dated[plan.exposure_id]
            assert exposure.exposure_time == plan.exposure_time
            start = astropy.time.Time(plan.obs_start, scale="utc")
            assert abs((exposure.begin - start).to_value("s")) < 1e-6
    (correct,) = steps["correct"]
    assert sorted(correct.kwargs["detectorIds"]) == sorted(reference.camera.detector_ids)
    assert np.isfinite(correct.result.skyFrameScale)


def test_subtract_bins_the_masked_image_cpskyimage_made(chain):
    """The previous design's data flow, at the Task level, gives the same residual backgrounds.

    cp_pipe (and this package before cpSkyObjectMask) handed cpSkySubtractBackground the masked image
    cpSkyImage made (cpSkyMaskedIsrExp, written losslessly); now its runQuantum re-reads the input's
    image plane and applies the object mask. Bit-identical residuals make bit-identical sky frames.
    """
    _, steps = chain
    made = {(step.data_id["exposure"], step.data_id["detector"]): step.result for step in steps["image"]}
    for step in steps["subtract"]:
        masked = made[step.data_id["exposure"], step.data_id["detector"]].maskedExp
        previous = step.task.run(**(step.kwargs | {"inputExp": masked.copy()})).outputBkg
        now = step.result.outputBkg
        assert len(previous) == len(now) > 0
        for before, after in zip(previous, now, strict=True):
            for plane in ("image", "mask", "variance"):
                expected = getattr(before[0].getStatsImage(), plane).array
                assert getattr(after[0].getStatsImage(), plane).array.tobytes() == expected.tobytes(), plane


def test_cp_pipes_flow_through_the_masked_copy_makes_the_same_sky_frames(reference_build):
    """pipetask with cp_pipe's data flow (cpSkyImage writes cpSkyMaskedIsrExp, the next step reads it)."""
    reference, run = reference_build
    result = reference.pipetask(
        "-o",
        "maskedcopy",
        "--output-run",
        "maskedcopy/run",
        "--register-dataset-types",
        "-c",
        "cpSkyImage:doWriteMaskedExp=True",
        "-c",
        "cpSkySubtractBackground:connections.inputExp=cpSkyMaskedIsrExp",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    butler = reference.butler()
    written = butler.query_datasets("cpSkyMaskedIsrExp", collections="maskedcopy/run", explain=False)
    assert len(written) == len(reference.camera) * len(reference.plans)
    assert_identical_frames(sky_frames(reference, "maskedcopy/run"), sky_frames(reference, run))


def test_every_result_is_valid_for_its_connections(chain):
    _, steps = chain
    for kind, kind_steps in steps.items():
        assert kind_steps, kind
        for step in kind_steps:
            assertValidOutput(step.task, step.result)


def test_the_chain_makes_pipetasks_sky_frames(chain, reference_build):
    root, _ = chain
    reference, run = reference_build
    ours = dataclasses.replace(reference, root=root)
    assert_identical_frames(sky_frames(ours, RUN), sky_frames(reference, run))


# --- The sky frame's calibration header (cp_pipe's combineHeaders) -----------------------------------


def _exposure(exposure_id: int, start: str, exposure_time: float) -> InputExposure:
    return InputExposure(exposure_id, astropy.time.Time(start, scale="tai"), exposure_time)


def test_header_dates_the_inputs_by_their_middles_as_cp_pipe_does():
    # Exposure 2 starts later but its middle is earlier: cp_pipe orders the inputs by their middles
    # and takes the range from the first one's start to the last one's end (here not the latest end).
    exposures = {
        1: _exposure(1, "2026-11-01T03:00:00", 600.0),  # middle 03:05:00, end 03:10:00
        2: _exposure(2, "2026-11-01T03:01:00", 20.0),  # middle 03:01:10, end 03:01:20
    }
    header = calibration_header([2, 1], exposures)
    assert [header["CPP_INPUT_0"], header["CPP_INPUT_1"]] == [1, 2]
    assert header["CPP_INPUT_DATE_0"] == "2026-11-01T03:05:00.000"
    assert header["CPP_INPUT_DATE_1"] == "2026-11-01T03:01:10.000"
    assert [header["CPP_INPUT_EXPT_0"], header["CPP_INPUT_EXPT_1"]] == [600.0, 20.0]
    assert header["DATE-OBS"] == header["DATE-BEG"] == "2026-11-01T03:01:00.000"
    assert header["DATE-END"] == "2026-11-01T03:10:00.000"
    assert header["DATE-AVG"] == "2026-11-01T03:05:30.000"
    mjd_begin = astropy.time.Time("2026-11-01T03:01:00", scale="tai").mjd
    assert header["MJD-BEG"] == pytest.approx(mjd_begin, abs=1e-8)
    assert header["MJD-AVG"] - header["MJD-BEG"] == pytest.approx(270.0 / 86400, abs=1e-8)


def test_header_without_exposure_records_lists_the_inputs_only():
    created = datetime.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=datetime.UTC)
    header = calibration_header([1002, 1001], now=created)
    assert header["CALIB_CREATION_DATETIME"] == "2026-01-02T03:04:05"
    assert header["CALIB_CREATION_DATE"] == created.astimezone().strftime("%Y-%m-%d")
    assert header["CALIB_CREATION_TIME"] == created.astimezone().strftime("%X %Z")
    assert (header["OBSTYPE"], header["CPP_INPUT_0"], header["CPP_INPUT_1"]) == ("SKY", 1001, 1002)
    assert not {"CPP_INPUT_DATE_0", "CPP_INPUT_EXPT_0", "TIMESYS", "DATE-BEG", "MJD-BEG"} & set(header)
    with pytest.raises(MissingMetadataError, match=r"input exposure\(s\) \[1002\]"):
        calibration_header([1001, 1002], {1001: _exposure(1001, "2026-11-01T03:00:00", 30.0)})


def test_input_exposures_need_expanded_data_ids():
    data_id = DataCoordinate.standardize(
        {"instrument": "SkyCam", "exposure": 1001, "detector": 0}, universe=DimensionUniverse()
    )
    with pytest.raises(MissingMetadataError, match=r"exposure 1001 has no exposure record.*expandDataId"):
        input_exposures_of([data_id])
