"""Butler repositories: creation, camera registration, exposures, storage classes."""

import pickle
from pathlib import Path

import astropy.time
import astropy.units as u
import numpy as np
import pytest
from click.testing import CliRunner
from lsst.daf.butler import Butler, Config, DatasetType, Timespan
from lsst.daf.butler.registry import ConflictingDefinitionError
from lsst.images import Box, Image, MaskedImage
from lsst.pipe.base import Instrument, PipelineTask, PipelineTaskConfig, PipelineTaskConnections
from lsst.pipe.base import connectionTypes as cT
from lsst.pipe.base.simple_pipeline_executor import SimplePipelineExecutor

from lsst.skyframes.camera import CameraLookupError, make_synthetic_camera
from lsst.skyframes.instrument import CAMERA_ENV_VAR, SkyFramesInstrument
from lsst.skyframes.mask_planes import default_mask_schema
from lsst.skyframes.repo import (
    _EMBEDDED_SEED,
    CameraConflictError,
    RepoConfigError,
    calib_collection,
    camera_dataset_type,
    create_repo,
    insert_exposure,
    read_camera,
    register_camera,
    seed_config_path,
)

ROOT = Path(__file__).resolve().parents[1]
DIMS = ("instrument", "exposure", "detector")
OBS_START = astropy.time.Time("2026-03-04T05:06:07", scale="tai")
RUN = "SkyCam/test/inputs"


@pytest.fixture
def camera():
    return make_synthetic_camera()


@pytest.fixture
def butler(tmp_path, camera):
    butler = create_repo(tmp_path / "repo")
    register_camera(butler, camera)
    return butler


def add_exposures(butler, camera, n=2, exposure_time_s=30.0):
    ids = []
    for i in range(n):
        data_id = insert_exposure(
            butler,
            camera,
            exposure_id=2026030300001 + i,
            physical_filter="SkyCam-r" if i % 2 == 0 else "SkyCam-i",
            day_obs=20260303,
            obs_start=OBS_START + i * 60 * u.s,
            exposure_time_s=exposure_time_s,
        )
        ids.append(data_id)
    return ids


def make_masked_image(seed, shape=(16, 24)):
    rng = np.random.default_rng(seed)
    image = MaskedImage(
        Image(rng.normal(100.0, 5.0, shape).astype(np.float32), bbox=Box.from_shape(shape)),
        mask_schema=default_mask_schema(),
    )
    image.mask.set("BAD", rng.random(shape) < 0.1)
    image.variance.array[...] = 25.0
    return image


def test_seed_file_matches_embedded_copy():
    path = seed_config_path()
    assert path == ROOT / "config" / "butler-seed.yaml"
    assert Config(str(path)).toDict() == _EMBEDDED_SEED


def test_create_repo_resumes_and_refuses(tmp_path):
    root = tmp_path / "repo"
    butler = create_repo(root)
    config = Config(str(root / "butler.yaml"))
    assert config["datastore", "formatters", "BackgroundMap"] == "lsst.images.formatters.GenericFormatter"
    assert config["storageClasses", "SkyCamera", "pytype"] == "lsst.skyframes.camera.Camera"
    assert butler.isWriteable()
    again = create_repo(root)  # same config: opened, not re-created
    assert again.isWriteable()
    with pytest.raises(RepoConfigError, match="different configuration.*registry.db"):
        create_repo(root, db_url=f"sqlite:///{tmp_path}/other.sqlite3")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a repo")
    with pytest.raises(RepoConfigError, match="non-empty directory without a butler.yaml"):
        create_repo(tmp_path / "junk")


def test_create_repo_db_url(tmp_path):
    db = tmp_path / "elsewhere" / "registry.sqlite3"
    db.parent.mkdir()
    create_repo(tmp_path / "repo", db_url=f"sqlite:///{db}")
    assert db.is_file()
    assert not (tmp_path / "repo" / "gen3.sqlite3").exists()
    assert Config(str(tmp_path / "repo" / "butler.yaml"))["registry", "db"] == f"sqlite:///{db}"
    create_repo(tmp_path / "repo", db_url=f"sqlite:///{db}")  # resumes


