"""Camera geometry: detectors, filters and the pixel <-> focal-plane transform.

A camera is described by a small YAML file (``schema_version: 1``)::

    schema_version: 1            # required; this module reads version 1 only
    instrument: SkyCam           # required; butler instrument name
    pixel_size_mm: 0.015         # optional default pixel size (mm per pixel)
    filters:                     # required (may be empty)
      - {physical_filter: SkyCam-r, band: r}
    detectors:                   # required, at least one
      - id: 0                    # required int, unique
        name: R00                # required str, unique (the detector's full_name)
        bbox: {width: 1024, height: 1024}   # required; pixel origin is (0, 0)
        centre_mm: [-16.32, -16.32]         # required; focal-plane position of
                                            # the detector centre
        rotation_deg: 0.0        # optional (default 0), counter-clockwise about
                                 # the detector centre
        pixel_size_mm: 0.015     # optional; overrides the default
        physical_type: CCD       # optional (default "CCD"); the sensor type,
                                 # afw's Detector.getPhysicalType(), e.g.
                                 # E2V or ITL on LSSTCam
        purpose: SCIENCE         # optional (default "SCIENCE"); butler
                                 # ``detector.purpose``

Pixel centres sit at integer coordinates, so a detector ``W`` pixels wide
spans ``-0.5 <= x < W - 0.5`` and its centre is ``((W - 1)/2, (H - 1)/2)``;
that point maps to ``centre_mm``, the pixel axes are rotated by
``rotation_deg`` and scaled by the pixel size. Detectors may not overlap in the
focal plane.

Detectors of different ``physical_type`` can respond differently to the sky
(LSSTCam's E2V and ITL sensors): with ``includeAlternateBackground`` the
sky-frame build (`lsst.skyframes.build`) fits a focal-plane background and a
sky level per type. Files without ``physical_type`` keep their meaning: every
detector is ``"CCD"``, one type, one background.

`Camera.to_json_dict` returns the same structure as the file, so a camera
stored as JSON (in a butler) and one written as YAML are interchangeable.
"""

from __future__ import annotations

__all__ = [
    "CAMERA_SCHEMA_VERSION",
    "DEFAULT_PHYSICAL_TYPE",
    "MAX_NAME_LENGTH",
    "Camera",
    "CameraError",
    "CameraLookupError",
    "DetectorGeometry",
    "FilterDefinition",
    "FocalPlaneBox",
    "make_synthetic_camera",
]

import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import yaml

from .errors import CameraError, CameraLookupError, InputNotFoundError

CAMERA_SCHEMA_VERSION = 1
"""The camera file schema version this module reads and writes."""

MAX_NAME_LENGTH = 32
"""Longest instrument, detector, physical filter or band name: the width of
the butler registry columns that hold them (PostgreSQL enforces it).
"""

# Instrument names become collection-name prefixes and the last component of
# an importable class path (see `lsst.skyframes.instrument`), so no dots,
# slashes or spaces.
_INSTRUMENT_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")

_TOP_REQUIRED = ("schema_version", "instrument", "filters", "detectors")
_TOP_OPTIONAL = ("pixel_size_mm",)
_DETECTOR_REQUIRED = ("id", "name", "bbox", "centre_mm")
_DETECTOR_OPTIONAL = ("rotation_deg", "pixel_size_mm", "physical_type", "purpose")

DEFAULT_PHYSICAL_TYPE = "CCD"
"""Physical type of a detector whose description gives none."""
_FILTER_KEYS = ("physical_filter", "band")
_BBOX_KEYS = ("width", "height")

# Relative tolerance when deciding whether two detectors overlap: detectors
# that merely share an edge (zero gap) must not be reported, whatever the
# rounding of their corner coordinates.
_OVERLAP_RTOL = 1e-9


class FocalPlaneBox(NamedTuple):
    """Axis-aligned extent in the focal plane, in millimetres."""

    x_min: float
    x_max: float
    y_min: float
    y_max: float


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float | np.floating)


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CameraError(f"{what} must be a non-empty string, not {value!r}.")
    if len(value) > MAX_NAME_LENGTH:
        raise CameraError(
            f"{what} {value!r} is {len(value)} characters long; the butler registry holds at most "
            f"{MAX_NAME_LENGTH}."
        )
    return value


