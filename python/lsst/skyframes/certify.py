"""Certify built calibrations (sky frames) into a CALIBRATION collection."""

from __future__ import annotations

__all__ = ["CertificationConflictError", "certify_calibrations", "certify_sky_frames"]

import astropy.time

from lsst.daf.butler import Butler, CollectionType, MissingDatasetTypeError, Timespan
from lsst.daf.butler.registry import ConflictingDefinitionError

from .errors import NoDataError, SkyFramesError
from .repo import calib_collection


class CertificationConflictError(SkyFramesError, ValueError):
    """Other datasets are already certified for an overlapping validity range."""


def _time(value: str | astropy.time.Time | None) -> astropy.time.Time | None:
    if value is None or isinstance(value, astropy.time.Time):
        return value
    return astropy.time.Time(value, scale="utc")


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
        Validity range (ISO UTC); `None` leaves that end unbounded.

    Returns
    -------
    n_certified : `int`
        Number of datasets newly certified (0 if they already were, with the
        same validity range: certifying twice is harmless).

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised if the run holds no such dataset.
    CertificationConflictError
        Raised if other datasets with the same data IDs are certified for an
        overlapping validity range.
    """
    refs = list(butler.query_datasets(dataset_type, collections=input_run, explain=False))
    if not refs:
        raise NoDataError(
            f"No {dataset_type!r} datasets in collection {input_run!r}; run the build pipeline first "
            "(or check the collection name with `butler query-collections`)."
        )
    instruments = {ref.dataId["instrument"] for ref in refs}
    if collection is None:
        if len(instruments) != 1:
            raise ValueError(f"Datasets of several instruments ({sorted(instruments)}); pass collection=.")
        collection = calib_collection(instruments.pop())
    timespan = Timespan(_time(begin), _time(end))
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
