"""Bad input, everywhere data enters: each case raises a specific exception that names the input,
allocates no more than the file's size warrants, and writes nothing.
"""

from __future__ import annotations

import io
import os
import re
import tokenize
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits
from lsst.images import Box, Image, MaskedImage
from lsst.pex.config import FieldValidationError

from lsst.skyframes import BackgroundList, SkyMeasurementConfig, SkyMeasurementTask
from lsst.skyframes.build import (
    CpSkyCombineConfig,
    CpSkyCombineTask,
    CpSkyImageConfig,
    CpSkyImageTask,
    CpSkyScaleMeasureTask,
    CpSkySubtractBackgroundTask,
)
from lsst.skyframes.camera import Camera, CameraError, make_synthetic_camera
from lsst.skyframes.camera_overrides import camera_config
from lsst.skyframes.errors import (
    BackgroundFileError,
    BoxMismatchError,
    MissingMetadataError,
    NoDataError,
    SkyFramesError,
)
from lsst.skyframes.focal_plane import FocalPlaneBackground, FocalPlaneBackgroundConfig
from lsst.skyframes.ingest import (
    IngestError,
    ingest_files,
    ingest_image,
    read_processed_image,
    write_processed_fits,
)
from lsst.skyframes.mask_planes import default_mask_schema
from lsst.skyframes.repo import create_repo, register_camera
from lsst.skyframes.report import format_quality_table

# A reader may use this much memory on top of the file's own size (astropy's header parsing,
# the result's small arrays); a header claiming gigabytes must not make it allocate them.
ALLOCATION_ALLOWANCE = 32 * 2**20


def masked(array, bbox=None) -> MaskedImage:
    return MaskedImage(
        Image(np.asarray(array, dtype=np.float32), bbox=bbox), mask_schema=default_mask_schema()
    )


def sky_like(shape=(64, 96), level=1000.0, seed=5) -> MaskedImage:
    rng = np.random.default_rng(seed)
    return masked(level + rng.normal(0, 3, shape))


def measurement_task(bin_size=16) -> SkyMeasurementTask:
    config = SkyMeasurementConfig()
    config.background.xBinSize = config.background.yBinSize = bin_size
    return SkyMeasurementTask(config=config)


def focal_plane_config() -> FocalPlaneBackgroundConfig:
    config = FocalPlaneBackgroundConfig()
    config.xSize = config.ySize = 0.5
    config.pixelSize = 0.015
    return config


def focal_plane(level: float, dims=(4, 3)) -> FocalPlaneBackground:
    """A FocalPlaneBackground whose every bin holds ``level`` (sum level*N over N good pixels)."""
    # Full bins: (xSize / pixelSize) * (ySize / pixelSize) pixels each, well above minFrac.
    numbers = np.full((dims[1], dims[0]), 1200.0)
    return FocalPlaneBackground(focal_plane_config(), dims, (-1.0, -1.0), numbers * level, numbers)


# --- Files: one writer per reader ------------------------------------------------------------------


def write_background_list(path: Path) -> Path:
    measurement_task().measureBackground(sky_like()).writeFits(str(path))
    return path


def write_focal_plane(path: Path) -> Path:
    focal_plane(1000.0).writeFits(path)
    return path


def write_processed(path: Path) -> Path:
    header = {
        "EXPID": 7,
        "DETECTOR": 0,
        "FILTER": "SkyCam-r",
        "DATE-OBS": "2026-11-01T03:00:00",
        "EXPTIME": 30.0,
    }
    write_processed_fits(path, sky_like((64, 64)), header)
    return path


def write_camera(path: Path) -> Path:
    make_synthetic_camera(n_x=2, n_y=1, size=64, gap_px=8).to_yaml(path)
    return path


READERS = {
    "BackgroundList.readFits": (
        write_background_list,
        lambda p: BackgroundList.readFits(str(p)),
        BackgroundFileError,
    ),
    "FocalPlaneBackground.readFits": (write_focal_plane, FocalPlaneBackground.readFits, BackgroundFileError),
    "read_processed_image": (write_processed, lambda p: read_processed_image(str(p)), IngestError),
    "Camera.from_yaml": (write_camera, Camera.from_yaml, CameraError),
}


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _corrupt(data: bytes) -> bytes:
    # Same length, random content: only the content says the file is wrong.
    return np.random.default_rng(1).bytes(len(data))