def _positive(value: Any, what: str) -> float:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise CameraError(f"{what} must be a positive finite number, not {value!r}.")
    return float(value)


def _finite(value: Any, what: str) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise CameraError(f"{what} must be a finite number, not {value!r}.")
    return float(value)


def _cos_sin_deg(angle_deg: float) -> tuple[float, float]:
    # Exact values at multiples of 90 degrees keep rotated detectors' pixel
    # grids exactly aligned with the focal-plane axes (cos(pi/2) is 6e-17).
    quarter = angle_deg / 90.0
    if quarter == round(quarter):
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[int(round(quarter)) % 4]
    theta = math.radians(angle_deg)
    return math.cos(theta), math.sin(theta)


@dataclass(frozen=True)
class FilterDefinition:
    """A physical filter and the band it belongs to.

    Parameters
    ----------
    physical_filter : `str`
        Instrument-specific filter name (butler ``physical_filter``).
    band : `str`
        Abstract band name shared between instruments (butler ``band``).

    Raises
    ------
    CameraError
        Raised if either name is empty, not a string or too long.
    """

    physical_filter: str
    band: str

    def __post_init__(self) -> None:
        _check_name(self.physical_filter, "physical_filter")
        _check_name(self.band, f"band of physical_filter {self.physical_filter!r}")


