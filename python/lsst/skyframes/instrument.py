"""A generic `lsst.pipe.base.Instrument` driven by a camera description.

Without obs_base there is no instrument package per camera, so one class
serves every camera described by a `~lsst.skyframes.camera.Camera`.

pipe_base needs the instrument *name* at class level (``getName`` is a
classmethod) and re-creates instruments from the ``class_name`` recorded in
the registry with no arguments other than ``collection_prefix``. Hence:

- Each instrument name gets its own subclass, importable as
  ``lsst.skyframes.instrument.named.<NAME>`` (created on first access, cached,
  picklable). That path is what `SkyFramesInstrument.register` records in the
  ``instrument`` dimension record (at most 64 characters, the registry column
  width; names are at most 32), so ``Instrument.fromName(name, registry)`` and
  ``Instrument.from_data_id`` work in any process, with no environment set up.
- The camera itself (needed by `~SkyFramesInstrument.register` only) is found,
  in order: the one given to `SkyFramesInstrument.from_camera`; one passed to
  ``from_camera`` earlier in this process for the same name; the file named by
  a subclass's ``camera_path``; the file named by the ``SKYFRAMES_CAMERA``
  environment variable (if its instrument name matches). In a butler the
  camera is also stored as the ``camera`` calibration dataset, see
  `lsst.skyframes.repo.read_camera`.
- The base class itself, constructed with no arguments as
  ``butler register-instrument REPO lsst.skyframes.instrument.SkyFramesInstrument``
  does, takes name and camera from ``SKYFRAMES_CAMERA``.
- Its config overrides (`SkyFramesInstrument.applyConfigOverrides`, applied by
  ``pipetask run --instrument lsst.skyframes.instrument.SkyFramesInstrument``)
  size the focal-plane models from the camera, as an obs package's override
  files would (`lsst.skyframes.camera_overrides`). pipe_base creates the
  instrument with no arguments and no butler for this, so in a new process the
  camera comes from ``SKYFRAMES_CAMERA`` (or a subclass's ``camera_path``).
"""

from __future__ import annotations

__all__ = [
    "CAMERA_ENV_VAR",
    "EXPOSURE_MAX",
    "ONE_TO_ONE_VISIT_SYSTEM",
    "InstrumentCameraError",
    "SkyFramesInstrument",
    "instrument_class",
    "named",
]

import logging
import os
import threading
from typing import TYPE_CHECKING, ClassVar

from lsst.pipe.base import Instrument
from lsst.utils.introspection import get_full_type_name

from .camera import _INSTRUMENT_NAME_RE, MAX_NAME_LENGTH, Camera
from .camera_overrides import CAMERA_OVERRIDES, apply_camera_overrides
from .errors import InstrumentCameraError

if TYPE_CHECKING:
    from lsst.daf.butler import DataId, Formatter, FormatterV2, Registry
    from lsst.pex.config import Config

CAMERA_ENV_VAR = "SKYFRAMES_CAMERA"
"""Environment variable naming a camera YAML file."""

EXPOSURE_MAX = 10**13
"""Exclusive upper bound on exposure and visit ids (``instrument.exposure_max``
and ``visit_max``): room for ``YYYYMMDD`` followed by a five-digit sequence
number, while ``visit_max * detector_max`` stays far below 2**63 for packed
(visit, detector) ids.
"""

ONE_TO_ONE_VISIT_SYSTEM: tuple[int, str] = (0, "one-to-one")
"""The visit system (id, name) of single-exposure visits, as obs_base numbers it."""


_LOG = logging.getLogger(__name__)
_lock = threading.Lock()
_classes: dict[str, type[SkyFramesInstrument]] = {}
_cameras: dict[str, Camera] = {}


def _camera_from_env(expected_name: str | None) -> Camera | None:
    path = os.environ.get(CAMERA_ENV_VAR)
    if not path:
        return None
    camera = Camera.from_yaml(path)
    if expected_name is not None and camera.instrument != expected_name:
        # Another camera's file: not an error unless nothing else is found.
        return None
    return camera


