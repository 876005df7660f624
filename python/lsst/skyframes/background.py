"""The afw background model, re-implemented on lsst.images types.

`BackgroundMI` is a grid of per-bin statistics (the "stats image") over a
full-resolution bounding box, rendered to full resolution by interpolating
first along y, then along x, exactly as ``lsst.afw.math.BackgroundMI`` does.
`BackgroundList` is afw's list of 7-tuples ``(background, interpStyle,
undersampleStyle, approxStyle, approxOrderX, approxOrderY, approxWeighting)``
whose image is the sum of its rendered elements.

Names and call signatures follow afw (camelCase), so code written for the
Rubin stack reads the same here; the image types are lsst.images'.
"""

from __future__ import annotations

__all__ = [
    "ApproximateControl",
    "BackgroundControl",
    "BackgroundElement",
    "BackgroundList",
    "BackgroundMI",
    "makeBackground",
    "single_background_list",
]

import enum
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from lsst.images import Box, Image, Mask, MaskedImage

from .errors import BoxMismatchError, NoDataError, UnsupportedStyleError
from .images import image_and_mask
from .interpolate import (
    Interpolate,
    UndersampleStyle,
    render_grid,
    stringToInterpStyle,
    stringToUndersampleStyle,
)
from .mask_planes import default_mask_schema
from .persistence import StoredElement, read_background_elements, write_background_elements
from .statistics import (
    Property,
    StatisticsControl,
    bad_pixel_mask,
    bin_centres,
    bin_edges,
    binned_statistics,
    stringToStatisticsProperty,
)

if TYPE_CHECKING:
    from lsst.images import BackgroundMap
    from lsst.images.fields import SplineField


class ApproximateControl:
    """afw's approximation styles (a namespace, as ``afwMath.ApproximateControl``).

    Only ``UNKNOWN`` (interpolate, do not approximate) is supported for
    rendering; the enum exists so files naming ``CHEBYSHEV`` are read and
    reported faithfully.
    """

    class Style(enum.IntEnum):
        """Approximation style numbers as written in afw files."""

        UNKNOWN = -1
        CHEBYSHEV = 0

    UNKNOWN = Style.UNKNOWN
    CHEBYSHEV = Style.CHEBYSHEV


class BackgroundControl:
    """How to bin and interpolate a background (afw's ``BackgroundControl``).

    Parameters
    ----------
    interpStyle : `Interpolate` or `str`, optional
        Interpolation style used when rendering.
    nxSample, nySample : `int`, optional
        Number of bins along x and y.
    undersampleStyle : `UndersampleStyle` or `str`, optional
        What to do when there are too few bins for ``interpStyle``.
    statisticsControl : `StatisticsControl`, optional
        Clipping and mask planes for the per-bin statistic.
    prop : `Property` or `str`, optional
        The per-bin statistic (``MEANCLIP``, ``MEAN`` or ``MEDIAN``).

    Raises
    ------
    ValueError
        Raised if a bin count is below 1.
    lsst.skyframes.errors.UnsupportedStyleError
        Raised for an unknown style or statistic name.
    """

    def __init__(
        self,
        interpStyle: Interpolate | str = Interpolate.AKIMA_SPLINE,
        nxSample: int = 10,
        nySample: int = 10,
        undersampleStyle: UndersampleStyle | str = UndersampleStyle.REDUCE_INTERP_ORDER,
        statisticsControl: StatisticsControl | None = None,
        prop: Property | str = Property.MEANCLIP,
    ) -> None:
        self.setInterpStyle(interpStyle)
        self.setNxSample(nxSample)
        self.setNySample(nySample)
        self.setUndersampleStyle(undersampleStyle)
        self._statisticsControl = statisticsControl if statisticsControl is not None else StatisticsControl()
        self.setStatisticsProperty(prop)

    def __repr__(self) -> str:
        return (
            f"BackgroundControl({self._interpStyle.name}, nxSample={self._nx}, nySample={self._ny}, "
            f"undersampleStyle={self._undersampleStyle.name}, {self._statisticsControl!r}, "
            f"prop={self._prop.name})"
        )

    def getInterpStyle(self) -> Interpolate:
        return self._interpStyle

    def setInterpStyle(self, style: Interpolate | str) -> None:
        self._interpStyle = stringToInterpStyle(style)

    def getUndersampleStyle(self) -> UndersampleStyle:
        return self._undersampleStyle

    def setUndersampleStyle(self, style: UndersampleStyle | str) -> None:
        self._undersampleStyle = stringToUndersampleStyle(style)

    def getNxSample(self) -> int:
        return self._nx

    def setNxSample(self, n: int) -> None:
        self._nx = _positive_bin_count(n, "nxSample")

    def getNySample(self) -> int:
        return self._ny

    def setNySample(self, n: int) -> None:
        self._ny = _positive_bin_count(n, "nySample")

    def getStatisticsControl(self) -> StatisticsControl:
        return self._statisticsControl

    def getStatisticsProperty(self) -> Property:
        return self._prop

    def setStatisticsProperty(self, prop: Property | str) -> None:
        self._prop = stringToStatisticsProperty(prop)


