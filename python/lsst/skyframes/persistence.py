"""FITS persistence of `BackgroundList` in afw's layout.

The layout is the one the Rubin stack writes for ``calexpBackground`` and
``skyCorr``: three HDUs per element (stats image, mask, variance), the first
element's image in the primary HDU, and on every HDU of an element the keys
``INTERPSTYLE``, ``UNDERSAMPLESTYLE``, ``APPROXSTYLE``, ``APPROXORDERX``,
``APPROXORDERY``, ``APPROXWEIGHTING`` (HIERARCH cards, being longer than eight
characters) and ``BKGD_X0``, ``BKGD_Y0``, ``BKGD_WIDTH``, ``BKGD_HEIGHT``.
Image HDUs record their pixel origin as afw does (``LTV1``/``LTV2`` and the
``A`` linear WCS); mask HDUs name their planes with ``MP_*`` cards.

This module knows the layout, not the background model: an element is read
and written as a `StoredElement` (the full-resolution box, the stats image
and the six style values), and `~lsst.skyframes.background.BackgroundList`'s
``writeFits`` and ``readFits`` call down to `write_background_elements` and
`read_background_elements`.  It also holds the safe FITS opener every
skyframes reader uses (`read_fits_safely`, `check_fits_sizes`).
"""

from __future__ import annotations

__all__ = [
    "FITS_SCHEMA_KEYS",
    "StoredElement",
    "check_fits_sizes",
    "origin_cards",
    "read_background_elements",
    "read_fits_safely",
    "write_background_elements",
    "write_hdus_atomically",
]

import math
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from lsst.images import Box, Image, MaskedImage

from .errors import BackgroundFileError, NoDataError, SkyFramesError
from .interpolate import Interpolate, UndersampleStyle
from .mask_planes import mask_from_afw_bits, mask_to_afw_bits

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


class StoredElement(NamedTuple):
    """One `~lsst.skyframes.background.BackgroundList` element as afw's FITS layout stores it."""

    bbox: Box
    """Full-resolution box of the background (``BKGD_X0``, ``BKGD_Y0``,
    ``BKGD_WIDTH``, ``BKGD_HEIGHT``)."""

    stats_image: MaskedImage
    """One pixel per bin: image, mask and variance HDUs."""

    interp_style: Interpolate
    undersample_style: UndersampleStyle
    approx_style: int
    approx_order_x: int
    approx_order_y: int
    approx_weighting: bool


def _element_cards(element: StoredElement) -> list[tuple[str, object]]:
    bbox = element.bbox
    return [
        ("HIERARCH INTERPSTYLE", int(element.interp_style)),
        ("HIERARCH UNDERSAMPLESTYLE", int(element.undersample_style)),
        ("HIERARCH APPROXSTYLE", int(element.approx_style)),
        ("HIERARCH APPROXORDERX", int(element.approx_order_x)),
        ("HIERARCH APPROXORDERY", int(element.approx_order_y)),
        ("HIERARCH APPROXWEIGHTING", bool(element.approx_weighting)),
        ("BKGD_X0", int(bbox.x.min)),
        ("BKGD_Y0", int(bbox.y.min)),
        ("BKGD_WIDTH", int(bbox.x.size)),
        ("BKGD_HEIGHT", int(bbox.y.size)),
    ]


def origin_cards(bbox: Box) -> list[tuple[str, object]]:
    """Return the header cards with which afw records an image's origin."""
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


def write_background_elements(elements: Sequence[StoredElement], path: str | os.PathLike[str]) -> None:
    """Write the elements of a BackgroundList to a FITS file in afw's layout, atomically.

    Parameters
    ----------
    elements : sequence of `StoredElement`
        The list's elements, in order; may not be empty.
    path : `str` or path-like
        Destination.  The file appears whole or not at all: it is written to
        a temporary file in the same directory and renamed into place.

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised for an empty list.
    """
    path = os.fspath(path)
    if len(elements) == 0:
        raise NoDataError(f"Refusing to write an empty BackgroundList to {path}: afw cannot read it back.")
    hdus: list[fits.PrimaryHDU | fits.ImageHDU] = []
    for element in elements:
        stats = element.stats_image
        cards = _element_cards(element)
        origin = origin_cards(stats.bbox)
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
    write_hdus_atomically(hdus, path)


