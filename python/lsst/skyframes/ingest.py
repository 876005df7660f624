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
observation start, ISO 8601 in the header's ``TIMESYS`` (UTC, TAI or TT; UTC
where absent, the FITS default) [``DATE-OBS``], exposure time in seconds
[``EXPTIME``]; for files without a ``VARIANCE`` HDU only, the gain in e-/ADU
[``GAIN``] and the read noise in electrons [``RDNOISE``], both optional.

Nothing is lost or half-written:

- **Same data ID, same content.** A file whose data ID (exposure or visit,
  detector) is already in the RUN collection with bit-identical image, mask and
  variance is skipped ("already present"). Content is compared through a
  SHA-256 digest of the planes (`content_digest`), stored in the dataset's
  metadata at ingest; datasets stored without one are read and digested.
- **Same data ID, other content.** Refused with `DatasetConflictError`, which
  names the new file and the one ingested before; ``replace=True``
  (``skyframes ingest --replace``) replaces the stored dataset. The new
  dataset's metadata then records the replaced dataset's id and source, and
  the replacement is logged and reported. Should the new dataset fail to be
  written, the replaced one is put back as it was (same id, same file).
- **Same exposure id, other exposure.** A header whose start time, physical
  filter or exposure time differs from the exposure record already in the
  repository is refused with `ExposureConflictError`, naming the record's
  values; the record is kept (``replace`` never changes dimension records)
  and the rest of a batch goes on.
- **Another camera.** `ingest_files` compares the camera with the one
  registered for its instrument (`~lsst.skyframes.repo.check_camera`) before
  writing anything.
- **Unusable images.** An image with no pixel that is finite and free of the
  BAD, SAT and NO_DATA mask planes (all NaN, or fully masked) is refused with
  `UnusableImageError`: such an image adds nothing to a sky frame, and
  ingesting it would only defer the failure to the build. Pixels flagged
  DETECTED, EDGE etc. are still sky-frame input (objects are masked anew), so
  those planes do not count.
- **No VARIANCE HDU.** The variance is estimated and a warning names the file
  and the estimate (recorded as ``SKYFRAMES.VARIANCE`` in the dataset's
  metadata). With a gain header: Poisson plus read noise,
  ``max(image, 0) / gain + (read_noise / gain)**2`` in ADU² (image in ADU,
  gain in e-/ADU, read noise in electrons, 0 without the key); this assumes
  the image still holds its sky (not sky-subtracted). Without a gain: a
  constant, the background noise measured on the image itself, ``sigma**2``
  with ``sigma = 1.4826 * MAD(d) / sqrt(2)`` over the differences ``d`` of
  neighbouring pixels (along rows and columns) that are finite and carry no
  mask bit (`background_noise`); differences cancel the smooth sky and the
  median absolute deviation ignores stars and cosmic rays, so this is the
  pixel noise of the sky, which dominates sky-frame inputs (it underestimates
  the variance on bright objects, which sky frames mask anyway). Non-finite
  pixels get NaN variance.
- **Atomic.** Each file is written in one butler transaction: its RUN
  collection (registered with the first dataset written into it, so a failed
  ingest leaves no empty RUN collection), its exposure, day_obs, group and
  visit records, and the dataset. A failure rolls all of them back. Only the
  dataset type is registered beforehand (the registry cannot create its
  tables inside a transaction), once a file has passed every check.