def _positive_bin_count(n: int, name: str) -> int:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(
            f"BackgroundControl {name}={n!r} is invalid: the number of bins must be an integer >= 1."
        )
    return int(n)


class BackgroundMI:
    """A binned background over a full-resolution bounding box.

    Parameters
    ----------
    bbox : `lsst.images.Box`
        The full-resolution box the background describes.
    statsImage : `lsst.images.MaskedImage`
        One pixel per bin: the image plane holds the per-bin statistic, the
        variance plane its standard error (a sigma, as afw stores it), the mask
        plane 0 for measured bins.  It is held by reference: scaling it in
        place changes this background.
    control : `BackgroundControl`, optional
        Default interpolation and undersample styles for `getImageF`.

    Raises
    ------
    ValueError
        Raised if the stats image has more bins than ``bbox`` has pixels along
        either axis, or is empty.
    """

    def __init__(self, bbox: Box, statsImage: MaskedImage, control: BackgroundControl | None = None) -> None:
        ny, nx = statsImage.bbox.shape
        height, width = bbox.shape
        if nx < 1 or ny < 1:
            raise ValueError(
                f"BackgroundMI stats image {statsImage.bbox} is empty; it needs at least one bin."
            )
        if nx > width or ny > height:
            raise BoxMismatchError(
                f"BackgroundMI stats image has {nx}x{ny} bins but the image box {bbox} is only "
                f"{width}x{height} pixels; a bin must hold at least one pixel."
            )
        self._bbox = bbox
        self._statsImage = statsImage
        if control is None:
            control = BackgroundControl(nxSample=nx, nySample=ny)
        self._control = control

    def __repr__(self) -> str:
        ny, nx = self._statsImage.bbox.shape
        return f"BackgroundMI(bbox={self._bbox}, bins={nx}x{ny}, {self._control.getInterpStyle().name})"

    def getImageBBox(self) -> Box:
        """Return the full-resolution bounding box (`lsst.images.Box`)."""
        return self._bbox

    def getStatsImage(self) -> MaskedImage:
        """Return the stats image, shared with this background (not a copy)."""
        return self._statsImage

    def getBackgroundControl(self) -> BackgroundControl:
        """Return the control holding the default rendering styles."""
        return self._control

    def getBinCentersX(self) -> np.ndarray:
        """Return the bin centres along x in the bbox's pixel coordinates."""
        return bin_centres(self._bbox.x.size, self._statsImage.bbox.x.size) + self._bbox.x.min

    def getBinCentersY(self) -> np.ndarray:
        """Return the bin centres along y in the bbox's pixel coordinates."""
        return bin_centres(self._bbox.y.size, self._statsImage.bbox.y.size) + self._bbox.y.min

    def getImageF(
        self,
        interpStyle: Interpolate | str | None = None,
        undersampleStyle: UndersampleStyle | str | None = None,
    ) -> Image:
        """Render the background at full resolution.

        Parameters
        ----------
        interpStyle : `Interpolate` or `str`, optional
            Interpolation style; defaults to the control's.
        undersampleStyle : `UndersampleStyle` or `str`, optional
            Rule for grids with too few points; defaults to the control's.

        Returns
        -------
        image : `lsst.images.Image`
            float32 image over `getImageBBox`.

        Raises
        ------
        lsst.skyframes.errors.UndersampledError
            Raised if there are too few bins for the style and the
            undersample style is ``THROW_EXCEPTION``.
        lsst.skyframes.errors.UnsupportedStyleError
            Raised for ``UNKNOWN`` or periodic styles.
        """
        style = self._control.getInterpStyle() if interpStyle is None else stringToInterpStyle(interpStyle)
        undersample = (
            self._control.getUndersampleStyle()
            if undersampleStyle is None
            else stringToUndersampleStyle(undersampleStyle)
        )
        height, width = self._bbox.shape
        ny, nx = self._statsImage.bbox.shape
        array = render_grid(
            bin_centres(width, nx),
            bin_centres(height, ny),
            np.asarray(self._statsImage.image.array, dtype=np.float64),
            width,
            height,
            style,
            undersample,
        )
        return Image(array, bbox=self._bbox)

    def clone(self) -> BackgroundMI:
        """Return a deep copy (the stats image is copied)."""
        control = self._control
        copied = BackgroundControl(
            control.getInterpStyle(),
            control.getNxSample(),
            control.getNySample(),
            control.getUndersampleStyle(),
            control.getStatisticsControl(),
            control.getStatisticsProperty(),
        )
        return BackgroundMI(self._bbox, self._statsImage.copy(), copied)

    def toSplineField(self) -> SplineField:
        """Return the background as an lsst.images `~lsst.images.fields.SplineField`.

        Returns
        -------
        field : `lsst.images.fields.SplineField`
            A field with this background's bin values (NaN bins kept as
            missing values) at its bin centres, over its bounding box.

        Notes
        -----
        ``SplineField`` always interpolates with Akima splines (SciPy's), so
        the conversion preserves the bin values, bin centres and bounding box
        of any background, and the rendered values of an ``AKIMA_SPLINE``
        background inside the hull of the bin centres (to float32 round-off,
        with five or more finite bins per row and column).  It does not
        preserve other styles' interpolants (CONSTANT, LINEAR, NATURAL_SPLINE
        render differently), afw's second-order extrapolation beyond the outer
        bin centres, the per-bin errors, or the undersample rule.
        """
        from lsst.images.fields import SplineField

        return SplineField(
            self._bbox,
            np.array(self._statsImage.image.array, dtype=np.float64),
            y=self.getBinCentersY(),
            x=self.getBinCentersX(),
        )

    def toAfw(self) -> Any:
        """Convert to an ``lsst.afw.math.BackgroundMI``.

        Requires ``lsst.afw``, which cannot be installed from the package
        registries; this path is therefore not exercised by the tests here.

        Raises
        ------
        ImportError
            Raised if ``lsst.afw`` is not importable.
        """
        afw_math = _import_afw_math()
        legacy = afw_math.BackgroundMI(self._bbox.to_legacy(), self._statsImage.to_legacy())
        control = legacy.getBackgroundControl()
        control.setInterpStyle(afw_math.Interpolate.Style(int(self._control.getInterpStyle())))
        control.setUndersampleStyle(afw_math.UndersampleStyle(int(self._control.getUndersampleStyle())))
        return legacy

    @classmethod
    def fromAfw(cls, legacy: Any) -> BackgroundMI:
        """Convert from an ``lsst.afw.math.BackgroundMI``.

        Requires ``lsst.afw`` objects; not exercised by the tests here, where
        afw cannot be installed.
        """
        stats_image = MaskedImage.from_legacy(legacy.getStatsImage())
        control = legacy.getBackgroundControl()
        return cls(
            Box.from_legacy(legacy.getImageBBox()),
            stats_image,
            BackgroundControl(
                Interpolate(int(control.getInterpStyle())),
                stats_image.bbox.x.size,
                stats_image.bbox.y.size,
                UndersampleStyle(int(control.getUndersampleStyle())),
            ),
        )


