"""`SkyMeasurementTask`: measuring, combining, scaling and subtracting sky frames.

A sky frame is stored as the stats image of a binned background (one pixel per
bin) with its full-resolution bounding box and interpolation style recorded in
the metadata.  The methods here are those of the Rubin pipelines'
``lsst.pipe.tasks.background.SkyMeasurementTask``, with lsst.images types in
place of afw's.
"""

from __future__ import annotations

__all__ = [
    "REFERENCE_IQR_TO_SIGMA",
    "BackgroundConfig",
    "SkyMeasurementConfig",
    "SkyMeasurementTask",
    "SkyStatsConfig",
    "algorithm_style",
    "measurement_bin_edges",
    "measurement_bin_sizes",
]

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lsst.images import Box, Image, Mask, MaskedImage
from lsst.pex.config import ChoiceField, Config, ConfigField, FieldValidationError, ListField, RangeField
from lsst.pipe.base import Task
from lsst.utils.timer import timeMethod

from ._least_squares import clipped_least_squares
from .background import (
    BackgroundControl,
    BackgroundList,
    BackgroundMI,
    makeBackground,
    single_background_list,
)
from .bin_size import BinSizeChoice, choose_bin_size, measurement_bin_edges, rebin_background
from .errors import BoxMismatchError, MissingMetadataError, NoDataError
from .images import image_and_mask, require_same_bbox
from .interpolate import Interpolate, UndersampleStyle, stringToInterpStyle
from .mask_planes import default_mask_schema, split_detection_planes
from .pixel_stack import PixelStackBins, strip_rows
from .statistics import (
    Property,
    StatisticsControl,
    bad_pixel_mask,
    binned_statistics,
    stack_statistics,
)

PIXEL_STACK_STRIP_BYTES = 256 * 2**20
"""Memory a strip of `SkyMeasurementTask.averageImages`'s per-pixel stack may take (bytes)."""

REFERENCE_IQR_TO_SIGMA = 0.741
"""Sigma per unit inter-quartile range in the scale fit of `SkyMeasurementTask.solveScales`.

The reference's solveScales uses the literal 0.741, not the Gaussian ratio
`~lsst.skyframes.statistics.IQR_TO_SIGMA` (0.7413011...); it is kept so that
the rejection, and hence the fitted scale, is the reference's to the last bit.
"""

_STATISTICS = {
    "MEANCLIP": "Clipped mean: median/IQR first pass, then mean/sigma passes.",
    "MEAN": "Mean of the unmasked finite pixels.",
    "MEDIAN": "Median of the unmasked finite pixels.",
}


class BackgroundConfig(Config):
    """How a sky frame is binned."""

    statistic = ChoiceField[str](
        doc="Statistic for each bin of the background model.", default="MEANCLIP", allowed=_STATISTICS
    )
    xBinSize = RangeField[int](doc="Bin size in x (pixels).", default=32, min=1)
    yBinSize = RangeField[int](doc="Bin size in y (pixels).", default=32, min=1)
    algorithm = ChoiceField[str](
        doc="How to interpolate the background values when rendering.",
        default="NATURAL_SPLINE",
        optional=True,
        allowed={
            "CONSTANT": "afw's step function (mean of neighbouring bins between bin-centre midpoints)",
            "LINEAR": "Linear interpolation",
            "NATURAL_SPLINE": "Natural cubic spline",
            "AKIMA_SPLINE": "Akima spline",
            "NONE": "No interpolation (the model cannot be rendered)",
        },
    )
    mask = ListField[str](
        doc="Mask planes to ignore while measuring.",
        default=["SAT", "BAD", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "NO_DATA"],
    )
    binSizeChoice = ChoiceField[str](
        doc="How the sky frame's bin size is chosen.",
        default="fixed",
        allowed={
            "fixed": "xBinSize by yBinSize (the reference)",
            "crossValidated": (
                "measure at the finest of binSizeCandidates; averageBackgrounds makes the sky frame at the "
                "candidate with the lowest cross-validated error (xBinSize and yBinSize are not used)"
            ),
        },
    )
    binSizeCandidates = ListField[int](
        doc="Bin sizes (pixels, square) binSizeChoice='crossValidated' chooses from.",
        default=[8, 16, 32, 64],
        minLength=1,
        itemCheck=lambda size: size >= 1,
    )

    def validate(self) -> None:
        super().validate()
        if len(set(self.binSizeCandidates)) != len(self.binSizeCandidates):
            raise FieldValidationError(
                type(self).binSizeCandidates,
                self,
                f"binSizeCandidates {list(self.binSizeCandidates)} repeats a size; list each size once.",
            )


