"""Butler data repositories for skyframes: creation, camera, exposures.

Without obs_base, this module does what an obs package and its ingest would:
create a repository whose config knows this package's storage classes
(`create_repo`), register a camera's instrument, detectors and filters and
store the camera as a calibration (`register_camera`), and define exposures
and their one-to-one visits (`insert_exposure`). Every step may be repeated:
existing, identical records and datasets are left alone, different ones are an
error.

Dimension records are those of daf_butler's default universe (namespace
``daf_butler``, version 8); see `insert_exposure` for which are written.
"""

from __future__ import annotations

__all__ = [
    "CAMERA_DATASET_TYPE",
    "CameraConflictError",
    "NotRegisteredError",
    "RepoConfigError",
    "calib_collection",
    "camera_dataset_type",
    "check_camera",
    "create_repo",
    "day_obs_timespan",
    "insert_exposure",
    "open_repo",
    "read_camera",
    "register_camera",
    "require_collection",
    "seed_config",
    "seed_config_path",
]

import contextlib
import datetime
import math
import numbers
import os
from pathlib import Path
from typing import Any

import astropy.time
import astropy.units as u
import sqlalchemy

from lsst.daf.butler import (
    Butler,
    CollectionType,
    Config,
    DataCoordinate,
    DataIdValueError,
    DatasetRef,
    DatasetType,
    MissingDatasetTypeError,
    Timespan,
)
from lsst.daf.butler.registry import ConflictingDefinitionError, MissingCollectionError, RegistryConfig
from lsst.daf.butler.registry.connectionString import ConnectionStringFactory
from lsst.daf.butler.registry.interfaces import SchemaAlreadyDefinedError
from lsst.resources import ResourcePath, ResourcePathExpression
from lsst.utils.db_auth import DbAuthError

from .camera import Camera
from .errors import (
    CameraConflictError,
    InputNotFoundError,
    NotFoundError,
    NotRegisteredError,
    RepoConfigError,
)
from .instrument import EXPOSURE_MAX, ONE_TO_ONE_VISIT_SYSTEM, SkyFramesInstrument

CAMERA_DATASET_TYPE = "camera"
"""Name of the camera calibration dataset type."""

_SEED_FILE = "butler-seed.yaml"
_POSTGRES_SEED_FILE = "seed-postgres.yaml"

# The seed config, kept here too so that a wheel install (which does not ship
# the top-level config/ directory) can create repositories. The test suite
# checks that config/butler-seed.yaml says exactly this.
_EMBEDDED_SEED: dict[str, Any] = {
    "storageClasses": {
        "SkyBackgroundList": {"pytype": "lsst.skyframes.background.BackgroundList"},
        "SkyFocalPlaneBackground": {"pytype": "lsst.skyframes.focal_plane.FocalPlaneBackground"},
        "SkyObjectMask": {"pytype": "lsst.skyframes.object_mask.ObjectMask"},
        "SkyCamera": {"pytype": "lsst.skyframes.camera.Camera"},
    },
    "datastore": {
        "formatters": {
            "BackgroundMap": "lsst.images.formatters.GenericFormatter",
            "ImageField": "lsst.images.formatters.GenericFormatter",
            "SkyBackgroundList": "lsst.skyframes.formatters.BackgroundListFormatter",
            "SkyFocalPlaneBackground": "lsst.skyframes.formatters.FocalPlaneBackgroundFormatter",
            "SkyObjectMask": "lsst.skyframes.formatters.ObjectMaskFormatter",
            "SkyCamera": "lsst.skyframes.formatters.CameraFormatter",
            "sky_quality": "lsst.daf.butler.formatters.json.JsonFormatter",
        }
    },
}

# Zero-length timespans are empty and overlap nothing, so a zero-second
# exposure (a bias) would never find its calibrations; give it the shortest
# timespan the registry stores (nanosecond resolution).
_MIN_EXPOSURE_SPAN = 1e-9 * u.s

# Rubin's day_obs convention: the observing day rolls over at 12:00 UTC.
_DAY_OBS_ROLLOVER = datetime.timedelta(hours=12)