Each stored dataset's metadata holds ``SKYFRAMES.SOURCE`` (the file's absolute
path, or the ``source`` given to `ingest_image`) and ``SKYFRAMES.SHA256``;
``SKYFRAMES.REPLACES_ID`` and ``SKYFRAMES.REPLACES_SOURCE`` after a
replacement; ``SKYFRAMES.VARIANCE`` when the variance was estimated.
"""

from __future__ import annotations

__all__ = [
    "DatasetConflictError",
    "ExposureConflictError",
    "HeaderKeys",
    "IngestError",
    "IngestOutcome",
    "IngestReport",
    "ReplacedDataset",
    "UnusableImageError",
    "background_noise",
    "content_digest",
    "define_visit_detectors",
    "estimate_variance",
    "ingest_files",
    "ingest_image",
    "read_processed_image",
    "register_input",
    "write_processed_fits",
]

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import astropy.time
import numpy as np
from astropy.io import fits

from lsst.daf.butler import Butler, DatasetRef, DatasetType, FileDataset, MissingDatasetTypeError
from lsst.daf.butler.registry import ConflictingDefinitionError, MissingCollectionError
from lsst.images import Box, Image, MaskedImage
from lsst.resources import ResourcePath

from .camera import Camera
from .errors import (
    DatasetConflictError,
    ExposureConflictError,
    IngestError,
    MissingMetadataError,
    SkyFramesError,
    UnusableImageError,
)
from .mask_planes import default_mask_schema, mask_from_afw_bits, mask_to_afw_bits
from .persistence import read_fits_safely, write_hdus_atomically
from .repo import check_camera, insert_exposure
from .statistics import MAD_TO_SIGMA, bad_pixel_mask

_LOG = logging.getLogger(__name__)

DEFAULT_DATASET_TYPE = "post_isr_image"

SOURCE_KEY = "SKYFRAMES.SOURCE"
"""Metadata key of a stored dataset's source (file path or description)."""
DIGEST_KEY = "SKYFRAMES.SHA256"
"""Metadata key of a stored dataset's `content_digest`."""
VARIANCE_KEY = "SKYFRAMES.VARIANCE"
"""Metadata key describing an estimated variance plane."""
REPLACES_ID_KEY = "SKYFRAMES.REPLACES_ID"
"""Metadata key of the id of the dataset this one replaced."""
REPLACES_SOURCE_KEY = "SKYFRAMES.REPLACES_SOURCE"
"""Metadata key of the source of the dataset this one replaced."""

NO_DATA_PLANES = ("BAD", "SAT", "NO_DATA")
"""Mask planes that mark pixels without usable data: an image with no finite
pixel outside them is refused (`UnusableImageError`).
"""

# Fewest neighbouring-pixel differences from which the background noise is estimated.
_MIN_NOISE_PAIRS = 100


@dataclasses.dataclass(frozen=True)
class HeaderKeys:
    """Names of the header keys ingest reads.

    ``gain`` (e-/ADU) and ``read_noise`` (electrons) are optional and read
    only for files without a ``VARIANCE`` HDU (see `estimate_variance`).
    """

    exposure: str = "EXPID"
    detector: str = "DETECTOR"
    physical_filter: str = "FILTER"
    obs_start: str = "DATE-OBS"
    exposure_time: str = "EXPTIME"
    gain: str = "GAIN"
    read_noise: str = "RDNOISE"


@dataclasses.dataclass(frozen=True)
class ReplacedDataset:
    """A dataset that an ingest with ``replace=True`` removed.

    Attributes
    ----------
    id : `str`
        Its dataset id (UUID).
    source : `str` or `None`
        Where it was ingested from, if that was recorded.
    """

    id: str
    source: str | None

    def __str__(self) -> str:
        return f"dataset {self.id} (ingested from {self.source or 'an unrecorded source'})"


@dataclasses.dataclass(frozen=True)
class IngestOutcome:
    """What `ingest_image` did; true if it wrote a dataset.

    Attributes
    ----------
    ref : `lsst.daf.butler.DatasetRef` or `None`
        The dataset written, or `None` if the same content was already
        present (nothing was done).
    replaced : `ReplacedDataset` or `None`
        The dataset the new one replaced, if any.
    """

    ref: DatasetRef | None
    replaced: ReplacedDataset | None = None

    def __bool__(self) -> bool:
        return self.ref is not None


