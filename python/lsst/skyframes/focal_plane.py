"""A background binned on a grid in focal-plane coordinates.

`FocalPlaneBackground` is the Rubin pipelines' ``lsst.pipe.tasks.background``
class of the same name, with the same geometry and the same numbers, on
lsst.images types:

- the grid covers the union of the detectors' corners (mm) plus one padding
  bin on each side; focal-plane position ``f`` has sample coordinate
  ``(f - f_min) / size + 1`` per axis, and bin ``i`` is centred on sample
  ``i`` (it covers ``[i - 0.5, i + 0.5)``);
- each detector adds, per bin, ``mean * N`` and ``N``, where ``mean`` is the
  3-sigma, 3-pass clipped mean of its good pixels whose centres fall in the
  bin and ``N`` their number before clipping; merging adds the sums;
- `FocalPlaneBackground.getStatsImage` divides, marks sparsely sampled bins
  bad, optionally smooths, and fills bad bins by interpolating along rows and
  then columns; `FocalPlaneBackground.toCcdBackground` samples the result
  back onto one detector as a `~lsst.skyframes.background.BackgroundList`.

Unlike the reference, no Python loop runs over bins or pixels, and the model
is persisted as FITS (`FocalPlaneBackground.writeFits`) rather than pickled.
"""

from __future__ import annotations

__all__ = [
    "FPBG_VERSION",
    "FocalPlaneBackground",
    "FocalPlaneBackgroundConfig",
]

import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits
from numba import prange
from scipy.ndimage import gaussian_filter

from lsst.images import Image, Mask, MaskedImage
from lsst.pex.config import ChoiceField, Config, Field, FieldValidationError, ListField, RangeField

from ._jit import njit
from .background import BackgroundControl, BackgroundList, BackgroundMI, single_background_list
from .errors import BackgroundFileError, BoxMismatchError, NoDataError
from .images import image_and_mask
from .interpolate import (
    Interpolate,
    UndersampleStyle,
    interpolate_lines,
    lookupMaxInterpStyle,
    lookupMinInterpPoints,
    stringToInterpStyle,
)
from .mask_planes import default_mask_schema
from .persistence import read_fits_safely, write_hdus_atomically
from .statistics import Property, bad_pixel_mask, binned_statistics, labelled_statistics

if TYPE_CHECKING:
    from lsst.images import Box

    from .camera import Camera, DetectorGeometry

FPBG_VERSION = 1
"""Schema version (header key ``FPBGVER``) of the files `writeFits` makes."""

# MEANCLIP settings of the per-bin statistic, as in the reference (afw's
# StatisticsControl defaults).
_CLIP = 3.0
_N_ITER = 3


class FocalPlaneBackgroundConfig(Config):
    """Configuration of a `FocalPlaneBackground`."""

    xSize = RangeField[float](
        doc="Bin size in x, in focal-plane units (mm); no default, as in the reference (obs packages "
        "set it; lsst.skyframes.camera_overrides sizes it from a camera).",
        default=None,
        min=0.0,
        inclusiveMin=False,
    )
    ySize = RangeField[float](
        doc="Bin size in y, in focal-plane units (mm); no default, like xSize.",
        default=None,
        min=0.0,
        inclusiveMin=False,
    )
    pixelSize = RangeField[float](
        doc="Pixel size, in the units of xSize and ySize (mm).", default=1.0, min=0.0, inclusiveMin=False
    )
    minFrac = RangeField[float](
        doc="Minimum fraction of a bin's pixels that must be good for the bin to be used.",
        default=0.1,
        min=0.0,
    )
    mask = ListField[str](
        doc="Mask planes whose pixels are ignored.",
        default=["BAD", "SAT", "INTRP", "DETECTED", "DETECTED_NEGATIVE", "EDGE", "NO_DATA"],
    )
    interpolation = ChoiceField[str](
        doc="How to interpolate the background values over bad bins, and the style of the "
        "per-detector models.",
        default="AKIMA_SPLINE",
        allowed={
            "CONSTANT": "Use a single constant value",
            "LINEAR": "Use linear interpolation",
            "NATURAL_SPLINE": "Use natural cubic spline interpolation",
            "AKIMA_SPLINE": "Use Akima spline interpolation",
        },
    )
    doSmooth = Field[bool](doc="Smooth the focal-plane background before filling bad bins?", default=False)
    smoothScale = RangeField[float](
        doc="Gaussian smoothing sigma, in bins.", default=2.0, min=0.0, inclusiveMin=False
    )
    binning = RangeField[int](
        doc="Binning of the per-detector background models, in pixels.", default=64, min=1
    )

    def validate(self) -> None:
        # pex_config's own message for a required field ("Required value cannot
        # be None") says neither what the value means nor where it comes from.
        for name in ("xSize", "ySize"):
            if getattr(self, name) is None:
                raise FieldValidationError(
                    type(self)._fields[name],
                    self,
                    f"{name} is unset and has no default (as in the reference, the instrument sets "
                    "it). Set xSize and ySize (bin size, in the units of pixelSize: mm with "
                    "pixelSize=0.015) in an obs config override file or with -c LABEL:FIELD.xSize=..., "
                    "or take them from the camera: pipetask run --instrument "
                    "lsst.skyframes.instrument.SkyFramesInstrument with SKYFRAMES_CAMERA=camera.yaml, or "
                    "lsst.skyframes.camera_overrides.camera_sized_config(config, camera, detectorsPerBin).",
                )
        super().validate()