def _garble_middle(data: bytes) -> bytes:
    # A valid start, then garbage where the data or later headers were.
    middle = len(data) // 3
    return data[:middle] + np.random.default_rng(2).bytes(len(data) - middle)


def _empty(data: bytes) -> bytes:
    return b""


DAMAGES = {"truncated": _truncate, "corrupt": _corrupt, "garbled": _garble_middle, "empty": _empty}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("reader", READERS)
def test_damaged_files_raise_specific_errors(reader, damage, tmp_path):
    write, read, error = READERS[reader]
    path = write(tmp_path / f"good-{reader}")
    damaged = tmp_path / f"{damage}-{path.name}"
    damaged.write_bytes(DAMAGES[damage](path.read_bytes()))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(error, match=str(damaged)) as info:
        read(damaged)
    assert isinstance(info.value, SkyFramesError)
    assert sorted(os.listdir(tmp_path)) == before  # a reader writes nothing, not even a temporary


@pytest.mark.parametrize(
    "text", ["detectors: [unclosed\n", "instrument: SkyCam\n\tdetectors: []\n", "- a\nb: c\n", "42\n", ""]
)
def test_camera_yaml_syntax_and_shape_errors(tmp_path, text):
    path = tmp_path / "camera.yaml"
    path.write_text(text)
    with pytest.raises(CameraError, match=str(path)):
        Camera.from_yaml(path)


def test_missing_files_name_the_path(tmp_path):
    missing = tmp_path / "absent.fits"
    for read, error in [
        (lambda p: BackgroundList.readFits(str(p)), BackgroundFileError),
        (FocalPlaneBackground.readFits, BackgroundFileError),
        (lambda p: read_processed_image(str(p)), IngestError),
        (Camera.from_yaml, FileNotFoundError),
    ]:
        with pytest.raises(error, match=str(missing)):
            read(missing)


# --- HDU counts and header keys that do not fit -----------------------------------------------------


def _rewrite(path: Path, edit) -> Path:
    with fits.open(path) as hdul:
        hdus = fits.HDUList([hdu.copy() for hdu in hdul])
    edit(hdus)
    out = path.with_name("edited-" + path.name)
    hdus.writeto(out)
    return out


def _set(index, key, value):
    def edit(hdus):
        hdus[index].header[key] = value

    return edit


def _delete(index, key):
    def edit(hdus):
        del hdus[index].header[key]

    return edit


def _drop_last(hdus):
    del hdus[-1]


def _shrink_variance(hdus):
    hdus[2].data = hdus[2].data[:-1]


@pytest.mark.parametrize(
    "edit, message",
    [
        (_drop_last, "2 HDUs"),
        (_delete(0, "BKGD_WIDTH"), "BKGD_WIDTH"),
        (_delete(0, "INTERPSTYLE"), "INTERPSTYLE"),
        (_set(0, "BKGD_WIDTH", 0), "BKGD_WIDTH=0"),
        (_set(0, "INTERPSTYLE", 99), "99"),
        (_shrink_variance, "disagree in shape"),
    ],
)
def test_background_list_layout_errors(tmp_path, edit, message):
    path = _rewrite(write_background_list(tmp_path / "bg.fits"), edit)
    with pytest.raises(BackgroundFileError, match=message) as info:
        BackgroundList.readFits(str(path))
    assert str(path) in str(info.value)


def _drop_numbers(hdus):
    del hdus["NUMBERS"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (_delete(0, "FPBGVER"), "FPBGVER"),
        (_set(0, "FPBGVER", 99), "version 99"),
        (_delete(0, "XSIZE"), "XSIZE"),
        (_set(0, "NX", 5), "shape"),
        (_drop_numbers, "NUMBERS"),
        (_set(0, "INTERP", "NO_SUCH_STYLE"), "NO_SUCH_STYLE"),
        (_set(0, "XSIZE", -1.0), "xSize"),
    ],
)
def test_focal_plane_layout_errors(tmp_path, edit, message):
    path = _rewrite(write_focal_plane(tmp_path / "fp.fits"), edit)
    with pytest.raises(BackgroundFileError, match=message) as info:
        FocalPlaneBackground.readFits(path)
    assert str(path) in str(info.value)


def _one_dimensional(hdus):
    for hdu in hdus:
        hdu.data = None if hdu.data is None else hdu.data.ravel()


def _shrink_mask(hdus):
    hdus["MASK"].data = hdus["MASK"].data[:-1]