def _config_file(name: str) -> Path | None:
    """Return ``config/<name>`` of this installation, if it exists."""
    candidates = []
    if env := os.environ.get("SKYFRAMES_DIR"):
        candidates.append(Path(env) / "config" / name)
    # python/lsst/skyframes/repo.py -> repository root.
    candidates.append(Path(__file__).resolve().parents[3] / "config" / name)
    return next((path for path in candidates if path.is_file()), None)


def seed_config_path() -> Path | None:
    """Return the seed config file, if this installation has one.

    Returns
    -------
    path : `pathlib.Path` or `None`
        ``$SKYFRAMES_DIR/config/butler-seed.yaml`` (eups set-ups) or the
        source tree's ``config/butler-seed.yaml`` (editable installs), if it
        exists; otherwise `None`.
    """
    return _config_file(_SEED_FILE)


def seed_config() -> Config:
    """Return the butler seed config for skyframes repositories.

    Returns
    -------
    config : `lsst.daf.butler.Config`
        The contents of `seed_config_path` where it exists, otherwise the same
        config built into this module. It declares ``SkyBackgroundList``,
        ``SkyFocalPlaneBackground``, ``SkyObjectMask`` and ``SkyCamera`` and maps every storage
        class that lacks a formatter to one.
    """
    path = seed_config_path()
    return Config(str(path)) if path is not None else Config(_EMBEDDED_SEED)


def _is_postgresql(db_url: str) -> bool:
    try:
        return sqlalchemy.engine.make_url(db_url).get_backend_name() == "postgresql"
    except sqlalchemy.exc.ArgumentError:
        return False


def _db_seed(db_url: str) -> Config:
    """Return the seed config for a registry at ``db_url``.

    PostgreSQL URLs use ``config/seed-postgres.yaml`` where it exists (it
    includes ``butler-seed.yaml`` and documents the PostgreSQL settings),
    other URLs the plain seed; ``registry.db`` is set to ``db_url``.
    """
    path = _config_file(_POSTGRES_SEED_FILE) if _is_postgresql(db_url) else None
    seed = Config(str(path)) if path is not None else seed_config()
    seed["registry", "db"] = db_url
    return seed


def _check_postgresql(db_url: str) -> None:
    """Check that a PostgreSQL database can hold a butler registry.

    Raises
    ------
    RepoConfigError
        Raised if the database cannot be reached or lacks the ``btree_gist``
        extension; the message names the database (without its password) and
        the fix.
    """
    shown = sqlalchemy.engine.make_url(db_url).render_as_string(hide_password=True)
    try:
        # Through daf_butler's factory, so credentials come from
        # ~/.lsst/db-auth.yaml ($LSST_DB_AUTH) as they will for the butler.
        url = ConnectionStringFactory.fromConfig(RegistryConfig({"db": db_url}))
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    except ImportError as err:
        raise RepoConfigError(
            f"Cannot use registry database {shown}: {err}. Install the driver the URL names: "
            "postgresql+psycopg2:// needs psycopg2-binary (pip install 'lsst-skyframes[postgres]'), "
            "postgresql+psycopg:// needs psycopg (pip install 'psycopg[binary]')."
        ) from err
    except (sqlalchemy.exc.ArgumentError, DbAuthError) as err:
        raise RepoConfigError(f"Cannot use registry database {shown}: {err}") from err
    try:
        with engine.connect() as connection:
            query = sqlalchemy.text("SELECT COUNT(*) FROM pg_extension WHERE extname = 'btree_gist'")
            has_btree_gist = bool(connection.execute(query).scalar())
    except sqlalchemy.exc.DBAPIError as err:
        reason = str(err.orig).strip() if err.orig is not None else str(err)
        raise RepoConfigError(
            f"Cannot connect to registry database {shown}: {reason}. Check the host, port, database "
            "name and credentials (a password may go in ~/.lsst/db-auth.yaml)."
        ) from err
    finally:
        engine.dispose()
    if not has_btree_gist:
        raise RepoConfigError(
            f"Registry database {shown} lacks the btree_gist extension that the butler needs; as a "
            "database owner or superuser run: CREATE EXTENSION btree_gist;"
        )