def _import_afw_math() -> Any:
    try:
        import lsst.afw.math as afw_math
    except ImportError as err:
        raise ImportError(
            "Converting to lsst.afw objects needs the Rubin stack's lsst.afw, which is not importable here; "
            "set up the stack (e.g. `setup lsst_distrib`) to use this conversion."
        ) from err
    return afw_math


def makeBackground(image: Any, bctrl: BackgroundControl) -> BackgroundMI:
    """Measure a binned background of an image (afw's ``makeBackground``).

    Parameters
    ----------
    image : `lsst.images.MaskedImage`, `lsst.images.VisitImage` or `lsst.images.Image`
        The image to bin.  Pixels with any of the statistics control's
        ``andMask`` planes set, and non-finite pixels, are ignored.
    bctrl : `BackgroundControl`
        Bin counts, statistic, clipping and default rendering styles.

    Returns
    -------
    background : `BackgroundMI`
        Bins with no usable pixel hold NaN (value and error) and are dropped
        when rendering.

    Raises
    ------
    lsst.skyframes.errors.BoxMismatchError
        Raised if there are more bins than pixels along an axis.
    """
    pixels, mask = image_and_mask(image)
    height, width = pixels.bbox.shape
    nx, ny = bctrl.getNxSample(), bctrl.getNySample()
    if nx > width or ny > height:
        raise BoxMismatchError(
            f"makeBackground was asked for {nx}x{ny} bins over a {width}x{height} image; "
            "use fewer bins (larger bin sizes) than pixels along each axis."
        )
    sctrl = bctrl.getStatisticsControl()
    bad = bad_pixel_mask(mask, sctrl.getAndMask()) if mask is not None else None
    result = binned_statistics(
        pixels.array,
        bad,
        bin_edges(width, nx),
        bin_edges(height, ny),
        bctrl.getStatisticsProperty(),
        clip=sctrl.getNumSigmaClip(),
        n_iter=sctrl.getNumIter(),
    )
    stats_image = MaskedImage(
        Image(result.value.astype(np.float32)),
        mask=Mask(0, schema=default_mask_schema(), shape=(ny, nx)),
        variance=Image(result.error.astype(np.float32)),
    )
    return BackgroundMI(pixels.bbox, stats_image, bctrl)