@pytest.mark.parametrize(
    "edit, message", [(_one_dimensional, "no HDU holds a 2-d image"), (_shrink_mask, "MASK HDU")]
)
def test_processed_image_layout_errors(tmp_path, edit, message):
    path = _rewrite(write_processed(tmp_path / "image.fits"), edit)
    with pytest.raises(IngestError, match=message) as info:
        read_processed_image(str(path))
    assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def ingest_repo(tmp_path_factory):
    camera = make_synthetic_camera(n_x=1, n_y=1, size=64, gap_px=0)
    butler = create_repo(str(tmp_path_factory.mktemp("ingest") / "repo"))
    register_camera(butler, camera)
    return butler, camera


@pytest.mark.parametrize(
    "edit, error, message",
    [
        (_delete(0, "EXPID"), MissingMetadataError, "EXPID"),
        (_set(0, "EXPID", "seven"), MissingMetadataError, "EXPID"),
        (_set(0, "DATE-OBS", "yesterday"), MissingMetadataError, "DATE-OBS"),
        (_set(0, "DETECTOR", 42), IngestError, "detector 42"),
    ],
)
def test_ingest_of_bad_headers_writes_nothing(ingest_repo, tmp_path, edit, error, message):
    butler, camera = ingest_repo
    path = _rewrite(write_processed(tmp_path / "image.fits"), edit)
    run = f"bad/{tmp_path.name}"
    report = ingest_files(butler, camera, [str(path)], run=run)
    assert list(report.failed) == [str(path)] and message in report.failed[str(path)]
    image, header = read_processed_image(str(path))
    with pytest.raises(error, match=message) as info:
        ingest_image(butler, camera, image, header, source=str(path), run=run)
    assert str(path) in str(info.value)
    # Neither the dataset, its RUN collection nor its exposure record was written.
    assert run not in butler.collections.query("*")
    assert butler.query_dimension_records("exposure", explain=False) == []


# --- Headers claiming huge images --------------------------------------------------------------------


def _huge_plain(path: Path, extra: dict) -> Path:
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 2
    header["NAXIS1"] = 200_000
    header["NAXIS2"] = 200_000
    for key, value in extra.items():
        header[key] = value
    path.write_bytes(header.tostring().encode() + b"\0" * 2880)
    return path


def _claim_huge_compressed(hdu: fits.ImageHDU, name: str) -> bytes:
    """A small tile-compressed HDU whose header claims an 8000 x 8000 image."""
    compressed = fits.CompImageHDU(
        np.asarray(hdu.data), header=hdu.header, compression_type="GZIP_1", name=name
    )
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), compressed]).writeto(buffer)
    raw = bytearray(buffer.getvalue())
    for key in ("ZNAXIS1", "ZNAXIS2"):
        start = raw.find(key.ljust(8).encode() + b"= ")
        raw[start : start + 80] = f"{key.ljust(8)}= {8000:>20}".ljust(80).encode()
    return bytes(raw)


def _huge_compressed_file(path: Path, good: Path, replace: str) -> Path:
    """``good`` with HDU ``replace`` (name or index) made compressed and claiming a huge image."""
    with fits.open(good) as hdul:
        hdus = [hdu.copy() for hdu in hdul]
    names = [hdu.name for hdu in hdus]
    index = names.index(replace) if replace in names else int(replace)
    # Concatenate raw bytes so that the rewritten ZNAXIS cards survive as they are; an empty
    # primary HDU is one 2880-byte block, dropped from the pieces written as extensions.
    head = io.BytesIO()
    fits.HDUList(hdus[:index]).writeto(head)
    tail = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), *hdus[index + 1 :]]).writeto(tail)
    raw = _claim_huge_compressed(hdus[index], hdus[index].name or "IMAGE")
    path.write_bytes(head.getvalue() + raw[2880:] + tail.getvalue()[2880:])
    return path


