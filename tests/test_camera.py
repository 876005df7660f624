"""Camera descriptions: file schema, validation and the pixel <-> focal-plane transform."""

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from lsst.skyframes.camera import (
    DEFAULT_PHYSICAL_TYPE,
    Camera,
    CameraError,
    CameraLookupError,
    DetectorGeometry,
    FilterDefinition,
    make_synthetic_camera,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture
def tiny():
    return Camera.from_yaml(DATA / "camera.yaml")


def test_example_file_follows_schema(tiny):
    assert tiny.instrument == "TinyCam"
    assert tiny.physical_filters == ("TinyCam-g", "TinyCam-r")
    assert tiny.band_of("TinyCam-r") == "r"
    assert tiny.detector_ids == (0, 1, 7)
    s1, s7 = tiny[1], tiny["S7"]
    assert (s1.width, s1.height, s1.rotation_deg, s1.physical_type, s1.purpose) == (
        100,
        50,
        90.0,
        "ITL",
        "SCIENCE",
    )
    assert s1.pixel_size_mm == 0.01  # the camera default
    assert (s7.pixel_size_mm, s7.purpose, s7.centre_mm) == (0.02, "GUIDER", (2.0, 0.5))
    # Outer pixel edges: S0 spans x -2.5..-1.5; S1 (rotated) y -0.5..0.5; S7 x 1.6..2.4, y 0.1..0.9.
    np.testing.assert_allclose(tiny.focal_plane_bbox(), (-2.5, 2.4, -0.5, 0.9), rtol=0, atol=1e-12)


def test_yaml_round_trip(tiny, tmp_path):
    path = tmp_path / "out.yaml"
    path.write_text("old contents")
    tiny.to_yaml(path)
    assert Camera.from_yaml(path) == tiny
    assert yaml.safe_load(path.read_text())["schema_version"] == 1
    assert os.listdir(tmp_path) == ["out.yaml"]  # the temporary file was renamed, not left behind
    synthetic = make_synthetic_camera()
    synthetic.to_yaml(str(path))
    assert Camera.from_yaml(path) == synthetic


def test_json_dict_round_trip(tiny):
    data = tiny.to_json_dict()
    assert data["schema_version"] == 1
    # S7's own pixel size is written, the others inherit the default.
    assert [("pixel_size_mm" in d) for d in data["detectors"]] == [False, False, True]
    again = Camera.from_json_dict(json.loads(json.dumps(data)))
    assert again == tiny and hash(again) == hash(tiny)
    assert again[7] == tiny[7]


def test_unrotated_corner_pixels():
    det = DetectorGeometry(id=0, name="D", width=100, height=50, centre_mm=(10.0, -5.0), pixel_size_mm=0.01)
    # Centre pixel (49.5, 24.5); corners are 49.5 and 24.5 pixels from it.
    fx, fy = det.pixel_to_focal_plane([0, 99, 0, 99, 49.5], [0, 0, 49, 49, 24.5])
    np.testing.assert_allclose(fx, [9.505, 10.495, 9.505, 10.495, 10.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(fy, [-5.245, -5.245, -4.755, -4.755, -5.0], rtol=0, atol=1e-12)
    x, y = det.focal_plane_to_pixel(fx, fy)
    np.testing.assert_allclose(x, [0, 99, 0, 99, 49.5], rtol=0, atol=1e-9)
    np.testing.assert_allclose(y, [0, 0, 49, 49, 24.5], rtol=0, atol=1e-9)


def test_rotated_90_corner_pixels():
    det = DetectorGeometry(
        id=0, name="D", width=100, height=50, centre_mm=(10.0, -5.0), pixel_size_mm=0.01, rotation_deg=90.0
    )
    # Counter-clockwise by 90 degrees: pixel +x runs along focal-plane +y, pixel +y along -x.
    fx, fy = det.pixel_to_focal_plane([0, 99, 0], [0, 0, 49])
    np.testing.assert_allclose(fx, [10.245, 10.245, 9.755], rtol=0, atol=1e-12)
    np.testing.assert_allclose(fy, [-5.495, -4.505, -5.495], rtol=0, atol=1e-12)
    # Exact cos/sin at 90 degrees: a pixel row maps to exactly one focal-plane x.
    row_x, _ = det.pixel_to_focal_plane(np.arange(100), np.zeros(100))
    assert np.all(row_x == row_x[0])
    corners = det.corners_mm()
    np.testing.assert_allclose(corners.min(axis=0), [9.75, -5.5], atol=1e-12)
    np.testing.assert_allclose(corners.max(axis=0), [10.25, -4.5], atol=1e-12)


@pytest.mark.parametrize("rotation", [0.0, 37.5, -90.0, 180.0, 271.3])
def test_inverse_round_trip_random_points(rotation):
    rng = np.random.default_rng(42)
    det = DetectorGeometry(
        id=3,
        name="D",
        width=4000,
        height=4072,
        centre_mm=(-31.7, 12.25),
        pixel_size_mm=0.01,
        rotation_deg=rotation,
    )
    x = rng.uniform(-10, 4010, size=(20, 50))
    y = rng.uniform(-10, 4080, size=(20, 50))
    fx, fy = det.pixel_to_focal_plane(x, y)
    assert fx.shape == fy.shape == (20, 50)
    x2, y2 = det.focal_plane_to_pixel(fx, fy)
    np.testing.assert_allclose(x2, x, rtol=0, atol=1e-9)
    np.testing.assert_allclose(y2, y, rtol=0, atol=1e-9)
    # Distances scale by the pixel size whatever the rotation.
    np.testing.assert_allclose(
        np.hypot(fx - fx[0, 0], fy - fy[0, 0]), 0.01 * np.hypot(x - x[0, 0], y - y[0, 0])
    )
    cx, cy = det.pixel_to_focal_plane(*det.centre_pixel)
    assert np.ndim(cx) == 0
    np.testing.assert_allclose((cx, cy), det.centre_mm, rtol=0, atol=1e-12)


def _base_dict():
    return Camera.from_yaml(DATA / "camera.yaml").to_json_dict()


def _dup_id(d):
    d["detectors"][2]["id"] = 1


def _dup_name(d):
    d["detectors"][2]["name"] = "S0"


def _overlap(d):
    d["detectors"][1]["centre_mm"] = [-1.8, 0.2]


def _missing_bbox(d):
    del d["detectors"][1]["bbox"]


def _missing_instrument(d):
    del d["instrument"]


def _bad_version(d):
    d["schema_version"] = 2


def _no_version(d):
    del d["schema_version"]


def _dup_filter(d):
    d["filters"][1]["physical_filter"] = "TinyCam-g"


def _zero_width(d):
    d["detectors"][2]["bbox"]["width"] = 0


def _negative_pixel(d):
    d["detectors"][2]["pixel_size_mm"] = -0.01


def _unknown_key(d):
    d["detectors"][1]["rotation"] = 45


def _no_pixel_size(d):
    del d["pixel_size_mm"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_dup_id, ["detectors[2] (id=1, name='S7')", "detectors[1] (id=1, name='S1')", "ids must be unique"]),
        (_dup_name, ["detectors[2] (id=7, name='S0')", "detectors[0]", "names must be unique"]),
        (_overlap, ["detectors[0] (id=0, name='S0') overlaps detectors[1] (id=1, name='S1')"]),
        (_missing_bbox, ["detectors[1] (name='S1')", "missing required key", "'bbox'"]),
        (_missing_instrument, ["the camera description is missing required key", "'instrument'"]),
        (_bad_version, ["unknown schema_version 2", "reads schema_version 1"]),
        (_no_version, ["missing required key", "'schema_version'"]),
        (_dup_filter, ["filters[1]", "'TinyCam-g'", "physical filters must be unique"]),
        (_zero_width, ["detectors[2] (name='S7')", "width must be a positive integer"]),
        (_negative_pixel, ["detectors[2] (name='S7')", "pixel_size_mm must be a positive"]),
        (_unknown_key, ["detectors[1] (name='S1')", "unknown key(s) ['rotation']"]),
        (_no_pixel_size, ["detectors[0] (name='S0') has no pixel_size_mm"]),
    ],
)
def test_validation_errors_name_file_and_entry(tmp_path, mutate, expected):
    data = copy.deepcopy(_base_dict())
    mutate(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(CameraError) as info:
        Camera.from_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for fragment in expected:
        assert fragment in message
    assert isinstance(info.value, ValueError)


def test_not_yaml_and_missing_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("detectors: [unclosed")
    with pytest.raises(CameraError, match="bad.yaml: not a valid YAML"):
        Camera.from_yaml(path)
    with pytest.raises(FileNotFoundError):
        Camera.from_yaml(tmp_path / "absent.yaml")


def test_rotation_overlap_uses_true_shapes():
    # Two 1 x 1 mm detectors 0.05 mm apart: fine unrotated, although their
    # circumscribed circles overlap ...
    def pair(rotation):
        return (
            DetectorGeometry(id=0, name="A", width=100, height=100, centre_mm=(0.0, 0.0), pixel_size_mm=0.01),
            DetectorGeometry(
                id=1,
                name="B",
                width=100,
                height=100,
                centre_mm=(1.05, 0.0),
                pixel_size_mm=0.01,
                rotation_deg=rotation,
            ),
        )

    Camera("Pair", pair(0.0))
    Camera("Pair", pair(90.0))
    # ... but rotating one by 45 degrees pushes a corner 0.707 mm out, into the other.
    with pytest.raises(CameraError, match=r"detectors\[0\] .* overlaps detectors\[1\]"):
        Camera("Pair", pair(45.0), source="pair")
    # Detectors that share an edge exactly do not overlap.
    make_synthetic_camera(gap_px=0)


@pytest.mark.parametrize(("n_x", "n_y", "size", "gap"), [(3, 3, 1024, 64), (4, 2, 2000, 100), (1, 1, 10, 0)])
def test_synthetic_camera_extent(n_x, n_y, size, gap):
    pixel = 0.015
    camera = make_synthetic_camera(n_x=n_x, n_y=n_y, size=size, gap_px=gap, pixel_size_mm=pixel)
    half_x = ((n_x - 1) / 2 * (size + gap) + size / 2) * pixel
    half_y = ((n_y - 1) / 2 * (size + gap) + size / 2) * pixel
    np.testing.assert_allclose(
        camera.focal_plane_bbox(), (-half_x, half_x, -half_y, half_y), rtol=0, atol=1e-9
    )
    assert len(camera) == n_x * n_y


def test_synthetic_camera_layout():
    camera = make_synthetic_camera()
    assert camera.instrument == "SkyCam"
    assert [d.name for d in camera.detectors] == [
        "R00",
        "R01",
        "R02",
        "R10",
        "R11",
        "R12",
        "R20",
        "R21",
        "R22",
    ]
    assert camera.detector_ids == tuple(range(9))
    assert camera[5].name == "R12" and camera["R12"].id == 5
    assert camera[4].centre_mm == (0.0, 0.0)
    np.testing.assert_allclose(camera[5].centre_mm, (1088 * 0.015, 0.0))
    assert camera.filters == (FilterDefinition("SkyCam-r", "r"), FilterDefinition("SkyCam-i", "i"))
    assert [d.name for d in make_synthetic_camera(n_x=11, n_y=1).detectors][-1] == "R0010"


def test_lookup_errors():
    camera = make_synthetic_camera()
    with pytest.raises(CameraLookupError, match="no detector 9") as info:
        camera[9]
    assert isinstance(info.value, KeyError)
    with pytest.raises(KeyError, match="'SkyCam-r', 'SkyCam-i'"):
        camera.band_of("SkyCam-z")
    assert 8 in camera and "R22" in camera and 9 not in camera


def test_bad_instrument_name():
    detectors = make_synthetic_camera().detectors
    with pytest.raises(CameraError, match="must start with a letter"):
        Camera("Sky.Cam", detectors)
    with pytest.raises(CameraError, match="at most 32"):
        Camera("S" * 33, detectors)


def test_differences_name_each_entry_and_ignore_order():
    camera = make_synthetic_camera(n_x=2, n_y=1, size=32)
    data = camera.to_json_dict()
    data["detectors"][1]["bbox"]["height"] = 40
    data["detectors"][1]["rotation_deg"] = 0.5
    data["filters"][0]["band"] = "g"
    del data["filters"][1]
    data["detectors"].append(dict(data["detectors"][0], id=7, name="R07", centre_mm=[0.0, 50.0]))
    data["detectors"].reverse()
    edited = Camera.from_json_dict(data)
    assert camera.differences(edited, labels=("registered", "given")) == [
        "physical filter 'SkyCam-i': registered only",
        "physical filter 'SkyCam-r' band: 'r' registered, 'g' given",
        "detector 1 (R01) size: 32x32 px registered, 32x40 px given",
        "detector 1 (R01) rotation_deg: 0.0 registered, 0.5 given",
        "detector 7 (R07): given only",
    ]
    data = camera.to_json_dict()
    data["detectors"].reverse()
    data["filters"].reverse()
    reordered = Camera.from_json_dict(data)
    assert reordered != camera and camera.differences(reordered) == []


def test_physical_type_is_optional_and_round_trips(tiny, tmp_path):
    # A file without physical_type (S0, S7) means the default, so older camera files load unchanged.
    assert [tiny[i].physical_type for i in (0, 1, 7)] == [DEFAULT_PHYSICAL_TYPE, "ITL", DEFAULT_PHYSICAL_TYPE]
    assert DEFAULT_PHYSICAL_TYPE == "CCD" and tiny[1].getPhysicalType() == "ITL"
    assert tiny.physical_types == ("CCD", "ITL")
    mixed = make_synthetic_camera(n_x=2, n_y=2, size=32, physical_types=["E2V", "ITL", "ITL", "E2V"])
    assert [d.physical_type for d in mixed] == ["E2V", "ITL", "ITL", "E2V"]
    assert mixed.physical_types == ("E2V", "ITL")
    path = tmp_path / "mixed.yaml"
    mixed.to_yaml(path)
    assert [d["physical_type"] for d in yaml.safe_load(path.read_text())["detectors"]] == [
        "E2V",
        "ITL",
        "ITL",
        "E2V",
    ]
    assert Camera.from_yaml(path) == mixed
    alike = make_synthetic_camera(n_x=2, n_y=2, size=32)
    assert alike.physical_types == ("CCD",) and alike != mixed
    assert alike.differences(mixed, labels=("registered", "given")) == [
        f"detector {i} ({alike[i].name}) physical_type: CCD registered, {mixed[i].physical_type} given"
        for i in range(4)
    ]


def test_synthetic_camera_needs_one_physical_type_per_detector():
    with pytest.raises(CameraError, match=r"one type per detector \(4 for 2x2\)"):
        make_synthetic_camera(n_x=2, n_y=2, physical_types=["E2V", "ITL"])
    with pytest.raises(CameraError, match="one type per detector"):
        make_synthetic_camera(n_x=2, n_y=2, physical_types="ITLE")