@dataclass(frozen=True)
class DetectorGeometry:
    """One detector: its pixel grid and where it sits in the focal plane.

    Parameters
    ----------
    id : `int`
        Detector id (butler ``detector``), unique within the camera.
    name : `str`
        Detector name (butler ``detector.full_name``), unique within the
        camera.
    width, height : `int`
        Size of the pixel grid; the pixel origin is ``(0, 0)``.
    centre_mm : `tuple` [`float`, `float`]
        Focal-plane position (mm) of the detector centre, pixel
        ``((width - 1)/2, (height - 1)/2)``.
    pixel_size_mm : `float`
        Pixel pitch in millimetres.
    rotation_deg : `float`, optional
        Counter-clockwise rotation of the pixel axes relative to the focal
        plane axes, about the detector centre.
    physical_type : `str`, optional
        Sensor type, free text (`DEFAULT_PHYSICAL_TYPE` if not given); as
        afw's ``Detector.getPhysicalType``. Detectors of another type get
        their own focal-plane background in a build with
        ``includeAlternateBackground``.
    purpose : `str`, optional
        What the detector is for (``SCIENCE``, ``GUIDER``, ``WAVEFRONT``...).

    Raises
    ------
    CameraError
        Raised for non-integer ids, empty names, non-positive sizes or
        non-finite positions.
    """

    id: int
    name: str
    width: int
    height: int
    centre_mm: tuple[float, float]
    pixel_size_mm: float
    rotation_deg: float = 0.0
    physical_type: str = DEFAULT_PHYSICAL_TYPE
    purpose: str = "SCIENCE"

    def __post_init__(self) -> None:
        if not _is_int(self.id):
            raise CameraError(f"detector id must be an integer, not {self.id!r}.")
        label = f"detector {self.id}"
        name = _check_name(self.name, f"{label} name")
        label = f"detector {self.id} ({name!r})"
        for attr in ("width", "height"):
            value = getattr(self, attr)
            if not _is_int(value) or value <= 0:
                raise CameraError(f"{label} bbox {attr} must be a positive integer, not {value!r}.")
        centre = tuple(self.centre_mm) if isinstance(self.centre_mm, Sequence | np.ndarray) else ()
        if len(centre) != 2:
            raise CameraError(f"{label} centre_mm must be a pair [x, y] of numbers, not {self.centre_mm!r}.")
        centre = (_finite(centre[0], f"{label} centre_mm x"), _finite(centre[1], f"{label} centre_mm y"))
        _check_name(self.physical_type, f"{label} physical_type")
        _check_name(self.purpose, f"{label} purpose")
        # Normalise types so equality does not depend on int vs float or list
        # vs tuple in the input.
        object.__setattr__(self, "id", int(self.id))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "centre_mm", centre)
        object.__setattr__(self, "pixel_size_mm", _positive(self.pixel_size_mm, f"{label} pixel_size_mm"))
        object.__setattr__(self, "rotation_deg", _finite(self.rotation_deg, f"{label} rotation_deg"))

    def getPhysicalType(self) -> str:
        """Return the sensor type, as afw's ``Detector.getPhysicalType`` does."""
        return self.physical_type

    @property
    def shape(self) -> tuple[int, int]:
        """Array shape of the pixel grid, ``(height, width)``."""
        return (self.height, self.width)

    @property
    def centre_pixel(self) -> tuple[float, float]:
        """Pixel coordinates ``(x, y)`` of the detector centre."""
        return ((self.width - 1) / 2.0, (self.height - 1) / 2.0)

    def pixel_to_focal_plane(
        self, x: npt.ArrayLike, y: npt.ArrayLike
    ) -> tuple[np.ndarray | np.float64, np.ndarray | np.float64]:
        """Transform pixel coordinates to focal-plane millimetres.

        Parameters
        ----------
        x, y : `float` or array-like
            Pixel coordinates (pixel centres at integers); broadcast together.

        Returns
        -------
        fx, fy : `numpy.ndarray` or `numpy.float64`
            Focal-plane coordinates in mm, of the broadcast shape.
        """
        cos_t, sin_t = _cos_sin_deg(self.rotation_deg)
        cx, cy = self.centre_pixel
        dx = (np.asarray(x, dtype=np.float64) - cx) * self.pixel_size_mm
        dy = (np.asarray(y, dtype=np.float64) - cy) * self.pixel_size_mm
        fx = self.centre_mm[0] + cos_t * dx - sin_t * dy
        fy = self.centre_mm[1] + sin_t * dx + cos_t * dy
        return fx[()], fy[()]

    def focal_plane_to_pixel(
        self, fx: npt.ArrayLike, fy: npt.ArrayLike
    ) -> tuple[np.ndarray | np.float64, np.ndarray | np.float64]:
        """Transform focal-plane millimetres to pixel coordinates.

        Parameters
        ----------
        fx, fy : `float` or array-like
            Focal-plane coordinates in mm; broadcast together.

        Returns
        -------
        x, y : `numpy.ndarray` or `numpy.float64`
            Pixel coordinates (not clipped to the detector), of the broadcast
            shape.
        """
        cos_t, sin_t = _cos_sin_deg(self.rotation_deg)
        cx, cy = self.centre_pixel
        ux = np.asarray(fx, dtype=np.float64) - self.centre_mm[0]
        uy = np.asarray(fy, dtype=np.float64) - self.centre_mm[1]
        x = cx + (cos_t * ux + sin_t * uy) / self.pixel_size_mm
        y = cy + (-sin_t * ux + cos_t * uy) / self.pixel_size_mm
        return x[()], y[()]

    def corners_mm(self) -> np.ndarray:
        """Return the focal-plane corners of the detector's pixel area.

        Returns
        -------
        corners : `numpy.ndarray`
            Shape ``(4, 2)`` array of ``(fx, fy)`` for the outer pixel edges,
            counter-clockwise in pixel coordinates starting at ``(-0.5, -0.5)``.
        """
        xs = np.array([-0.5, self.width - 0.5, self.width - 0.5, -0.5])
        ys = np.array([-0.5, -0.5, self.height - 0.5, self.height - 0.5])
        fx, fy = self.pixel_to_focal_plane(xs, ys)
        return np.stack([fx, fy], axis=-1)


def _describe(index: int, detector: DetectorGeometry) -> str:
    return f"detectors[{index}] (id={detector.id}, name={detector.name!r})"