HUGE_CASES = {
    "BackgroundList plain": (
        lambda tmp: _huge_plain(tmp / "huge-bg.fits", {}),
        lambda p: BackgroundList.readFits(str(p)),
        BackgroundFileError,
    ),
    "FocalPlaneBackground plain": (
        lambda tmp: _huge_plain(tmp / "huge-fp.fits", {"FPBGVER": 1}),
        FocalPlaneBackground.readFits,
        BackgroundFileError,
    ),
    "processed image plain": (
        lambda tmp: _huge_plain(tmp / "huge-image.fits", {}),
        lambda p: read_processed_image(str(p)),
        IngestError,
    ),
    "BackgroundList compressed mask": (
        lambda tmp: _huge_compressed_file(
            tmp / "huge-bg-z.fits", write_background_list(tmp / "bg.fits"), "1"
        ),
        lambda p: BackgroundList.readFits(str(p)),
        BackgroundFileError,
    ),
    "FocalPlaneBackground compressed VALUES": (
        lambda tmp: _huge_compressed_file(
            tmp / "huge-fp-z.fits", write_focal_plane(tmp / "fp.fits"), "VALUES"
        ),
        FocalPlaneBackground.readFits,
        BackgroundFileError,
    ),
    "processed image compressed MASK": (
        lambda tmp: _huge_compressed_file(
            tmp / "huge-image-z.fits", write_processed(tmp / "im.fits"), "MASK"
        ),
        lambda p: read_processed_image(str(p)),
        IngestError,
    ),
}


@pytest.mark.parametrize("case", HUGE_CASES)
def test_header_claiming_huge_image_allocates_little(case, tmp_path):
    make, read, error = HUGE_CASES[case]
    path = make(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(error, match=str(path)):
            read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < path.stat().st_size + ALLOCATION_ALLOWANCE, f"{case}: peak {peak / 2**20:.0f} MiB"


# --- Images without usable pixels ------------------------------------------------------------------


def test_nan_and_fully_masked_images_give_nan_bins_and_no_sky_frame():
    task = measurement_task()
    nan_image = masked(np.full((64, 96), np.nan))
    masked_image = sky_like()
    masked_image.mask.set("BAD", np.ones((64, 96), dtype=bool))
    backgrounds = [task.measureBackground(image) for image in (nan_image, masked_image)]
    for bg in backgrounds:
        assert np.isnan(bg[0][0].getStatsImage().image.array).all()
    with pytest.raises(NoDataError, match="2 inputs"):
        task.averageBackgrounds(backgrounds)


def test_mismatched_boxes():
    task = measurement_task()
    small, large = task.measureBackground(sky_like((64, 96))), task.measureBackground(sky_like((64, 128)))
    with pytest.raises(BoxMismatchError, match="input 1"):
        task.averageBackgrounds([small, large])
    # A sky frame of another detector size.
    sky = task.exposureToBackground(task.averageBackgrounds([small]))
    other = sky_like((64, 128))
    with pytest.raises(BoxMismatchError, match="measureScale"):
        task.measureScale(other, sky)
    before = other.image.array.copy()
    with pytest.raises(BoxMismatchError, match="subtractSkyFrame"):
        task.subtractSkyFrame(other, sky, 1.0)
    assert np.array_equal(other.image.array, before)
    # Same size, shifted origin: still another detector's frame.
    shifted = masked(sky_like((64, 96)).image.array, bbox=Box.from_shape((64, 96), start=(10, 0)))
    with pytest.raises(BoxMismatchError):
        task.measureScale(shifted, sky)


# --- Empty inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: measurement_task().averageBackgrounds([]), "averageBackgrounds"),
        (lambda: measurement_task().solveScales([]), "solveScales"),
        (lambda: BackgroundList().getImage(), "empty"),
        (lambda: CpSkyScaleMeasureTask().run([]), "cpSkyScaleMeasure"),
    ],
)
def test_empty_inputs(call, message):
    with pytest.raises(NoDataError, match=message):
        call()


# --- Zero, negative and non-finite levels and scales -------------------------------------------------


@pytest.mark.parametrize("scale", [np.nan, np.inf, -np.inf])
def test_subtract_sky_frame_refuses_non_finite_scale(scale):
    task = measurement_task()
    sky = task.exposureToBackground(task.averageBackgrounds([task.measureBackground(sky_like())]))
    image = sky_like()
    before = image.image.array.copy()
    bg_list = BackgroundList()
    with pytest.raises(NoDataError, match=str(scale)):
        task.subtractSkyFrame(image, sky, scale, bg_list)
    assert np.array_equal(image.image.array, before) and len(bg_list) == 0


@pytest.mark.parametrize(
    "samples, message",
    [
        ([(np.ones(16), np.zeros(16))], "zero"),
        ([(np.ones(16), np.full(16, np.nan))], "finite"),
        ([(np.full(16, np.inf), np.ones(16))], "finite"),
        ([(np.ones(4), np.ones(5))], "4 image samples"),
    ],
)
def test_solve_scales_without_usable_samples(samples, message):
    with pytest.raises((NoDataError, ValueError), match=message):
        measurement_task().solveScales(samples)