def open_repo(root: ResourcePathExpression, *, writeable: bool = False) -> Butler:
    """Open an existing repository, saying plainly when there is none.

    Parameters
    ----------
    root : `str` or path-like
        Repository root (or a butler alias).
    writeable : `bool`, optional
        Open for writing.

    Returns
    -------
    butler : `lsst.daf.butler.Butler`

    Raises
    ------
    lsst.skyframes.errors.InputNotFoundError
        Raised if there is no repository at ``root``.
    """
    try:
        return Butler.from_config(root, writeable=writeable)
    except FileNotFoundError:
        raise InputNotFoundError(
            f"No butler repository at {root} (no butler.yaml there); create one with "
            f"'skyframes create-repo {root}' (or 'skyframes register --create {root} CAMERA.yaml')."
        ) from None


def require_collection(butler: Butler, name: str) -> None:
    """Raise `~lsst.skyframes.errors.NotFoundError` if a collection does not exist.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Butler of the repository.
    name : `str`
        Collection name.
    """
    try:
        butler.collections.get_info(name)
    except MissingCollectionError:
        raise NotFoundError(
            f"Collection {name!r} does not exist in this repository; `butler query-collections REPO` "
            "lists the collections."
        ) from None


def calib_collection(instrument: str) -> str:
    """Return the name of an instrument's CALIBRATION collection.

    Parameters
    ----------
    instrument : `str`
        Instrument name.

    Returns
    -------
    collection : `str`
        ``<instrument>/calib``, as ``Instrument.makeCalibrationCollectionName``
        makes it.
    """
    return f"{instrument}/calib"


def camera_dataset_type(butler: Butler) -> DatasetType:
    """Return the ``camera`` dataset type.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Butler whose dimension universe to use.

    Returns
    -------
    dataset_type : `lsst.daf.butler.DatasetType`
        ``camera``: dimensions ``{instrument}``, storage class ``SkyCamera``,
        a calibration.
    """
    return DatasetType(
        CAMERA_DATASET_TYPE,
        dimensions=["instrument"],
        storageClass="SkyCamera",
        universe=butler.dimensions,
        isCalibration=True,
    )


def _differences(seed: Any, existing: Any, prefix: str = "") -> list[str]:
    """List the settings of ``seed`` (nested dicts) that ``existing`` lacks or
    sets differently, as ``dotted.key: ...`` strings.
    """
    differing = []
    for key, value in seed.items():
        name = f"{prefix}{key}"
        current = existing.get(key) if isinstance(existing, dict) else None
        if isinstance(value, dict):
            differing.extend(_differences(value, current, f"{name}."))
        elif current != value:
            differing.append(f"{name}: repository has {current!r}, seed has {value!r}")
    return differing


def create_repo(root: ResourcePathExpression, *, db_url: str | None = None) -> Butler:
    """Create a skyframes data repository, or open an identical existing one.

    Parameters
    ----------
    root : `lsst.resources.ResourcePathExpression`
        Repository root; created if it does not exist.
    db_url : `str`, optional
        Registry database URL (``registry.db``), e.g.
        ``postgresql+psycopg2://user@host/db`` (the database needs
        ``CREATE EXTENSION btree_gist``). Default: SQLite file in ``root``.

    Returns
    -------
    butler : `lsst.daf.butler.Butler`
        Writeable butler for the repository, with no default collections.

    Raises
    ------
    RepoConfigError
        Raised if ``root`` holds a repository whose config differs from the
        seed config (or from ``db_url``), or is a non-empty directory without
        a ``butler.yaml``; or if a PostgreSQL ``db_url`` cannot be reached,
        lacks ``btree_gist`` or already holds a registry. Nothing is left in
        ``root`` then.

    Notes
    -----
    Equivalent to ``butler create ROOT --seed-config config/butler-seed.yaml``
    (plus ``registry: {db: URL}`` in the seed for ``db_url``; for PostgreSQL
    URLs the seed is ``config/seed-postgres.yaml``). When the repository
    exists with the same seed settings it is opened, so a script that creates
    its repository can simply be run again.
    """
    root_uri = ResourcePath(root, forceDirectory=True)
    seed = seed_config() if db_url is None else _db_seed(db_url)
    config_uri = root_uri.join("butler.yaml")
    if config_uri.exists():
        differing = _differences(seed.toDict(), Config(config_uri).toDict())
        if differing:
            raise RepoConfigError(
                f"{root_uri} already holds a butler repository with a different configuration "
                f"({'; '.join(differing)}); choose another root or open it with Butler.from_config."
            )
        return Butler.from_config(root_uri, writeable=True)
    if root_uri.isLocal and os.path.isdir(root_uri.ospath) and os.listdir(root_uri.ospath):
        raise RepoConfigError(
            f"{root_uri} is a non-empty directory without a butler.yaml; refusing to create a repository "
            "among unrelated files. Choose an empty or new directory."
        )
    if db_url is not None and _is_postgresql(db_url):
        # Checked first: makeRepo would fail only after writing butler.yaml.
        _check_postgresql(db_url)
    created_root = not root_uri.exists()
    try:
        # forceConfigRoot=False keeps an explicit registry.db (e.g. a second
        # SQLite file elsewhere) instead of resetting it to
        # <butlerRoot>/gen3.sqlite3; roots absent from the seed are still
        # filled in.
        Butler.makeRepo(root_uri, config=seed, forceConfigRoot=False)
    except Exception as err:
        # makeRepo writes butler.yaml before it creates the registry tables; a
        # butler.yaml left after a failure would make the next call "open" a
        # repository that has no registry.
        if config_uri.exists():
            config_uri.remove()
        if created_root and root_uri.isLocal:
            with contextlib.suppress(OSError):
                os.rmdir(root_uri.ospath)
        if isinstance(err, SchemaAlreadyDefinedError):
            raise RepoConfigError(
                f"The registry database of {root_uri} already holds tables (another repository's?): "
                f"{err}. Use another database, or give this repository its own PostgreSQL schema "
                "(registry.namespace, see config/seed-postgres.yaml)."
            ) from err
        raise
    return Butler.from_config(root_uri, writeable=True)


