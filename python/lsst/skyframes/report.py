"""``skyframes report`` and ``skyframes plot``: look at built sky frames and their evidence."""

from __future__ import annotations

__all__ = ["format_quality_table", "load_quality", "plot_dataset", "write_quality_figure"]

import os
from typing import Any

import numpy as np

from lsst.daf.butler import Butler

from .background import BackgroundList
from .errors import NoDataError
from .plotting import plot_focal_plane, plot_panels
from .repo import read_camera


def load_quality(butler: Butler, collection: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Return (data ID, report) for every ``sky_quality`` dataset in a collection.

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised if the collection holds none.
    """
    refs = butler.query_datasets("sky_quality", collections=collection, explain=False)
    if not refs:
        raise NoDataError(f"No sky_quality datasets in {collection!r}; pass the build's output collection.")
    rows = [(dict(ref.dataId.required), butler.get(ref)) for ref in refs]
    return sorted(rows, key=lambda row: (row[0]["physical_filter"], row[0]["detector"]))


def format_quality_table(rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """Return a text table with one line per detector and filter."""
    header = (
        f"{'filter':<14} {'det':>4} {'used':>5} {'rej':>4} {'filled %':>8} "
        f"{'noise (median)':>15} {'resid RMS (median)':>19}"
    )
    lines = [header, "-" * len(header)]
    for data_id, report in rows:
        resid = np.median(list(report["residual_rms"].values())) if report["residual_rms"] else float("nan")
        noise = report["noise_median"] if report["noise_median"] is not None else float("nan")
        lines.append(
            f"{data_id['physical_filter']:<14} {data_id['detector']:>4} {report['n_inputs_used']:>5} "
            f"{len(report['inputs_rejected']):>4} {100 * report['nan_filled_fraction']:>8.2f} "
            f"{noise:>15.3e} {resid:>19.3e}"
        )
    return "\n".join(lines)


def _as_array(nested: list) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in nested], dtype=np.float64)


def write_quality_figure(butler: Butler, collection: str, path: str) -> list[str]:
    """Write one focal-plane PNG per physical filter: sky frame, noise map, residual RMS map.

    Returns
    -------
    paths : `list` [`str`]
        The files written (``path`` with the filter name inserted before the suffix).
    """
    rows = load_quality(butler, collection)
    instrument = rows[0][0]["instrument"]
    camera = read_camera(butler, instrument)
    written = []
    for physical_filter in sorted({data_id["physical_filter"] for data_id, _ in rows}):
        selected = [(d, r) for d, r in rows if d["physical_filter"] == physical_filter]
        frames = {
            d["detector"]: butler.get("sky", d, collections=collection).image.array.astype(np.float64)
            for d, _ in selected
        }
        noise = {d["detector"]: _as_array(r["noise_map"]) for d, r in selected}
        residual = {d["detector"]: _as_array(r["residual_rms_map"]) for d, r in selected}
        root, suffix = os.path.splitext(path)
        out = f"{root}_{physical_filter}{suffix or '.png'}"
        plot_focal_plane(
            camera,
            [
                ("sky frame", frames, "relative sky", False),
                ("noise of the combination", noise, "relative sky", False),
                ("RMS of inputs - sky frame", residual, "relative sky", False),
            ],
            out,
            title=f"{instrument} {physical_filter}: sky-frame quality ({collection})",
        )
        written.append(out)
    return written


def plot_dataset(butler: Butler, name: str, collection: str, data_id: dict[str, Any], path: str) -> str:
    """Draw a ``sky``, ``skyCorr`` (any background list) or mosaic dataset into a PNG.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Butler of the repository.
    name : `str`
        Dataset type name.
    collection : `str`
        Collection to search.
    data_id : `dict`
        Data ID keys; for ``sky`` without ``detector``, every detector is
        drawn on the focal plane.
    path : `str`
        Output PNG.

    Returns
    -------
    path : `str`
        The file written.
    """
    data_id = dict(data_id)
    if "instrument" not in data_id:
        # A repository with one instrument needs no --data-id instrument=... .
        instruments = [record.name for record in butler.query_dimension_records("instrument")]
        if len(instruments) == 1:
            data_id["instrument"] = instruments[0]
    dataset_type = butler.get_dataset_type(name)
    storage = dataset_type.storageClass_name
    title = f"{name} {data_id} ({collection})"
    if (
        storage == "MaskedImageV2"
        and "detector" in dataset_type.dimensions.names
        and "detector" not in data_id
    ):
        refs = butler.query_datasets(name, collections=collection, data_id=data_id, explain=False)
        if not refs:
            raise NoDataError(f"No {name!r} datasets matching {data_id} in {collection!r}.")
        camera = read_camera(butler, refs[0].dataId["instrument"])
        arrays = {ref.dataId["detector"]: butler.get(ref).image.array.astype(np.float64) for ref in refs}
        plot_focal_plane(camera, [(name, arrays, "value", False)], path, title=title)
        return path
    obj = butler.get(name, data_id, collections=collection)
    if isinstance(obj, BackgroundList):
        image = obj.getImage()
        label = "background"
    elif hasattr(obj, "image"):  # a masked image: show the image plane
        image = obj.image
        label = "value"
    else:
        image = obj
        label = "value"
    bbox = image.bbox
    extent = (bbox.x.min - 0.5, bbox.x.max + 0.5, bbox.y.min - 0.5, bbox.y.max + 0.5)
    axis_labels = (
        ("x [pixel]", "y [pixel]") if "detector" in data_id else ("x [mosaic pixel]", "y [mosaic pixel]")
    )
    plot_panels(
        [(name, np.asarray(image.array, dtype=np.float64), label)],
        path,
        title=title,
        extent=extent,
        axis_labels=axis_labels,
    )
    return path
