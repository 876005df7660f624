"""``skyframes report`` and ``skyframes plot``: look at built sky frames and their evidence."""

from __future__ import annotations

__all__ = ["format_quality_table", "load_quality", "plot_dataset", "write_quality_figure"]

import os
from typing import Any

import numpy as np

from lsst.daf.butler import Butler

from .background import BackgroundList
from .errors import NoDataError, UsageError
from .plotting import plot_focal_plane, plot_panels
from .repo import read_camera

# Dataset type of the multi-component templates (CpSkyCombineConnections.outputComponents).
COMPONENTS_DATASET = "sky_components"


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
    """Return a text table with one line per detector and filter, then the inputs left out.

    Columns: inputs used, rejected by the combination (``rej``) and dropped
    by an earlier step (``drop``, schema version 3 on), the NaN-filled
    fraction, median noise and median clipped residual of the inputs.
    Reports of multi-component templates add the number of components, the
    median residual of the inputs from their K-component model and the
    variance explained by each component. Reports of sky frames whose bin
    size was chosen by cross-validation (schema version 4 on) add the chosen
    size (``bin px``) and its estimated RMS error. Below the table: every exposure
    left out, with the detectors concerned and the reason, and the sky
    frames built from fewer than 3 inputs (where clipping rejects nothing and
    the noise of the combination cannot be estimated).
    """
    multi = any("n_components" in report for _, report in rows)
    chosen = any("bin_size_choice" in report for _, report in rows)
    header = (
        f"{'filter':<14} {'det':>4} {'used':>5} {'rej':>4} {'drop':>4} {'filled %':>8} "
        f"{'noise (median)':>15} {'resid RMS (median)':>19}"
    )
    if chosen:
        header += f" {'bin px':>6} {'est. RMS error':>14}"
    if multi:
        header += f" {'K':>2} {'K-model resid':>14}  variance explained"
    lines = [header, "-" * len(header)]
    for data_id, report in rows:
        resid = _median(report["residual_rms"])
        noise = report["noise_median"] if report["noise_median"] is not None else float("nan")
        line = (
            f"{data_id['physical_filter']:<14} {data_id['detector']:>4} {report['n_inputs_used']:>5} "
            f"{len(report['inputs_rejected']):>4} {len(report.get('inputs_dropped', [])):>4} "
            f"{100 * report['nan_filled_fraction']:>8.2f} {noise:>15.3e} {resid:>19.3e}"
        )
        if chosen:
            choice = report.get("bin_size_choice")
            if choice is None:
                line += f" {'fixed':>6} {'':>14}"
            else:
                error = choice["error_rms"][choice["candidates"].index(choice["bin_size"])]
                line += f" {choice['bin_size']:>6} {error:>14.3e}"
        if "n_components" in report:
            explained = " ".join(f"{v:.2e}" for v in report["variance_explained"])
            line += (
                f" {report['n_components']:>2} {_median(report['model_residual_rms']):>14.3e}  {explained}"
            )
        lines.append(line)
    return "\n".join(lines + _left_out(rows) + _few_inputs(rows))


def _detector_list(detectors: list[int]) -> str:
    return f"detector{'s' if len(detectors) > 1 else ''} {', '.join(str(d) for d in sorted(detectors))}"


