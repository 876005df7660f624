"""Binned focal-plane mosaics of a visit: block-mean binning and placement.

`bin_image` reduces one detector image to blocks of ``binning`` pixels
(afw's ``binImage``, but ignoring masked and non-finite pixels);
`focal_plane_mosaic` places every detector's binned image where it sits in
the focal plane, on a grid whose pixels are ``binning`` detector pixels wide
(the Rubin ``makeCameraImage`` of a visit). `mosaic_figure` and
`plot_mosaics` draw them.

Everything is vectorised; the only loops run over detectors and panels.
"""

from __future__ import annotations

__all__ = [
    "MosaicGeometry",
    "bin_image",
    "focal_plane_mosaic",
    "mosaic_figure",
    "plot_mosaics",
]

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lsst.images import Image, MaskedImage

from .errors import BoxMismatchError
from .plotting import colour_limits, draw_titles, save_png
from .statistics import bad_pixel_mask

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .camera import Camera, DetectorGeometry

# Metadata keys of a mosaic image: where its pixel grid sits in the focal plane.
_KEY_X_MIN = "MOSAIC.FPXMIN"
_KEY_Y_MIN = "MOSAIC.FPYMIN"
_KEY_PIXEL = "MOSAIC.PIXELMM"
_KEY_BINNING = "MOSAIC.BINNING"


def bin_image(
    image: Image | MaskedImage | np.ndarray,
    binning: int,
    badPlanes: Iterable[str] = ("BAD", "SAT", "NO_DATA"),
) -> np.ndarray:
    """Return the block mean of an image, ignoring masked and non-finite pixels.

    Parameters
    ----------
    image : `lsst.images.Image`, `lsst.images.MaskedImage` or `numpy.ndarray`
        The image (a masked image's mask selects the ignored pixels).
    binning : `int`
        Block size in pixels, along both axes.
    badPlanes : iterable of `str`, optional
        Mask planes whose pixels are ignored (masked images only).

    Returns
    -------
    binned : `numpy.ndarray`
        float64 array of shape ``(H // binning, W // binning)``: the mean of
        the good pixels of each block, NaN where a block has none. As with
        afw's ``binImage``, a remainder of fewer than ``binning`` rows or
        columns at the top or right is left out.

    Raises
    ------
    lsst.skyframes.errors.BoxMismatchError
        Raised if ``binning`` is below 1 or larger than the image.
    """
    bad = None
    if isinstance(image, MaskedImage):
        array = image.image.array
        bad = bad_pixel_mask(image.mask, list(badPlanes))
    elif isinstance(image, Image):
        array = image.array
    else:
        array = np.asarray(image)
    binning = int(binning)
    height, width = array.shape
    if binning < 1 or binning > min(height, width):
        raise BoxMismatchError(
            f"Cannot bin a {width}x{height} image in blocks of {binning} pixels; choose a binning between "
            f"1 and {min(height, width)}."
        )
    ny, nx = height // binning, width // binning
    cut = (slice(0, ny * binning), slice(0, nx * binning))
    good = np.isfinite(array[cut])
    if bad is not None:
        good &= ~bad[cut]
    # float32 working arrays with float64 sums: one image-sized temporary, not
    # a float64 copy of a 4k x 4k detector.
    values = np.where(good, array[cut], np.float32(0.0)).astype(np.float32, copy=False)
    blocks = (ny, binning, nx, binning)
    sums = values.reshape(blocks).sum(axis=(1, 3), dtype=np.float64)
    counts = good.reshape(blocks).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


