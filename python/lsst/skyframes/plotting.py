"""Figures: sky frames, their errors and corrected images."""

from __future__ import annotations

__all__ = ["plot_panels"]

import os
from collections.abc import Sequence

import numpy as np


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
    path = os.fspath(path)
    tmp = f"{path}.tmp.png"
    try:
        fig.savefig(tmp, dpi=90)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