class SkyStatsConfig(Config):
    """Statistics of the sample boxes used to measure a sky-frame scale."""

    statistic = ChoiceField[str](doc="Statistic of each sample box.", default="MEANCLIP", allowed=_STATISTICS)
    clip = RangeField[float](doc="Clipping threshold (sigma).", default=3.0, min=0.0, inclusiveMin=False)
    nIter = RangeField[int](doc="Clipping iterations.", default=3, min=1)
    mask = ListField[str](
        doc="Mask planes to ignore.", default=["SAT", "DETECTED", "DETECTED_NEGATIVE", "BAD", "NO_DATA"]
    )


class SkyMeasurementConfig(Config):
    """Configuration of `SkyMeasurementTask`.

    Bin sizes, sample counts and iteration counts are `RangeField`s and
    statistics and styles `ChoiceField`s, so nonsense values are rejected both
    on assignment and by `validate` with a `FieldValidationError` naming the
    field.
    """

    skyIter = RangeField[int](doc="Rejection iterations of the sky-frame scale fit.", default=3, min=1)
    skyRej = RangeField[float](
        doc="Rejection threshold (sigma) of the scale fit.", default=3.0, min=0.0, inclusiveMin=False
    )
    background = ConfigField[BackgroundConfig](doc="Binning of the sky frame.", dtype=BackgroundConfig)
    xNumSamples = RangeField[int](doc="Sample boxes along x per detector, for scaling.", default=4, min=1)
    yNumSamples = RangeField[int](doc="Sample boxes along y per detector, for scaling.", default=4, min=1)
    stats = ConfigField[SkyStatsConfig](doc="Statistics of the sample boxes.", dtype=SkyStatsConfig)
    maxDetectedFraction = RangeField[float](
        doc="averageImages only (cpSkyCombine combineLevel='pixel'): a pixel flagged DETECTED or "
        "DETECTED_NEGATIVE in more than this fraction of the inputs that hold it is taken to be the "
        "detector's own structure (a dust spot, a hot column, a channel edge: detection finds it in every "
        "exposure, while objects move between dithered exposures), so its detection flags are ignored and "
        "the clipped mean across the inputs rejects the inputs in which an object falls on it. Choose it "
        "well above the fraction of the inputs that objects cover a pixel in by chance (0.9 is safe for 10 "
        "or more dithered exposures that each detect up to 30 % of the pixels). None (the default, the "
        "reference's behaviour) leaves every detected pixel out.",
        default=None,
        optional=True,
        min=0.0,
        max=1.0,
        inclusiveMin=False,
        inclusiveMax=False,
    )


def measurement_bin_sizes(config: BackgroundConfig) -> tuple[int, int]:
    """Return the (x, y) bin size `SkyMeasurementTask.measureBackground` measures at.

    ``xBinSize`` and ``yBinSize`` with ``binSizeChoice='fixed'``; the finest
    of ``binSizeCandidates`` along both axes with ``'crossValidated'``.
    """
    if config.binSizeChoice == "crossValidated":
        finest = min(config.binSizeCandidates)
        return finest, finest
    return config.xBinSize, config.yBinSize


def algorithm_style(algorithm: str | None) -> Interpolate:
    """Return the interpolation style of a `BackgroundConfig` ``algorithm`` (`None`: ``UNKNOWN``)."""
    return Interpolate.UNKNOWN if algorithm is None else stringToInterpStyle(algorithm)


