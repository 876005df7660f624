"""Ingest processed single-detector images into a butler repository.

Each file becomes one ``post_isr_image`` dataset (storage class
``MaskedImageV2``, dimensions instrument, exposure, detector) in a RUN
collection; the exposure (with its timespan), day_obs, group and one-to-one
visit records are defined from the file's header.

Accepted files:

- plain FITS: the image in the primary HDU or the first HDU with 2-d data,
  optional ``MASK`` (afw-style integer bits named by ``MP_*`` cards) and
  ``VARIANCE`` extensions;
- files written by lsst.images (``MaskedImage.write``), whose metadata holds
  the keys.

Header keys (configurable with `HeaderKeys`; defaults in brackets): exposure
id [``EXPID``], detector id [``DETECTOR``], physical filter [``FILTER``],
observation start, ISO 8601 UTC [``DATE-OBS``], exposure time in seconds
[``EXPTIME``].
"""

from __future__ import annotations

__all__ = [
    "HeaderKeys",
    "define_visit_detectors",
    "IngestError",
    "IngestReport",
    "ingest_files",
    "ingest_image",
    "register_input",
    "read_processed_image",
    "write_processed_fits",
]

import dataclasses
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import astropy.time
import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from lsst.daf.butler import Butler, DatasetType
from lsst.images import Box, Image, MaskedImage

from .camera import Camera
from .errors import MissingMetadataError, SkyFramesError
from .mask_planes import default_mask_schema, mask_from_afw_bits, mask_to_afw_bits
from .persistence import check_fits_sizes
from .repo import insert_exposure

_LOG = logging.getLogger(__name__)

DEFAULT_DATASET_TYPE = "post_isr_image"


class IngestError(SkyFramesError, ValueError):
    """A file that cannot be ingested (unreadable, or missing or bad header keys)."""


@dataclasses.dataclass(frozen=True)
class HeaderKeys:
    """Names of the header keys ingest reads."""

    exposure: str = "EXPID"
    detector: str = "DETECTOR"
    physical_filter: str = "FILTER"
    obs_start: str = "DATE-OBS"
    exposure_time: str = "EXPTIME"


@dataclasses.dataclass
class IngestReport:
    """What an ingest did, file by file."""

    ingested: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        """Return a one-line summary."""
        return (
            f"{len(self.ingested)} ingested, {len(self.skipped)} already present (skipped), "
            f"{len(self.failed)} failed"
        )


def write_processed_fits(path: str | os.PathLike[str], image: MaskedImage, header: Mapping[str, Any]) -> None:
    """Write a processed image as plain FITS (primary image, MASK, VARIANCE), atomically.

    Parameters
    ----------
    path : `str` or path-like
        Destination.
    image : `lsst.images.MaskedImage`
        Image to write (its bbox origin is recorded as ``LTV1``/``LTV2``).
    header : mapping
        Cards for the primary header (e.g. the ingest keys).
    """
    path = os.fspath(path)
    primary = fits.Header()
    for key, value in header.items():
        primary[f"HIERARCH {key}" if len(key) > 8 else key] = value
    primary["LTV1"] = -int(image.bbox.x.min)
    primary["LTV2"] = -int(image.bbox.y.min)
    packed, cards = mask_to_afw_bits(image.mask)
    mask_header = fits.Header()
    for key, value in cards:
        mask_header[f"HIERARCH {key}" if len(key) > 8 else key] = value
    hdus = fits.HDUList(
        [
            fits.PrimaryHDU(np.asarray(image.image.array, dtype=np.float32), header=primary),
            fits.ImageHDU(packed, header=mask_header, name="MASK"),
            fits.ImageHDU(np.asarray(image.variance.array, dtype=np.float32), name="VARIANCE"),
        ]
    )
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".fits", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as stream:
            hdus.writeto(stream)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _is_lsst_images_file(header: fits.Header) -> bool:
    return "JSONADDR" in header and "images.lsst.io" in str(header.get("DATAMODL", ""))