# Header keys of the config fields (FITS keys are at most eight characters).
_CONFIG_KEYS = {
    "xSize": "XSIZE",
    "ySize": "YSIZE",
    "pixelSize": "PIXSIZE",
    "minFrac": "MINFRAC",
    "mask": "MASK",
    "interpolation": "INTERP",
    "doSmooth": "DOSMOOTH",
    "smoothScale": "SMOOTHSC",
    "binning": "BINNING",
}
_GEOMETRY_KEYS = ("NX", "NY", "FPXMIN", "FPYMIN")


class FocalPlaneBackground:
    """Background model binned on a grid in focal-plane coordinates.

    Build one with `fromCamera` (or `fromSimilar`, `readFits`), then
    accumulate detectors with `addCcd` and combine partial models with
    `merge`.

    Parameters
    ----------
    config : `FocalPlaneBackgroundConfig`
        Configuration; validated here.
    dims : `tuple` [`int`, `int`]
        Number of bins ``(nx, ny)``.
    fpMin : `tuple` [`float`, `float`]
        Focal-plane position (mm) ``(x, y)`` that maps to sample coordinates
        ``(1, 1)``.
    values, numbers : `numpy.ndarray`, optional
        Initial sums ``sum(mean * N)`` and ``sum(N)``, shape ``(ny, nx)``
        (copied); zero if not given.
    """

    def __init__(
        self,
        config: FocalPlaneBackgroundConfig,
        dims: tuple[int, int],
        fpMin: tuple[float, float],
        values: np.ndarray | None = None,
        numbers: np.ndarray | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.dims = (int(dims[0]), int(dims[1]))
        self.fpMin = (float(fpMin[0]), float(fpMin[1]))
        if min(self.dims) < 1 or not all(math.isfinite(v) for v in self.fpMin):
            raise BoxMismatchError(
                f"A focal-plane grid needs at least 1x1 bins and a finite origin; got dims {self.dims} "
                f"and fpMin {self.fpMin}."
            )
        shape = (self.dims[1], self.dims[0])
        self._values = np.zeros(shape) if values is None else np.array(values, dtype=np.float64)
        self._numbers = np.zeros(shape) if numbers is None else np.array(numbers, dtype=np.float64)
        if self._values.shape != shape or self._numbers.shape != shape:
            raise BoxMismatchError(
                f"values {self._values.shape} and numbers {self._numbers.shape} must both have the "
                f"grid's shape (ny, nx) = {shape}."
            )

    @classmethod
    def fromCamera(cls, config: FocalPlaneBackgroundConfig, camera: Camera) -> FocalPlaneBackground:
        """Make an empty background whose grid covers a camera.

        Parameters
        ----------
        config : `FocalPlaneBackgroundConfig`
            Configuration (bin sizes in mm).
        camera : `~lsst.skyframes.camera.Camera`
            The camera; the grid spans the union of its detectors' corners
            plus one padding bin on each side.

        Returns
        -------
        background : `FocalPlaneBackground`
            ``(ceil(width / xSize) + 2, ceil(height / ySize) + 2)`` empty bins.
        """
        config.validate()
        box = camera.focal_plane_bbox()
        nx = int(math.ceil((box.x_max - box.x_min) / config.xSize)) + 2
        ny = int(math.ceil((box.y_max - box.y_min) / config.ySize)) + 2
        return cls(config, (nx, ny), (box.x_min, box.y_min))

    @classmethod
    def fromSimilar(cls, other: FocalPlaneBackground) -> FocalPlaneBackground:
        """Make an empty background with the geometry and config of another."""
        return cls(other.config, other.dims, other.fpMin)

    def clone(self) -> FocalPlaneBackground:
        """Return a copy (the sums are copied, the config is shared)."""
        return type(self)(self.config, self.dims, self.fpMin, self._values, self._numbers)

    def __repr__(self) -> str:
        return f"FocalPlaneBackground({self._describe()})"

    def _describe(self) -> str:
        nx, ny = self.dims
        return (
            f"{nx}x{ny} bins of {self.config.xSize:g}x{self.config.ySize:g} mm from "
            f"({self.fpMin[0]:g}, {self.fpMin[1]:g}) mm"
        )

    @property
    def values(self) -> np.ndarray:
        """Sum of ``mean * N`` per bin, shape ``(ny, nx)`` (the array itself)."""
        return self._values

    @property
    def numbers(self) -> np.ndarray:
        """Sum of ``N`` (good pixels) per bin, shape ``(ny, nx)`` (the array itself)."""
        return self._numbers

    # --- Geometry -------------------------------------------------------------

    def focalPlaneToSample(self, fx: Any, fy: Any) -> tuple[np.ndarray, np.ndarray]:
        """Transform focal-plane mm to sample coordinates (bin ``i`` centred on ``i``)."""
        sx = (np.asarray(fx, dtype=np.float64) - self.fpMin[0]) / self.config.xSize + 1.0
        sy = (np.asarray(fy, dtype=np.float64) - self.fpMin[1]) / self.config.ySize + 1.0
        return sx, sy

    def sampleToFocalPlane(self, sx: Any, sy: Any) -> tuple[np.ndarray, np.ndarray]:
        """Transform sample coordinates to focal-plane mm (inverse of `focalPlaneToSample`)."""
        fx = (np.asarray(sx, dtype=np.float64) - 1.0) * self.config.xSize + self.fpMin[0]
        fy = (np.asarray(sy, dtype=np.float64) - 1.0) * self.config.ySize + self.fpMin[1]
        return fx, fy

    def _pixel_to_sample(self, detector: DetectorGeometry) -> np.ndarray:
        """Return the affine map from a detector's pixels to sample coordinates.

        Returns
        -------
        coefficients : `numpy.ndarray`
            ``[[ox, ax, bx], [oy, ay, by]]``: sample ``s = (o + a * x) + b * y``
            at pixel ``(x, y)``, evaluated in that order by both binning
            paths so that they put every pixel in the same bin. For an
            axis-aligned detector the cross terms are exactly zero.
        """
        height, width = detector.shape
        corners_x = np.array([0.0, float(width), 0.0])
        corners_y = np.array([0.0, 0.0, float(height)])
        sx, sy = self.focalPlaneToSample(*detector.pixel_to_focal_plane(corners_x, corners_y))
        return np.array(
            [
                [sx[0], (sx[1] - sx[0]) / width, (sx[2] - sx[0]) / height],
                [sy[0], (sy[1] - sy[0]) / width, (sy[2] - sy[0]) / height],
            ]
        )

    # --- Accumulation ---------------------------------------------------------

    def addCcd(self, image: Any, detector: DetectorGeometry) -> None:
        """Add one detector's image to the sums.

        Parameters
        ----------
        image : `lsst.images.MaskedImage` or `lsst.images.VisitImage`
            The whole detector (a plain `lsst.images.Image` is accepted as
            unmasked); its bbox may start anywhere, but its array index
            ``(0, 0)`` is the detector's pixel ``(0, 0)``.
        detector : `~lsst.skyframes.camera.DetectorGeometry`
            Where the detector sits in the focal plane.

        Raises
        ------
        BoxMismatchError
            Raised if the image is not the detector's size.

        Notes
        -----
        Each pixel belongs to the bin containing its centre. Per bin, the
        3-sigma 3-pass clipped mean of the pixels not in the configured mask
        planes and finite, times their number ``N`` (before clipping), is
        added to `values` and ``N`` to `numbers`; bins with ``N = 0`` or a
        non-finite mean are skipped. Pixels falling outside the grid (a
        detector not part of the camera the grid was made for) are ignored.
        """
        pixels, mask = image_and_mask(image)
        if tuple(pixels.bbox.shape) != detector.shape:
            raise BoxMismatchError(
                f"Image bbox {pixels.bbox} is {tuple(pixels.bbox.shape)} (height, width) but detector "
                f"{detector.id} ({detector.name!r}) is {detector.shape}; pass the whole detector image."
            )
        bad = bad_pixel_mask(mask, list(self.config.mask)) if mask is not None else None
        coef = self._pixel_to_sample(detector)
        if coef[0, 2] == 0.0 and coef[1, 1] == 0.0:
            i, j, mean, n = self._rectangular_bins(pixels.array, bad, coef, swapped=False)
        elif coef[0, 1] == 0.0 and coef[1, 2] == 0.0:
            i, j, mean, n = self._rectangular_bins(pixels.array, bad, coef, swapped=True)
        else:
            i, j, mean, n = self._labelled_bins(pixels.array, bad, coef)
        nx, ny = self.dims
        use = (n > 0) & np.isfinite(mean) & (i >= 0) & (i < nx) & (j >= 0) & (j < ny)
        # Each (i, j) occurs once per detector, but add.at keeps that from
        # being an assumption.
        np.add.at(self._values, (j[use], i[use]), mean[use] * n[use])
        np.add.at(self._numbers, (j[use], i[use]), n[use])

    def _rectangular_bins(
        self, array: np.ndarray, bad: np.ndarray | None, coef: np.ndarray, swapped: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Bin statistics of an axis-aligned detector (the fast path).

        When each sample axis depends on one pixel axis only (rotation a
        multiple of 90 degrees; ``swapped`` for odd multiples, where pixel x
        runs along focal-plane y), the bins are rectangles of pixels: the bin
        of every pixel column and row is computed once and its change points
        become the edges of `binned_statistics`.
        """
        height, width = array.shape
        columns = np.arange(width, dtype=np.float64)
        rows = np.arange(height, dtype=np.float64)
        # With the cross terms exactly zero, a column's (row's) bin follows
        # from the pixel x (y) alone.
        col_i, col_j = (np.floor((o + a * columns) + b * 0.0 + 0.5).astype(np.int64) for o, a, b in coef)
        row_i, row_j = (np.floor((o + a * 0.0) + b * rows + 0.5).astype(np.int64) for o, a, b in coef)
        col_bins = col_j if swapped else col_i
        row_bins = row_i if swapped else row_j
        x_edges, x_labels = _runs(col_bins)
        y_edges, y_labels = _runs(row_bins)
        result = binned_statistics(array, bad, x_edges, y_edges, Property.MEANCLIP, _CLIP, _N_ITER)
        along_x, along_y = np.meshgrid(x_labels, y_labels)
        i, j = (along_y, along_x) if swapped else (along_x, along_y)
        return i.ravel(), j.ravel(), result.value.ravel(), result.count.ravel()

    def _labelled_bins(
        self, array: np.ndarray, bad: np.ndarray | None, coef: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Bin statistics of a detector at any rotation: every pixel gets the
        label of its grid bin and `labelled_statistics` reduces the groups.
        """
        height, width = array.shape
        # The sample coordinates are monotonic in x and y, so the detector's
        # range of bins is that of its corner pixels. Labels count within
        # that range, which keeps the label count (and the per-label work)
        # independent of the camera.
        corner_x = np.array([0.0, width - 1.0, 0.0, width - 1.0])
        corner_y = np.array([0.0, 0.0, height - 1.0, height - 1.0])
        corner_i, corner_j = (np.floor((o + a * corner_x) + b * corner_y + 0.5) for o, a, b in coef)
        i0, j0 = int(corner_i.min()), int(corner_j.min())
        sub_nx = int(corner_i.max()) - i0 + 1
        sub_ny = int(corner_j.max()) - j0 + 1
        labels = np.empty(array.shape, dtype=np.int32 if sub_nx * sub_ny < 2**31 else np.int64)
        _bin_labels(coef, i0, j0, sub_nx, sub_ny, labels)
        result = labelled_statistics(array, bad, labels, sub_nx * sub_ny, Property.MEANCLIP, _CLIP, _N_ITER)
        sub_j, sub_i = np.divmod(np.arange(sub_nx * sub_ny), sub_nx)
        return sub_i + i0, sub_j + j0, result.value, result.count

    def merge(self, other: FocalPlaneBackground) -> FocalPlaneBackground:
        """Add another background's sums to this one.

        Parameters
        ----------
        other : `FocalPlaneBackground`
            A background with the same grid.

        Returns
        -------
        self : `FocalPlaneBackground`
            This background, updated in place.

        Raises
        ------
        BoxMismatchError
            Raised if the grids (dims, origin, bin sizes or pixel size)
            differ.
        """
        same = (
            self.dims == other.dims
            and self.fpMin == other.fpMin
            and (self.config.xSize, self.config.ySize, self.config.pixelSize)
            == (other.config.xSize, other.config.ySize, other.config.pixelSize)
        )
        if not same:
            raise BoxMismatchError(
                f"Cannot merge focal-plane backgrounds with different grids: {self._describe()} "
                f"(pixel size {self.config.pixelSize:g}) vs {other._describe()} (pixel size "
                f"{other.config.pixelSize:g}); build both with fromCamera from the same camera and config."
            )
        self._values += other._values
        self._numbers += other._numbers
        return self

    def __iadd__(self, other: FocalPlaneBackground) -> FocalPlaneBackground:
        return self.merge(other)

    # --- The model ------------------------------------------------------------

    def getStatsImage(self) -> np.ndarray:
        """Return the background value of every bin, with bad bins filled.

        Returns
        -------
        stats : `numpy.ndarray`
            float64 array of shape ``(ny, nx)``.

        Raises
        ------
        NoDataError
            Raised if no bin has enough good pixels.

        Notes
        -----
        A bin is bad when ``numbers < minFrac * (xSize / pixelSize) *
        (ySize / pixelSize)``. With ``doSmooth`` the good bins are smoothed
        by a Gaussian of ``smoothScale`` bins, normalised by the smoothed
        good-bin weights (so bad bins get the weighted mean of good
        neighbours; bins beyond the kernel's reach stay bad). Bad bins are
        then interpolated along each row over its good bins, then along each
        column over the row-filled values, with ``interpolation`` reduced to
        the best style the number of good bins allows (afw's
        ``REDUCE_INTERP_ORDER``). A row with no good bin is left to the
        column step.
        """
        config = self.config
        with np.errstate(invalid="ignore", divide="ignore"):
            values = self._values / self._numbers
        threshold = config.minFrac * (config.xSize / config.pixelSize) * (config.ySize / config.pixelSize)
        bad = (self._numbers < threshold) | ~np.isfinite(values)
        if bad.all():
            raise NoDataError(
                f"No focal-plane background bin is good: all {bad.size} bins ({self.dims[0]}x{self.dims[1]}) "
                f"hold fewer than minFrac * (xSize / pixelSize) * (ySize / pixelSize) = {threshold:g} good "
                f"pixels (the fullest has {self._numbers.max():g}). Lower minFrac, use bigger bins, check "
                "pixelSize, or check that the mask planes do not reject (nearly) every pixel."
            )
        if config.doSmooth:
            weights = gaussian_filter(np.where(bad, 0.0, 1.0), config.smoothScale, mode="constant", cval=0.0)
            smoothed = gaussian_filter(
                np.where(bad, 0.0, values), config.smoothScale, mode="constant", cval=0.0
            )
            bad = weights <= 0.0
            with np.errstate(invalid="ignore", divide="ignore"):
                values = np.where(bad, np.nan, smoothed / weights)
        values[bad] = np.nan
        style = stringToInterpStyle(config.interpolation)
        _fill_lines(values, bad, style)
        _fill_lines(values.T, np.isnan(values).T, style)
        return values

    def toCcdBackground(self, detector: DetectorGeometry, bbox: Box) -> BackgroundList:
        """Return the model of one detector as a background list.

        Parameters
        ----------
        detector : `~lsst.skyframes.camera.DetectorGeometry`
            The detector.
        bbox : `lsst.images.Box`
            Its full-resolution bounding box (the detector's size; the origin
            may be anywhere).

        Returns
        -------
        bgList : `~lsst.skyframes.background.BackgroundList`
            One element: a `~lsst.skyframes.background.BackgroundMI` over
            ``bbox`` with ``max(H // binning, 1)`` by ``max(W // binning, 1)``
            bins, the configured interpolation style, ``REDUCE_INTERP_ORDER``
            and no approximation.

        Raises
        ------
        BoxMismatchError
            Raised if ``bbox`` is not the detector's size.
        NoDataError
            Raised if no bin is good (see `getStatsImage`) or the detector
            lies entirely outside the grid.

        Notes
        -----
        Binned pixel ``(i, j)`` takes the bilinear interpolation of the stats
        image (bin centres at integer sample coordinates) at the focal-plane
        position of detector pixel ``((i + 0.5) * binning, (j + 0.5) *
        binning)``, as the reference does. Positions outside the grid get the
        ``BAD`` mask bit and the mean of the other binned pixels; the
        variance plane is zero. As in the reference, when ``binning`` does
        not divide the detector's size the renderer spreads the
        ``W // binning`` bins over all ``W`` pixels, so the rendered model is
        stretched by ``W / (binning * (W // binning))`` about the detector's
        origin.
        """
        if tuple(bbox.shape) != detector.shape:
            raise BoxMismatchError(
                f"bbox {bbox} is {tuple(bbox.shape)} (height, width) but detector {detector.id} "
                f"({detector.name!r}) is {detector.shape}; pass the detector's full bounding box."
            )
        stats = self.getStatsImage()
        binning = self.config.binning
        height, width = detector.shape
        nbx, nby = max(width // binning, 1), max(height // binning, 1)
        x = (np.arange(nbx, dtype=np.float64) + 0.5) * binning
        y = (np.arange(nby, dtype=np.float64) + 0.5) * binning
        fx, fy = detector.pixel_to_focal_plane(x[np.newaxis, :], y[:, np.newaxis])
        binned = _bilinear(stats, *self.focalPlaneToSample(fx, fy))
        is_bad = ~np.isfinite(binned)
        if is_bad.all():
            raise NoDataError(
                f"Detector {detector.id} ({detector.name!r}) lies outside the focal-plane grid "
                f"({self._describe()}); use a background made from this detector's camera."
            )
        binned[is_bad] = binned[~is_bad].mean()
        mask = Mask(0, schema=default_mask_schema(), shape=binned.shape)
        mask.set("BAD", is_bad)
        stats_image = MaskedImage(
            Image(binned.astype(np.float32)),
            mask=mask,
            variance=Image(np.zeros(binned.shape, dtype=np.float32)),
        )
        style = stringToInterpStyle(self.config.interpolation)
        control = BackgroundControl(style, nbx, nby, UndersampleStyle.REDUCE_INTERP_ORDER)
        return single_background_list(BackgroundMI(bbox, stats_image, control), style)

    # --- Persistence ----------------------------------------------------------

    def writeFits(self, path: str | os.PathLike[str]) -> None:
        """Write the background to a FITS file, atomically.

        Parameters
        ----------
        path : `str` or path-like
            Destination, replaced if it exists. The file is written under a
            temporary name in the same directory and renamed, so it appears
            whole or not at all.

        Notes
        -----
        The primary HDU's header holds ``FPBGVER`` (`FPBG_VERSION`), the
        config fields (``XSIZE``, ``YSIZE``, ``PIXSIZE``, ``MINFRAC``,
        ``MASK`` comma-separated, ``INTERP``, ``DOSMOOTH``, ``SMOOTHSC``,
        ``BINNING``) and the grid (``NX``, ``NY``, ``FPXMIN``, ``FPYMIN``);
        image HDUs ``VALUES`` and ``NUMBERS`` hold the float64 sums.
        """
        path = os.fspath(path)
        config = self.config
        header = fits.Header()
        header["FPBGVER"] = (FPBG_VERSION, "FocalPlaneBackground file schema version")
        header["XSIZE"] = (float(config.xSize), "bin size in x (mm)")
        header["YSIZE"] = (float(config.ySize), "bin size in y (mm)")
        header["PIXSIZE"] = (float(config.pixelSize), "pixel size (mm)")
        header["MINFRAC"] = (float(config.minFrac), "minimum good fraction of a bin")
        header["MASK"] = ",".join(config.mask)  # no comment: long lists use CONTINUE cards
        header["INTERP"] = (config.interpolation, "interpolation style")
        header["DOSMOOTH"] = (bool(config.doSmooth), "smooth before filling bad bins")
        header["SMOOTHSC"] = (float(config.smoothScale), "smoothing sigma (bins)")
        header["BINNING"] = (int(config.binning), "per-detector model binning (pixels)")
        header["NX"] = (self.dims[0], "number of bins in x")
        header["NY"] = (self.dims[1], "number of bins in y")
        header["FPXMIN"] = (self.fpMin[0], "focal-plane x (mm) at sample 1")
        header["FPYMIN"] = (self.fpMin[1], "focal-plane y (mm) at sample 1")
        # astropy writes at most 20 characters of a float; make sure every
        # value comes back exactly rather than silently rounded.
        reread = fits.Header.fromstring(header.tostring())
        for key in ("XSIZE", "YSIZE", "PIXSIZE", "MINFRAC", "SMOOTHSC", "FPXMIN", "FPYMIN"):
            if reread[key] != header[key]:
                raise BackgroundFileError(
                    f"Cannot write {path}: header value {key}={header[key]!r} would be stored as "
                    f"{reread[key]!r}; use a value with fewer significant digits."
                )
        write_hdus_atomically(
            [
                fits.PrimaryHDU(header=header),
                fits.ImageHDU(self._values, name="VALUES"),
                fits.ImageHDU(self._numbers, name="NUMBERS"),
            ],
            path,
        )

    @classmethod
    def readFits(cls, path: str | os.PathLike[str]) -> FocalPlaneBackground:
        """Read a background written by `writeFits`.

        Parameters
        ----------
        path : `str` or path-like
            The file.

        Returns
        -------
        background : `FocalPlaneBackground`
            The background, with its config.

        Raises
        ------
        BackgroundFileError
            Raised if the file is missing, truncated or corrupt, has a header
            claiming more data than the file holds (see
            `~lsst.skyframes.persistence.check_fits_sizes`), has another
            ``FPBGVER``, lacks a key or an HDU, or holds arrays that do not
            match the grid; the message names the file.
        """
        path = os.fspath(path)
        # VALUES and NUMBERS are compared with NX/NY only once read; a header claiming a
        # huge (e.g. compressed) array is refused before astropy allocates it.
        return read_fits_safely(
            path,
            lambda hdul: cls._from_hdus(path, hdul),
            BackgroundFileError,
            failure="Cannot read FocalPlaneBackground file {path}: {err}",
            not_found="FocalPlaneBackground file not found: {path}",
        )

    @classmethod
    def _from_hdus(cls, path: str, hdul: fits.HDUList) -> FocalPlaneBackground:
        header = hdul[0].header
        if "FPBGVER" not in header:
            raise BackgroundFileError(
                f"{path} has no FPBGVER key in its primary header; it was not written by "
                "FocalPlaneBackground.writeFits."
            )
        if header["FPBGVER"] != FPBG_VERSION:
            raise BackgroundFileError(
                f"{path} is FocalPlaneBackground schema version {header['FPBGVER']!r}; this version of "
                f"skyframes reads version {FPBG_VERSION} only."
            )
        missing = [key for key in (*_CONFIG_KEYS.values(), *_GEOMETRY_KEYS) if key not in header]
        if missing:
            raise BackgroundFileError(f"{path} lacks the header key(s) {', '.join(missing)}.")
        config = FocalPlaneBackgroundConfig()
        for field, key in _CONFIG_KEYS.items():
            value = header[key]
            if field == "mask":
                value = [name for name in str(value).split(",") if name]
            setattr(config, field, value)
        dims = (int(header["NX"]), int(header["NY"]))
        arrays = []
        for name in ("VALUES", "NUMBERS"):
            if name not in hdul:
                raise BackgroundFileError(f"{path} has no {name} HDU.")
            data = hdul[name].data
            if data is None or data.shape != (dims[1], dims[0]):
                shape = None if data is None else data.shape
                raise BackgroundFileError(
                    f"{path}: HDU {name} has shape {shape} but the header describes a grid of "
                    f"(ny, nx) = {(dims[1], dims[0])}."
                )
            arrays.append(np.asarray(data, dtype=np.float64))
        return cls(config, dims, (float(header["FPXMIN"]), float(header["FPYMIN"])), *arrays)


@njit(cache=True, parallel=True)
def _bin_labels(
    coef: np.ndarray, i0: int, j0: int, sub_nx: int, sub_ny: int, labels: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Fill ``labels`` with the bin of each pixel, ``(j - j0) * sub_nx + (i - i0)``
    (``-1`` outside the ``sub_nx`` by ``sub_ny`` range), where
    ``(i, j) = floor(s + 0.5)`` and ``s`` is the affine sample map ``coef``
    (see `FocalPlaneBackground._pixel_to_sample`).

    One fused pass: computing the same with NumPy expressions takes some
    twenty full-size temporaries, several times slower than the statistic.
    """
    height, width = labels.shape
    for y in prange(height):
        fy = np.float64(y)
        for x in range(width):
            fx = np.float64(x)
            i = math.floor((coef[0, 0] + coef[0, 1] * fx) + coef[0, 2] * fy + 0.5) - i0
            j = math.floor((coef[1, 0] + coef[1, 1] * fx) + coef[1, 2] * fy + 0.5) - j0
            if 0 <= i < sub_nx and 0 <= j < sub_ny:
                labels[y, x] = j * sub_nx + i
            else:
                labels[y, x] = -1


def _runs(bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a sequence of bin indices into runs of equal values.

    Returns
    -------
    edges : `numpy.ndarray`
        ``n_runs + 1`` int64 edges: run ``k`` is ``bins[edges[k]:edges[k + 1]]``.
    labels : `numpy.ndarray`
        The bin index of each run.
    """
    starts = np.flatnonzero(np.diff(bins)) + 1
    edges = np.concatenate([[0], starts, [bins.size]]).astype(np.int64)
    return edges, bins[edges[:-1]]


def _fill_lines(array: np.ndarray, bad: np.ndarray, style: Interpolate) -> None:
    """Replace the bad entries of each row of ``array`` (in place) by
    interpolating over the row's good entries.

    Rows with the same pattern of bad entries share their nodes, so they are
    interpolated together; the style is reduced to what the number of good
    entries allows, and rows without good entries are left as they are.
    """
    if not bad.any():
        return
    patterns, inverse = np.unique(bad, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    positions = np.arange(array.shape[1], dtype=np.float64)
    minimum = lookupMinInterpPoints(style)
    for index, pattern in enumerate(patterns):
        n_good = int(np.count_nonzero(~pattern))
        if n_good == 0 or n_good == pattern.size:
            continue
        line_style = style if n_good >= minimum else lookupMaxInterpStyle(n_good)
        rows = np.flatnonzero(inverse == index)
        good = np.flatnonzero(~pattern)
        fill = np.flatnonzero(pattern)
        array[np.ix_(rows, fill)] = interpolate_lines(
            positions[good], array[np.ix_(rows, good)], positions[fill], line_style
        )


def _bilinear(grid: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Interpolate ``grid`` (value ``grid[j, i]`` at sample ``(i, j)``)
    bilinearly at ``(sx, sy)``; NaN outside ``[0, nx - 1] x [0, ny - 1]``.
    """
    ny, nx = grid.shape
    inside = (sx >= 0) & (sx <= nx - 1) & (sy >= 0) & (sy <= ny - 1)
    # Lower-left node, kept one short of the last so the last node itself is
    # reached with weight 1 from the cell before it.
    i0 = np.clip(np.floor(np.where(inside, sx, 0.0)), 0, max(nx - 2, 0)).astype(np.int64)
    j0 = np.clip(np.floor(np.where(inside, sy, 0.0)), 0, max(ny - 2, 0)).astype(np.int64)
    i1 = np.minimum(i0 + 1, nx - 1)
    j1 = np.minimum(j0 + 1, ny - 1)
    tx = np.where(inside, sx, 0.0) - i0
    ty = np.where(inside, sy, 0.0) - j0
    # v0 + t * (v1 - v0) reproduces a constant exactly.
    bottom = grid[j0, i0] + tx * (grid[j0, i1] - grid[j0, i0])
    top = grid[j1, i0] + tx * (grid[j1, i1] - grid[j1, i0])
    return np.where(inside, bottom + ty * (top - bottom), np.nan)
