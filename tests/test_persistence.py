"""BackgroundList FITS files in afw's layout, built and checked independently with astropy."""

import os
import warnings

import numpy as np
import pytest
from astropy.io import fits
from lsst.images import Box, Image, MaskedImage

from lsst.skyframes import BackgroundControl, BackgroundList, Interpolate, UndersampleStyle, makeBackground
from lsst.skyframes.background import ApproximateControl
from lsst.skyframes.errors import BackgroundFileError, NoDataError
from lsst.skyframes.mask_planes import default_mask_schema


def afw_style_hdus(values, errors, bbox_xywh, interp=5, undersample=1, approx=True, primary=True):
    """Three HDUs exactly as afw's BackgroundList.writeFits lays out one element."""
    x0, y0, width, height = bbox_xywh
    header = fits.Header()
    header["HIERARCH INTERPSTYLE"] = interp
    header["HIERARCH UNDERSAMPLESTYLE"] = undersample
    if approx:
        header["HIERARCH APPROXSTYLE"] = -1
        header["HIERARCH APPROXORDERX"] = 6
        header["HIERARCH APPROXORDERY"] = -1
        header["HIERARCH APPROXWEIGHTING"] = True
    for key, value in (("BKGD_X0", x0), ("BKGD_Y0", y0), ("BKGD_WIDTH", width), ("BKGD_HEIGHT", height)):
        header[f"HIERARCH {key}" if len(key) > 8 else key] = value
    header["LTV1"] = 0
    header["LTV2"] = 0
    mask_header = header.copy()
    for bit, name in enumerate(["BAD", "SAT", "INTRP", "CR", "EDGE", "DETECTED"]):
        mask_header[f"HIERARCH MP_{name}" if len(name) > 5 else f"MP_{name}"] = bit
    mask = np.zeros(values.shape, dtype=np.int32)
    mask[0, 0] = 1  # BAD
    first = fits.PrimaryHDU if primary else fits.ImageHDU
    return [
        first(values.astype(np.float32), header=header),
        fits.ImageHDU(mask, header=mask_header),
        fits.ImageHDU(errors.astype(np.float32), header=header),
    ]


@pytest.fixture
def rng():
    return np.random.default_rng(42)


def test_reads_file_laid_out_like_afw(tmp_path, rng):
    values_a = rng.normal(100, 1, (5, 7))
    values_b = rng.normal(0, 1, (3, 4))
    hdus = afw_style_hdus(values_a, np.full((5, 7), 0.1), (10, 20, 300, 200))
    # Second element written before approximation existed: no APPROX* keys.
    hdus += afw_style_hdus(
        values_b, np.full((3, 4), 0.2), (10, 20, 300, 200), interp=1, approx=False, primary=False
    )
    path = tmp_path / "afw.fits"
    fits.HDUList(hdus).writeto(path)

    bg_list = BackgroundList.readFits(str(path))
    assert len(bg_list) == 2
    bg, interp, undersample, approx, order_x, order_y, weighting = bg_list[0]
    assert bg.getImageBBox() == Box.from_shape((200, 300), start=(20, 10))
    np.testing.assert_allclose(bg.getStatsImage().image.array, values_a.astype(np.float32))
    np.testing.assert_allclose(bg.getStatsImage().variance.array, 0.1, rtol=1e-6)
    assert bg.getStatsImage().mask.get("BAD")[0, 0] and bg.getStatsImage().mask.get("BAD").sum() == 1
    assert (interp, undersample, approx, order_x, order_y, weighting) == (
        Interpolate.AKIMA_SPLINE,
        UndersampleStyle.REDUCE_INTERP_ORDER,
        ApproximateControl.UNKNOWN,
        6,
        -1,
        True,
    )
    # Older-file defaults, as afw reads them.
    assert bg_list[1][1] is Interpolate.LINEAR
    assert bg_list[1][3:] == (ApproximateControl.UNKNOWN, 1, -1, True)
    assert bg_list.getImage().bbox == Box.from_shape((200, 300), start=(20, 10))


def make_list():
    bbox = Box.from_shape((100, 150), start=(4, -2))
    y, x = np.mgrid[0:100, 0:150]
    image = MaskedImage(
        Image((10 + 0.1 * x + 0.05 * y).astype(np.float32), bbox=bbox), mask_schema=default_mask_schema()
    )
    first = makeBackground(image, BackgroundControl("NATURAL_SPLINE", 5, 4))
    second = makeBackground(image, BackgroundControl("LINEAR", 3, 3))
    return BackgroundList(first, (second, "LINEAR", "THROW_EXCEPTION", -1, 0, 0, False))