def _find_registered_camera(butler: Butler, name: str, run: str) -> DatasetRef | None:
    """Return the camera dataset for ``name`` in its calibration collection
    or, failing that, in ``run`` (a put whose certification did not happen).
    """
    try:
        butler.get_dataset_type(CAMERA_DATASET_TYPE)
    except MissingDatasetTypeError:
        return None
    for collection in (calib_collection(name), run):
        try:
            ref = butler.find_dataset(
                CAMERA_DATASET_TYPE, instrument=name, collections=collection, timespan=Timespan(None, None)
            )
        except MissingCollectionError:
            continue
        if ref is not None:
            return ref
    return None


def register_camera(butler: Butler, camera: Camera, *, run: str | None = None) -> DatasetRef:
    """Register a camera's instrument and store the camera as a calibration.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable butler.
    camera : `~lsst.skyframes.camera.Camera`
        The camera.
    run : `str`, optional
        RUN collection for the ``camera`` dataset; default
        ``<instrument>/calib/unbounded``.

    Returns
    -------
    ref : `lsst.daf.butler.DatasetRef`
        The ``camera`` dataset, certified into `calib_collection` with an
        unbounded validity range.

    Raises
    ------
    CameraConflictError
        Raised if a different camera, or different instrument, detector or
        filter records, already exist for this instrument name.

    Notes
    -----
    Writes the ``instrument``, ``detector``, ``physical_filter`` and
    ``visit_system`` records (`SkyFramesInstrument.register`), registers the
    dataset type ``camera`` (dimensions ``{instrument}``, storage class
    ``SkyCamera``, calibration) and puts and certifies the camera. Calling it
    again with the same camera changes nothing.
    """
    instrument = SkyFramesInstrument.from_camera(camera)
    name = camera.instrument
    run = run if run is not None else instrument.makeUnboundedCalibrationRunName()
    calib = calib_collection(name)

    existing = _find_registered_camera(butler, name, run)
    if existing is not None:
        stored = butler.get(existing)
        if stored != camera:
            raise CameraConflictError(
                f"Instrument {name!r} already has a different camera in {_repo_label(butler)} (dataset "
                f"{existing}): {_listed_differences(stored, camera)}; give the new camera another "
                "instrument name or use another repository."
            )
    try:
        instrument.register(butler.registry)
    except ConflictingDefinitionError as err:
        raise CameraConflictError(
            f"Instrument {name!r} is already registered in {butler} with different instrument, detector or "
            f"filter records ({err}); give the new camera another instrument name or use another repository."
        ) from err

    butler.registry.registerDatasetType(camera_dataset_type(butler))
    butler.registry.registerCollection(calib, CollectionType.CALIBRATION)
    if existing is None:
        butler.registry.registerRun(run)
        existing = butler.put(camera, CAMERA_DATASET_TYPE, instrument=name, run=run)
    certified = butler.find_dataset(
        CAMERA_DATASET_TYPE, instrument=name, collections=calib, timespan=Timespan(None, None)
    )
    if certified is None:
        butler.registry.certify(calib, [existing], Timespan(None, None))
    return existing