@pytest.mark.parametrize(
    "level, message",
    [
        (0.0, "sky level is 0.0"),
        (-250.0, "sky level is -250.0"),
        # Non-finite sums make every bin bad before a level is taken (the message then speaks of
        # too few good pixels, which is misleading but names the grid).
        (np.nan, "No focal-plane background bin is good"),
        (np.inf, "No focal-plane background bin is good"),
    ],
)
def test_scale_measure_refuses_non_positive_sky_level(level, message):
    inputs = [focal_plane(level), focal_plane(level)]
    with pytest.raises(NoDataError, match=message):
        CpSkyScaleMeasureTask().run(inputs)


def test_scale_measure_of_empty_backgrounds():
    empty = FocalPlaneBackground(focal_plane_config(), (4, 3), (-1.0, -1.0))
    # The cause (no usable pixel at all), not a hint about bin sizes.
    with pytest.raises(NoDataError, match="none of the exposure's 2 detector.s. has a usable pixel"):
        CpSkyScaleMeasureTask().run([empty, empty.clone()])


# --- One bad exposure in a build (the pipeline side: test_bad_exposure.py) ---------------------------


def _combine_task(min_exposures: int = 1):
    config = CpSkyCombineConfig()
    config.minExposures = min_exposures
    config.sky.background.xBinSize = config.sky.background.yBinSize = 16  # measurement_task()'s bins
    return CpSkyCombineTask(config=config)


def _residuals(n: int, seed: int = 9) -> list[BackgroundList]:
    task = measurement_task()
    return [task.measureBackground(sky_like(level=0.0, seed=seed + i)) for i in range(n)]


def test_all_nan_detector_is_not_masked_and_adds_nothing(caplog):
    camera = make_synthetic_camera(n_x=1, n_y=1, size=64, gap_px=0)
    detector = next(iter(camera))
    image = masked(np.full((64, 64), np.nan))
    with caplog.at_level("WARNING"):
        result = CpSkyImageTask(config=camera_config(CpSkyImageTask, camera)).run(
            image, camera, detector, where="exposure 7 (physical_filter X) detector 0"
        )
    assert "exposure 7 (physical_filter X) detector 0 has no usable pixel" in caplog.text
    assert np.isnan(result.maskedExp.image.array).all()
    assert not result.maskedBkg.numbers.any() and not result.maskedBkg.values.any()


def test_combine_refuses_fewer_than_min_exposures_naming_the_count():
    dropped = [{"exposure": 5, "reason": "cpSkyScaleMeasure: no usable pixel"}]
    with pytest.raises(NoDataError) as caught:
        _combine_task(min_exposures=3).run(_residuals(2), [1, 2], dropped=dropped, detectorId=4)
    message = str(caught.value)
    assert "sky frame of detector 4 would be built from 2 exposure(s)" in message
    assert (
        "0 rejected, 1 dropped before the combination: exposure 5: cpSkyScaleMeasure: no usable pixel"
        in message
    )
    assert "fewer than minExposures = 3" in message and "lower cpSkyCombine:minExposures" in message


def test_combine_of_nothing_but_dropped_exposures_says_why():
    dropped = [{"exposure": e, "reason": "cpSkyScaleMeasure: sky level is 0.0"} for e in (5, 6)]
    with pytest.raises(NoDataError, match=r"from 0 exposure\(s\) \(0 rejected, 2 dropped.*exposure 6: cpSky"):
        _combine_task().run([], [], dropped=dropped)


@pytest.mark.parametrize("n_inputs, warned", [(1, True), (2, True), (3, False)])
def test_combine_warns_below_three_inputs(caplog, n_inputs, warned):
    inputs = _residuals(n_inputs)
    with caplog.at_level("WARNING"):
        result = _combine_task().run(inputs, list(range(n_inputs)))
    assert (f"is built from {n_inputs} input(s): with fewer than 3" in caplog.text) == warned
    # Truth for one input: the frame is that input's bins.
    if n_inputs == 1:
        stats = inputs[0][0][0].getStatsImage().image.array
        assert np.array_equal(result.outputCalib.image.array, stats)
    assert result.outputQuality["n_inputs_used"] == n_inputs