def _bbox_from_metadata(metadata: Any, what: str) -> tuple[Box, str]:
    keys = ("BOX.MINX", "BOX.MINY", "BOX.MAXX", "BOX.MAXY", "ALGORITHM")
    missing = [key for key in keys if key not in metadata]
    if missing:
        raise MissingMetadataError(
            f"{what} lacks metadata {', '.join(missing)}; a sky-frame exposure records its full-resolution "
            "box (BOX.MINX/MINY/MAXX/MAXY, inclusive) and ALGORITHM. Make it with backgroundToExposure."
        )
    try:
        min_x, min_y, max_x, max_y = (int(metadata[key]) for key in keys[:4])
    except (TypeError, ValueError) as err:
        raise MissingMetadataError(f"{what} has non-integer BOX.* metadata: {err}") from err
    if max_x < min_x or max_y < min_y:
        raise MissingMetadataError(
            f"{what} metadata describes an empty box (x {min_x}..{max_x}, y {min_y}..{max_y})."
        )
    bbox = Box.from_shape((max_y - min_y + 1, max_x - min_x + 1), start=(min_y, min_x))
    return bbox, str(metadata["ALGORITHM"])


class SkyMeasurementTask(Task):
    """Measure, combine, scale and subtract sky frames.

    A sky frame is built by measuring a binned background (`measureBackground`)
    of many exposures of one detector, each normalised by its sky level, and
    combining them with clipping (`averageBackgrounds`).  It is applied to a
    science exposure by measuring samples of both (`measureScale`), fitting one
    scale over all detectors of a visit (`solveScales`) and subtracting the
    scaled frame (`subtractSkyFrame`).
    """

    ConfigClass = SkyMeasurementConfig
    _DefaultName = "skyMeasurement"
    config: SkyMeasurementConfig

    @timeMethod
    def measureBackground(self, image: MaskedImage) -> BackgroundList:
        """Measure a binned background of an image.

        Parameters
        ----------
        image : `lsst.images.MaskedImage` or `lsst.images.VisitImage`
            Image to measure.  Pixels in the configured ``background.mask``
            planes and non-finite pixels are ignored; planes the image lacks
            are skipped (logged at debug level).

        Returns
        -------
        bgList : `BackgroundList`
            One element: the background with ``max(int(W/xBinSize + 0.5), 1)``
            by ``max(int(H/yBinSize + 0.5), 1)`` bins (with
            ``binSizeChoice='crossValidated'``, the finest of
            ``binSizeCandidates`` in place of both sizes), the configured style,
            ``REDUCE_INTERP_ORDER``, no approximation.  Bins with no usable
            pixel (e.g. a fully masked or all-NaN image) are NaN.
        """
        config = self.config.background
        pixels, _ = image_and_mask(image)
        height, width = pixels.bbox.shape
        x_size, y_size = measurement_bin_sizes(config)
        control = BackgroundControl(
            algorithm_style(config.algorithm),
            len(measurement_bin_edges(width, x_size)) - 1,
            len(measurement_bin_edges(height, y_size)) - 1,
            UndersampleStyle.REDUCE_INTERP_ORDER,
            StatisticsControl(andMask=list(config.mask)),
            config.statistic,
        )
        return single_background_list(makeBackground(image, control), control.getInterpStyle())

    @timeMethod
    def averageBackgrounds(
        self, bgList: Sequence[BackgroundList], binSizeChoice: BinSizeChoice | None = None
    ) -> MaskedImage:
        """Combine the backgrounds of many exposures into a sky frame.

        Parameters
        ----------
        bgList : sequence of `BackgroundList`
            One single-element list per exposure, all over the same box and
            with the same bins.
        binSizeChoice : `~lsst.skyframes.bin_size.BinSizeChoice`, optional
            With ``background.binSizeChoice='crossValidated'``, a choice
            already made from these inputs (`chooseBinSize`); otherwise it is
            made here.  Ignored with ``'fixed'``.

        Returns
        -------
        skyFrame : `lsst.images.MaskedImage`
            The per-bin clipped mean (3 sigma, 3 iterations) across inputs,
            NaN bins ignored, as made by `backgroundToExposure`.  Bins no input
            measured are set to the median of the others (deliberately not
            interpolated: one detector alone would create edge problems) and
            flagged ``NO_DATA``.  With ``background.binSizeChoice=
            'crossValidated'``, the inputs are first rebinned to the chosen
            size (`~lsst.skyframes.bin_size.rebin_background`), and the
            metadata holds ``BINSIZE`` and the error budget
            (`~lsst.skyframes.bin_size.BinSizeChoice.toMetadata`).

        Raises
        ------
        lsst.skyframes.errors.NoDataError
            Raised for an empty input or if no bin of any input is finite;
            with ``'crossValidated'``, also for a single input.
        ValueError
            Raised if an input list does not hold exactly one element.
        lsst.skyframes.errors.BoxMismatchError
            Raised if the inputs' boxes or bin grids differ, or (with
            ``'crossValidated'``) are not binned at the finest candidate.
        """
        if self.config.background.binSizeChoice == "fixed":
            return self._average(bgList)
        if binSizeChoice is None:
            binSizeChoice = self.chooseBinSize(bgList)
        if binSizeChoice.binSize != min(binSizeChoice.candidates):
            bgList = [rebin_background(bg, binSizeChoice.binSize) for bg in bgList]
        sky = self._average(bgList)
        binSizeChoice.toMetadata(sky.metadata)
        return sky

    def chooseBinSize(self, bgList: Sequence[BackgroundList]) -> BinSizeChoice:
        """Choose the sky frame's bin size from its inputs by cross-validation.

        Parameters
        ----------
        bgList : sequence of `BackgroundList`
            As for `averageBackgrounds`, measured at the finest of
            ``background.binSizeCandidates`` (`measureBackground` does so with
            ``binSizeChoice='crossValidated'``).

        Returns
        -------
        choice : `~lsst.skyframes.bin_size.BinSizeChoice`
            The size with the lowest estimated error, and every candidate's
            error, structure and noise (see `lsst.skyframes.bin_size`).

        Raises
        ------
        lsst.skyframes.errors.NoDataError
            Raised for fewer than two inputs or inputs with no finite bin.
        lsst.skyframes.errors.BoxMismatchError
            Raised if the inputs differ in box or bins, or are not binned at
            the finest candidate.
        """
        backgrounds, stats_images, values, bad = _stacked_inputs(bgList, "chooseBinSize")
        config = self.config.background
        bbox = backgrounds[0].getImageBBox()
        finest, _ = measurement_bin_sizes(config)
        height, width = bbox.shape
        expected = (
            len(measurement_bin_edges(height, finest)) - 1,
            len(measurement_bin_edges(width, finest)) - 1,
        )
        if values.shape[1:] != expected:
            raise BoxMismatchError(
                f"chooseBinSize: the inputs have {values.shape[2]}x{values.shape[1]} bins over "
                f"{width}x{height} pixels, but the finest of background.binSizeCandidates ({finest} px) "
                f"makes {expected[1]}x{expected[0]}; measure them with measureBackground under the same "
                "configuration (binSizeChoice='crossValidated')."
            )
        return choose_bin_size(
            values,
            bad,
            bbox,
            config.binSizeCandidates,
            algorithm_style(config.algorithm),
            lambda layers, layers_bad: stack_statistics(layers, layers_bad, Property.MEANCLIP).value,
        )

    def _average(self, bgList: Sequence[BackgroundList]) -> MaskedImage:
        """The reference's combination: per-bin clipped mean, missing bins set to the median."""
        backgrounds, stats_images, values, bad = _stacked_inputs(bgList, "averageBackgrounds")
        bbox = backgrounds[0].getImageBBox()
        grid = stats_images[0].bbox
        return self._skyFrame(
            stack_statistics(values, bad, Property.MEANCLIP),
            bbox,
            grid,
            lambda missing: _combined_mask(stats_images, bad, missing),
            f"averageBackgrounds: none of the {len(bgList)} inputs has a finite bin",
        )

    @timeMethod
    def averageImages(
        self,
        images: Sequence[MaskedImage],
        binSizeChoice: BinSizeChoice | None = None,
        detections: Sequence[np.ndarray | None] | None = None,
    ) -> MaskedImage:
        """Combine normalised residual images pixel by pixel into a sky frame.

        The alternative to `measureBackground` of each input followed by
        `averageBackgrounds`, for detectors with structure inside a bin: each
        pixel is the clipped mean (3 sigma, 3 iterations, as
        `averageBackgrounds` combines bins) of its unmasked values across the
        inputs, and each bin the plain mean of the combined pixels (see
        `lsst.skyframes.pixel_stack`).  No structure is clipped within a bin,
        and an input's masked pixels are filled by the other inputs instead
        of biasing its bin.

        Parameters
        ----------
        images : sequence of `lsst.images.MaskedImage`
            The inputs as `measureBackground` would take them (object-masked,
            the large-scale model subtracted, divided by the sky level), all
            over the same box.  Pixels in ``background.mask`` planes and
            non-finite pixels are ignored.
        binSizeChoice : `~lsst.skyframes.bin_size.BinSizeChoice`, optional
            With ``background.binSizeChoice='crossValidated'``, a choice
            already made (`chooseBinSize`); otherwise it is made here from
            `measureBackground` of each input.  Ignored with ``'fixed'``.
        detections : sequence of `numpy.ndarray` or `None`, optional
            For images that hold their detection flags apart (plain
            `lsst.images.Image` inputs): one boolean array per image, of its
            shape, True where object detection flagged the pixel (or `None`
            for an image without detections).  By default the flags are the
            ``DETECTED`` / ``DETECTED_NEGATIVE`` planes of the images' masks
            named in ``background.mask``.  They are left out as the other
            masked pixels are, unless ``maxDetectedFraction`` takes a pixel
            for the detector's own structure.

        Returns
        -------
        skyFrame : `lsst.images.MaskedImage`
            As `averageBackgrounds` returns it: the bins of `measureBackground`
            (or of the chosen size, with ``BINSIZE`` and the error budget in
            the metadata), the variance of each bin's mean, bins without a
            combined pixel set to the median of the others and flagged
            ``NO_DATA``.

        Raises
        ------
        lsst.skyframes.errors.NoDataError
            Raised for no input or if no pixel of any input is usable; with
            ``'crossValidated'``, also for a single input.
        lsst.skyframes.errors.BoxMismatchError
            Raised if the inputs' boxes differ, or ``detections`` does not
            match them.
        """
        if len(images) == 0:
            raise NoDataError("averageImages needs at least one image; got none.")
        planes = [image_and_mask(image) for image in images]
        bbox = planes[0][0].bbox
        for index, (pixels, _) in enumerate(planes):
            require_same_bbox(bbox, pixels.bbox, f"averageImages input {index} against input 0")
        config = self.config.background
        if config.binSizeChoice == "fixed":
            x_size, y_size = measurement_bin_sizes(config)
        else:
            if binSizeChoice is None:
                binSizeChoice = self.chooseBinSize([self.measureBackground(image) for image in images])
            x_size = y_size = binSizeChoice.binSize
        height, width = bbox.shape
        bins = PixelStackBins(
            measurement_bin_edges(width, x_size),
            measurement_bin_edges(height, y_size),
            max_detected_fraction=self.config.maxDetectedFraction,
        )
        # Detection flags are kept apart from the other bad planes only where they are weighed
        # (maxDetectedFraction) or given apart; otherwise every plane makes one flag, as before.
        if self.config.maxDetectedFraction is None and detections is None:
            planes_bad, planes_detected = list(config.mask), []
        else:
            planes_bad, planes_detected = split_detection_planes(config.mask)
        masks = [None if mask is None else bad_pixel_mask(mask, planes_bad) for _, mask in planes]
        if detections is None:
            detections = [
                None if mask is None or not planes_detected else bad_pixel_mask(mask, planes_detected)
                for _, mask in planes
            ]
        elif len(detections) != len(images):
            raise BoxMismatchError(
                f"averageImages: {len(detections)} detection arrays for {len(images)} images; give one per "
                "image."
            )
        else:
            for index, flags in enumerate(detections):
                if flags is not None and np.shape(flags) != bbox.shape:
                    raise BoxMismatchError(
                        f"averageImages: detection array {index} has shape {np.shape(flags)}, but the images "
                        f"{bbox.shape}; give one flag per pixel."
                    )
        # Plain images (cpSkyCombine's scratch copies, masked pixels NaN) need no flags at all.
        unmasked = all(m is None for m in masks)
        undetected = all(d is None for d in detections)
        rows = strip_rows(len(images), width, height, PIXEL_STACK_STRIP_BYTES)
        for y0 in range(0, height, rows):
            y1 = min(y0 + rows, height)
            values = np.stack([pixels.array[y0:y1] for pixels, _ in planes])
            bad = None if unmasked else _stacked_strip(masks, y0, y1, width)
            detected = None if undetected else _stacked_strip(detections, y0, y1, width)
            bins.add(y0, values, bad, detected)
        grid = Box.from_shape((len(bins.y_edges) - 1, len(bins.x_edges) - 1))
        sky = self._skyFrame(
            bins.result(),
            bbox,
            grid,
            _no_data_mask,
            f"averageImages: none of the {len(images)} inputs has a usable pixel",
        )
        if config.binSizeChoice != "fixed":
            binSizeChoice.toMetadata(sky.metadata)
        return sky

    def _skyFrame(
        self, combined: Any, bbox: Box, grid: Box, mask_of: Callable[[np.ndarray], Mask], what: str
    ) -> MaskedImage:
        """A sky-frame exposure from per-bin values and errors over ``grid``.

        Bins without a value are set to the median of the others (deliberately
        not interpolated); ``mask_of(missing)`` makes the stats image's mask.
        """
        value = np.array(combined.value, dtype=np.float64)
        missing = ~np.isfinite(value)
        if missing.all():
            raise NoDataError(f"{what}; check that the input exposures are not fully masked.")
        value[missing] = np.median(value[~missing])
        result = MaskedImage(
            Image(value.astype(np.float32), bbox=grid),
            mask=mask_of(missing),
            variance=Image((np.asarray(combined.error) ** 2).astype(np.float32), bbox=grid),
        )
        return self.backgroundToExposure(result, bbox)

    def backgroundToExposure(self, statsImage: MaskedImage, bbox: Box) -> MaskedImage:
        """Wrap a stats image as a sky-frame "exposure" with its metadata.

        Parameters
        ----------
        statsImage : `lsst.images.MaskedImage`
            One pixel per bin; its planes are shared, not copied.
        bbox : `lsst.images.Box`
            Full-resolution box of the background.

        Returns
        -------
        exposure : `lsst.images.MaskedImage`
            With metadata ``BOX.MINX``, ``BOX.MINY``, ``BOX.MAXX``, ``BOX.MAXY``
            (inclusive corners of ``bbox``) and ``ALGORITHM``.
        """
        metadata = dict(statsImage.metadata.native) if statsImage.metadata else {}
        metadata.update(
            {
                "BOX.MINX": int(bbox.x.min),
                "BOX.MINY": int(bbox.y.min),
                "BOX.MAXX": int(bbox.x.max),
                "BOX.MAXY": int(bbox.y.max),
                "ALGORITHM": self.config.background.algorithm or "NONE",
            }
        )
        return MaskedImage(
            statsImage.image, mask=statsImage.mask, variance=statsImage.variance, metadata=metadata
        )

    @staticmethod
    def exposureToBackground(bgExp: MaskedImage) -> BackgroundList:
        """Turn a sky-frame exposure back into a `BackgroundList`.

        Parameters
        ----------
        bgExp : `lsst.images.MaskedImage`
            Made by `backgroundToExposure` (possibly written to FITS and read
            back, or read from a butler).

        Returns
        -------
        bgList : `BackgroundList`
            One element sharing ``bgExp``'s pixels, with the style from
            ``ALGORITHM``, ``REDUCE_INTERP_ORDER``, no approximation.

        Raises
        ------
        lsst.skyframes.errors.MissingMetadataError
            Raised if the box or algorithm metadata are missing or invalid.
        """
        if not isinstance(bgExp, MaskedImage):
            raise TypeError(
                f"exposureToBackground needs an lsst.images MaskedImage, got {type(bgExp).__name__}."
            )
        bbox, algorithm = _bbox_from_metadata(bgExp.metadata, "exposureToBackground input")
        style = algorithm_style(None if algorithm == "NONE" else algorithm)
        ny, nx = bgExp.bbox.shape
        control = BackgroundControl(style, nx, ny, UndersampleStyle.REDUCE_INTERP_ORDER)
        return single_background_list(BackgroundMI(bbox, bgExp, control), style)

    @timeMethod
    def measureScale(
        self, image: MaskedImage, skyBackground: BackgroundList
    ) -> tuple[np.ndarray, np.ndarray]:
        """Measure matching samples of an image and of a sky frame.

        Parameters
        ----------
        image : `lsst.images.MaskedImage` or `lsst.images.VisitImage`
            Science image (background not yet subtracted by the sky frame).
        skyBackground : `BackgroundList`
            The sky frame, over the same box as ``image``.

        Returns
        -------
        imageSamples, skySamples : `numpy.ndarray`
            The configured statistic of ``image`` (with ``stats.mask`` planes
            ignored) and of the rendered sky frame in each of
            ``min(xNumSamples, W) * min(yNumSamples, H)`` boxes, x outer, y
            inner.

        Raises
        ------
        lsst.skyframes.errors.BoxMismatchError
            Raised if the image and sky frame cover different boxes.
        """
        pixels, mask = image_and_mask(image)
        sky = skyBackground.getImage()
        require_same_bbox(pixels.bbox, sky.bbox, "measureScale image and sky frame")
        height, width = pixels.bbox.shape
        x_edges = np.linspace(0, width, min(self.config.xNumSamples, width) + 1).astype(int)
        y_edges = np.linspace(0, height, min(self.config.yNumSamples, height) + 1).astype(int)
        stats = self.config.stats
        bad = bad_pixel_mask(mask, list(stats.mask)) if mask is not None else None
        samples = []
        for array, array_bad in ((pixels.array, bad), (sky.array, None)):
            result = binned_statistics(
                array, array_bad, x_edges, y_edges, stats.statistic, clip=stats.clip, n_iter=stats.nIter
            )
            # (ny, nx) grid -> x-outer, y-inner order of the reference loop.
            samples.append(result.value.T.ravel())
        return samples[0], samples[1]

    def solveScales(self, scales: Sequence[tuple[Sequence[float], Sequence[float]]]) -> float:
        """Fit one scale to many detectors' samples: image ≈ scale × sky.

        Parameters
        ----------
        scales : sequence of (imageSamples, skySamples)
            `measureScale` results, typically one per detector of a visit.

        Returns
        -------
        scale : `float`
            Least-squares scale with no intercept, after ``skyIter`` rounds of
            cumulative rejection at ``skyRej`` × 0.741 × IQR of the residuals
            (`REFERENCE_IQR_TO_SIGMA`).

        Raises
        ------
        lsst.skyframes.errors.NoDataError
            Raised if there are no samples, no pair with both samples finite,
            or the kept sky samples are all zero.
        ValueError
            Raised if a pair's image and sky samples differ in length.
        """
        if len(scales) == 0:
            raise NoDataError("solveScales needs at least one (imageSamples, skySamples) pair; got none.")
        image_parts, sky_parts = [], []
        for index, (image_samples, sky_samples) in enumerate(scales):
            if len(image_samples) != len(sky_samples):
                raise ValueError(
                    f"solveScales input {index} has {len(image_samples)} image samples but "
                    f"{len(sky_samples)} sky samples; pass measureScale's output unchanged."
                )
            image_parts.append(np.asarray(image_samples, dtype=np.float64))
            sky_parts.append(np.asarray(sky_samples, dtype=np.float64))
        image_values = np.concatenate(image_parts)
        sky_values = np.concatenate(sky_parts)
        scale = clipped_least_squares(
            image_values,
            sky_values,
            n_iter=self.config.skyIter,
            rejection=self.config.skyRej,
            iqr_to_sigma=REFERENCE_IQR_TO_SIGMA,
            too_few_message=lambda kept, components: (
                f"solveScales: none of the {len(image_values)} sample pairs is finite in both image and sky "
                "frame; check the image masks and that the sky frame has no NaN bins."
            ),
            zero_message=(
                "solveScales: the sky frame is zero at every kept sample, so no scale can be fitted; "
                "the sky frame is empty or was not normalised."
            ),
        )
        return float(scale[0])

    @timeMethod
    def subtractSkyFrame(
        self,
        image: MaskedImage,
        skyBackground: BackgroundList,
        scale: float,
        bgList: BackgroundList | None = None,
    ) -> None:
        """Subtract a scaled sky frame from an image, in place.

        Parameters
        ----------
        image : `lsst.images.MaskedImage`, `lsst.images.VisitImage` or `lsst.images.Image`
            Image to correct; only its image plane changes.
        skyBackground : `BackgroundList`
            The sky frame, over the same box as ``image``.
        scale : `float`
            Scale from `solveScales`.
        bgList : `BackgroundList`, optional
            If given, the scaled sky frame is appended to it (a copy of the
            sky frame's stats image times ``scale``, with its styles), so that
            the list keeps describing everything subtracted from the image.

        Raises
        ------
        lsst.skyframes.errors.NoDataError
            Raised if ``scale`` is not finite.
        lsst.skyframes.errors.BoxMismatchError
            Raised if the image and sky frame cover different boxes.
        """
        if not np.isfinite(scale):
            raise NoDataError(
                f"subtractSkyFrame got a non-finite scale ({scale}); solveScales failed for this visit."
            )
        pixels, _ = image_and_mask(image)
        sky = skyBackground.getImage()
        require_same_bbox(pixels.bbox, sky.bbox, "subtractSkyFrame image and sky frame")
        pixels.array -= (scale * sky.array).astype(pixels.array.dtype, copy=False)
        if bgList is not None:
            background, *styles = skyBackground[0]
            stats = background.getStatsImage().copy()
            stats.image.array *= scale
            # afw scales a MaskedImage's variance plane by scale**2 (it holds
            # errors, not variances, but afw does not know that); so do we.
            stats.variance.array *= scale * scale
            bgList.append(
                (BackgroundMI(background.getImageBBox(), stats, background.getBackgroundControl()), *styles)
            )