def test_written_layout_read_independently(tmp_path):
    bg_list = make_list()
    path = tmp_path / "bg.fits"
    bg_list.writeFits(str(path))
    with fits.open(path) as hdul:
        assert len(hdul) == 6
        assert hdul[0].data.shape == (4, 5) and hdul[0].data.dtype.kind == "f"
        assert hdul[1].data.dtype == np.dtype(">i4")
        for index, hdu in enumerate(hdul):
            element = bg_list[index // 3]
            assert hdu.header["INTERPSTYLE"] == int(element[1])
            assert hdu.header["UNDERSAMPLESTYLE"] == int(element[2])
            assert hdu.header["APPROXSTYLE"] == -1
            assert hdu.header["APPROXORDERX"] == 0 and hdu.header["APPROXORDERY"] == 0
            assert hdu.header["APPROXWEIGHTING"] is False
            assert (hdu.header["BKGD_X0"], hdu.header["BKGD_Y0"]) == (-2, 4)
            assert (hdu.header["BKGD_WIDTH"], hdu.header["BKGD_HEIGHT"]) == (150, 100)
            assert hdu.header["LTV1"] == 0 and hdu.header["LTV2"] == 0
        assert hdul[1].header["MP_BAD"] == 0 and hdul[1].header["MP_DETECTED"] == 5
        assert hdul[3].header["INTERPSTYLE"] == 1 and hdul[3].header["UNDERSAMPLESTYLE"] == 0
        np.testing.assert_array_equal(hdul[0].data, bg_list[0][0].getStatsImage().image.array)
        np.testing.assert_array_equal(hdul[5].data, bg_list[1][0].getStatsImage().variance.array)
        assert "HIERARCH INTERPSTYLE" in repr(hdul[0].header)


def test_round_trip_is_identity(tmp_path):
    bg_list = make_list()
    path = tmp_path / "bg.fits"
    bg_list.writeFits(str(path))
    again = BackgroundList.readFits(str(path))
    assert [e[1:] for e in again] == [e[1:] for e in bg_list]
    for ours, theirs in zip(bg_list, again, strict=True):
        assert ours[0].getImageBBox() == theirs[0].getImageBBox()
        np.testing.assert_array_equal(
            ours[0].getStatsImage().image.array, theirs[0].getStatsImage().image.array
        )
    np.testing.assert_array_equal(bg_list.getImage().array, again.getImage().array)


def test_bad_files(tmp_path):
    good = tmp_path / "good.fits"
    make_list().writeFits(str(good))
    data = good.read_bytes()

    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(data[: len(data) // 2 + 1000])  # mid-HDU
    with pytest.raises(BackgroundFileError, match="truncated.fits"):
        BackgroundList.readFits(str(truncated))

    corrupt = tmp_path / "corrupt.fits"
    corrupt.write_bytes(b"this is not a FITS file" * 200)
    with pytest.raises(BackgroundFileError, match="corrupt.fits"):
        BackgroundList.readFits(str(corrupt))

    with pytest.raises(BackgroundFileError, match="not found"):
        BackgroundList.readFits(str(tmp_path / "absent.fits"))

    four = tmp_path / "four.fits"
    with fits.open(good) as hdul:
        fits.HDUList([hdul[i].copy() for i in range(4)]).writeto(four)
    with pytest.raises(BackgroundFileError, match="4 HDUs"):
        BackgroundList.readFits(str(four))

    missing = tmp_path / "missing.fits"
    with fits.open(good) as hdul:
        copies = [hdul[i].copy() for i in range(3)]
        del copies[0].header["BKGD_WIDTH"]
        fits.HDUList(copies).writeto(missing)
    with pytest.raises(BackgroundFileError, match="BKGD_WIDTH"):
        BackgroundList.readFits(str(missing))


def test_header_claiming_huge_image_is_refused_without_allocating(tmp_path):
    path = tmp_path / "huge.fits"
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 2
    header["NAXIS1"] = 200000
    header["NAXIS2"] = 200000
    path.write_bytes(header.tostring().encode() + b"\0" * 2880)
    with pytest.raises(BackgroundFileError, match="huge.fits"):
        BackgroundList.readFits(str(path))


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "out.fits"
    bg_list = make_list()

    def explode(self, stream, *args, **kwargs):
        stream.write(b"SIMPLE  =                    T" + b" " * 50)
        raise RuntimeError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        bg_list.writeFits(str(path))
    assert os.listdir(tmp_path) == []
    with pytest.raises(NoDataError):
        BackgroundList().writeFits(str(path))
    assert not path.exists()


def test_no_astropy_warnings_on_write(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_list().writeFits(str(tmp_path / "w.fits"))