def write_hdus_atomically(hdus: Sequence[fits.hdu.base.ExtensionHDU], path: str | os.PathLike[str]) -> None:
    """Write FITS HDUs to a file that appears whole or not at all.

    Parameters
    ----------
    hdus : sequence of astropy HDUs
        The HDUs, the primary first.
    path : `str` or path-like
        Destination: written to a temporary file in the same directory and
        renamed into place, so a reader never sees part of it and a failed
        write leaves nothing behind.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp-", suffix=".fits", dir=directory)
    try:
        with os.fdopen(fd, "wb") as stream:
            fits.HDUList(list(hdus)).writeto(stream)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise


# The most tile compression can shrink an image: DEFLATE (GZIP_1, GZIP_2) tops out at 1032:1, and
# floating-point images quantized to 32-bit integers before compression (ZBITPIX -64) double that
# relative to their claimed size. RICE_1 stays near 205:1 (a zero block of 32 32-bit pixels codes
# in 5 bits) and PLIO_1 masks near 800:1 (about 20 bytes per 4096-pixel row of zeros). HCOMPRESS_1
# exceeds it only on near-constant images (about 7700:1 for a constant 4096x4096 one), which it is
# not meant for; such a file is refused rather than decompressed at whatever size a header claims.
_MAX_COMPRESSION_RATIO = 2 * 1032


def _data_bytes(header: fits.Header, prefix: str = "") -> tuple[list[int], int]:
    """Return the axis lengths and data size in bytes that a header declares.

    ``prefix`` ``"Z"`` reads the image a tile-compressed HDU claims to hold
    (``ZNAXISn``, ``ZBITPIX``) instead of the HDU's own data (``NAXISn``,
    ``BITPIX``, and for tables ``PCOUNT``/``GCOUNT``, the heap).
    """
    naxis = int(header.get(f"{prefix}NAXIS", 0))
    axes = [int(header.get(f"{prefix}NAXIS{axis}", 0)) for axis in range(1, naxis + 1)]
    if any(length < 0 for length in axes):
        raise ValueError(f"negative axis length in {prefix}NAXISn = {axes}")
    elements = math.prod(axes) if axes else 0
    if not prefix:
        # FITS standard, section 4.4.1: random groups and table heaps add PCOUNT per group.
        elements = int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + elements)
    return axes, elements * abs(int(header.get(f"{prefix}BITPIX", 8))) // 8


def _size_problem(header: fits.Header, available: int) -> str | None:
    """Say why an HDU's data cannot come from the ``available`` bytes after its header, or
    return `None`.

    ``header`` is the raw header as stored (a compressed image's binary-table header, not
    the image header astropy reconstructs from it).
    """
    axes, stored = _data_bytes(header)
    if not header.get("ZIMAGE", False):
        if stored > available:
            kind = "table" if header.get("XTENSION", "IMAGE").strip() in ("BINTABLE", "TABLE") else "image"
            return (
                f"the header claims a {_dims(axes)} {kind} ({stored} bytes) that the file cannot hold: "
                f"only {available} bytes follow the header. The file is truncated or its header is corrupt."
            )
        return None
    claimed_axes, claimed = _data_bytes(header, "Z")
    claim = f"the header claims a {_dims(claimed_axes)} image ({claimed} bytes) that the file cannot hold"
    if stored > available:
        return (
            f"{claim}: its compressed tiles take {stored} bytes but only {available} follow the header. "
            "The file is truncated or its header is corrupt."
        )
    # Tile compression stores one tile per table row (ZTILE1 defaults to the row length, the
    # other ZTILEn to 1), so the claimed image fixes the row count; a rewritten ZNAXISn breaks it.
    tiles = 1
    for axis, length in enumerate(claimed_axes, start=1):
        tile = int(header.get(f"ZTILE{axis}", length if axis == 1 else 1))
        if tile < 1:
            return f"{claim}: ZTILE{axis} = {tile} is not a tile size. The header is corrupt."
        tiles *= -(-length // tile)
    rows = axes[1] if len(axes) > 1 else 0
    if tiles != rows:
        return (
            f"{claim}: such an image is {tiles} tiles but the compressed table holds {rows}. "
            "The header is corrupt."
        )
    if claimed > _MAX_COMPRESSION_RATIO * stored:
        return (
            f"{claim}: its compressed tiles take only {stored} bytes, and tile compression shrinks "
            f"data at most {_MAX_COMPRESSION_RATIO}:1. The header is corrupt; if the file is genuine "
            "(a near-constant image under HCOMPRESS_1), recompress it with GZIP_1 or RICE_1."
        )
    return None


def _dims(axes: list[int]) -> str:
    return "x".join(str(length) for length in axes) if axes else "empty"


def check_fits_sizes(path: str, error: type[SkyFramesError]) -> None:
    """Refuse a FITS file whose headers claim more data than the file can hold.

    Run this before reading any data: astropy allocates an HDU's data at the
    size its header declares and, for a tile-compressed HDU, decompresses into
    an array of the claimed image size, so a corrupt or hostile 6 kB file can
    otherwise make a reader allocate gigabytes.  Only headers are read here.

    Parameters
    ----------
    path : `str`
        The FITS file.
    error : `type` [`~lsst.skyframes.errors.SkyFramesError`]
        Exception class to raise, the caller's own (e.g.
        `~lsst.skyframes.errors.BackgroundFileError`).

    Raises
    ------
    SkyFramesError
        An instance of ``error``, raised if a plain HDU declares more bytes
        than the file holds, or if a tile-compressed HDU claims an image its
        compressed tiles cannot hold (tiles missing from the file, a tile count
        that does not match the claimed size, or a decompressed size beyond
        any compression ratio).  The message names the file and the HDU.
    OSError, ValueError
        Raised by astropy for a file that is not FITS; the caller turns these
        into its own error, as for any unreadable file.

    Notes
    -----
    Call it inside the same ``warnings`` filter (astropy's bad-card warnings
    as errors) and exception handler as the read that follows, so that a file
    that is not FITS at all gets the caller's error too.
    """
    file_size = os.path.getsize(path)
    with warnings.catch_warnings():
        # astropy's own truncation warning gives only byte counts; the check below names the HDU
        # and the image its header claims. Every other warning keeps the caller's filter.
        warnings.filterwarnings("ignore", message="File may have been truncated", category=AstropyUserWarning)
        # disable_image_compression keeps compressed HDUs as the binary tables they are stored as,
        # so their raw ZNAXISn/ZTILEn/row counts can be compared without decompressing anything.
        hdul = fits.open(path, memmap=False, lazy_load_hdus=False, disable_image_compression=True)
    with hdul:
        for index, hdu in enumerate(hdul):
            available = file_size - int(hdul.fileinfo(index)["datLoc"])
            problem = _size_problem(hdu.header, available)
            if problem is not None:
                name = f" ({hdu.name})" if hdu.name and hdu.name != "PRIMARY" else ""
                raise error(f"HDU {index}{name} of {path}: {problem}")


def read_fits_safely[T](
    path: str,
    read: Callable[[fits.HDUList], T],
    error: type[SkyFramesError],
    *,
    failure: str,
    not_found: str | None = None,
) -> T:
    """Open a FITS file with bounded reads and strict warnings, and read it.

    The one way skyframes opens a FITS file it did not just write: the file
    is refused if a header claims more data than it holds
    (`check_fits_sizes`, before any data is read), astropy's truncation and
    bad-card warnings are errors, and any failure of astropy or of ``read``
    becomes the caller's ``error``.

    Parameters
    ----------
    path : `str`
        The FITS file.
    read : callable
        Called with the open `astropy.io.fits.HDUList` (not memory-mapped,
        every header loaded); its result is returned.  It may raise
        ``error`` itself, which passes unchanged.
    error : `type` [`~lsst.skyframes.errors.SkyFramesError`]
        The caller's exception class (e.g.
        `~lsst.skyframes.errors.BackgroundFileError`).
    failure : `str`
        Message of ``error`` for any other failure while opening or
        reading; ``{path}`` and ``{err}`` (the underlying exception) are
        filled in.
    not_found : `str`, optional
        If given, message of ``error`` (``{path}`` filled in) when ``path``
        is not a file; otherwise the caller checks that itself.

    Returns
    -------
    result
        What ``read`` returns.

    Raises
    ------
    SkyFramesError
        An instance of ``error``, as described above.
    """
    if not_found is not None and not os.path.isfile(path):
        raise error(not_found.format(path=path))
    try:
        with warnings.catch_warnings():
            # astropy only warns about truncation and bad cards (VerifyWarning derives from
            # AstropyUserWarning); here they are errors.
            warnings.simplefilter("error", AstropyUserWarning)
            check_fits_sizes(path, error)
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                return read(hdul)
    except error:
        raise
    # IndexError: astropy's decompressor on tiles that do not match their header.
    except (OSError, ValueError, TypeError, KeyError, IndexError, Warning) as err:
        raise error(failure.format(path=path, err=err)) from err


def read_background_elements[T](
    path: str | os.PathLike[str], make_element: Callable[[StoredElement], T]
) -> list[T]:
    """Read the elements of a BackgroundList FITS file in afw's layout.

    Parameters
    ----------
    path : `str` or path-like
        File written by `write_background_elements` or by the Rubin stack's
        ``BackgroundList.writeFits``.
    make_element : callable
        Turns each `StoredElement` into the caller's element (e.g. a
        `~lsst.skyframes.background.BackgroundMI` and its styles).  It runs
        while the file is read, so that an element it refuses (e.g. more bins
        than pixels) is reported as a bad file, like any other.

    Returns
    -------
    elements : `list`
        What ``make_element`` returned for each element, in file order.

    Raises
    ------
    lsst.skyframes.errors.BackgroundFileError
        Raised if the file is missing, truncated or corrupt, if a header
        claims more data than the file holds (see `check_fits_sizes`), if its
        HDU count is not a positive multiple of 3, if a required key is missing, if
        the three planes of an element disagree in shape, or if
        ``make_element`` raises.  The message names the file and the HDU.
    """
    path = os.fspath(path)

    def read(hdul: fits.HDUList) -> list[T]:
        n_hdus = len(hdul)
        if n_hdus == 0 or n_hdus % 3 != 0:
            raise BackgroundFileError(
                f"BackgroundList file {path} has {n_hdus} HDUs; a BackgroundList has three per "
                "element (image, mask, variance). The file is truncated or not a background list."
            )
        return [make_element(_read_element(path, hdul, first)) for first in range(0, n_hdus, 3)]

    return read_fits_safely(
        path,
        read,
        BackgroundFileError,
        failure="Cannot read BackgroundList file {path}: {err}",
        not_found="BackgroundList file not found: {path}",
    )


def _read_element(path: str, hdul: fits.HDUList, first: int) -> StoredElement:
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
    return StoredElement(
        bbox,
        stats_image,
        Interpolate(int(header["INTERPSTYLE"])),
        UndersampleStyle(int(header["UNDERSAMPLESTYLE"])),
        int(header.get("APPROXSTYLE", _OPTIONAL_DEFAULTS["APPROXSTYLE"])),
        int(header.get("APPROXORDERX", _OPTIONAL_DEFAULTS["APPROXORDERX"])),
        int(header.get("APPROXORDERY", _OPTIONAL_DEFAULTS["APPROXORDERY"])),
        bool(header.get("APPROXWEIGHTING", _OPTIONAL_DEFAULTS["APPROXWEIGHTING"])),
    )