BackgroundElement = tuple[
    BackgroundMI, Interpolate, UndersampleStyle, ApproximateControl.Style, int, int, bool
]
"""One entry of a `BackgroundList`, in afw's order."""


def _normalise_element(value: Any) -> BackgroundElement:
    """Coerce a `BackgroundMI` or a 7-sequence into a `BackgroundElement`."""
    if isinstance(value, BackgroundMI):
        control = value.getBackgroundControl()
        return (
            value,
            control.getInterpStyle(),
            control.getUndersampleStyle(),
            ApproximateControl.UNKNOWN,
            0,
            0,
            False,
        )
    try:
        items = tuple(value)
    except TypeError:
        items = ()
    if len(items) != 7 or not isinstance(items[0], BackgroundMI):
        raise TypeError(
            f"A BackgroundList element must be a BackgroundMI or a 7-tuple (background, interpStyle, "
            f"undersampleStyle, approxStyle, approxOrderX, approxOrderY, approxWeighting); got {value!r}."
        )
    bg, interp, undersample, approx, order_x, order_y, weighting = items
    return (
        bg,
        Interpolate(interp) if isinstance(interp, int) else stringToInterpStyle(interp),
        UndersampleStyle(undersample)
        if isinstance(undersample, int)
        else stringToUndersampleStyle(undersample),
        ApproximateControl.Style(int(approx)),
        int(order_x),
        int(order_y),
        bool(weighting),
    )


def _element_from_stored(stored: StoredElement) -> BackgroundElement:
    """Build a list element from what a FITS file stores (the control's bin counts are the stats image's)."""
    ny, nx = stored.stats_image.bbox.shape
    control = BackgroundControl(stored.interp_style, nx, ny, stored.undersample_style)
    background = BackgroundMI(stored.bbox, stored.stats_image, control)
    return _normalise_element((background, *stored[2:]))