def test_butler_create_cli_with_seed_config(tmp_path, camera):
    from lsst.daf.butler.cli.butler import cli

    root = tmp_path / "repo"
    result = CliRunner().invoke(cli, ["create", str(root), "--seed-config", str(seed_config_path())])
    assert result.exit_code == 0, result.output
    butler = create_repo(root)  # same seed: accepted
    register_camera(butler, camera)
    assert read_camera(butler, "SkyCam") == camera


def test_register_camera_twice(butler, camera):
    ref = register_camera(butler, camera)  # second time: harmless
    assert register_camera(butler, camera) == ref
    registry = butler.registry
    detectors = {r.id: r for r in registry.queryDimensionRecords("detector", instrument="SkyCam")}
    assert sorted(detectors) == list(range(9))
    assert [detectors[i].full_name for i in range(9)] == [d.name for d in camera.detectors]
    assert {
        r.name: r.band for r in registry.queryDimensionRecords("physical_filter", instrument="SkyCam")
    } == {
        "SkyCam-r": "r",
        "SkyCam-i": "i",
    }
    (record,) = registry.queryDimensionRecords("instrument", instrument="SkyCam")
    assert record.class_name == "lsst.skyframes.instrument.named.SkyCam"
    assert record.detector_max == 9
    assert (
        len(
            list(
                butler.registry.queryDatasets(
                    "camera", collections=calib_collection("SkyCam"), findFirst=False
                )
            )
        )
        == 1
    )
    # The camera comes back equal, by an explicit unbounded lookup ...
    stored = butler.get(
        "camera", instrument="SkyCam", collections=calib_collection("SkyCam"), timespan=Timespan(None, None)
    )
    assert stored == camera
    assert read_camera(butler, "SkyCam") == camera


def test_instrument_from_registry(butler, camera, tmp_path):
    fresh = Butler.from_config(butler._config.configDir)
    instrument = Instrument.fromName("SkyCam", fresh.registry)
    assert isinstance(instrument, SkyFramesInstrument)
    assert instrument.getName() == "SkyCam"
    assert instrument.makeCalibrationCollectionName() == calib_collection("SkyCam")
    assert instrument.camera == camera  # remembered from register_camera in this process
    # Instruments travel to worker processes by pickle; the per-name class is importable.
    clone = pickle.loads(pickle.dumps(Instrument.fromName("SkyCam", fresh.registry)))
    assert type(clone) is type(instrument) and clone.getName() == "SkyCam"


def test_register_camera_conflict(butler, tmp_path):
    other = make_synthetic_camera(gap_px=32)
    with pytest.raises(CameraConflictError, match="'SkyCam' already has a different camera") as info:
        register_camera(butler, other)
    # The message says what differs: the detectors moved closer together.
    assert "detector 0 (R00) centre_mm: (" in str(info.value) and "more; give the new camera" in str(
        info.value
    )
    # Another instrument name is fine.
    bigger = make_synthetic_camera(n_x=4, n_y=3, name="Other")
    register_camera(butler, bigger)
    assert read_camera(butler, "Other") == bigger
    # Instrument records without a camera dataset (as `butler register-instrument` leaves them)
    # are checked too.
    fresh = create_repo(tmp_path / "fresh")
    SkyFramesInstrument.from_camera(make_synthetic_camera()).register(fresh.registry)
    with pytest.raises(CameraConflictError, match="different instrument, detector or filter records"):
        register_camera(fresh, make_synthetic_camera(n_x=4))


def test_register_camera_finishes_interrupted_registration(tmp_path, camera):
    butler = create_repo(tmp_path / "repo")
    SkyFramesInstrument.from_camera(camera).register(butler.registry)
    butler.registry.registerDatasetType(camera_dataset_type(butler))
    butler.registry.registerRun("SkyCam/calib/unbounded")
    ref = butler.put(camera, "camera", instrument="SkyCam", run="SkyCam/calib/unbounded")
    # Put but never certified: register_camera certifies the existing dataset instead of writing another.
    assert register_camera(butler, camera) == ref
    assert read_camera(butler, "SkyCam") == camera