@dataclasses.dataclass
class IngestReport:
    """What an ingest did, file by file.

    Attributes
    ----------
    ingested : `list` [`str`]
        Files written as new datasets (replacements included).
    skipped : `list` [`str`]
        Files whose content was already present.
    failed : `dict` [`str`, `str`]
        Files refused, with the reason.
    replaced : `dict` [`str`, `str`]
        Files (also in ``ingested``) that replaced a dataset, with a
        description of the replaced dataset (id and source).
    warnings : `dict` [`str`, `str`]
        Files ingested with a warning (an estimated variance), with the warning.
    """

    ingested: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    replaced: dict[str, str] = dataclasses.field(default_factory=dict)
    warnings: dict[str, str] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        """Return a one-line summary."""
        replaced = f" ({len(self.replaced)} replacing a dataset)" if self.replaced else ""
        warned = f", {len(self.warnings)} with warnings" if self.warnings else ""
        return (
            f"{len(self.ingested)} ingested{replaced}, {len(self.skipped)} already present (skipped), "
            f"{len(self.failed)} failed{warned}"
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
    write_hdus_atomically(
        [
            fits.PrimaryHDU(np.asarray(image.image.array, dtype=np.float32), header=primary),
            fits.ImageHDU(packed, header=mask_header, name="MASK"),
            fits.ImageHDU(np.asarray(image.variance.array, dtype=np.float32), name="VARIANCE"),
        ],
        path,
    )


def _is_lsst_images_file(header: fits.Header) -> bool:
    return "JSONADDR" in header and "images.lsst.io" in str(header.get("DATAMODL", ""))


def read_processed_image(path: str, keys: HeaderKeys = HeaderKeys()) -> tuple[MaskedImage, dict[str, Any]]:
    """Read a processed single-detector image and its header keys.

    Parameters
    ----------
    path : `str`
        Plain FITS or lsst.images file (see the module docstring).
    keys : `HeaderKeys`, optional
        Header key names; only the gain and read-noise keys are read here,
        for a file without a ``VARIANCE`` HDU.

    Returns
    -------
    image : `lsst.images.MaskedImage`
        The image; a variance estimated for want of a ``VARIANCE`` HDU (see
        `estimate_variance`; a warning is logged) is described by the
        ``SKYFRAMES.VARIANCE`` metadata key.
    header : `dict`
        Primary and image-HDU cards (plain FITS) or the image metadata
        (lsst.images files).

    Raises
    ------
    IngestError
        Raised if the file does not exist or cannot be read, if a header
        claims more data than the file holds (see
        `~lsst.skyframes.persistence.check_fits_sizes`), if it holds no 2-d
        image, or if its variance must be estimated and cannot be.
    UnusableImageError
        Raised if the variance must be estimated and the image has no usable
        pixel.
    """
    image, header, warning = _read_processed(path, keys)
    if warning is not None:
        _LOG.warning("%s", warning)
    return image, header


def _read_processed(path: str, keys: HeaderKeys) -> tuple[MaskedImage, dict[str, Any], str | None]:
    """Read a processed image; also return the warning about an estimated variance, if any."""
    if os.path.isdir(path):
        raise IngestError(f"{path}: is a directory; pass the FITS files in it (e.g. {path}/*.fits).")
    if not os.path.exists(path):
        raise IngestError(f"{path}: no such file; check the path.")
    # Every HDU with data is read; one whose header claims a huge (e.g. compressed) image is
    # refused before astropy allocates it at that size.
    header, image, planes = read_fits_safely(
        path,
        lambda hdul: _read_hdus(path, hdul),
        IngestError,
        failure="{path}: cannot read the image ({err}).",
    )
    if image is not None:
        return image, header, None
    pixels, bbox, mask, variance = planes
    image = MaskedImage(
        Image(pixels, bbox=bbox),
        mask=mask,
        variance=variance,
        mask_schema=None if mask is not None else default_mask_schema(),
    )
    if variance is not None:
        return image, header, None
    _check_usable(image, path)
    estimate, description = estimate_variance(image, header, keys=keys, source=path)
    image = MaskedImage(image.image, mask=image.mask, variance=Image(estimate, bbox=bbox))
    image.metadata[VARIANCE_KEY] = description
    return image, header, f"{path}: no VARIANCE HDU; variance estimated: {description}."


def _read_hdus(
    path: str, hdul: fits.HDUList
) -> tuple[dict[str, Any], MaskedImage | None, tuple[np.ndarray, Box, Any, Image | None] | None]:
    """Read an open processed-image file: (header, image, None) for an lsst.images file,
    else (header, None, (pixels, bbox, mask or None, variance or None)).
    """
    if _is_lsst_images_file(hdul[0].header):
        image = MaskedImage.read(path)
        return dict(image.metadata.items()), image, None
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
    return header, None, (pixels, bbox, mask, variance)


def _optional_number(
    header: Mapping[str, Any], key: str, source: str, what: str, *, positive: bool
) -> float | None:
    """Return a header number that may be absent; refuse a present but unusable one."""
    if key not in header:
        return None
    value = _header_value(header, key, float, source, what)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise MissingMetadataError(
            f"{source}: header key {key!r} ({what}) = {header[key]!r} must be a finite number {bound}; "
            "correct it, remove it, or add a VARIANCE HDU to the file."
        )
    return value


def background_noise(pixels: np.ndarray, bad: np.ndarray) -> float:
    """Return a robust estimate of an image's pixel noise (standard deviation).

    Parameters
    ----------
    pixels : `numpy.ndarray`
        The image, 2-d.
    bad : `numpy.ndarray`
        Boolean, same shape: pixels to leave out (masked).

    Returns
    -------
    sigma : `float`
        ``1.4826 * MAD(d) / sqrt(2)`` over the differences ``d`` of
        neighbouring pixels (along rows and along columns) that are both
        finite and not bad; NaN with fewer than 100 such pairs. Differences
        cancel any sky that is smooth on the scale of a pixel; the median
        absolute deviation ignores the few pairs that straddle an object or a
        cosmic ray. Pixel-to-pixel correlated noise (a resampled image) makes
        it an underestimate.
    """
    good = np.isfinite(pixels) & ~bad
    pixels = pixels.astype(np.float64, copy=False)
    differences = np.concatenate(
        [
            (pixels[:, 1:] - pixels[:, :-1])[good[:, 1:] & good[:, :-1]],
            (pixels[1:, :] - pixels[:-1, :])[good[1:, :] & good[:-1, :]],
        ]
    )
    if differences.size < _MIN_NOISE_PAIRS:
        return math.nan
    deviation = np.median(np.abs(differences - np.median(differences)))
    return float(MAD_TO_SIGMA * deviation / math.sqrt(2.0))


def estimate_variance(
    image: MaskedImage, header: Mapping[str, Any], *, keys: HeaderKeys = HeaderKeys(), source: str
) -> tuple[np.ndarray, str]:
    """Estimate the variance plane of an image that has none.

    Parameters
    ----------
    image : `lsst.images.MaskedImage`
        The image (in ADU; its variance plane is ignored).
    header : mapping
        Header that may hold the gain (e-/ADU) and read noise (electrons).
    keys : `HeaderKeys`, optional
        Names of the gain and read-noise keys.
    source : `str`
        Where the image came from, for messages.

    Returns
    -------
    variance : `numpy.ndarray`
        float32, the image's shape; NaN where the image is not finite. With a
        gain: ``max(image, 0) / gain + (read_noise / gain)**2`` (Poisson noise
        of the image's electrons plus read noise, in ADU²; read noise 0 without
        its key). Without: the constant ``background_noise(image)**2``, every
        masked pixel left out of the estimate.
    description : `str`
        How it was estimated, with the numbers used.

    Raises
    ------
    lsst.skyframes.errors.MissingMetadataError
        Raised if the gain or read-noise key holds no usable number.
    IngestError
        Raised if there is no gain and too few usable pixels to measure the
        noise, or the measured noise is 0 (a constant image).
    """
    pixels = np.asarray(image.image.array, dtype=np.float64)
    gain = _optional_number(header, keys.gain, source, "gain, e-/ADU", positive=True)
    if gain is not None:
        read_noise = _optional_number(header, keys.read_noise, source, "read noise, e-", positive=False)
        noise_term = ((read_noise or 0.0) / gain) ** 2
        with np.errstate(invalid="ignore"):
            variance = np.maximum(pixels, 0.0) / gain + noise_term
        read = (
            f"{keys.read_noise}={read_noise:g} e-"
            if read_noise is not None
            else f"no {keys.read_noise} key, read noise 0"
        )
        description = (
            f"Poisson, max(image, 0)/gain + (read noise/gain)^2 with {keys.gain}={gain:g} e-/ADU, {read}"
        )
    else:
        sigma = background_noise(pixels, bad_pixel_mask(image.mask, image.mask.schema.names))
        if not math.isfinite(sigma) or sigma <= 0:
            raise IngestError(
                f"{source}: has no VARIANCE HDU and no {keys.gain} header key, and its background noise "
                f"cannot be measured ({'too few unmasked finite pixels' if math.isnan(sigma) else 'it is 0'}"
                f"); add a VARIANCE HDU or a {keys.gain} key (e-/ADU)."
            )
        variance = np.full(pixels.shape, sigma**2)
        variance[~np.isfinite(pixels)] = np.nan
        description = (
            f"no {keys.gain} key; constant background noise {sigma:.4g}^2 = {sigma**2:.4g} "
            "(robust sigma of neighbouring-pixel differences)"
        )
    return variance.astype(np.float32), description


def _check_usable(image: MaskedImage, source: str) -> None:
    """Refuse an image without a finite pixel outside the `NO_DATA_PLANES`."""
    finite = np.isfinite(image.image.array)
    if not finite.any():
        raise UnusableImageError(
            f"{source}: every pixel is NaN or infinite, so the image holds no data for a sky frame; "
            "leave the file out (or reprocess it)."
        )
    flagged = bad_pixel_mask(image.mask, NO_DATA_PLANES)
    if not (finite & ~flagged).any():
        planes = [
            name for name in NO_DATA_PLANES if name in image.mask.schema.names and image.mask.get(name).any()
        ] or list(NO_DATA_PLANES)  # lsst.images spellings (SATURATED) of the planes
        raise UnusableImageError(
            f"{source}: every finite pixel is masked {' or '.join(planes)}, so the image holds no data for a "
            "sky frame; leave the file out (or correct its MASK)."
        )


def content_digest(image: MaskedImage) -> str:
    """Return a SHA-256 digest of an image's content.

    Parameters
    ----------
    image : `lsst.images.MaskedImage`
        The image.

    Returns
    -------
    digest : `str`
        Hexadecimal SHA-256 of the bounding box, the image and variance pixels
        (dtype and bytes, so NaN payloads count) and, for every mask plane
        with at least one pixel set, its name and pixels. Equal digests mean
        bit-identical planes, whatever the order of the mask planes; metadata
        does not count.
    """
    digest = hashlib.sha256()
    bbox = image.bbox
    digest.update(f"bbox {bbox.x.min} {bbox.y.min} {bbox.x.size} {bbox.y.size}\n".encode())
    for name, array in (("image", image.image.array), ("variance", image.variance.array)):
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
        digest.update(f"{name} {array.dtype.str}\n".encode())
        digest.update(memoryview(array).cast("B"))
    for name in sorted(image.mask.schema.names):
        plane = image.mask.get(name)
        if plane.any():
            digest.update(f"mask {name}\n".encode())
            digest.update(np.packbits(plane).tobytes())
    return digest.hexdigest()


# FITS time scales (TIMESYS) that astropy reads as they are; the butler stores TAI.
_TIME_SCALES = {"UTC": "utc", "TAI": "tai", "TT": "tt"}


def _time_scale(header: Mapping[str, Any], source: str) -> str:
    """Return the astropy scale of the header's times: its ``TIMESYS``, UTC if absent."""
    timesys = str(header.get("TIMESYS", "UTC")).strip().upper()
    if timesys not in _TIME_SCALES:
        raise MissingMetadataError(
            f"{source}: TIMESYS = {timesys!r} is not a time scale ingest reads ({', '.join(_TIME_SCALES)}); "
            "convert DATE-OBS to one of them."
        )
    return _TIME_SCALES[timesys]


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


def _register_dataset_type(butler: Butler, dataset_type: str, per_visit: bool) -> None:
    """Register the input dataset type (harmless if it exists); outside any transaction."""
    unit = "visit" if per_visit else "exposure"
    definition = DatasetType(
        dataset_type, ("instrument", unit, "detector"), "MaskedImageV2", universe=butler.dimensions
    )
    try:
        butler.registry.registerDatasetType(definition)
    except ConflictingDefinitionError as err:
        raise IngestError(
            f"Dataset type {dataset_type!r} already exists in the repository with another definition "
            f"({err}); choose another dataset type name (--dataset-type)."
        ) from err


def register_input(
    butler: Butler, run: str, dataset_type: str = DEFAULT_DATASET_TYPE, *, per_visit: bool = False
) -> None:
    """Register the input dataset type and RUN collection (harmless if they exist).

    ``per_visit`` selects dimensions (instrument, visit, detector), as for the
    calibrated images sky frames are applied to, instead of (instrument,
    exposure, detector). `ingest_image` and `ingest_files` do not need this:
    they register the RUN collection only with the first dataset they write.
    """
    _register_dataset_type(butler, dataset_type, per_visit)
    butler.registry.registerRun(run)


def _find_existing(
    butler: Butler, dataset_type: str, data_id: Mapping[str, Any], run: str
) -> DatasetRef | None:
    try:
        return butler.find_dataset(dataset_type, data_id, collections=run)
    except (MissingDatasetTypeError, MissingCollectionError):
        return None


def _stored_metadata(butler: Butler, ref: DatasetRef) -> Mapping[str, Any]:
    """Return a stored image's metadata, reading one pixel rather than the planes."""
    bbox = butler.get(ref.makeComponentRef("bbox"))
    corner = Box.factory[bbox.y.min : bbox.y.min + 1, bbox.x.min : bbox.x.min + 1]
    return butler.get(ref, parameters={"bbox": corner}).metadata


def _exposure_source(butler: Butler, dataset_type: str, run: str, data_id: Mapping[str, Any]) -> str:
    """Describe which ingested file defined an exposure, where that is known."""
    try:
        refs = butler.query_datasets(dataset_type, collections=run, data_id=data_id, explain=False, limit=1)
    except (MissingDatasetTypeError, MissingCollectionError):
        return ""
    source = _stored_metadata(butler, refs[0]).get(SOURCE_KEY) if refs else None
    return f" (from {source})" if source else ""


def _check_exposure_record(
    butler: Butler,
    instrument: str,
    exposure: int,
    header_values: tuple[str, astropy.time.Time, float],
    *,
    source: str,
    keys: HeaderKeys,
    origin: Callable[[], str],
) -> None:
    """Refuse a header that contradicts the exposure record already defined for its id.

    ``origin`` describes where the record came from (called only for the message).
    """
    records = butler.query_dimension_records(
        "exposure", instrument=instrument, exposure=exposure, explain=False
    )
    if not records:
        return
    record = records[0]
    physical_filter, obs_start, exposure_time = header_values
    begin = record.timespan.begin if record.timespan is not None else None
    if (
        record.physical_filter == physical_filter
        and record.exposure_time == exposure_time
        and begin is not None
        and abs((begin - obs_start).to_value("s")) < 1e-6
    ):
        return
    defined = begin.utc.isot if begin is not None else "none"
    raise ExposureConflictError(
        f"{source}: exposure {exposure} is already defined with {keys.obs_start}={defined}, "
        f"{keys.physical_filter}={record.physical_filter!r}, {keys.exposure_time}={record.exposure_time:g}"
        f"{origin()}, but this file has {keys.obs_start}={obs_start.utc.isot}, "
        f"{keys.physical_filter}={physical_filter!r}, {keys.exposure_time}={exposure_time:g}. Nothing was "
        f"written for it; give it its own exposure id ({keys.exposure}) or correct its header (exposure "
        "records are never replaced, not even by --replace)."
    )


@contextlib.contextmanager
def _replacing(butler: Butler, old: DatasetRef) -> Iterator[None]:
    """Remove ``old`` for the duration of the block; put it back as it was if the block fails.

    Its file is first linked (or copied) aside, since the new dataset's file
    takes the same path, and ingested back with the same dataset id should the
    block fail; if that fails too, the error log says where the file is kept.
    """
    uri = butler.getURI(old)
    aside_dir = tempfile.mkdtemp(
        prefix=".skyframes-replacing-", dir=uri.dirname().ospath if uri.isLocal else None
    )
    aside = ResourcePath(os.path.join(aside_dir, uri.basename()))
    try:
        try:
            aside.transfer_from(uri, transfer="hardlink" if uri.isLocal else "copy")
        except OSError:  # another file system, or links not allowed
            aside.transfer_from(uri, transfer="copy")
        butler.pruneDatasets([old], disassociate=True, unstore=True, purge=True)
    except BaseException:
        shutil.rmtree(aside_dir, ignore_errors=True)
        raise
    try:
        yield
    except BaseException:
        try:
            butler.ingest(FileDataset(path=aside, refs=[old]), transfer="move")
        except Exception as err:
            _LOG.error("Could not restore replaced dataset %s (%s); its file is kept at %s.", old, err, aside)
            raise
        shutil.rmtree(aside_dir, ignore_errors=True)
        raise
    shutil.rmtree(aside_dir, ignore_errors=True)


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
    replace: bool = False,
    verify_camera: bool = True,
) -> IngestOutcome:
    """Ingest one in-memory image with its header.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable butler of a repository where ``camera`` is registered.
    camera : `Camera`
        The camera; the detector and image size are checked against it.
    image : `lsst.images.MaskedImage`
        The image; it is stored with the ``SKYFRAMES.*`` metadata keys of the
        module docstring added (``image`` itself is left unchanged).
    header : mapping
        Header cards holding the `HeaderKeys`.
    source : `str`
        Where the image came from: recorded in the dataset's metadata and
        named in messages.
    run : `str`
        RUN collection for the dataset; registered with the dataset.
    dataset_type : `str`, optional
        Dataset type name (registered if absent).
    keys : `HeaderKeys`, optional
        Header key names.
    per_visit : `bool`, optional
        Store with dimensions (instrument, visit, detector) — calibrated
        images to apply sky frames to — and define the visit's detector
        records; the visit is the exposure's one-to-one visit.
    replace : `bool`, optional
        Replace a dataset with the same data ID and other content in ``run``
        instead of refusing the image.
    verify_camera : `bool`, optional
        Check ``camera`` against the registered camera first
        (`~lsst.skyframes.repo.check_camera`); `ingest_files` checks once for
        all its files.

    Returns
    -------
    outcome : `IngestOutcome`
        True if a dataset was written, false if the same content was already
        present (nothing is done), as the `bool` this returned before; it
        also holds the dataset written and the one replaced.

    Raises
    ------
    lsst.skyframes.errors.MissingMetadataError
        Raised for a missing or invalid header key.
    lsst.skyframes.camera.CameraLookupError
        Raised for a physical filter the camera lacks.
    IngestError
        Raised for an unknown detector or an image of the wrong size.
    UnusableImageError
        Raised for an image without a usable pixel (see `NO_DATA_PLANES`).
    ExposureConflictError
        Raised if the exposure is already defined with another start time,
        filter or exposure time.
    DatasetConflictError
        Raised if ``run`` holds the data ID with other content and ``replace``
        is false.
    lsst.skyframes.repo.CameraConflictError, lsst.skyframes.repo.NotRegisteredError
        Raised by the camera check.

    Notes
    -----
    Nothing is written until every check has passed; then the RUN collection,
    the exposure and visit records and the dataset are written in one
    transaction, so a failure leaves none of them.
    """
    if verify_camera:
        check_camera(butler, camera)
    exposure = _header_value(header, keys.exposure, int, source, "exposure id")
    detector = _header_value(header, keys.detector, int, source, "detector id")
    physical_filter = _header_value(header, keys.physical_filter, str, source, "physical filter")
    scale = _time_scale(header, source)
    obs_start = _header_value(
        header, keys.obs_start, lambda v: astropy.time.Time(v, scale=scale), source, "observation start"
    )
    exposure_time = _header_value(header, keys.exposure_time, float, source, "exposure time")
    if detector not in camera.detector_ids:
        raise IngestError(f"{source}: detector {detector} is not in camera {camera.instrument!r}.")
    camera.band_of(physical_filter)
    geometry = camera[detector]
    if image.bbox.shape != geometry.shape:
        raise IngestError(
            f"{source}: image is {image.bbox.shape[1]}x{image.bbox.shape[0]} px but detector "
            f"{detector} is {geometry.width}x{geometry.height}."
        )
    _check_usable(image, source)
    unit = "visit" if per_visit else "exposure"
    data_id = {"instrument": camera.instrument, unit: exposure, "detector": detector}
    _check_exposure_record(
        butler,
        camera.instrument,
        exposure,
        (physical_filter, obs_start, exposure_time),
        source=source,
        keys=keys,
        origin=lambda: _exposure_source(
            butler, dataset_type, run, {"instrument": camera.instrument, unit: exposure}
        ),
    )
    digest = content_digest(image)
    existing = _find_existing(butler, dataset_type, data_id, run)
    replaced = None
    if existing is not None:
        metadata = _stored_metadata(butler, existing)
        # Datasets ingested before digests were recorded are digested from their planes.
        stored_digest = metadata.get(DIGEST_KEY) or content_digest(butler.get(existing))
        if stored_digest == digest:
            return IngestOutcome(None)
        replaced = ReplacedDataset(str(existing.id), metadata.get(SOURCE_KEY))
        if not replace:
            raise DatasetConflictError(
                f"{source}: {dataset_type} {unit} {exposure} detector {detector} is already in {run!r} "
                f"with other pixels, mask or variance: {replaced}. Nothing was written; to replace it with "
                "this file, ingest again with --replace (replace=True)."
            )
    stored = image[image.bbox]
    stored.metadata = stored.metadata  # a copy: the caller's image keeps its own metadata
    stored.metadata[SOURCE_KEY] = source
    stored.metadata[DIGEST_KEY] = digest
    for key in (REPLACES_ID_KEY, REPLACES_SOURCE_KEY):
        stored.metadata.pop(key, None)  # left by an earlier ingest of an lsst.images file's origin
    if replaced is not None:
        stored.metadata[REPLACES_ID_KEY] = replaced.id
        stored.metadata[REPLACES_SOURCE_KEY] = replaced.source
    _register_dataset_type(butler, dataset_type, per_visit)
    with _replacing(butler, existing) if replaced is not None else contextlib.nullcontext():
        try:
            with butler.transaction():
                butler.registry.registerRun(run)
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
                ref = butler.put(stored, dataset_type, data_id, run=run)
        except ConflictingDefinitionError as err:
            raise ExposureConflictError(
                f"{source}: its exposure {exposure} conflicts with records already in the repository "
                f"({err}). Nothing was written for it; give it its own exposure id ({keys.exposure}) or "
                "correct its header."
            ) from err
    if replaced is not None:
        _LOG.info("%s replaced %s as %s %s.", source, replaced, dataset_type, ref.id)
    return IngestOutcome(ref, replaced)


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
    replace: bool = False,
) -> IngestReport:
    """Ingest processed image files, defining their exposures and visits.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable butler of a repository where ``camera`` is registered.
    camera : `Camera`
        The camera; it must equal the registered one, and detectors and
        physical filters are checked against it.
    files : iterable of `str`
        Paths to ingest.
    run : `str`
        RUN collection for the datasets; registered with the first dataset
        written, so an ingest that writes nothing leaves no new collection.
    dataset_type : `str`, optional
        Dataset type name (registered if absent).
    keys : `HeaderKeys`, optional
        Header key names.
    progress : callable, optional
        Called with each path once it is handled.
    per_visit : `bool`, optional
        Store per visit (see `ingest_image`).
    replace : `bool`, optional
        Replace datasets with the same data ID and other content (see
        `ingest_image`); without it such files fail.

    Returns
    -------
    report : `IngestReport`
        Files ingested, replacing a dataset, already present (skipped),
        ingested with a warning, and failed with their reasons; a bad file
        never stops the others. Each file's absolute path is its recorded
        source.

    Raises
    ------
    lsst.skyframes.repo.NotRegisteredError
        Raised, before anything is written, if the camera's instrument is not
        registered.
    lsst.skyframes.repo.CameraConflictError
        Raised, before anything is written, if ``camera`` differs from the
        registered camera.
    """
    check_camera(butler, camera)
    report = IngestReport()
    for path in files:
        path = os.fspath(path)
        try:
            image, header, warning = _read_processed(path, keys)
            outcome = ingest_image(
                butler,
                camera,
                image,
                header,
                source=os.path.abspath(path),
                run=run,
                dataset_type=dataset_type,
                keys=keys,
                per_visit=per_visit,
                replace=replace,
                verify_camera=False,
            )
            if outcome:
                report.ingested.append(path)
                if warning is not None:
                    _LOG.warning("%s", warning)
                    report.warnings[path] = warning
                if outcome.replaced is not None:
                    report.replaced[path] = str(outcome.replaced)
            else:
                report.skipped.append(path)
        except (SkyFramesError, OSError, ValueError, LookupError, ConflictingDefinitionError) as err:
            _LOG.error("Skipping %s: %s", path, err)
            report.failed[path] = str(err)
        if progress is not None:
            progress(path)
    return report