class BackgroundList:
    """An ordered list of backgrounds whose sum is an image's background.

    Parameters
    ----------
    *elements
        `BackgroundMI` objects (their control's styles are used) or afw-style
        7-tuples ``(background, interpStyle, undersampleStyle, approxStyle,
        approxOrderX, approxOrderY, approxWeighting)``.
    """

    def __init__(self, *elements: BackgroundElement | BackgroundMI) -> None:
        self._elements: list[BackgroundElement] = []
        for element in elements:
            self.append(element)

    def __len__(self) -> int:
        return len(self._elements)

    def __getitem__(self, index: int) -> BackgroundElement:
        return self._elements[index]

    def __iter__(self) -> Iterator[BackgroundElement]:
        return iter(self._elements)

    def __repr__(self) -> str:
        return f"BackgroundList({', '.join(repr(e[0]) for e in self._elements)})"

    def append(self, element: BackgroundElement | BackgroundMI | Iterable[Any]) -> None:
        """Append a background (a `BackgroundMI` or a 7-tuple).

        Raises
        ------
        TypeError
            Raised if ``element`` is neither.
        """
        self._elements.append(_normalise_element(element))

    def getImage(self) -> Image:
        """Render every element and return their sum.

        Returns
        -------
        image : `lsst.images.Image`
            float32 image over the elements' common bounding box.

        Raises
        ------
        lsst.skyframes.errors.NoDataError
            Raised if the list is empty.
        lsst.skyframes.errors.BoxMismatchError
            Raised if the elements cover different bounding boxes.
        lsst.skyframes.errors.UnsupportedStyleError
            Raised for an element using Chebyshev approximation.
        """
        if not self._elements:
            raise NoDataError(
                "BackgroundList.getImage was called on an empty list; append a background first."
            )
        total: Image | None = None
        for index, (bg, interp, undersample, approx, *_) in enumerate(self._elements):
            if approx != ApproximateControl.UNKNOWN:
                raise UnsupportedStyleError(
                    f"BackgroundList element {index} uses approximation style {approx.name}; only "
                    "interpolation (approxStyle UNKNOWN) is supported."
                )
            rendered = bg.getImageF(interp, undersample)
            if total is None:
                total = rendered
            elif rendered.bbox != total.bbox:
                raise BoxMismatchError(
                    f"BackgroundList element {index} covers {rendered.bbox} but element 0 covers "
                    f"{total.bbox}; "
                    "every element of a list must describe the same image."
                )
            else:
                total.array += rendered.array
        assert total is not None
        return total

    def clone(self) -> BackgroundList:
        """Return a deep copy: stats images are copied, styles kept."""
        return BackgroundList(*((bg.clone(), *rest) for bg, *rest in self._elements))

    def writeFits(self, path: str) -> None:
        """Write the list in afw's BackgroundList FITS layout (see `.persistence`)."""
        write_background_elements(
            [StoredElement(bg.getImageBBox(), bg.getStatsImage(), *styles) for bg, *styles in self._elements],
            path,
        )

    @staticmethod
    def readFits(path: str) -> BackgroundList:
        """Read a BackgroundList FITS file written here or by the Rubin stack.

        Raises
        ------
        lsst.skyframes.errors.BackgroundFileError
            Raised if the file is missing or is not a valid background list
            (see `~lsst.skyframes.persistence.read_background_elements`).
        """
        return BackgroundList(*read_background_elements(path, _element_from_stored))

    def toBackgroundMap(self, name: str = "background", description: str = "") -> BackgroundMap:
        """Return the list as an lsst.images `~lsst.images.BackgroundMap`.

        Parameters
        ----------
        name : `str`, optional
            Name of the single background in the map.
        description : `str`, optional
            Its description.

        Returns
        -------
        background_map : `lsst.images.BackgroundMap`
            One background, marked as subtracted: the element's field for a
            one-element list, otherwise a ``SumField`` of the elements' fields.

        Notes
        -----
        Each element becomes a ``SplineField``; see
        `BackgroundMI.toSplineField` for what that preserves.
        """
        from lsst.images import BackgroundMap
        from lsst.images.fields import SumField

        if not self._elements:
            raise NoDataError("Cannot convert an empty BackgroundList to a BackgroundMap.")
        fields = [bg.toSplineField() for bg, *_ in self._elements]
        field = fields[0] if len(fields) == 1 else SumField(fields)
        result = BackgroundMap()
        result.add(name, field, description, is_subtracted=True)
        return result

    def toAfw(self) -> Any:
        """Convert to an ``lsst.afw.math.BackgroundList`` (needs ``lsst.afw``; untested here)."""
        afw_math = _import_afw_math()
        result = afw_math.BackgroundList()
        for bg, interp, undersample, approx, order_x, order_y, weighting in self._elements:
            result.append(
                (
                    bg.toAfw(),
                    afw_math.Interpolate.Style(int(interp)),
                    afw_math.UndersampleStyle(int(undersample)),
                    afw_math.ApproximateControl.Style(int(approx)),
                    order_x,
                    order_y,
                    weighting,
                )
            )
        return result

    @classmethod
    def fromAfw(cls, legacy: Any) -> BackgroundList:
        """Convert from an ``lsst.afw.math.BackgroundList`` (untested here)."""
        return cls(
            *(
                (BackgroundMI.fromAfw(bg), int(interp), int(under), int(approx), ox, oy, w)
                for bg, interp, under, approx, ox, oy, w in legacy
            )
        )


def single_background_list(background: BackgroundMI, style: Interpolate) -> BackgroundList:
    """Return a one-element `BackgroundList` the way the Rubin tasks build them.

    Parameters
    ----------
    background : `BackgroundMI`
        The background.
    style : `Interpolate`
        Its interpolation style.

    Returns
    -------
    bgList : `BackgroundList`
        ``(background, style, REDUCE_INTERP_ORDER, UNKNOWN, 0, 0, False)``.
    """
    return BackgroundList(
        (background, style, UndersampleStyle.REDUCE_INTERP_ORDER, ApproximateControl.UNKNOWN, 0, 0, False)
    )