def test_register_instrument_cli(tmp_path, camera, monkeypatch):
    from lsst.daf.butler.cli.butler import cli

    root = tmp_path / "repo"
    create_repo(root)
    camera.to_yaml(tmp_path / "camera.yaml")
    monkeypatch.setenv(CAMERA_ENV_VAR, str(tmp_path / "camera.yaml"))
    for _ in range(2):
        result = CliRunner().invoke(
            cli, ["register-instrument", str(root), "lsst.skyframes.instrument.SkyFramesInstrument"]
        )
        assert result.exit_code == 0, (result.output, result.exception)
    butler = Butler.from_config(root, writeable=True)
    (record,) = butler.registry.queryDimensionRecords("instrument")
    assert record.class_name == "lsst.skyframes.instrument.named.SkyCam"
    assert len(list(butler.registry.queryDimensionRecords("detector", instrument="SkyCam"))) == 9
    register_camera(butler, camera)  # agrees with what the CLI registered


def test_insert_exposure_idempotent(butler, camera):
    first = add_exposures(butler, camera)
    second = add_exposures(butler, camera)
    assert first == second
    registry = butler.registry
    assert len(set(registry.queryDataIds(["exposure", "detector"]))) == 18
    assert len(set(registry.queryDataIds(["visit", "detector"]))) == 18
    pairs = {(d["exposure"], d["visit"]) for d in registry.queryDataIds(["exposure", "visit"])}
    assert pairs == {(2026030300001, 2026030300001), (2026030300002, 2026030300002)}
    record = first[1].records["exposure"]
    assert (record.physical_filter, record.exposure_time, record.day_obs) == ("SkyCam-i", 30.0, 20260303)
    assert record.timespan == Timespan(OBS_START + 60 * u.s, OBS_START + 90 * u.s)
    assert first[1]["band"] == "i"
    (visit,) = registry.queryDimensionRecords("visit", visit=2026030300002, instrument="SkyCam")
    assert visit.timespan == record.timespan and visit.physical_filter == "SkyCam-i"
    # Same key, different contents: refused, not silently changed.
    with pytest.raises(ConflictingDefinitionError):
        add_exposures(butler, camera, n=1, exposure_time_s=15.0)


def test_insert_exposure_errors(butler, camera):
    kwargs = {"exposure_id": 1, "day_obs": 20260303, "obs_start": OBS_START, "exposure_time_s": 30.0}
    with pytest.raises(CameraLookupError, match="no physical filter 'SkyCam-z'"):
        insert_exposure(butler, camera, physical_filter="SkyCam-z", **kwargs)
    with pytest.raises(ValueError, match="not within day_obs 20260304"):
        insert_exposure(butler, camera, physical_filter="SkyCam-r", **{**kwargs, "day_obs": 20260304})
    with pytest.raises(ValueError, match="exposure_id"):
        insert_exposure(butler, camera, physical_filter="SkyCam-r", **{**kwargs, "exposure_id": -1})
    unregistered = make_synthetic_camera(name="Nowhere", filters=(("Nowhere-r", "r"),))
    with pytest.raises(LookupError, match="run register_camera"):
        insert_exposure(butler, unregistered, physical_filter="Nowhere-r", **kwargs)
    # day_obs=None follows Rubin's UTC-12h rule: 05:06 TAI on March 4th is day_obs 20260303.
    data_id = insert_exposure(butler, camera, physical_filter="SkyCam-r", **{**kwargs, "day_obs": None})
    assert data_id["day_obs"] == 20260303


def test_calibration_lookup_from_exposure(butler, camera):
    (data_id, _) = add_exposures(butler, camera)
    assert butler.get("camera", dataId=data_id, collections=calib_collection("SkyCam")) == camera


def register_image_type(butler, name="skyframesTestImage", storage_class="MaskedImageV2"):
    butler.registry.registerDatasetType(DatasetType(name, DIMS, storage_class, universe=butler.dimensions))
    butler.registry.registerRun(RUN)


def test_masked_image_round_trip(butler, camera):
    (data_id, _) = add_exposures(butler, camera)
    register_image_type(butler)
    image = make_masked_image(1)
    butler.put(image, "skyframesTestImage", data_id, detector=4, run=RUN)
    got = butler.get("skyframesTestImage", data_id, detector=4, collections=RUN)
    assert isinstance(got, MaskedImage)
    assert got.bbox == image.bbox
    np.testing.assert_array_equal(got.image.array, image.image.array)
    np.testing.assert_array_equal(got.variance.array, image.variance.array)
    np.testing.assert_array_equal(got.mask.get("BAD"), image.mask.get("BAD"))
    assert [p.name for p in got.mask.schema if p is not None] == [
        p.name for p in image.mask.schema if p is not None
    ]


