"""Figures: sky frames, their errors and corrected images."""

from __future__ import annotations

__all__ = ["plot_focal_plane", "plot_panels"]

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .camera import Camera


def plot_panels(
    panels: Sequence[tuple[str, np.ndarray, str]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    extent: tuple[float, float, float, float] | None = None,
    axis_labels: tuple[str, str] = ("x [pixel]", "y [pixel]"),
    symmetric: Sequence[bool] | None = None,
) -> None:
    """Draw images side by side, each with its own colour bar, into a PNG.

    Parameters
    ----------
    panels : sequence of (title, array, colour-bar label)
        The images to draw.
    path : `str` or path-like
        Output PNG; written atomically (to a temporary name, then renamed).
    title : `str`, optional
        Figure title.
    extent : `tuple`, optional
        (left, right, bottom, top) in axis units; pixel indices by default.
    axis_labels : `tuple` [`str`, `str`], optional
        x and y axis labels.
    symmetric : sequence of `bool`, optional
        Per panel: use a diverging colour map centred on zero (for residuals).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    symmetric = symmetric or [False] * n
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.2), squeeze=False, constrained_layout=True)
    for ax, (name, array, label), centred in zip(axes[0], panels, symmetric, strict=True):
        finite = array[np.isfinite(array)]
        if centred:
            limit = float(np.percentile(np.abs(finite), 99.5)) if finite.size else 1.0
            kwargs = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}
        else:
            low, high = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
            kwargs = {"cmap": "viridis", "vmin": float(low), "vmax": float(high)}
        shown = ax.imshow(array, origin="lower", extent=extent, interpolation="nearest", **kwargs)
        ax.set_title(name)
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
        fig.colorbar(shown, ax=ax, label=label, shrink=0.85)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_focal_plane(
    camera: Camera,
    panels: Sequence[tuple[str, Mapping[int, np.ndarray], str, bool]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
) -> None:
    """Draw per-detector binned images in focal-plane coordinates, side by side.

    Parameters
    ----------
    camera : `lsst.skyframes.camera.Camera`
        Geometry: each detector's bins are drawn where they sit in the focal
        plane (any rotation), in millimetres.
    panels : sequence of (title, {detector id: binned array}, colour-bar label, symmetric)
        The binned arrays span each detector's full pixel grid (afw bin
        layout); ``symmetric`` picks a diverging colour map centred on zero.
    path : `str` or path-like
        Output PNG, written atomically.
    title : `str`, optional
        Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .statistics import bin_edges

    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.4 * len(panels), 4.8), squeeze=False, constrained_layout=True
    )
    for ax, (name, arrays, label, centred) in zip(axes[0], panels, strict=True):
        finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays.values()] or [np.zeros(1)])
        if finite.size == 0:
            # Nothing finite to draw (e.g. the noise of a sky frame from one input): blank panel.
            finite = np.zeros(1)
            name = f"{name} (no finite values)"
        if centred:
            limit = float(np.percentile(np.abs(finite), 99.5)) or 1.0
            norm = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}
        else:
            low, high = np.percentile(finite, [0.5, 99.5])
            if not high > low:
                # A constant panel (e.g. residuals of a one-input sky frame): one colour.
                low, high = low - (abs(low) or 1.0), high + (abs(high) or 1.0)
            norm = {"cmap": "viridis", "vmin": float(low), "vmax": float(high)}
        mesh = None
        for detector_id, array in arrays.items():
            detector = camera[detector_id]
            ny, nx = array.shape
            # Bin edges in pixel coordinates (pixel centres at integers), mapped to the focal plane.
            xe = bin_edges(detector.width, nx) - 0.5
            ye = bin_edges(detector.height, ny) - 0.5
            gx, gy = np.meshgrid(xe, ye)
            fx, fy = detector.pixel_to_focal_plane(gx, gy)
            mesh = ax.pcolormesh(fx, fy, array, shading="flat", **norm)
            cx, cy = detector.pixel_to_focal_plane(*detector.centre_pixel)
            ax.text(float(cx), float(cy), detector.name, ha="center", va="center", fontsize=7, alpha=0.6)
        ax.set_aspect("equal")
        ax.set_title(name)
        ax.set_xlabel("focal plane x [mm]")
        ax.set_ylabel("focal plane y [mm]")
        if mesh is not None:
            fig.colorbar(mesh, ax=ax, label=label, shrink=0.85)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def _save(fig, path: str | os.PathLike[str]) -> None:
    import matplotlib.pyplot as plt

    path = os.fspath(path)
    tmp = f"{path}.tmp.png"
    try:
        fig.savefig(tmp, dpi=90)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
