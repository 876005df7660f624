"""FITS persistence of `BackgroundList` in afw's layout.

The layout is the one the Rubin stack writes for ``calexpBackground`` and
``skyCorr``: three HDUs per element (stats image, mask, variance), the first
element's image in the primary HDU, and on every HDU of an element the keys
``INTERPSTYLE``, ``UNDERSAMPLESTYLE``, ``APPROXSTYLE``, ``APPROXORDERX``,
``APPROXORDERY``, ``APPROXWEIGHTING`` (HIERARCH cards, being longer than eight
characters) and ``BKGD_X0``, ``BKGD_Y0``, ``BKGD_WIDTH``, ``BKGD_HEIGHT``.
Image HDUs record their pixel origin as afw does (``LTV1``/``LTV2`` and the
``A`` linear WCS); mask HDUs name their planes with ``MP_*`` cards.
"""

from __future__ import annotations

__all__ = ["FITS_SCHEMA_KEYS", "read_background_list", "write_background_list"]

import os
import tempfile
import warnings
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from lsst.images import Box, Image, MaskedImage

from .errors import BackgroundFileError
from .interpolate import Interpolate, UndersampleStyle
from .mask_planes import mask_from_afw_bits, mask_to_afw_bits

if TYPE_CHECKING:
    from .background import BackgroundList

FITS_SCHEMA_KEYS = (
    "INTERPSTYLE",
    "UNDERSAMPLESTYLE",
    "APPROXSTYLE",
    "APPROXORDERX",
    "APPROXORDERY",
    "APPROXWEIGHTING",
    "BKGD_X0",
    "BKGD_Y0",
    "BKGD_WIDTH",
    "BKGD_HEIGHT",
)
"""Header keys every HDU of a BackgroundList element carries."""

_REQUIRED_KEYS = ("BKGD_X0", "BKGD_Y0", "BKGD_WIDTH", "BKGD_HEIGHT", "INTERPSTYLE", "UNDERSAMPLESTYLE")
# Files written before approximation existed lack these; afw reads them with these defaults.
_OPTIONAL_DEFAULTS = {"APPROXSTYLE": -1, "APPROXORDERX": 1, "APPROXORDERY": -1, "APPROXWEIGHTING": True}


def _element_cards(element: tuple) -> list[tuple[str, object]]:
    bg, interp, undersample, approx, order_x, order_y, weighting = element
    bbox = bg.getImageBBox()
    return [
        ("HIERARCH INTERPSTYLE", int(interp)),
        ("HIERARCH UNDERSAMPLESTYLE", int(undersample)),
        ("HIERARCH APPROXSTYLE", int(approx)),
        ("HIERARCH APPROXORDERX", int(order_x)),
        ("HIERARCH APPROXORDERY", int(order_y)),
        ("HIERARCH APPROXWEIGHTING", bool(weighting)),
        ("BKGD_X0", int(bbox.x.min)),
        ("BKGD_Y0", int(bbox.y.min)),
        ("BKGD_WIDTH", int(bbox.x.size)),
        ("BKGD_HEIGHT", int(bbox.y.size)),
    ]


def _origin_cards(bbox: Box) -> list[tuple[str, object]]:
    # afw records an image's xy0 both as LTV (IRAF convention) and as the
    # "A" alternate linear WCS mapping FITS pixels to parent pixels.
    x0, y0 = int(bbox.x.min), int(bbox.y.min)
    return [
        ("LTV1", -x0),
        ("LTV2", -y0),
        ("CRPIX1A", 1.0),
        ("CRPIX2A", 1.0),
        ("CRVAL1A", float(x0)),
        ("CRVAL2A", float(y0)),
        ("CTYPE1A", "LINEAR"),
        ("CTYPE2A", "LINEAR"),
        ("CUNIT1A", "PIXEL"),
        ("CUNIT2A", "PIXEL"),
    ]


def write_background_list(background_list: BackgroundList, path: str | os.PathLike[str]) -> None:
    """Write a `BackgroundList` to a FITS file in afw's layout, atomically.

    Parameters
    ----------
    background_list : `BackgroundList`
        The list to write; may not be empty.
    path : `str` or path-like
        Destination.  The file appears whole or not at all: it is written to
        a temporary file in the same directory and renamed into place.

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised for an empty list.
    """
    from .errors import NoDataError

    path = os.fspath(path)
    if len(background_list) == 0:
        raise NoDataError(f"Refusing to write an empty BackgroundList to {path}: afw cannot read it back.")
    hdus: list[fits.PrimaryHDU | fits.ImageHDU] = []
    for element in background_list:
        stats = element[0].getStatsImage()
        cards = _element_cards(element)
        origin = _origin_cards(stats.bbox)
        mask_array, mask_cards = mask_to_afw_bits(stats.mask)
        image_cls = fits.PrimaryHDU if not hdus else fits.ImageHDU
        planes = [
            (image_cls, np.asarray(stats.image.array, dtype=np.float32), origin),
            (fits.ImageHDU, mask_array, origin + mask_cards),
            (fits.ImageHDU, np.asarray(stats.variance.array, dtype=np.float32), origin),
        ]
        for hdu_cls, data, extra in planes:
            header = fits.Header()
            for key, value in cards + extra:
                # Long keys (MP_DETECTED_NEGATIVE, ...) become HIERARCH cards, as cfitsio writes them.
                header[f"HIERARCH {key}" if len(key) > 8 and not key.startswith("HIERARCH") else key] = value
            hdus.append(hdu_cls(data=data, header=header))
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp-", suffix=".fits", dir=directory)
    try:
        with os.fdopen(fd, "wb") as stream:
            fits.HDUList(hdus).writeto(stream)
        os.replace(tmp_path, path)
    except BaseException:
        os.unlink(tmp_path)
        raise