def _background_list():
    pytest.importorskip("lsst.skyframes.background", reason="lsst.skyframes.background is not importable yet")
    from lsst.skyframes.background import BackgroundControl, BackgroundList, makeBackground

    bbox = Box.from_shape((100, 150), start=(4, -2))
    y, x = np.mgrid[0:100, 0:150]
    image = MaskedImage(
        Image((10 + 0.1 * x + 0.05 * y).astype(np.float32), bbox=bbox), mask_schema=default_mask_schema()
    )
    first = makeBackground(image, BackgroundControl("NATURAL_SPLINE", 5, 4))
    second = makeBackground(image, BackgroundControl("LINEAR", 3, 3))
    return BackgroundList(first, (second, "LINEAR", "THROW_EXCEPTION", -1, 0, 0, False))


def test_background_list_round_trip(butler, camera):
    bg_list = _background_list()
    (data_id, _) = add_exposures(butler, camera)
    register_image_type(butler, "skyframesTestBackground", "SkyBackgroundList")
    ref = butler.put(bg_list, "skyframesTestBackground", data_id, detector=0, run=RUN)
    assert butler.getURI(ref).getExtension() == ".fits"
    got = butler.get(ref)
    assert type(got) is type(bg_list) and len(got) == 2
    for (bg, *styles), (bg_in, *styles_in) in zip(got, bg_list, strict=True):
        assert styles == styles_in
        assert bg.getImageBBox() == bg_in.getImageBBox()
        np.testing.assert_array_equal(bg.getStatsImage().image.array, bg_in.getStatsImage().image.array)
    np.testing.assert_array_equal(got.getImage().array, bg_list.getImage().array)


def test_background_map_has_a_formatter(butler, camera):
    # BackgroundMap has a storage class in daf_butler but no formatter; the seed config adds it.
    bg_map = _background_list().toBackgroundMap()
    (data_id, _) = add_exposures(butler, camera)
    register_image_type(butler, "skyframesTestBackgroundMap", "BackgroundMap")
    ref = butler.put(bg_map, "skyframesTestBackgroundMap", data_id, detector=0, run=RUN)
    assert type(butler.get(ref)) is type(bg_map)


class CameraProbeConnections(PipelineTaskConnections, dimensions=DIMS):
    image = cT.Input("skyframesTestImage", storageClass="MaskedImageV2", dimensions=DIMS)
    camera = cT.PrerequisiteInput(
        "camera", storageClass="SkyCamera", dimensions=["instrument"], isCalibration=True
    )
    probe = cT.Output("skyframesTestProbe", storageClass="StructuredDataDict", dimensions=DIMS)


class CameraProbeConfig(PipelineTaskConfig, pipelineConnections=CameraProbeConnections):
    pass


class CameraProbeTask(PipelineTask):
    """Report what the camera prerequisite says about the quantum's detector."""

    ConfigClass = CameraProbeConfig
    _DefaultName = "cameraProbe"

    def runQuantum(self, butlerQC, inputRefs, outputRefs):
        inputs = butlerQC.get(inputRefs)
        detector = inputs["camera"][butlerQC.quantum.dataId["detector"]]
        probe = {"name": detector.name, "mean": float(inputs["image"].image.array.mean())}
        butlerQC.put(probe, outputRefs.probe)


def test_pipeline_task_finds_camera_calibration(butler, camera):
    data_ids = add_exposures(butler, camera)
    register_image_type(butler)
    means = {}
    for n, data_id in enumerate(data_ids):
        for detector in (2, 7):
            image = make_masked_image(10 * n + detector)
            butler.put(image, "skyframesTestImage", data_id, detector=detector, run=RUN)
            means[data_id["exposure"], detector] = float(image.image.array.mean())
    root = butler._config.configDir
    run_butler = SimplePipelineExecutor.prep_butler(
        root, inputs=[RUN, calib_collection("SkyCam")], output="SkyCam/test/probe"
    )
    executor = SimplePipelineExecutor.from_task_class(CameraProbeTask, butler=run_butler)
    quanta = executor.run(register_dataset_types=True)
    assert len(quanta) == 4
    reader = Butler.from_config(root, collections="SkyCam/test/probe")
    for (exposure, detector), mean in means.items():
        probe = reader.get("skyframesTestProbe", instrument="SkyCam", exposure=exposure, detector=detector)
        assert probe == {"name": camera[detector].name, "mean": mean}