def read_processed_image(path: str) -> tuple[MaskedImage, dict[str, Any]]:
    """Read a processed single-detector image and its header keys.

    Parameters
    ----------
    path : `str`
        Plain FITS or lsst.images file (see the module docstring).

    Returns
    -------
    image : `lsst.images.MaskedImage`
    header : `dict`
        Primary and image-HDU cards (plain FITS) or the image metadata
        (lsst.images files).

    Raises
    ------
    IngestError
        Raised if the file cannot be read, if a header claims more data than
        the file holds (see `~lsst.skyframes.persistence.check_fits_sizes`),
        or if it holds no 2-d image.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)
            # Every HDU with data is read below; one whose header claims a huge (e.g. compressed)
            # image must be refused before astropy allocates it at that size.
            check_fits_sizes(path, IngestError)
            with fits.open(path, memmap=False) as hdul:
                if _is_lsst_images_file(hdul[0].header):
                    image = MaskedImage.read(path)
                    return image, dict(image.metadata.items())
                image_hdu = next((h for h in hdul if h.data is not None and h.data.ndim == 2), None)
                if image_hdu is None:
                    raise IngestError(f"{path}: no HDU holds a 2-d image.")
                header = dict(hdul[0].header) | dict(image_hdu.header)
                yx0 = (-int(header.get("LTV2", 0)), -int(header.get("LTV1", 0)))
                pixels = np.asarray(image_hdu.data, dtype=np.float32)
                bbox = Box.from_shape(pixels.shape, start=yx0)
                names = {h.name: h for h in hdul}
                if "MASK" in names and names["MASK"].data is not None:
                    mask = mask_from_afw_bits(names["MASK"].data, names["MASK"].header, yx0)
                else:
                    mask = None
                variance = None
                if "VARIANCE" in names and names["VARIANCE"].data is not None:
                    variance = Image(np.asarray(names["VARIANCE"].data, dtype=np.float32), bbox=bbox)
                for name, plane in (("MASK", mask), ("VARIANCE", variance)):
                    if plane is not None and plane.bbox != bbox:
                        raise IngestError(f"{path}: the {name} HDU's shape differs from the image's.")
                image = MaskedImage(
                    Image(pixels, bbox=bbox),
                    mask=mask,
                    variance=variance,
                    mask_schema=None if mask is not None else default_mask_schema(),
                )
                return image, header
    except IngestError:
        raise
    # IndexError: astropy's decompressor on tiles that do not match their header.
    except (OSError, ValueError, TypeError, KeyError, IndexError, Warning) as err:
        raise IngestError(f"{path}: cannot read the image ({err}).") from err


def _header_value(header: Mapping[str, Any], key: str, convert: Any, path: str, what: str) -> Any:
    if key not in header:
        raise MissingMetadataError(f"{path}: header key {key!r} ({what}) is missing.")
    try:
        return convert(header[key])
    except (TypeError, ValueError) as err:
        raise MissingMetadataError(
            f"{path}: header key {key!r} ({what}) = {header[key]!r} is invalid: {err}"
        ) from err


def define_visit_detectors(butler: Butler, instrument: str, visit: int, detectorIds: Iterable[int]) -> None:
    """Write the ``visit_detector_region`` records a per-visit graph needs.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable butler; the visit must be defined (e.g. by
        `~lsst.skyframes.repo.insert_exposure`).
    instrument : `str`
        Instrument name.
    visit : `int`
        Visit id.
    detectorIds : sequence of `int`
        Detectors of the visit.

    Notes
    -----
    A quantum graph whose tasks mix (visit) and (visit, detector) data IDs
    attaches a ``visit_detector_region`` record to every (visit, detector);
    without one, graph building fails with ``KeyError:
    'visit_detector_region'``. The region is left empty (it needs a WCS),
    which spatial queries treat as unknown. Repeating the call changes
    nothing.
    """
    with butler.registry.transaction():
        for detector in detectorIds:
            butler.registry.syncDimensionData(
                "visit_detector_region",
                {"instrument": instrument, "visit": int(visit), "detector": int(detector), "region": None},
            )


def register_input(
    butler: Butler, run: str, dataset_type: str = DEFAULT_DATASET_TYPE, *, per_visit: bool = False
) -> None:
    """Register the input dataset type and RUN collection (harmless if they exist).

    ``per_visit`` selects dimensions (instrument, visit, detector), as for the
    calibrated images sky frames are applied to, instead of (instrument,
    exposure, detector).
    """
    unit = "visit" if per_visit else "exposure"
    butler.registry.registerDatasetType(
        DatasetType(
            dataset_type, ("instrument", unit, "detector"), "MaskedImageV2", universe=butler.dimensions
        )
    )
    butler.registry.registerRun(run)


def ingest_image(
    butler: Butler,
    camera: Camera,
    image: MaskedImage,
    header: Mapping[str, Any],
    *,
    source: str,
    run: str,
    dataset_type: str = DEFAULT_DATASET_TYPE,
    keys: HeaderKeys = HeaderKeys(),
    per_visit: bool = False,
) -> bool:
    """Ingest one in-memory image with its header.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable butler of a repository where ``camera`` is registered.
    camera : `Camera`
        The camera; the detector and image size are checked against it.
    image : `lsst.images.MaskedImage`
        The image.
    header : mapping
        Header cards holding the `HeaderKeys`.
    source : `str`
        Where the image came from, for messages.
    run : `str`
        RUN collection for the dataset.
    dataset_type : `str`, optional
        Dataset type name (registered if absent).
    keys : `HeaderKeys`, optional
        Header key names.
    per_visit : `bool`, optional
        Store with dimensions (instrument, visit, detector) — calibrated
        images to apply sky frames to — and define the visit's detector
        records; the visit is the exposure's one-to-one visit.

    Returns
    -------
    ingested : `bool`
        `False` if the dataset was already present (nothing is done).

    Raises
    ------
    lsst.skyframes.errors.MissingMetadataError
        Raised for a missing or invalid header key.
    IngestError
        Raised for an unknown detector or an image of the wrong size.
    """
    register_input(butler, run, dataset_type, per_visit=per_visit)
    exposure = _header_value(header, keys.exposure, int, source, "exposure id")
    detector = _header_value(header, keys.detector, int, source, "detector id")
    physical_filter = _header_value(header, keys.physical_filter, str, source, "physical filter")
    obs_start = _header_value(
        header, keys.obs_start, lambda v: astropy.time.Time(v, scale="utc"), source, "observation start"
    )
    exposure_time = _header_value(header, keys.exposure_time, float, source, "exposure time")
    if detector not in camera.detector_ids:
        raise IngestError(f"{source}: detector {detector} is not in camera {camera.instrument!r}.")
    geometry = camera[detector]
    if image.bbox.shape != geometry.shape:
        raise IngestError(
            f"{source}: image is {image.bbox.shape[1]}x{image.bbox.shape[0]} px but detector "
            f"{detector} is {geometry.width}x{geometry.height}."
        )
    unit = "visit" if per_visit else "exposure"
    data_id = {"instrument": camera.instrument, unit: exposure, "detector": detector}
    insert_exposure(
        butler,
        camera,
        exposure_id=exposure,
        physical_filter=physical_filter,
        day_obs=None,
        obs_start=obs_start,
        exposure_time_s=exposure_time,
    )
    if per_visit:
        define_visit_detectors(butler, camera.instrument, exposure, [detector])
    if butler.find_dataset(dataset_type, data_id, collections=run) is not None:
        return False
    butler.put(image, dataset_type, data_id, run=run)
    return True


def ingest_files(
    butler: Butler,
    camera: Camera,
    files: Iterable[str],
    *,
    run: str,
    dataset_type: str = DEFAULT_DATASET_TYPE,
    keys: HeaderKeys = HeaderKeys(),
    progress: Any = None,
    per_visit: bool = False,
) -> IngestReport:
    """Ingest processed image files, defining their exposures and visits.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable butler of a repository where ``camera`` is registered.
    camera : `Camera`
        The camera; detectors and physical filters are checked against it.
    files : iterable of `str`
        Paths to ingest.
    run : `str`
        RUN collection for the datasets.
    dataset_type : `str`, optional
        Dataset type name (registered if absent).
    keys : `HeaderKeys`, optional
        Header key names.
    progress : callable, optional
        Called with each path once it is handled.
    per_visit : `bool`, optional
        Store per visit (see `ingest_image`).

    Returns
    -------
    report : `IngestReport`
        Files ingested, already present (skipped), and failed with their
        reasons; a bad file never stops the others.
    """
    register_input(butler, run, dataset_type, per_visit=per_visit)
    report = IngestReport()
    for path in files:
        path = os.fspath(path)
        try:
            image, header = read_processed_image(path)
            if ingest_image(
                butler,
                camera,
                image,
                header,
                source=path,
                run=run,
                dataset_type=dataset_type,
                keys=keys,
                per_visit=per_visit,
            ):
                report.ingested.append(path)
            else:
                report.skipped.append(path)
        except (SkyFramesError, OSError, ValueError, LookupError) as err:
            _LOG.error("Skipping %s: %s", path, err)
            report.failed[path] = str(err)
        if progress is not None:
            progress(path)
    return report