def _stacked_inputs(
    bgList: Sequence[BackgroundList], what: str
) -> tuple[list[BackgroundMI], list[MaskedImage], np.ndarray, np.ndarray]:
    """Check single-element inputs of one box and grid; return them, their (n, ny, nx) values and bad bins."""
    if len(bgList) == 0:
        raise NoDataError(f"{what} needs at least one background list; got none.")
    lengths = [len(bg) for bg in bgList]
    if any(n != 1 for n in lengths):
        raise ValueError(
            f"{what} needs single-element background lists (from measureBackground); got lengths {lengths}."
        )
    backgrounds = [bg[0][0] for bg in bgList]
    bbox = backgrounds[0].getImageBBox()
    grid = backgrounds[0].getStatsImage().bbox
    for index, background in enumerate(backgrounds):
        if background.getImageBBox() != bbox or background.getStatsImage().bbox != grid:
            raise BoxMismatchError(
                f"{what} input {index} covers {background.getImageBBox()} with bins "
                f"{background.getStatsImage().bbox}, but input 0 covers {bbox} with bins {grid}; "
                "combine only backgrounds of the same detector measured with the same bin size."
            )
    stats_images = [background.getStatsImage() for background in backgrounds]
    values = np.stack([np.asarray(s.image.array, dtype=np.float64) for s in stats_images])
    # NaN bins count as BAD; the inputs themselves are left untouched.
    bad = ~np.isfinite(values)
    for layer, stats in zip(bad, stats_images, strict=True):
        if "BAD" in stats.mask.schema.names:
            layer |= stats.mask.get("BAD")
    return backgrounds, stats_images, values, bad


def _stacked_strip(flags: Sequence[np.ndarray | None], y0: int, y1: int, width: int) -> np.ndarray:
    """Rows ``y0:y1`` of per-image boolean flags, stacked (an image without flags: none set)."""
    return np.stack(
        [np.zeros((y1 - y0, width), bool) if f is None else np.asarray(f[y0:y1], bool) for f in flags]
    )


def _no_data_mask(missing: np.ndarray) -> Mask:
    """A bin mask with NO_DATA where nothing contributed (``missing``) and nothing else set."""
    out = Mask(0, schema=default_mask_schema(), bbox=Box.from_shape(missing.shape))
    out.set("NO_DATA", missing)
    return out


def _combined_mask(stats_images: Sequence[MaskedImage], bad: np.ndarray, missing: np.ndarray) -> Any:
    """OR of the contributing inputs' masks, NO_DATA where nothing contributed."""
    schema = default_mask_schema()
    out = Mask(0, schema=schema, bbox=stats_images[0].bbox)
    for stats, layer_bad in zip(stats_images, bad, strict=True):
        for name in schema.names & stats.mask.schema.names:
            out.set(name, stats.mask.get(name) & ~layer_bad)
    out.set("NO_DATA", missing)
    return out
