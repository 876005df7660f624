"""Certify built calibrations (sky frames) into a CALIBRATION collection.

Validity ranges are read as TAI, as ``butler certify-calibrations`` reads its
``--begin-date`` and ``--end-date`` (the butler keeps every time in TAI).
"""

from __future__ import annotations

__all__ = ["CertificationConflictError", "certify_calibrations", "certify_sky_frames", "validity_range"]

import astropy.time

from lsst.daf.butler import Butler, CollectionType, MissingDatasetTypeError, Timespan
from lsst.daf.butler.registry import ConflictingDefinitionError

from .errors import CertificationConflictError, NoDataError, ValidityRangeError
from .repo import calib_collection, require_collection


def _time(value: str | astropy.time.Time | None, what: str) -> astropy.time.Time | None:
    if value is None or isinstance(value, astropy.time.Time):
        return value
    try:
        return astropy.time.Time(value, scale="tai")
    except ValueError:
        raise ValidityRangeError(
            f"{what} {value!r} is not a time; write it in ISO 8601, e.g. 2026-01-01T00:00:00 (TAI)."
        ) from None


def validity_range(begin: str | astropy.time.Time | None, end: str | astropy.time.Time | None) -> Timespan:
    """Return the validity range ``[begin, end)``, refusing an empty or inverted one.

    Parameters
    ----------
    begin, end : `str` or `astropy.time.Time`, optional
        ISO 8601 times, TAI (as ``butler certify-calibrations``); `None`
        leaves that end unbounded.

    Returns
    -------
    timespan : `lsst.daf.butler.Timespan`

    Raises
    ------
    lsst.skyframes.errors.ValidityRangeError
        Raised if a time cannot be parsed, or if ``end`` is not after
        ``begin`` (the butler would store an empty range that no exposure
        ever finds).
    """
    begin_time, end_time = _time(begin, "begin"), _time(end, "end")
    if begin_time is not None and end_time is not None and not end_time > begin_time:
        raise ValidityRangeError(
            f"The validity range {begin_time.tai.isot} .. {end_time.tai.isot} (TAI) is "
            f"{'empty' if end_time == begin_time else 'inverted'}: no exposure would find these "
            "calibrations. Give an end after the begin, or leave one unbounded."
        )
    return Timespan(begin_time, end_time)


def certify_calibrations(
    butler: Butler,
    input_run: str,
    *,
    dataset_type: str = "sky",
    collection: str | None = None,
    begin: str | astropy.time.Time | None = None,
    end: str | astropy.time.Time | None = None,
) -> int:
    """Certify every ``dataset_type`` dataset of a RUN into a CALIBRATION collection.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable butler.
    input_run : `str`
        RUN collection holding the datasets (e.g. the output run of
        ``pipetask run``).
    dataset_type : `str`, optional
        Dataset type to certify.
    collection : `str`, optional
        CALIBRATION collection; default ``<instrument>/calib``.
    begin, end : `str` or `astropy.time.Time`, optional
        Validity range ``[begin, end)``, ISO 8601 TAI (see `validity_range`);
        `None` leaves that end unbounded.

    Returns
    -------
    n_certified : `int`
        Number of datasets newly certified (0 if they already were, with the
        same validity range: certifying twice is harmless).

    Raises
    ------
    lsst.skyframes.errors.NotFoundError
        Raised if ``input_run`` does not exist.
    lsst.skyframes.errors.ValidityRangeError
        Raised for an unparseable, empty or inverted validity range.
    lsst.skyframes.errors.NoDataError
        Raised if the run holds no such dataset.
    CertificationConflictError
        Raised if other datasets with the same data IDs are certified for an
        overlapping validity range.
    """
    timespan = validity_range(begin, end)
    require_collection(butler, input_run)
    try:
        refs = list(butler.query_datasets(dataset_type, collections=input_run, explain=False))
    except MissingDatasetTypeError:
        refs = []
    if not refs:
        raise NoDataError(
            f"No {dataset_type!r} datasets in collection {input_run!r}; run the build pipeline first "
            "(or check the collection name with `butler query-collections`)."
        )
    instruments = {ref.dataId["instrument"] for ref in refs}
    if collection is None:
        if len(instruments) != 1:
            raise CertificationConflictError(
                f"{input_run!r} holds {dataset_type!r} datasets of several instruments "
                f"({sorted(instruments)}); name the CALIBRATION collection (--collection)."
            )
        collection = calib_collection(instruments.pop())
    butler.registry.registerCollection(collection, CollectionType.CALIBRATION)
    existing = {(ref.id, ref_timespan) for ref, ref_timespan in _certified(butler, dataset_type, collection)}
    todo = [ref for ref in refs if (ref.id, timespan) not in existing]
    if not todo:
        return 0
    try:
        butler.registry.certify(collection, todo, timespan)
    except ConflictingDefinitionError as err:
        raise CertificationConflictError(
            f"Cannot certify {len(todo)} {dataset_type!r} datasets of {input_run!r} into {collection!r} for "
            f"{timespan}: {err}. Decertify the old ones first (`butler decertify-calibrations`) or choose "
            "a validity range that does not overlap."
        ) from err
    return len(todo)


def _certified(butler: Butler, dataset_type: str, collection: str) -> list[tuple]:
    """Return (ref, timespan) of datasets already certified in a collection."""
    try:
        associations = butler.registry.queryDatasetAssociations(dataset_type, collections=[collection])
    except MissingDatasetTypeError:
        return []
    return [(association.ref, association.timespan) for association in associations]


def certify_sky_frames(
    butler: Butler,
    input_run: str,
    *,
    collection: str | None = None,
    begin: str | astropy.time.Time | None = None,
    end: str | astropy.time.Time | None = None,
) -> dict[str, int]:
    """Certify a build's ``sky`` frames and, if it made them, its ``sky_components``.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable butler.
    input_run : `str`
        The build's output RUN collection.
    collection, begin, end
        As for `certify_calibrations`.

    Returns
    -------
    n_certified : `dict` [`str`, `int`]
        Newly certified datasets per dataset type.

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised if the run holds no ``sky`` dataset.
    """
    counts = {
        "sky": certify_calibrations(
            butler, input_run, dataset_type="sky", collection=collection, begin=begin, end=end
        )
    }
    # Multi-component templates exist only if cpSkyCombine ran with nComponents > 1.
    try:
        found = butler.query_datasets("sky_components", collections=input_run, explain=False, limit=1)
    except MissingDatasetTypeError:
        found = []
    if found:
        counts["sky_components"] = certify_calibrations(
            butler, input_run, dataset_type="sky_components", collection=collection, begin=begin, end=end
        )
    return counts