def read_camera(butler: Butler, instrument: str, *, collections: str | list[str] | None = None) -> Camera:
    """Read an instrument's camera from a repository.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Butler for the repository.
    instrument : `str`
        Instrument name.
    collections : `str` or `list` [`str`], optional
        Collections to search; default `calib_collection` of ``instrument``.

    Returns
    -------
    camera : `~lsst.skyframes.camera.Camera`
        The stored camera.

    Raises
    ------
    NotRegisteredError
        Raised if no camera is stored there (run `register_camera`).
    """
    collections = collections if collections is not None else calib_collection(instrument)
    try:
        ref = butler.find_dataset(
            CAMERA_DATASET_TYPE, instrument=instrument, collections=collections, timespan=Timespan(None, None)
        )
    except (MissingDatasetTypeError, MissingCollectionError) as err:
        raise NotRegisteredError(
            f"No camera for instrument {instrument!r} in {collections!r} ({err}); run register_camera first."
        ) from err
    if ref is None:
        raise NotRegisteredError(
            f"No camera for instrument {instrument!r} in {collections!r}; run register_camera first."
        )
    return butler.get(ref)


# At most this many differences are listed in a camera-mismatch message, which stays one line.
_MAX_LISTED_DIFFERENCES = 4


def _listed_differences(registered: Camera, given: Camera) -> str:
    """Describe how ``given`` differs from ``registered`` in one line (the first few entries)."""
    differences = registered.differences(given, labels=("registered", "given"))
    if not differences:
        return "the same entries in another order"
    shown = "; ".join(differences[:_MAX_LISTED_DIFFERENCES])
    if len(differences) > _MAX_LISTED_DIFFERENCES:
        shown += f"; and {len(differences) - _MAX_LISTED_DIFFERENCES} more"
    return shown


def _repo_label(butler: Butler) -> str:
    """Return the repository's datastore root(s), to name the repository in messages."""
    roots = [str(root) for root in butler.get_datastore_roots().values() if root is not None]
    return ", ".join(roots) if roots else str(butler)


def check_camera(
    butler: Butler, camera: Camera, *, source: str = "The given camera", repo: str | None = None
) -> None:
    """Check that a camera is the one registered for its instrument.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Butler for the repository.
    camera : `~lsst.skyframes.camera.Camera`
        The camera to check, e.g. read from a file given to an ingest.
    source : `str`, optional
        What to call ``camera`` in messages (e.g. its file).
    repo : `str`, optional
        What to call the repository in messages; default its datastore root.

    Raises
    ------
    NotRegisteredError
        Raised if no camera is registered for the instrument; the message says
        to run ``skyframes register``.
    CameraConflictError
        Raised if the registered camera differs in any entry (detector sizes,
        positions, names, filters...; the order of detectors and filters is
        not compared); the message lists the first differences and the fix.
    """
    name = camera.instrument
    repo = repo if repo is not None else _repo_label(butler)
    try:
        registered = read_camera(butler, name)
    except NotRegisteredError:
        raise NotRegisteredError(
            f"Instrument {name!r} is not registered in {repo} (no camera in {calib_collection(name)!r}); "
            f"register it first: skyframes register {repo} CAMERA.yaml "
            "(or lsst.skyframes.repo.register_camera)."
        ) from None
    if registered.differences(camera):
        raise CameraConflictError(
            f"{source} differs from the camera registered for instrument {name!r} in {repo}: "
            f"{_listed_differences(registered, camera)}. "
            "Nothing was written. Use the camera the instrument was registered with; a changed camera "
            "needs its own instrument name (or another repository) and skyframes register."
        )


