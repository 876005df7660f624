"""Figures: sky frames, their errors and corrected images."""

from __future__ import annotations

__all__ = ["colour_limits", "draw_titles", "plot_focal_plane", "plot_panels", "save_png", "wrap_title"]

import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .camera import Camera

# Half-width of the colour scale about the residual sky, in clipped standard deviations: wide
# enough for the large-scale residual, narrow enough that stars saturate instead of setting it.
SKY_SCALE_SIGMA = 4.0


def colour_limits(
    arrays: Sequence[np.ndarray], symmetric: bool = False, about_sky: bool = False
) -> tuple[float, float]:
    """Return the colour-scale limits of images drawn on one scale.

    Parameters
    ----------
    arrays : sequence of `numpy.ndarray`
        The images; non-finite pixels are ignored.
    symmetric : `bool`, optional
        Centre the scale on zero (residuals): ``±`` the 99.5th percentile of
        ``|value|``.
    about_sky : `bool`, optional
        Centre the scale on the sky (a sky-subtracted image whose objects
        would otherwise set it): the 3-sigma clipped mean (MEANCLIP) of the
        pixels ``±`` `SKY_SCALE_SIGMA` clipped standard deviations.

    Returns
    -------
    vmin, vmax : `float`
        Limits with ``vmax > vmin``; 0.5th to 99.5th percentile when neither
        option is set.
    """
    from .statistics import box_statistic

    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays] or [np.zeros(0)])
    if finite.size == 0:
        return (-1.0, 1.0)
    if about_sky:
        clipped = box_statistic(finite, None, "MEANCLIP")
        sigma = float(clipped.error) * float(np.sqrt(clipped.count))
        half_width = SKY_SCALE_SIGMA * sigma if sigma > 0 else 1.0
        return (float(clipped.value) - half_width, float(clipped.value) + half_width)
    if symmetric:
        limit = float(np.percentile(np.abs(finite), 99.5)) or 1.0
        return (-limit, limit)
    low, high = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    return (low, high if high > low else low + 1.0)


def wrap_title(text: str, width_inches: float, fontsize: float = 12.0) -> str:
    """Break a title into lines that fit a width (so that none is cut off).

    Parameters
    ----------
    text : `str`
        The title; existing line breaks are kept.
    width_inches : `float`
        Width available, in inches.
    fontsize : `float`, optional
        Font size in points.

    Returns
    -------
    wrapped : `str`
    """
    # An average glyph of matplotlib's default sans-serif font is ~0.6 em wide.
    columns = max(10, int(width_inches * 72.0 / (0.6 * fontsize)))
    return "\n".join(
        textwrap.fill(line, columns, break_long_words=False, break_on_hyphens=False) if line else line
        for line in text.split("\n")
    )


def draw_titles(fig: Figure, axes: Sequence, names: Sequence[str], title: str) -> None:
    """Set panel titles and the figure title, wrapped to the space they have."""
    width = fig.get_figwidth()
    for ax, name in zip(axes, names, strict=True):
        # A panel title is centred over its axes, which the colour bar and the axis labels leave
        # most of the panel's width; a title may overhang its axes a little, not the figure.
        ax.set_title(wrap_title(name, 0.8 * width / len(axes), 11.0), fontsize=11.0)
    if title:
        fig.suptitle(wrap_title(title, 0.95 * width, 12.0), fontsize=12.0)


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
    for ax, (_, array, label), centred in zip(axes[0], panels, symmetric, strict=True):
        vmin, vmax = colour_limits([array], symmetric=centred)
        cmap = "RdBu_r" if centred else "viridis"
        shown = ax.imshow(
            array, origin="lower", extent=extent, interpolation="nearest", cmap=cmap, vmin=vmin, vmax=vmax
        )
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
        fig.colorbar(shown, ax=ax, label=label, shrink=0.85)
    draw_titles(fig, axes[0], [name for name, _, _ in panels], title)
    save_png(fig, path)


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
    titles = []
    for ax, (name, arrays, label, centred) in zip(axes[0], panels, strict=True):
        if not any(np.isfinite(a).any() for a in arrays.values()):
            # Nothing to draw (e.g. the noise of a sky frame from one input): say so.
            name = f"{name} (no finite values)"
        titles.append(name)
        vmin, vmax = colour_limits(list(arrays.values()), symmetric=centred)
        norm = {"cmap": "RdBu_r" if centred else "viridis", "vmin": vmin, "vmax": vmax}
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
        ax.set_xlabel("focal plane x [mm]")
        ax.set_ylabel("focal plane y [mm]")
        if mesh is not None:
            fig.colorbar(mesh, ax=ax, label=label, shrink=0.85)
    draw_titles(fig, axes[0], titles, title)
    save_png(fig, path)


def save_png(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Write a figure to a PNG atomically (a temporary name, then renamed) and close it.

    Parameters
    ----------
    fig : `matplotlib.figure.Figure`
        The figure; closed in pyplot if pyplot manages it.
    path : `str` or path-like
        Output PNG.
    """
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