def _overlapping(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    # Separating-axis test for two convex quadrilaterals: they overlap iff
    # their projections overlap on every edge normal of both.
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        for ex, ey in edges:
            axis = np.array([-ey, ex])
            pa, pb = a @ axis, b @ axis
            norm = math.hypot(ex, ey)
            if pa.max() <= pb.min() + tol * norm or pb.max() <= pa.min() + tol * norm:
                return False
    return True


@dataclass(frozen=True)
class Camera:
    """A camera: instrument name, filters and detector geometry.

    Parameters
    ----------
    instrument : `str`
        Butler instrument name: a letter followed by letters, digits, ``_``
        or ``-``, at most `MAX_NAME_LENGTH` characters.
    detectors : `~collections.abc.Sequence` [`DetectorGeometry`]
        The detectors, at least one; stored as a tuple in the given order.
    filters : `~collections.abc.Sequence` [`FilterDefinition`], optional
        The physical filters.
    pixel_size_mm : `float`, optional
        Default pixel size, written to files so that detectors with this size
        need not repeat it.
    source : `str`, optional
        Where the description came from, used in error messages only.

    Raises
    ------
    CameraError
        Raised for a bad instrument name, no detectors, duplicate detector
        ids or names, duplicate physical filters, or detectors that overlap
        in the focal plane. The message names ``source`` and the entries.
    """

    instrument: str
    detectors: tuple[DetectorGeometry, ...]
    filters: tuple[FilterDefinition, ...] = ()
    pixel_size_mm: float | None = None
    source: InitVar[str] = "Camera"
    _by_id: dict[int, DetectorGeometry] = field(init=False, repr=False, compare=False)
    _by_name: dict[str, DetectorGeometry] = field(init=False, repr=False, compare=False)
    _bands: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self, source: str) -> None:
        try:
            _check_name(self.instrument, "instrument")
        except CameraError as err:
            raise CameraError(f"{source}: {err}") from None
        if not _INSTRUMENT_NAME_RE.match(self.instrument):
            raise CameraError(
                f"{source}: instrument name {self.instrument!r} must start with a letter and hold only "
                "letters, digits, '_' and '-' (it becomes a collection prefix and part of a class path)."
            )
        detectors = tuple(self.detectors)
        filters = tuple(self.filters)
        if self.pixel_size_mm is not None:
            try:
                object.__setattr__(self, "pixel_size_mm", _positive(self.pixel_size_mm, "pixel_size_mm"))
            except CameraError as err:
                raise CameraError(f"{source}: {err}") from None
        object.__setattr__(self, "detectors", detectors)
        object.__setattr__(self, "filters", filters)
        if not detectors:
            raise CameraError(f"{source}: the camera has no detectors; list at least one under 'detectors'.")
        for index, detector in enumerate(detectors):
            if not isinstance(detector, DetectorGeometry):
                raise CameraError(
                    f"{source}: detectors[{index}] is a {type(detector).__name__}, not a DetectorGeometry."
                )
        for index, filt in enumerate(filters):
            if not isinstance(filt, FilterDefinition):
                raise CameraError(
                    f"{source}: filters[{index}] is a {type(filt).__name__}, not a FilterDefinition."
                )

        by_id: dict[int, DetectorGeometry] = {}
        by_name: dict[str, DetectorGeometry] = {}
        first_index: dict[int, int] = {}
        name_index: dict[str, int] = {}
        for index, detector in enumerate(detectors):
            if detector.id in by_id:
                other = first_index[detector.id]
                raise CameraError(
                    f"{source}: {_describe(index, detector)} repeats the id of "
                    f"{_describe(other, detectors[other])}; detector ids must be unique."
                )
            if detector.name in by_name:
                other = name_index[detector.name]
                raise CameraError(
                    f"{source}: {_describe(index, detector)} repeats the name of "
                    f"{_describe(other, detectors[other])}; detector names must be unique."
                )
            by_id[detector.id] = detector
            by_name[detector.name] = detector
            first_index[detector.id] = index
            name_index[detector.name] = index

        bands: dict[str, str] = {}
        filter_index: dict[str, int] = {}
        for index, filt in enumerate(filters):
            if filt.physical_filter in bands:
                raise CameraError(
                    f"{source}: filters[{index}] repeats physical_filter {filt.physical_filter!r} of "
                    f"filters[{filter_index[filt.physical_filter]}]; physical filters must be unique."
                )
            bands[filt.physical_filter] = filt.band
            filter_index[filt.physical_filter] = index

        self._check_overlaps(detectors, source)
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_bands", bands)

    @staticmethod
    def _check_overlaps(detectors: tuple[DetectorGeometry, ...], source: str) -> None:
        corners = np.stack([d.corners_mm() for d in detectors])
        centres = corners.mean(axis=1)
        radii = np.linalg.norm(corners - centres[:, None, :], axis=-1).max(axis=1)
        scale = max(1.0, float(np.abs(corners).max()))
        tol = _OVERLAP_RTOL * scale
        # Circumscribed circles prune all but neighbouring pairs before the
        # exact (per-pair, Python-level) separating-axis test.
        distance = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)
        close = distance < (radii[:, None] + radii[None, :]) - tol
        for i, j in zip(*np.nonzero(np.triu(close, k=1)), strict=True):
            if _overlapping(corners[i], corners[j], tol):
                raise CameraError(
                    f"{source}: {_describe(int(i), detectors[i])} overlaps {_describe(int(j), detectors[j])} "
                    "in the focal plane; check their centre_mm, bbox, rotation_deg and pixel_size_mm."
                )

    # --- Lookups ------------------------------------------------------------

    def __getitem__(self, key: int | str) -> DetectorGeometry:
        """Return a detector by id (`int`) or name (`str`).

        Raises
        ------
        CameraLookupError
            Raised if the camera has no such detector.
        """
        try:
            if isinstance(key, str):
                return self._by_name[key]
            if _is_int(key):
                return self._by_id[int(key)]
        except KeyError:
            pass
        raise CameraLookupError(
            f"Camera {self.instrument!r} has no detector {key!r}; it has ids "
            f"{sorted(self._by_id)} and names {sorted(self._by_name)}."
        )

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            return key in self._by_name
        return _is_int(key) and int(key) in self._by_id  # type: ignore[call-overload]

    def __iter__(self) -> Iterator[DetectorGeometry]:
        return iter(self.detectors)

    def __len__(self) -> int:
        return len(self.detectors)

    @property
    def detector_ids(self) -> tuple[int, ...]:
        """Detector ids, in file order."""
        return tuple(d.id for d in self.detectors)

    @property
    def physical_types(self) -> tuple[str, ...]:
        """The detectors' distinct physical types, sorted."""
        return tuple(sorted({d.physical_type for d in self.detectors}))

    @property
    def physical_filters(self) -> tuple[str, ...]:
        """Physical filter names, in file order."""
        return tuple(f.physical_filter for f in self.filters)

    def band_of(self, physical_filter: str) -> str:
        """Return the band of a physical filter.

        Parameters
        ----------
        physical_filter : `str`
            Physical filter name.

        Returns
        -------
        band : `str`
            The band it belongs to.

        Raises
        ------
        CameraLookupError
            Raised if the camera has no such filter.
        """
        try:
            return self._bands[physical_filter]
        except KeyError:
            raise CameraLookupError(
                f"Camera {self.instrument!r} has no physical filter {physical_filter!r}; "
                f"known filters are {list(self._bands)}."
            ) from None

    def focal_plane_bbox(self) -> FocalPlaneBox:
        """Return the extent of all detectors in the focal plane.

        Returns
        -------
        box : `FocalPlaneBox`
            ``(x_min, x_max, y_min, y_max)`` in mm over the outer pixel edges
            of every detector.
        """
        corners = np.concatenate([d.corners_mm() for d in self.detectors])
        return FocalPlaneBox(
            float(corners[:, 0].min()),
            float(corners[:, 0].max()),
            float(corners[:, 1].min()),
            float(corners[:, 1].max()),
        )

    def differences(self, other: Camera, labels: tuple[str, str] = ("this", "other")) -> list[str]:
        """List what differs between this camera and another, entry by entry.

        Parameters
        ----------
        other : `Camera`
            The camera to compare with.
        labels : `tuple` [`str`, `str`], optional
            What to call this camera and ``other`` in the descriptions
            (e.g. ``("registered", "given")``).

        Returns
        -------
        differences : `list` [`str`]
            One description per differing entry (instrument name, default
            pixel size, a filter or its band, a detector present in one only,
            a detector's name, size, centre, pixel size, rotation, type or
            purpose), e.g. ``"detector 0 (R00) size: 64x64 px registered,
            64x80 px given"``. Empty if the cameras hold the same entries; the
            order of the detectors and filters is not compared.
        """
        mine, theirs = labels

        def pair(a: Any, b: Any) -> str:
            return f"{a} {mine}, {b} {theirs}"

        found = []
        if self.instrument != other.instrument:
            found.append(f"instrument: {pair(repr(self.instrument), repr(other.instrument))}")
        if self.pixel_size_mm != other.pixel_size_mm:
            found.append(f"default pixel_size_mm: {pair(self.pixel_size_mm, other.pixel_size_mm)}")
        bands, other_bands = self._bands, other._bands
        for name in sorted(bands.keys() | other_bands.keys()):
            if name not in other_bands:
                found.append(f"physical filter {name!r}: {mine} only")
            elif name not in bands:
                found.append(f"physical filter {name!r}: {theirs} only")
            elif bands[name] != other_bands[name]:
                found.append(
                    f"physical filter {name!r} band: {pair(repr(bands[name]), repr(other_bands[name]))}"
                )
        for detector_id in sorted(self._by_id.keys() | other._by_id.keys()):
            a, b = self._by_id.get(detector_id), other._by_id.get(detector_id)
            if a is None or b is None:
                present = b if a is None else a
                found.append(f"detector {detector_id} ({present.name}): {theirs if a is None else mine} only")
                continue
            label = f"detector {detector_id} ({a.name})"
            if (a.width, a.height) != (b.width, b.height):
                found.append(f"{label} size: {pair(f'{a.width}x{a.height} px', f'{b.width}x{b.height} px')}")
            for attr in ("name", "centre_mm", "pixel_size_mm", "rotation_deg", "physical_type", "purpose"):
                if getattr(a, attr) != getattr(b, attr):
                    found.append(f"{label} {attr}: {pair(getattr(a, attr), getattr(b, attr))}")
        return found

    # --- Serialisation ------------------------------------------------------

    def to_json_dict(self) -> dict[str, Any]:
        """Return the camera as a JSON-compatible dictionary.

        Returns
        -------
        data : `dict`
            The camera-file structure (see the module docstring), including
            ``schema_version``. A detector's ``pixel_size_mm`` is written only
            where it differs from the camera default.
        """
        detectors = []
        for d in self.detectors:
            entry: dict[str, Any] = {
                "id": d.id,
                "name": d.name,
                "bbox": {"width": d.width, "height": d.height},
                "centre_mm": [d.centre_mm[0], d.centre_mm[1]],
                "rotation_deg": d.rotation_deg,
                "physical_type": d.physical_type,
                "purpose": d.purpose,
            }
            if d.pixel_size_mm != self.pixel_size_mm:
                entry["pixel_size_mm"] = d.pixel_size_mm
            detectors.append(entry)
        data: dict[str, Any] = {"schema_version": CAMERA_SCHEMA_VERSION, "instrument": self.instrument}
        if self.pixel_size_mm is not None:
            data["pixel_size_mm"] = self.pixel_size_mm
        data["filters"] = [{"physical_filter": f.physical_filter, "band": f.band} for f in self.filters]
        data["detectors"] = detectors
        return data

    @classmethod
    def from_json_dict(cls, data: Any, *, source: str = "camera description") -> Camera:
        """Build a camera from the camera-file structure.

        Parameters
        ----------
        data : `~collections.abc.Mapping`
            Parsed YAML or JSON (see the module docstring).
        source : `str`, optional
            Name of the input (a file path), used in error messages.

        Returns
        -------
        camera : `Camera`
            The validated camera.

        Raises
        ------
        CameraError
            Raised for missing or unknown keys, an unknown
            ``schema_version``, wrongly typed values and every inconsistency
            `Camera` checks; the message names ``source`` and the entry.
        """
        top = _check_keys(data, _TOP_REQUIRED, _TOP_OPTIONAL, source, "the camera description")
        version = top["schema_version"]
        if version != CAMERA_SCHEMA_VERSION or not _is_int(version):
            raise CameraError(
                f"{source}: unknown schema_version {version!r}; this version of skyframes reads "
                f"schema_version {CAMERA_SCHEMA_VERSION}."
            )
        default_pixel = top.get("pixel_size_mm")
        if default_pixel is not None:
            try:
                default_pixel = _positive(default_pixel, "pixel_size_mm")
            except CameraError as err:
                raise CameraError(f"{source}: {err}") from None

        filter_entries = _check_list(top["filters"], "filters", source, allow_empty=True)
        filters = []
        for index, entry in enumerate(filter_entries):
            where = f"filters[{index}]"
            values = _check_keys(entry, _FILTER_KEYS, (), source, where)
            try:
                filters.append(FilterDefinition(values["physical_filter"], values["band"]))
            except CameraError as err:
                raise CameraError(f"{source}: {where}: {err}") from None

        detector_entries = _check_list(top["detectors"], "detectors", source, allow_empty=False)
        detectors = []
        for index, entry in enumerate(detector_entries):
            where = f"detectors[{index}]"
            if isinstance(entry, Mapping) and "name" in entry:
                where += f" (name={entry['name']!r})"
            values = _check_keys(entry, _DETECTOR_REQUIRED, _DETECTOR_OPTIONAL, source, where)
            bbox = _check_keys(values["bbox"], _BBOX_KEYS, (), source, f"{where} bbox")
            pixel = values.get("pixel_size_mm", default_pixel)
            if pixel is None:
                raise CameraError(
                    f"{source}: {where} has no pixel_size_mm and the camera sets no default; add "
                    "pixel_size_mm to the detector or to the top level."
                )
            try:
                detectors.append(
                    DetectorGeometry(
                        id=values["id"],
                        name=values["name"],
                        width=bbox["width"],
                        height=bbox["height"],
                        centre_mm=values["centre_mm"],
                        pixel_size_mm=pixel,
                        rotation_deg=values.get("rotation_deg", 0.0),
                        physical_type=values.get("physical_type", DEFAULT_PHYSICAL_TYPE),
                        purpose=values.get("purpose", "SCIENCE"),
                    )
                )
            except CameraError as err:
                raise CameraError(f"{source}: {where}: {err}") from None

        return cls(
            instrument=top["instrument"],
            detectors=tuple(detectors),
            filters=tuple(filters),
            pixel_size_mm=default_pixel,
            source=source,
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Camera:
        """Read a camera file.

        Parameters
        ----------
        path : `str` or `os.PathLike`
            YAML camera file.

        Returns
        -------
        camera : `Camera`
            The validated camera.

        Raises
        ------
        lsst.skyframes.errors.InputNotFoundError
            Raised if the file does not exist (a `FileNotFoundError`).
        CameraError
            Raised if the file is not UTF-8 text, not YAML or not a valid
            camera description; the message names the file and the entry.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            what = "is a directory" if os.path.isdir(path) else "does not exist"
            raise InputNotFoundError(
                f"Camera file {path} {what}; pass the camera's YAML description (see lsst.skyframes.camera; "
                "Camera.to_yaml writes one)."
            )
        with open(path, encoding="utf-8") as stream:
            try:
                data = yaml.safe_load(stream)
            except UnicodeDecodeError as err:
                # The decoder fails before the YAML parser sees the text (a binary or corrupt
                # file, or one saved in another encoding); say so rather than leak the codec error.
                raise CameraError(
                    f"{path}: is not UTF-8 text (invalid byte at offset {err.start}); a camera "
                    "file must be YAML saved as UTF-8. Re-save it as UTF-8 or regenerate it with "
                    "Camera.to_yaml."
                ) from None
            except yaml.YAMLError as err:
                raise CameraError(f"{path}: not a valid YAML file: {err}") from None
        return cls.from_json_dict(data, source=path)

    def to_yaml(self, path: str | os.PathLike[str]) -> None:
        """Write the camera as a YAML camera file, atomically.

        Parameters
        ----------
        path : `str` or `os.PathLike`
            Destination; replaced if it exists. The file is written to a
            temporary name in the same directory and renamed, so readers never
            see a partial file.
        """
        path = os.fspath(path)
        text = (
            f"# skyframes camera description (schema_version {CAMERA_SCHEMA_VERSION}); "
            "see lsst.skyframes.camera.\n"
        ) + yaml.safe_dump(self.to_json_dict(), sort_keys=False, default_flow_style=None)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".camera-", suffix=".yaml.tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def _check_keys(
    value: Any, required: Sequence[str], optional: Sequence[str], source: str, where: str
) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CameraError(f"{source}: {where} must be a mapping, not {type(value).__name__}.")
    missing = [k for k in required if k not in value]
    if missing:
        raise CameraError(f"{source}: {where} is missing required key(s) {missing}.")
    unknown = [k for k in value if k not in required and k not in optional]
    if unknown:
        raise CameraError(
            f"{source}: {where} has unknown key(s) {unknown}; allowed keys are {[*required, *optional]}."
        )
    return value


def _check_list(value: Any, key: str, source: str, *, allow_empty: bool) -> list[Any]:
    if not isinstance(value, list):
        raise CameraError(f"{source}: '{key}' must be a list, not {type(value).__name__}.")
    if not value and not allow_empty:
        raise CameraError(f"{source}: '{key}' is empty; list at least one entry.")
    return value


def make_synthetic_camera(
    n_x: int = 3,
    n_y: int = 3,
    size: int = 1024,
    gap_px: int = 64,
    pixel_size_mm: float = 0.015,
    name: str = "SkyCam",
    filters: Sequence[tuple[str, str]] = (("SkyCam-r", "r"), ("SkyCam-i", "i")),
    physical_types: Sequence[str] | None = None,
) -> Camera:
    """Make a camera of identical square detectors on a regular grid.

    Parameters
    ----------
    n_x, n_y : `int`, optional
        Number of detectors along x and y.
    size : `int`, optional
        Width and height of each detector in pixels.
    gap_px : `int`, optional
        Gap between neighbouring detectors, in pixels.
    pixel_size_mm : `float`, optional
        Pixel size in mm.
    name : `str`, optional
        Instrument name.
    filters : `~collections.abc.Sequence` [`tuple` [`str`, `str`]], optional
        ``(physical_filter, band)`` pairs.
    physical_types : `~collections.abc.Sequence` [`str`], optional
        Physical type of each detector, in id order (``n_x * n_y`` of
        them), e.g. ``["E2V", "E2V", "ITL", "ITL"]``; every detector is
        `DEFAULT_PHYSICAL_TYPE` if not given.

    Returns
    -------
    camera : `Camera`
        Detectors unrotated, the grid centred on the focal-plane origin, ids
        ``0 ..`` in row-major order (x fastest), names ``R{row}{column}``
        (``R00``, ``R01``, ...; zero-padded further for grids of ten or more).

    Raises
    ------
    CameraError
        Raised for non-positive counts or sizes, a negative gap, or
        ``physical_types`` of another length than the detector count.
    """
    for label, value in (("n_x", n_x), ("n_y", n_y), ("size", size)):
        if not _is_int(value) or value <= 0:
            raise CameraError(f"make_synthetic_camera: {label} must be a positive integer, not {value!r}.")
    if not _is_int(gap_px) or gap_px < 0:
        raise CameraError(f"make_synthetic_camera: gap_px must be a non-negative integer, not {gap_px!r}.")
    if physical_types is None:
        physical_types = [DEFAULT_PHYSICAL_TYPE] * (n_x * n_y)
    elif isinstance(physical_types, str) or len(physical_types) != n_x * n_y:
        raise CameraError(
            f"make_synthetic_camera: physical_types must list one type per detector ({n_x * n_y} for "
            f"{n_x}x{n_y}), in id order; got {physical_types!r}."
        )
    digits = len(str(max(n_x, n_y) - 1))
    pitch_mm = (size + gap_px) * pixel_size_mm
    detectors = []
    for row in range(n_y):
        for column in range(n_x):
            detectors.append(
                DetectorGeometry(
                    id=row * n_x + column,
                    name=f"R{row:0{digits}d}{column:0{digits}d}",
                    width=size,
                    height=size,
                    centre_mm=((column - (n_x - 1) / 2) * pitch_mm, (row - (n_y - 1) / 2) * pitch_mm),
                    pixel_size_mm=pixel_size_mm,
                    physical_type=physical_types[row * n_x + column],
                )
            )
    return Camera(
        instrument=name,
        detectors=tuple(detectors),
        filters=tuple(FilterDefinition(pf, band) for pf, band in filters),
        pixel_size_mm=pixel_size_mm,
        source="make_synthetic_camera",
    )