def _declared_bytes(header: fits.Header) -> int:
    naxis = int(header.get("NAXIS", 0))
    count = 1 if naxis else 0
    for axis in range(1, naxis + 1):
        count *= int(header.get(f"NAXIS{axis}", 0))
    return count * abs(int(header.get("BITPIX", 8))) // 8


def read_background_list(path: str | os.PathLike[str]) -> BackgroundList:
    """Read a BackgroundList FITS file in afw's layout.

    Parameters
    ----------
    path : `str` or path-like
        File written by `write_background_list` or by the Rubin stack's
        ``BackgroundList.writeFits``.

    Returns
    -------
    background_list : `BackgroundList`

    Raises
    ------
    lsst.skyframes.errors.BackgroundFileError
        Raised if the file is missing, truncated or corrupt, if its HDU count
        is not a positive multiple of 3, if a required key is missing, or if
        the three planes of an element disagree in shape.  The message names
        the file and the HDU.
    """
    from .background import BackgroundControl, BackgroundList, BackgroundMI

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BackgroundFileError(f"BackgroundList file not found: {path}")
    file_size = os.path.getsize(path)
    try:
        with warnings.catch_warnings():
            # astropy only warns about truncation and bad cards; here they are errors.
            warnings.simplefilter("error", AstropyUserWarning)
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                n_hdus = len(hdul)
                if n_hdus == 0 or n_hdus % 3 != 0:
                    raise BackgroundFileError(
                        f"BackgroundList file {path} has {n_hdus} HDUs; a BackgroundList has three per "
                        "element "
                        "(image, mask, variance). The file is truncated or not a background list."
                    )
                for index, hdu in enumerate(hdul):
                    if _declared_bytes(hdu.header) > file_size:
                        raise BackgroundFileError(
                            f"HDU {index} of {path} declares {_declared_bytes(hdu.header)} bytes of data but "
                            "the "
                            f"file holds only {file_size}; the file is truncated or corrupt."
                        )
                result = BackgroundList()
                for first in range(0, n_hdus, 3):
                    result.append(_read_element(path, hdul, first, BackgroundMI, BackgroundControl))
    except BackgroundFileError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, Warning) as err:
        raise BackgroundFileError(f"Cannot read BackgroundList file {path}: {err}") from err
    return result


def _read_element(path: str, hdul: fits.HDUList, first: int, bg_cls: type, control_cls: type) -> tuple:
    image_hdu, mask_hdu, variance_hdu = hdul[first], hdul[first + 1], hdul[first + 2]
    header = image_hdu.header
    missing = [key for key in _REQUIRED_KEYS if key not in header]
    if missing:
        raise BackgroundFileError(
            f"HDU {first} of {path} lacks the BackgroundList key(s) {', '.join(missing)}; "
            "it was not written as a background list."
        )
    planes = [image_hdu.data, mask_hdu.data, variance_hdu.data]
    if any(plane is None or plane.ndim != 2 for plane in planes):
        raise BackgroundFileError(f"HDUs {first}-{first + 2} of {path} do not all hold 2-d images.")
    if len({plane.shape for plane in planes}) != 1:
        raise BackgroundFileError(
            f"HDUs {first}-{first + 2} of {path} disagree in shape "
            f"({', '.join(str(p.shape) for p in planes)}); image, mask and variance must match."
        )
    x0 = -int(header.get("LTV1", 0))
    y0 = -int(header.get("LTV2", 0))
    stats_image = MaskedImage(
        Image(planes[0].astype(np.float32), yx0=(y0, x0)),
        mask=mask_from_afw_bits(planes[1], mask_hdu.header, (y0, x0)),
        variance=Image(planes[2].astype(np.float32), yx0=(y0, x0)),
    )
    width, height = int(header["BKGD_WIDTH"]), int(header["BKGD_HEIGHT"])
    if width < 1 or height < 1:
        raise BackgroundFileError(
            f"HDU {first} of {path} has BKGD_WIDTH={width}, BKGD_HEIGHT={height}; both must be >= 1."
        )
    bbox = Box.from_shape((height, width), start=(int(header["BKGD_Y0"]), int(header["BKGD_X0"])))
    interp = Interpolate(int(header["INTERPSTYLE"]))
    undersample = UndersampleStyle(int(header["UNDERSAMPLESTYLE"]))
    ny, nx = planes[0].shape
    background = bg_cls(bbox, stats_image, control_cls(interp, nx, ny, undersample))
    return (
        background,
        interp,
        undersample,
        int(header.get("APPROXSTYLE", _OPTIONAL_DEFAULTS["APPROXSTYLE"])),
        int(header.get("APPROXORDERX", _OPTIONAL_DEFAULTS["APPROXORDERX"])),
        int(header.get("APPROXORDERY", _OPTIONAL_DEFAULTS["APPROXORDERY"])),
        bool(header.get("APPROXWEIGHTING", _OPTIONAL_DEFAULTS["APPROXWEIGHTING"])),
    )