def day_obs_timespan(day_obs: int) -> Timespan:
    """Return the timespan of an observing day.

    Parameters
    ----------
    day_obs : `int`
        Observing day as ``YYYYMMDD``.

    Returns
    -------
    timespan : `lsst.daf.butler.Timespan`
        From 12:00 UTC on that date to 12:00 UTC the next day (Rubin's
        convention: the date in the UTC-12h time zone).

    Raises
    ------
    ValueError
        Raised if ``day_obs`` is not a valid ``YYYYMMDD`` date.
    """
    try:
        date = datetime.datetime.strptime(f"{int(day_obs):08d}", "%Y%m%d")
    except (TypeError, ValueError):
        raise ValueError(f"day_obs {day_obs!r} is not a date written as the integer YYYYMMDD.") from None
    begin = date + _DAY_OBS_ROLLOVER
    return Timespan(
        astropy.time.Time(begin, scale="utc"),
        astropy.time.Time(begin + datetime.timedelta(days=1), scale="utc"),
    )


def _optional_float(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite or None, not {value!r}.")
    return value


def insert_exposure(
    butler: Butler,
    camera: Camera,
    *,
    exposure_id: int,
    physical_filter: str,
    day_obs: int | None,
    obs_start: astropy.time.Time,
    exposure_time_s: float,
    group: str | None = None,
    science_program: str = "skyframes",
    obs_id: str | None = None,
    observation_type: str = "science",
    observation_reason: str = "science",
    target_name: str | None = None,
    seq_num: int | None = None,
    dark_time_s: float | None = None,
    tracking_ra: float | None = None,
    tracking_dec: float | None = None,
    sky_angle: float | None = None,
    azimuth: float | None = None,
    zenith_angle: float | None = None,
    has_simulated: bool = False,
    can_see_sky: bool | None = True,
    define_visit: bool = True,
) -> DataCoordinate:
    """Define an exposure and its one-to-one visit in a repository.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable butler; `register_camera` must have been run for ``camera``.
    camera : `~lsst.skyframes.camera.Camera`
        The camera that took the exposure.
    exposure_id : `int`
        Exposure id, ``0 <= exposure_id < EXPOSURE_MAX``; the visit gets the
        same id.
    physical_filter : `str`
        One of the camera's physical filters.
    day_obs : `int` or `None`
        Observing day ``YYYYMMDD``, which must contain ``obs_start`` (see
        `day_obs_timespan`); `None` derives it from ``obs_start``.
    obs_start : `astropy.time.Time`
        Start of the exposure.
    exposure_time_s : `float`
        Exposure time in seconds, ``>= 0``; the exposure's timespan is
        ``[obs_start, obs_start + exposure_time_s)``.
    group : `str`, optional
        Group name; default ``obs_id``.
    science_program : `str`, optional
        Observing program.
    obs_id : `str`, optional
        Observation id, unique in the instrument; default
        ``<instrument>_<exposure_id>``.
    observation_type, observation_reason, target_name : `str`, optional
        Exposure metadata.
    seq_num : `int`, optional
        Sequence number (also ``seq_start`` and ``seq_end``).
    dark_time_s : `float`, optional
        Dark time; default ``exposure_time_s``.
    tracking_ra, tracking_dec, sky_angle, azimuth, zenith_angle : `float`, optional
        Pointing in degrees, where known.
    has_simulated : `bool`, optional
        Whether any of the data are simulated.
    can_see_sky : `bool` or `None`, optional
        Whether the detectors saw the sky.
    define_visit : `bool`, optional
        Also write the one-to-one ``visit`` with its ``visit_definition`` and
        ``visit_system_membership`` records.

    Returns
    -------
    data_id : `lsst.daf.butler.DataCoordinate`
        Expanded data ID of the exposure.

    Raises
    ------
    lsst.skyframes.camera.CameraLookupError
        Raised if ``physical_filter`` is not the camera's.
    NotRegisteredError
        Raised if the camera's instrument is not registered.
    ValueError
        Raised for an out-of-range id, a negative or non-finite exposure time,
        or an ``obs_start`` outside ``day_obs``.
    lsst.daf.butler.registry.ConflictingDefinitionError
        Raised if a record with the same key but different values exists.

    Notes
    -----
    Writes (with ``syncDimensionData``, in one transaction, so repeating the
    call changes nothing) ``day_obs`` (with its timespan), ``group``,
    ``exposure`` (with its timespan, which calibration lookups need) and, with
    ``define_visit``, ``visit``, ``visit_definition`` and
    ``visit_system_membership`` (visit system 0, ``one-to-one``). No
    ``visit_detector_region`` records: they hold sky regions, which need a
    WCS; visit-detector queries work without them.
    """
    name = camera.instrument
    camera.band_of(physical_filter)  # raises CameraLookupError naming the known filters
    if (
        isinstance(exposure_id, bool)
        or not isinstance(exposure_id, numbers.Integral)
        or not 0 <= exposure_id < EXPOSURE_MAX
    ):
        raise ValueError(f"exposure_id must be an integer in [0, {EXPOSURE_MAX}), not {exposure_id!r}.")
    exposure_id = int(exposure_id)
    if not isinstance(obs_start, astropy.time.Time) or not obs_start.isscalar:
        raise TypeError(f"obs_start must be a scalar astropy.time.Time, not {obs_start!r}.")
    exposure_time_s = float(exposure_time_s)
    if not math.isfinite(exposure_time_s) or exposure_time_s < 0:
        raise ValueError(f"exposure_time_s must be a finite number >= 0, not {exposure_time_s!r}.")
    if day_obs is None:
        day_obs = int((obs_start.utc.to_datetime() - _DAY_OBS_ROLLOVER).strftime("%Y%m%d"))
    day_span = day_obs_timespan(day_obs)
    if not day_span.contains(obs_start):
        raise ValueError(
            f"obs_start {obs_start.utc.isot} UTC is not within day_obs {day_obs} ({day_span}); pass the "
            "day_obs that contains it or day_obs=None."
        )
    try:
        butler.registry.expandDataId(instrument=name)
    except DataIdValueError as err:
        raise NotRegisteredError(
            f"Instrument {name!r} is not registered in {butler}; run register_camera(butler, camera) first."
        ) from err

    obs_id = obs_id if obs_id is not None else f"{name}_{exposure_id}"
    group = group if group is not None else obs_id
    span = max(exposure_time_s * u.s, _MIN_EXPOSURE_SPAN)
    timespan = Timespan(obs_start, obs_start + span)
    pointing = {
        key: _optional_float(value, key)
        for key, value in (
            ("tracking_ra", tracking_ra),
            ("tracking_dec", tracking_dec),
            ("sky_angle", sky_angle),
            ("azimuth", azimuth),
            ("zenith_angle", zenith_angle),
        )
    }
    exposure = {
        "instrument": name,
        "id": exposure_id,
        "obs_id": obs_id,
        "day_obs": int(day_obs),
        "group": group,
        "physical_filter": physical_filter,
        "exposure_time": exposure_time_s,
        "dark_time": exposure_time_s if dark_time_s is None else float(dark_time_s),
        "observation_type": observation_type,
        "observation_reason": observation_reason,
        "seq_num": seq_num,
        "seq_start": seq_num,
        "seq_end": seq_num,
        "target_name": target_name,
        "science_program": science_program,
        "has_simulated": bool(has_simulated),
        "can_see_sky": can_see_sky,
        "timespan": timespan,
        **pointing,
    }
    registry = butler.registry
    with registry.transaction():
        registry.syncDimensionData("day_obs", {"instrument": name, "id": int(day_obs), "timespan": day_span})
        registry.syncDimensionData("group", {"instrument": name, "name": group})
        registry.syncDimensionData("exposure", exposure)
        if define_visit:
            registry.syncDimensionData(
                "visit",
                {
                    "instrument": name,
                    "id": exposure_id,
                    "name": obs_id,
                    "day_obs": int(day_obs),
                    "physical_filter": physical_filter,
                    "seq_num": seq_num,
                    "exposure_time": exposure_time_s,
                    "target_name": target_name,
                    "observation_reason": observation_reason,
                    "science_program": science_program,
                    "azimuth": pointing["azimuth"],
                    "zenith_angle": pointing["zenith_angle"],
                    "region": None,
                    "timespan": timespan,
                },
            )
            registry.syncDimensionData(
                "visit_definition", {"instrument": name, "exposure": exposure_id, "visit": exposure_id}
            )
            registry.syncDimensionData(
                "visit_system_membership",
                {"instrument": name, "visit_system": ONE_TO_ONE_VISIT_SYSTEM[0], "visit": exposure_id},
            )
    return registry.expandDataId(instrument=name, exposure=exposure_id)