class SkyFramesInstrument(Instrument):
    """Instrument for any camera described by a `~lsst.skyframes.camera.Camera`.

    Parameters
    ----------
    collection_prefix : `str`, optional
        Prefix for collection names; defaults to the instrument name.
    camera : `~lsst.skyframes.camera.Camera`, optional
        The camera. Must have the instrument name of this class. If not given
        it is looked up as described in the module documentation when first
        needed.

    Raises
    ------
    InstrumentCameraError
        Raised (by the base class only) if no name is known: neither
        ``instrument_name`` nor ``camera_path`` is set and
        ``SKYFRAMES_CAMERA`` is unset.

    Notes
    -----
    Use `from_camera` to get an instance for a camera; subclasses may set
    ``camera_path`` to a YAML file to make a self-contained instrument class.
    """

    instrument_name: ClassVar[str | None] = None
    """Instrument name; set on the per-name subclasses (see `instrument_class`)."""

    camera_path: ClassVar[str | None] = None
    """Camera YAML file for subclasses tied to one file."""

    def __init__(self, collection_prefix: str | None = None, *, camera: Camera | None = None) -> None:
        super().__init__(collection_prefix=collection_prefix)
        if camera is not None and camera.instrument != self.getName():
            raise InstrumentCameraError(
                f"Camera {camera.instrument!r} given to the instrument class for {self.getName()!r}; "
                "use SkyFramesInstrument.from_camera(camera)."
            )
        self._camera = camera

    @classmethod
    def from_camera(cls, camera: Camera, collection_prefix: str | None = None) -> SkyFramesInstrument:
        """Return an instrument for a camera.

        Parameters
        ----------
        camera : `~lsst.skyframes.camera.Camera`
            The camera.
        collection_prefix : `str`, optional
            Prefix for collection names; defaults to the instrument name.

        Returns
        -------
        instrument : `SkyFramesInstrument`
            Instance of ``named.<camera.instrument>``. The camera is also
            remembered for that name in this process, so instruments re-created
            by ``Instrument.fromName`` find it.
        """
        with _lock:
            _cameras[camera.instrument] = camera
        return instrument_class(camera.instrument)(collection_prefix=collection_prefix, camera=camera)

    @classmethod
    def getName(cls) -> str:
        """Return the instrument name (the ``instrument`` dimension value).

        Returns
        -------
        name : `str`
            ``instrument_name`` if set, otherwise the instrument of the camera
            from ``camera_path`` or ``SKYFRAMES_CAMERA``.

        Raises
        ------
        InstrumentCameraError
            Raised if none of those is available.
        """
        if cls.instrument_name is not None:
            return cls.instrument_name
        return cls._class_camera().instrument

    @classmethod
    def _class_camera(cls) -> Camera:
        if cls.camera_path is not None:
            return Camera.from_yaml(cls.camera_path)
        camera = _camera_from_env(None)
        if camera is None:
            raise InstrumentCameraError(
                f"{get_full_type_name(cls)} has no camera: set {CAMERA_ENV_VAR} to a camera YAML file, "
                "or use SkyFramesInstrument.from_camera(camera) or "
                "lsst.skyframes.instrument.named.<INSTRUMENT>."
            )
        return camera

    @property
    def camera(self) -> Camera:
        """The camera of this instrument (`~lsst.skyframes.camera.Camera`).

        Raises
        ------
        InstrumentCameraError
            Raised if no camera with this instrument's name can be found.
        """
        if self._camera is None:
            self._camera = self._find_camera()
        return self._camera

    def _find_camera(self) -> Camera:
        name = self.getName()
        with _lock:
            camera = _cameras.get(name)
        if camera is None and self.camera_path is not None:
            camera = Camera.from_yaml(self.camera_path)
        if camera is None:
            camera = _camera_from_env(name)
        if camera is None:
            raise InstrumentCameraError(
                f"No camera for instrument {name!r}: pass one to SkyFramesInstrument.from_camera, point "
                f"{CAMERA_ENV_VAR} at its YAML file, or read it from a butler with "
                "lsst.skyframes.repo.read_camera(butler, instrument)."
            )
        if camera.instrument != name:
            raise InstrumentCameraError(
                f"The camera file for instrument class {get_full_type_name(self)} describes "
                f"{camera.instrument!r}, not {name!r}."
            )
        return camera

    @classmethod
    def recorded_class_name(cls) -> str:
        """Return the class path to record in the ``instrument`` dimension.

        Returns
        -------
        class_name : `str`
            The class's own path for importable subclasses, otherwise
            ``lsst.skyframes.instrument.named.<NAME>``.
        """
        if cls is SkyFramesInstrument:
            return get_full_type_name(instrument_class(cls.getName()))
        return get_full_type_name(cls)

    def register(self, registry: Registry, *, update: bool = False) -> None:
        """Insert or check the instrument, detector, filter and visit-system
        records.

        Parameters
        ----------
        registry : `lsst.daf.butler.Registry`
            Registry of the repository to modify.
        update : `bool`, optional
            Replace existing records that differ instead of raising.

        Raises
        ------
        lsst.daf.butler.registry.ConflictingDefinitionError
            Raised if a record exists with different values and ``update`` is
            `False`.
        InstrumentCameraError
            Raised if the camera cannot be found.

        Notes
        -----
        Registering the same camera again changes nothing; everything happens
        in one transaction.
        """
        camera = self.camera
        name = self.getName()
        instrument_record = {
            "name": name,
            "detector_max": max(camera.detector_ids) + 1,
            "exposure_max": EXPOSURE_MAX,
            "visit_max": EXPOSURE_MAX,
            "visit_system": ONE_TO_ONE_VISIT_SYSTEM[0],
            "class_name": self.recorded_class_name(),
        }
        with registry.transaction():
            registry.syncDimensionData("instrument", instrument_record, update=update)
            for filt in camera.filters:
                registry.syncDimensionData(
                    "physical_filter",
                    {"instrument": name, "name": filt.physical_filter, "band": filt.band},
                    update=update,
                )
            for detector in camera.detectors:
                registry.syncDimensionData(
                    "detector",
                    {
                        "instrument": name,
                        "id": detector.id,
                        "full_name": detector.name,
                        "purpose": detector.purpose,
                    },
                    update=update,
                )
            registry.syncDimensionData(
                "visit_system",
                {"instrument": name, "id": ONE_TO_ONE_VISIT_SYSTEM[0], "name": ONE_TO_ONE_VISIT_SYSTEM[1]},
                update=update,
            )

    def applyConfigOverrides(self, name: str, config: Config) -> None:
        """Apply this instrument's overrides to a task config.

        pipe_base calls this with the task's ``_DefaultName`` when a pipeline
        has this instrument (``pipetask run --instrument ...``, the
        pipeline's ``instrument:`` key, ``Pipeline.addInstrument``), before
        the pipeline's config blocks and ``-c`` options.

        Parameters
        ----------
        name : `str`
            The task's ``_DefaultName``.
        config : `lsst.pex.config.Config`
            The task's configuration, modified in place.

        Notes
        -----
        After the base class's override files (``configPaths``), the
        camera-derived settings of
        `lsst.skyframes.camera_overrides.CAMERA_OVERRIDES` are applied if the
        camera can be found (see the module documentation; entries that are
        plain values apply without it): cpSkyImage's
        ``largeScaleBackground`` one detector per bin, skyCorr's ``bgModel1``
        two and ``bgModel2`` one, in the camera's pixel size. Without a camera
        those are skipped with a warning, and a config left without bin sizes
        fails validation with instructions.
        """
        super().applyConfigOverrides(name, config)
        if name not in CAMERA_OVERRIDES:
            return
        try:
            camera: Camera | None = self.camera
            reason = ""
        except InstrumentCameraError as err:
            camera, reason = None, str(err)
        skipped = apply_camera_overrides(name, config, camera)
        if skipped:
            _LOG.warning("No camera-derived config for %s (%s left as configured): %s", name, skipped, reason)

    def getRawFormatter(self, dataId: DataId) -> type[Formatter | FormatterV2]:
        """Return the formatter for raw files: lsst.images' generic one.

        Parameters
        ----------
        dataId : `lsst.daf.butler.DataId`
            Unused; every detector's raws are lsst.images files.

        Returns
        -------
        formatter : `type`
            `lsst.images.formatters.GenericFormatter`.
        """
        from lsst.images.formatters import GenericFormatter

        return GenericFormatter