def test_subtract_background_refuses_a_dropped_exposure():
    camera = make_synthetic_camera(n_x=1, n_y=1, size=64, gap_px=0)
    detector = next(iter(camera))
    dropped = {"scale": None, "nDetectors": 1, "dropped": "cpSkyScaleMeasure: no usable pixel"}
    with pytest.raises(
        NoDataError, match="cpSkyScaleMeasure dropped this exposure .cpSkyScaleMeasure: no usable"
    ):
        CpSkySubtractBackgroundTask().run(sky_like(), focal_plane(1.0), dropped, detector)
    with pytest.raises(NoDataError, match="sky level .cpSkyExpScale. is None"):
        CpSkySubtractBackgroundTask().run(sky_like(), focal_plane(1.0), {"scale": None}, detector)


def _report(used, rejected=(), dropped=(), noise=1e-3, **extra):
    return {
        "schema_version": 3,
        "n_inputs_used": len(used),
        "inputs_used": list(used),
        "inputs_rejected": [{"exposure": e, "reason": r} for e, r in rejected],
        "inputs_dropped": [{"exposure": e, "reason": r} for e, r in dropped],
        "nan_filled_fraction": 0.0,
        "noise_median": noise,
        "residual_rms": {str(e): 0.0 if len(used) == 1 else 2e-3 for e in used},
        **extra,
    }


def test_report_table_of_every_case():
    """One input, rejected and dropped inputs, a schema-2 report, K > 1 templates: one table."""
    drop = (1001, "cpSkyScaleMeasure: no usable pixel")
    rows = [
        ({"physical_filter": "r", "detector": 0}, _report([1000], noise=None)),
        (
            {"physical_filter": "r", "detector": 1},
            _report([1000, 1002, 1003], [(1004, "no finite bin")], [drop]),
        ),
        ({"physical_filter": "r", "detector": 2}, _report([1000, 1002, 1003, 1004], dropped=[drop])),
        ({"physical_filter": "g", "detector": 0}, {**_report([1, 2, 3]), "schema_version": 2}),
        (
            {"physical_filter": "i", "detector": 0},
            _report(
                [1, 2, 3],
                n_components=2,
                variance_explained=[0.9, 0.05],
                model_residual_rms={"1": 1e-3, "2": 1e-3, "3": 1e-3},
            ),
        ),
    ]
    del rows[3][1]["inputs_dropped"]  # schema 2 had no such field
    lines = format_quality_table(rows).splitlines()
    table = {(line.split()[0], line.split()[1]): line.split() for line in lines[2:7]}
    assert table[("r", "0")][2:5] == ["1", "0", "0"] and table[("r", "0")][6] == "nan"
    assert table[("r", "1")][2:5] == ["3", "1", "1"]
    assert table[("g", "0")][2:5] == ["3", "0", "0"]
    assert table[("i", "0")][-4:] == ["2", "1.000e-03", "9.00e-01", "5.00e-02"]
    text = "\n".join(lines)
    assert "r exposure 1001, dropped before the combination (detectors 1, 2): cpSkyScaleMeasure" in text
    assert "r exposure 1004, rejected (detector 1): no finite bin" in text
    # Only the one-input frame is flagged; 3 inputs are enough to clip.
    assert text.split("Built from fewer than 3 inputs")[1].splitlines()[1:] == ["  r detector 0: 1 input"]


# --- Configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, field, value",
    [
        (SkyMeasurementConfig, "background.statistic", "MODE"),
        (SkyMeasurementConfig, "background.algorithm", "CUBIC_SPLINE_PERIODIC_X"),
        (SkyMeasurementConfig, "background.xBinSize", 0),
        (SkyMeasurementConfig, "stats.clip", float("nan")),
        (FocalPlaneBackgroundConfig, "interpolation", "LANCZOS"),
        (FocalPlaneBackgroundConfig, "xSize", -1.0),
        (CpSkyImageConfig, "largeScaleBackground.binning", 0),
    ],
)
def test_unknown_config_values(make, field, value):
    config = make()
    *parents, name = field.split(".")
    for parent in parents:
        config = getattr(config, parent)
    with pytest.raises(FieldValidationError, match=name):
        setattr(config, name, value)
        config.validate()


def test_unknown_config_field_names_the_field(tmp_path):
    override = tmp_path / "override.py"
    override.write_text("config.background.xBinSise = 64\n")
    with pytest.raises(AttributeError, match="xBinSise"):
        SkyMeasurementConfig().load(str(override))