@dataclasses.dataclass(frozen=True)
class MosaicGeometry:
    """A regular grid over the focal plane.

    Attributes
    ----------
    xMin, yMin : `float`
        Focal-plane position (mm) of the lower-left corner of mosaic pixel
        ``(0, 0)``; pixel ``(i, j)`` covers ``[xMin + i * pixelMm, xMin +
        (i + 1) * pixelMm)`` in x, likewise in y.
    pixelMm : `float`
        Mosaic pixel size in mm.
    shape : `tuple` [`int`, `int`]
        ``(ny, nx)``.
    binning : `int`
        Detector pixels per mosaic pixel (per axis).
    """

    xMin: float
    yMin: float
    pixelMm: float
    shape: tuple[int, int]
    binning: int

    @classmethod
    def fromCamera(cls, camera: Camera, binning: int) -> MosaicGeometry:
        """Return the grid covering every detector of a camera.

        Parameters
        ----------
        camera : `~lsst.skyframes.camera.Camera`
            The camera; the grid covers the union of its detectors' pixel
            areas.
        binning : `int`
            Detector pixels per mosaic pixel; the mosaic pixel is ``binning``
            times the camera's most common pixel size.
        """
        sizes = [d.pixel_size_mm for d in camera]
        pixel_mm = int(binning) * max(set(sizes), key=sizes.count)
        box = camera.focal_plane_bbox()
        # The small tolerance keeps round-off from adding an empty column.
        nx = max(math.ceil((box.x_max - box.x_min) / pixel_mm - 1e-9), 1)
        ny = max(math.ceil((box.y_max - box.y_min) / pixel_mm - 1e-9), 1)
        return cls(box.x_min, box.y_min, pixel_mm, (ny, nx), int(binning))

    @classmethod
    def fromMetadata(cls, image: Image) -> MosaicGeometry:
        """Return the grid of a mosaic made by `focal_plane_mosaic`."""
        native = image.metadata.native if image.metadata is not None else {}
        missing = [k for k in (_KEY_X_MIN, _KEY_Y_MIN, _KEY_PIXEL, _KEY_BINNING) if k not in native]
        if missing:
            raise BoxMismatchError(
                f"The image lacks the mosaic metadata {', '.join(missing)}; make it with focal_plane_mosaic."
            )
        return cls(
            float(native[_KEY_X_MIN]),
            float(native[_KEY_Y_MIN]),
            float(native[_KEY_PIXEL]),
            tuple(image.bbox.shape),
            int(native[_KEY_BINNING]),
        )

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``(left, right, bottom, top)`` in mm, for ``imshow``."""
        ny, nx = self.shape
        return (self.xMin, self.xMin + nx * self.pixelMm, self.yMin, self.yMin + ny * self.pixelMm)

    def toMosaicIndex(self, fx: Any, fy: Any) -> tuple[np.ndarray, np.ndarray]:
        """Return the (continuous) mosaic index of focal-plane points, pixel
        centres at integers."""
        ix = (np.asarray(fx, dtype=np.float64) - self.xMin) / self.pixelMm - 0.5
        iy = (np.asarray(fy, dtype=np.float64) - self.yMin) / self.pixelMm - 0.5
        return ix, iy


def _quarter_turns(detector: DetectorGeometry) -> int | None:
    quarter = detector.rotation_deg / 90.0
    return int(round(quarter)) % 4 if quarter == round(quarter) else None


def _place_axis_aligned(
    mosaic: np.ndarray, geometry: MosaicGeometry, detector: DetectorGeometry, binned: np.ndarray
) -> None:
    """Copy every binned pixel to one mosaic pixel (rotations by multiples of
    90 degrees with the mosaic's pixel size): the block keeps its values
    exactly, placed at the nearest whole mosaic pixel."""
    b = geometry.binning
    ny, nx = binned.shape
    # Centres of binned pixels (0, 0), (1, 0) and (0, 1), in detector pixels.
    px = np.array([0.5 * (b - 1), b + 0.5 * (b - 1), 0.5 * (b - 1)])
    py = np.array([0.5 * (b - 1), 0.5 * (b - 1), b + 0.5 * (b - 1)])
    ix, iy = geometry.toMosaicIndex(*detector.pixel_to_focal_plane(px, py))
    # One binned step is exactly one mosaic pixel along +-x or +-y; round the
    # origin once and step in integers so no two binned pixels can collide.
    origin_x, origin_y = int(np.rint(ix[0])), int(np.rint(iy[0]))
    step_xx, step_xy = int(np.rint(ix[1] - ix[0])), int(np.rint(iy[1] - iy[0]))
    step_yx, step_yy = int(np.rint(ix[2] - ix[0])), int(np.rint(iy[2] - iy[0]))
    jj, ii = np.mgrid[0:ny, 0:nx]
    mx = origin_x + ii * step_xx + jj * step_yx
    my = origin_y + ii * step_xy + jj * step_yy
    inside = (mx >= 0) & (mx < mosaic.shape[1]) & (my >= 0) & (my < mosaic.shape[0])
    mosaic[my[inside], mx[inside]] = binned[inside]


def _place_resampled(
    mosaic: np.ndarray, geometry: MosaicGeometry, detector: DetectorGeometry, binned: np.ndarray
) -> None:
    """Fill each mosaic pixel whose centre falls on the detector with the
    binned pixel under it (nearest-pixel resampling, any rotation)."""
    b = geometry.binning
    corners = detector.corners_mm()
    ix, iy = geometry.toMosaicIndex(corners[:, 0], corners[:, 1])
    x0, x1 = max(int(np.floor(ix.min())), 0), min(int(np.ceil(ix.max())), mosaic.shape[1] - 1)
    y0, y1 = max(int(np.floor(iy.min())), 0), min(int(np.ceil(iy.max())), mosaic.shape[0] - 1)
    if x1 < x0 or y1 < y0:
        return
    my, mx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
    fx = geometry.xMin + (mx + 0.5) * geometry.pixelMm
    fy = geometry.yMin + (my + 0.5) * geometry.pixelMm
    px, py = detector.focal_plane_to_pixel(fx, fy)
    # Pixel k covers [k - 0.5, k + 0.5); binned pixel n covers pixels [n b, (n + 1) b).
    bx = np.floor((px + 0.5) / b).astype(np.int64)
    by = np.floor((py + 0.5) / b).astype(np.int64)
    inside = (bx >= 0) & (bx < binned.shape[1]) & (by >= 0) & (by < binned.shape[0])
    mosaic[my[inside], mx[inside]] = binned[by[inside], bx[inside]]


def focal_plane_mosaic(camera: Camera, binned: Mapping[int, np.ndarray], binning: int) -> Image:
    """Place binned detector images at their focal-plane positions.

    Parameters
    ----------
    camera : `~lsst.skyframes.camera.Camera`
        Geometry of the detectors.
    binned : mapping [`int`, `numpy.ndarray`]
        Per detector id, its image binned by ``binning`` (`bin_image`):
        binned pixel ``(i, j)`` covers detector pixels ``[i b, (i + 1) b)``
        by ``[j b, (j + 1) b)``. Detectors left out stay empty.
    binning : `int`
        The binning of the inputs; the mosaic's pixels are ``binning``
        detector pixels wide.

    Returns
    -------
    mosaic : `lsst.images.Image`
        float32, NaN where no detector lies, covering the camera
        (`MosaicGeometry.fromCamera`); metadata ``MOSAIC.FPXMIN``,
        ``MOSAIC.FPYMIN`` (mm of the lower-left corner of pixel ``(0, 0)``),
        ``MOSAIC.PIXELMM`` and ``MOSAIC.BINNING``. Row ``j`` is focal-plane
        y, column ``i`` focal-plane x.

    Notes
    -----
    A detector rotated by a multiple of 90 degrees whose pixels have the
    mosaic's size is copied value for value, each binned pixel landing on
    the mosaic pixel nearest to its centre (one rounding per detector, so
    the block keeps its shape exactly); other detectors are resampled (each
    mosaic pixel takes the binned pixel under its centre).
    """
    geometry = MosaicGeometry.fromCamera(camera, binning)
    mosaic = np.full(geometry.shape, np.nan, dtype=np.float32)
    for detector_id, array in binned.items():
        detector = camera[detector_id]
        expected = (detector.height // geometry.binning, detector.width // geometry.binning)
        if array.shape != expected:
            raise BoxMismatchError(
                f"Binned image of detector {detector_id} ({detector.name!r}) is {array.shape} but binning "
                f"{geometry.binning} of a {detector.width}x{detector.height} detector gives {expected}."
            )
        aligned = _quarter_turns(detector) is not None and math.isclose(
            detector.pixel_size_mm * geometry.binning, geometry.pixelMm, rel_tol=1e-12
        )
        (_place_axis_aligned if aligned else _place_resampled)(mosaic, geometry, detector, array)
    metadata = {
        _KEY_X_MIN: geometry.xMin,
        _KEY_Y_MIN: geometry.yMin,
        _KEY_PIXEL: geometry.pixelMm,
        _KEY_BINNING: geometry.binning,
    }
    return Image(mosaic, metadata=metadata)


def mosaic_figure(
    panels: Sequence[tuple[str, Image]],
    *,
    title: str = "",
    label: str = "",
    symmetric: bool = False,
    shared: bool = True,
    about_sky: bool = False,
) -> Figure:
    """Draw focal-plane mosaics side by side (without pyplot's global state).

    Parameters
    ----------
    panels : sequence of (`str`, `lsst.images.Image`)
        Panel titles and mosaics made by `focal_plane_mosaic`.
    title : `str`, optional
        Figure title.
    label : `str`, optional
        Colour-bar label.
    symmetric : `bool`, optional
        Diverging colour map centred on zero (for residuals).
    shared : `bool`, optional
        One colour scale for all panels, so that they compare directly.
    about_sky : `bool`, optional
        Diverging colour map centred on the clipped sky level, a few clipped
        standard deviations wide (for sky-corrected images, whose objects
        would otherwise set the scale); see
        `~lsst.skyframes.plotting.colour_limits`.

    Returns
    -------
    figure : `matplotlib.figure.Figure`
        A figure not registered with pyplot (safe in tasks and threads);
        butler's ``Plot`` storage class writes it as PNG.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0 * len(panels), 4.6), constrained_layout=True)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    cmap = "RdBu_r" if symmetric or about_sky else "viridis"
    common = colour_limits([p.array for _, p in panels], symmetric, about_sky) if shared else None
    for ax, (_, mosaic) in zip(axes, panels, strict=True):
        vmin, vmax = common if common is not None else colour_limits([mosaic.array], symmetric, about_sky)
        geometry = MosaicGeometry.fromMetadata(mosaic)
        shown = ax.imshow(
            mosaic.array,
            origin="lower",
            extent=geometry.extent,
            interpolation="nearest",
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
        )
        ax.set_xlabel("focal plane x [mm]")
        ax.set_ylabel("focal plane y [mm]")
        figure.colorbar(shown, ax=ax, label=label, shrink=0.85)
    draw_titles(figure, axes, [name for name, _ in panels], title)
    return figure


def plot_mosaics(
    panels: Sequence[tuple[str, Image]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    label: str = "",
    symmetric: bool = False,
    shared: bool = True,
) -> None:
    """Write `mosaic_figure` of the panels to a PNG, atomically.

    Parameters
    ----------
    panels, title, label, symmetric, shared
        As for `mosaic_figure`.
    path : `str` or path-like
        Output PNG; written under a temporary name and renamed.
    """
    save_png(mosaic_figure(panels, title=title, label=label, symmetric=symmetric, shared=shared), path)