def instrument_class(name: str) -> type[SkyFramesInstrument]:
    """Return the `SkyFramesInstrument` subclass for an instrument name.

    Parameters
    ----------
    name : `str`
        Instrument name.

    Returns
    -------
    cls : `type` [`SkyFramesInstrument`]
        The cached subclass, importable as
        ``lsst.skyframes.instrument.named.<name>``.

    Raises
    ------
    InstrumentCameraError
        Raised if ``name`` is not a valid instrument name.
    """
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _INSTRUMENT_NAME_RE.match(name):
        raise InstrumentCameraError(
            f"{name!r} is not a valid instrument name: a letter followed by at most "
            f"{MAX_NAME_LENGTH - 1} letters, digits, '_' or '-'."
        )
    with _lock:
        cls = _classes.get(name)
        if cls is None:
            cls = type(
                name,
                (SkyFramesInstrument,),
                {
                    "instrument_name": name,
                    "__module__": __name__,
                    "__qualname__": f"named.{name}",
                    "__doc__": f"`SkyFramesInstrument` for instrument {name!r}.",
                },
            )
            _classes[name] = cls
        return cls


class _NamedInstruments:
    """Namespace whose attribute ``<NAME>`` is ``instrument_class(NAME)``."""

    def __getattr__(self, name: str) -> type[SkyFramesInstrument]:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return instrument_class(name)
        except InstrumentCameraError as err:
            raise AttributeError(str(err)) from None

    def __repr__(self) -> str:
        return "lsst.skyframes.instrument.named"


named = _NamedInstruments()
"""Per-instrument classes: ``named.SkyCam`` is the class recorded for ``SkyCam``."""