# --- Camera descriptions -----------------------------------------------------------------------------


def _camera_file(tmp_path: Path, edit) -> Path:
    data = make_synthetic_camera(n_x=2, n_y=1, size=64, gap_px=8).to_json_dict()
    edit(data)
    path = tmp_path / "camera.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _overlap(data):
    data["detectors"][1]["centre_mm"] = [-0.5, 0.1]


def _duplicate_id(data):
    data["detectors"][1]["id"] = data["detectors"][0]["id"]


def _duplicate_name(data):
    data["detectors"][1]["name"] = data["detectors"][0]["name"]


def _no_detectors(data):
    data["detectors"] = []


def _negative_size(data):
    data["detectors"][0]["bbox"]["width"] = -64


@pytest.mark.parametrize(
    "edit, message",
    [
        (_overlap, "overlaps"),
        (_duplicate_id, "repeats the id"),
        (_duplicate_name, "repeats the name"),
        (_no_detectors, "detectors"),
        (_negative_size, "width"),
    ],
)
def test_bad_camera_files(tmp_path, edit, message):
    path = _camera_file(tmp_path, edit)
    with pytest.raises(CameraError, match=message) as info:
        Camera.from_yaml(path)
    assert str(path) in str(info.value)


# --- Security ---------------------------------------------------------------------------------------

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "lsst" / "skyframes"

# Code that can run whatever a file or string says: never in this package, whose inputs (FITS,
# YAML, butler datasets) come from other people. A comment may still name them.
FORBIDDEN = {
    "pickle (unpickling runs arbitrary code)": re.compile(r"\b(c?pickle|dill|cloudpickle|marshal|shelve)\b"),
    "eval(": re.compile(r"(?<![\w.])eval\s*\("),
    "exec(": re.compile(r"(?<![\w.])exec\s*\("),
    "shell=True": re.compile(r"\bshell\s*=\s*True\b"),
    "yaml.load / unsafe_load (use yaml.safe_load)": re.compile(
        r"\byaml\s*\.\s*(load|unsafe_load|full_load)\s*\("
    ),
    "os.system": re.compile(r"\bos\s*\.\s*system\s*\("),
}


def _code_without_comments(path: Path) -> list[tuple[int, str]]:
    """Return ``(line, text)`` of every token of ``path`` except comments and string literals.

    Strings are left out too: a docstring that says a format is written "rather than pickled"
    runs nothing, whereas any use of these names in code is a token outside a string.
    """
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    skipped = {tokenize.COMMENT, tokenize.STRING, tokenize.FSTRING_START, tokenize.FSTRING_MIDDLE}
    lines: dict[int, list[str]] = {}
    for token in tokens:
        if token.type not in skipped:
            lines.setdefault(token.start[0], []).append(token.string)
    return [(number, " ".join(parts)) for number, parts in sorted(lines.items())]


def test_package_source_runs_no_untrusted_code():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 10, f"found only {sources} under {PACKAGE}"
    found = []
    for path in sources:
        for number, text in _code_without_comments(path):
            # Token text is space-separated: squeeze it back for the patterns.
            squeezed = re.sub(r"\s*([.(=])\s*", r"\1", text)
            for what, pattern in FORBIDDEN.items():
                if pattern.search(squeezed):
                    found.append(f"{path.relative_to(PACKAGE)}:{number}: {what}: {text}")
    assert not found, "\n".join(found)


def test_security_scan_finds_what_it_looks_for(tmp_path):
    # The scan itself must not be blind: each pattern trips on code and not on comments or strings.
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle  # pickle in a comment\n"
        'x = "eval( exec( shell=True"\n'
        "y = eval(x)\n"
        "subprocess.run(cmd, shell = True)\n"
        "ast.literal_eval(x)\n"
    )
    lines = dict(_code_without_comments(sample))
    squeezed = {n: re.sub(r"\s*([.(=])\s*", r"\1", t) for n, t in lines.items()}
    assert FORBIDDEN["pickle (unpickling runs arbitrary code)"].search(squeezed[1])
    assert not any(pattern.search(squeezed[2]) for pattern in FORBIDDEN.values())
    assert FORBIDDEN["eval("].search(squeezed[3])
    assert FORBIDDEN["shell=True"].search(squeezed[4])
    assert not FORBIDDEN["eval("].search(squeezed[5])