def _left_out(rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    """Lines naming every exposure left out of a sky frame: which detectors, how, and why."""
    grouped: dict[tuple[str, int, str, str], list[int]] = {}
    for data_id, report in rows:
        for kind, key in (
            ("dropped before the combination", "inputs_dropped"),
            ("rejected", "inputs_rejected"),
        ):
            for entry in report.get(key, []):
                group = (data_id["physical_filter"], int(entry["exposure"]), kind, str(entry["reason"]))
                grouped.setdefault(group, []).append(data_id["detector"])
    if not grouped:
        return []
    lines = ["", "Exposures left out:"]
    for (physical_filter, exposure, kind, reason), detectors in sorted(grouped.items()):
        lines.append(
            f"  {physical_filter} exposure {exposure}, {kind} ({_detector_list(detectors)}): {reason}"
        )
    return lines


def _few_inputs(rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    """Lines naming the sky frames built from fewer than 3 inputs."""
    few: dict[tuple[str, int], list[int]] = {}
    for data_id, report in rows:
        if report["n_inputs_used"] < 3:
            few.setdefault((data_id["physical_filter"], report["n_inputs_used"]), []).append(
                data_id["detector"]
            )
    lines = [
        f"  {physical_filter} {_detector_list(detectors)}: {n} input{'s' if n != 1 else ''}"
        for (physical_filter, n), detectors in sorted(few.items())
    ]
    if not lines:
        return []
    header = "Built from fewer than 3 inputs (clipping rejects nothing; noise and residuals mean little):"
    return ["", header, *lines]


def _median(values: dict[str, float]) -> float:
    return float(np.median(list(values.values()))) if values else float("nan")


def _pixel_extent(bbox: Any) -> tuple[float, float, float, float]:
    """matplotlib ``extent`` of a box whose pixel centres sit at integer coordinates."""
    return (bbox.x.min - 0.5, bbox.x.max + 0.5, bbox.y.min - 0.5, bbox.y.max + 0.5)


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
    """Draw a ``sky``, ``sky_components``, ``skyCorr`` (any background list) or mosaic dataset into a PNG.

    ``sky_components`` gets one panel per template (the elements are
    alternatives, not terms of a sum as in ``skyCorr``).

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
    if name == COMPONENTS_DATASET:
        return _plot_components(butler, collection, data_id, path, title)
    if (
        storage == "MaskedImageV2"
        and "detector" in dataset_type.dimensions.names
        and "detector" not in data_id
    ):
        refs = _matching_refs(butler, name, collection, data_id)
        camera = read_camera(butler, refs[0].dataId["instrument"])
        arrays = {ref.dataId["detector"]: butler.get(ref).image.array.astype(np.float64) for ref in refs}
        plot_focal_plane(camera, [(name, arrays, "value", False)], path, title=title)
        return path
    obj = butler.get(_single_ref(butler, name, collection, data_id))
    if isinstance(obj, BackgroundList):
        image = obj.getImage()
        label = "background"
    elif hasattr(obj, "image"):  # a masked image: show the image plane
        image = obj.image
        label = "value"
    else:
        image = obj
        label = "value"
    extent = _pixel_extent(image.bbox)
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


def _matching_refs(butler: Butler, name: str, collection: str, data_id: dict[str, Any]) -> list[Any]:
    """Return every ``name`` dataset matching a (possibly partial) data ID.

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised if none matches.
    """
    refs = butler.query_datasets(name, collections=collection, data_id=data_id, explain=False, limit=None)
    if not refs:
        raise NoDataError(f"No {name!r} datasets matching {data_id} in {collection!r}.")
    return refs


def _single_ref(butler: Butler, name: str, collection: str, data_id: dict[str, Any]) -> Any:
    """Return the one ``name`` dataset matching a (possibly partial) data ID.

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised if none matches (`_matching_refs`).
    lsst.skyframes.errors.UsageError
        Raised if several match: the message names the data ID keys that
        tell them apart and some of their values.
    """
    refs = _matching_refs(butler, name, collection, data_id)
    if len(refs) == 1:
        return refs[0]
    keys = sorted(
        key for key in refs[0].dataId.required if len({ref.dataId.required[key] for ref in refs}) > 1
    )
    values = "; ".join(
        f"{key}: {', '.join(str(v) for v in sorted({ref.dataId.required[key] for ref in refs})[:8])}"
        for key in keys
    )
    raise UsageError(
        f"{len(refs)} {name!r} datasets in {collection!r} match {data_id}; choose one with --data-id "
        f"{' '.join(f'{key}=...' for key in keys)} ({values})."
    )


def _plot_components(butler: Butler, collection: str, data_id: dict[str, Any], path: str, title: str) -> str:
    """One panel per multi-component template: over the focal plane, or of one detector."""
    if "detector" in data_id:
        templates = butler.get(_single_ref(butler, COMPONENTS_DATASET, collection, data_id))
        extent = _pixel_extent(templates[0][0].getImageBBox())
        panels = [
            (
                f"component {k}",
                np.asarray(BackgroundList(element).getImage().array, dtype=np.float64),
                "value",
            )
            for k, element in enumerate(templates, start=1)
        ]
        plot_panels(panels, path, title=title, extent=extent, axis_labels=("x [pixel]", "y [pixel]"))
        return path
    refs = _matching_refs(butler, COMPONENTS_DATASET, collection, data_id)
    camera = read_camera(butler, refs[0].dataId["instrument"])
    stats = {
        ref.dataId["detector"]: [
            np.asarray(element[0].getStatsImage().image.array, dtype=np.float64)
            for element in butler.get(ref)
        ]
        for ref in refs
    }
    n_components = min(len(values) for values in stats.values())
    panels = [
        (f"component {k + 1}", {d: values[k] for d, values in stats.items()}, "value", k > 0)
        for k in range(n_components)
    ]
    plot_focal_plane(camera, panels, path, title=title)
    return path
