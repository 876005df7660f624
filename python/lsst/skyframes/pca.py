"""Multi-component sky templates from a robust principal-component analysis.

DES (Bernstein et al. 2017) models the sky of an exposure as a linear
combination of a few focal-plane templates rather than one scaled sky frame:
the pattern changes with e.g. the Moon's position or fringing, and one frame
cannot follow that.  This module builds such templates from the same inputs
as today's sky frame (each exposure's normalised residual background,
`SkyMeasurementTask.measureBackground` of the residual image divided by the
sky level) and applies them.

Format
------
The ``K`` templates of a detector are ``K`` sky-frame "exposures" with the
layout of the single-frame ``sky`` calib (a `lsst.images.MaskedImage` with one
pixel per bin and the ``BOX.*``/``ALGORITHM`` metadata written by
`SkyMeasurementTask.backgroundToExposure`), each with metadata
``SKY_COMPONENT = k`` (1-based) and ``SKY_NCOMPONENTS = K``.  Component 1 is
exactly what `SkyMeasurementTask.averageBackgrounds` makes from the
non-rejected exposures, so anything that reads a single ``sky`` (e.g.
`SkyCorrectionTask`) can use it unchanged; components 2..K are zero-mean-ish
variation patterns in the same units (fraction of the sky level per unit
coefficient), with bins no exposure measured set to 0.

In a butler (`~lsst.skyframes.build.CpSkyCombineTask` with ``nComponents`` >
1, e.g. ``pipelines/BuildSkyTemplates.yaml``) each detector gets two
calibrations: ``sky``, component 1 in the format above (storage class
``MaskedImageV2``), and ``sky_components``, all K templates as one
`~lsst.skyframes.background.BackgroundList` (storage class
``SkyBackgroundList``: afw's BackgroundList FITS layout, three HDUs per
element, element k-1 being template k as a `BackgroundMI` whose stats image
is the template's one-pixel-per-bin image). `SkyCorrectionTask` with
``nComponents`` = K' ≤ K uses the first K' elements.

Memory
------
The PCA works on the whole focal plane, one row of bins per exposure, but
never holds that (n_exposures, n_bins) matrix: `SkyPcaTask` reads it from the
input backgrounds in chunks of about ``PCA_CHUNK_ENTRIES`` entries (columns
of one detector), again at every pass, and keeps between passes only per-bin
rows (two rounds' K templates and each bin's robust sigma), per-exposure
normal equations and the exposures' Gram matrix (see
``lsst.skyframes._robust_pca``).  Its working memory beyond the inputs
(`pca_memory_bytes`, refused above ``pca.maxMemoryGiB``) is about
8 (2K + 1) + 12 K bytes per bin (with the output images) plus at most
25 MiB, and grows with the number of exposures only by the Gram matrix and by
the per-detector average that makes component 1.  The inputs, one float32 stats image (value, mask, error) per
exposure and detector, are the caller's: about 10 bytes per exposure and bin
(3 GiB for 100 exposures of LSSTCam at 32-px bins).  `CpSkyCombineTask`
reads them all with its quantum; deferred handles would let it read one
detector at a time, but the PCA passes over every bin about 4 times per
round (``nIter`` + 1 rounds), so that would read each input ~25 times.
"""

from __future__ import annotations

__all__ = [
    "RobustPcaResult",
    "SkyPcaConfig",
    "PCA_AVERAGE_BYTES_PER_ENTRY",
    "PCA_BYTES_PER_BIN_ROW",
    "PCA_BYTES_PER_ENTRY",
    "PCA_CHUNK_ENTRIES",
    "PCA_OUTPUT_BYTES_PER_BIN",
    "SkyPcaTask",
    "fit_component_scales",
    "pca_memory_bytes",
    "robust_pca",
    "subtract_components",
]

import functools
from collections.abc import Mapping, Sequence

import numpy as np

from lsst.images import Box, Image, MaskedImage
from lsst.pex.config import Config, ConfigurableField, Field, RangeField
from lsst.pipe.base import Struct, Task
from lsst.utils.timer import timeMethod

from ._least_squares import clipped_least_squares
from ._robust_pca import Chunk, RobustPcaResult, chunked_robust_pca
from .background import BackgroundList
from .bin_size import BinSizeChoice, rebin_background
from .errors import BoxMismatchError, NoDataError, ProblemTooLargeError
from .images import image_and_mask, require_same_bbox
from .mask_planes import default_mask_schema
from .sky_measurement import REFERENCE_IQR_TO_SIGMA, SkyMeasurementConfig, SkyMeasurementTask
from .statistics import bad_pixel_mask, binned_statistics

# Working memory of the robust PCA (see pca_memory_bytes).  It streams the
# (n_exposures, n_bins) problem in chunks of about PCA_CHUNK_ENTRIES entries
# (columns of one detector), which need PCA_BYTES_PER_ENTRY bytes per entry
# while worked on (78 measured with tracemalloc), and keeps
# PCA_BYTES_PER_BIN_ROW bytes per bin for each of 2K + 1 focal-plane rows (two
# rounds' templates and the bins' sigmas).  SkyPcaTask then averages each
# detector's backgrounds into component 1 (SkyMeasurementTask.averageBackgrounds,
# 16 bytes per exposure and bin of one detector measured) and makes K float32
# MaskedImages per detector (10 bytes per bin each).  2**18 entries (2 MiB per
# float64 array) ran faster than 2**20 at 80 exposures: the arrays stay in cache.
PCA_CHUNK_ENTRIES = 2**18
PCA_BYTES_PER_ENTRY = 100
PCA_BYTES_PER_BIN_ROW = 8
PCA_AVERAGE_BYTES_PER_ENTRY = 24
PCA_OUTPUT_BYTES_PER_BIN = 12


def _chunk_columns(n_exposures: int) -> int:
    """Columns per chunk: about PCA_CHUNK_ENTRIES entries, at least one column."""
    return max(1, PCA_CHUNK_ENTRIES // max(n_exposures, 1))


def _column_chunks(n_columns: int, n_exposures: int) -> list[tuple[int, int]]:
    step = _chunk_columns(n_exposures)
    return [(start, min(start + step, n_columns)) for start in range(0, n_columns, step)]


def robust_pca(
    data: np.ndarray,
    n_components: int,
    *,
    clip: float = 3.0,
    n_iter: int = 5,
    max_bad_fraction: float = 0.2,
    max_residual_fraction: float | None = 0.005,
    noise: np.ndarray | None = None,
) -> RobustPcaResult:
    """Robust principal components of normalised residual-background vectors.

    Parameters
    ----------
    data : `numpy.ndarray`
        (n_exposures, n_bins): each row one exposure's normalised residual
        background, all detectors' bins concatenated (the whole focal plane).
        NaN marks missing bins.
    n_components : `int`
        Number K of templates, ≥ 1.
    clip : `float`, optional
        Entries whose residual from the rank-K model exceeds ``clip`` × the
        bin's robust sigma (0.7413 × IQR across the kept exposures) are
        outliers: they are replaced by the model before the next SVD and left
        out of the coefficient fits.
    n_iter : `int`, optional
        Rounds of [mean, fill, SVD, fit, clip, reject].
    max_bad_fraction : `float`, optional
        An exposure with more than this fraction of its finite bins clipped
        is rejected (a localised artefact: satellite trail, ghost, bad amp).
    max_residual_fraction : `float` or `None`, optional
        An exposure whose RMS residual from the rank-K model (over its
        unclipped bins) exceeds this
        fraction of the sky level is rejected (DES: 0.005).  `None` disables
        the test.  Note that with K too small for the data's variation every
        exposure may fail it.
    noise : `numpy.ndarray`, optional
        (n_exposures, n_bins): the standard error of each entry (the
        ``variance`` plane of a background's stats image, which holds a
        sigma as afw's does). With it the residual compared with
        ``max_residual_fraction`` is the RMS in excess of the noise, so that
        the test measures structure the K components miss rather than the
        noise of small bins (a 16-px bin of a 1000 e⁻ sky alone has a
        fractional noise of 0.002; an 8-px bin 0.004). DES's 128-px blocks
        make the noise negligible, which this reproduces for any bin size.

    Returns
    -------
    result : `RobustPcaResult`

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised if no bin is finite, or too few exposures survive to make K
        components.
    ValueError
        Raised for a non-2-d ``data`` or ``n_components`` < 1.

    Notes
    -----
    Component 1 is the per-bin MEANCLIP (3 sigma, 3 iterations) over the
    finite entries of the kept exposures, the statistic of
    `SkyMeasurementTask.averageBackgrounds`, so with no exposure rejected it
    equals today's sky frame bin for bin; the outlier clipping of the
    low-rank model deliberately does not feed into it.  Rejection is
    re-evaluated every round (not cumulative), so an exposure that looked bad
    against components distorted by an artefact in the first round comes back
    once the artefact's exposure is out.

    The bins are worked in chunks of about ``PCA_CHUNK_ENTRIES`` entries
    (`lsst.skyframes._robust_pca`), so the working memory beyond ``data``
    and ``noise`` is `pca_memory_bytes` plus the returned ``clipped`` mask;
    the results do not depend on the chunks beyond the order of sums
    (relative differences ~1e-15).
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"robust_pca needs a 2-d (n_exposures, n_bins) array; got shape {data.shape}.")
    if n_components < 1:
        raise ValueError(f"robust_pca needs n_components >= 1; got {n_components}.")
    n_exp, n_bins = data.shape
    if noise is not None:
        noise = np.asarray(noise, dtype=np.float64)
        if noise.shape != data.shape:
            raise ValueError(
                f"robust_pca: noise has shape {noise.shape} but data {data.shape}; pass one per entry."
            )

    def reader(start: int, stop: int):
        # Views of the caller's arrays: a chunk costs no copy until it is worked on.
        return lambda: (data[:, start:stop], None if noise is None else noise[:, start:stop])

    chunks = [Chunk(start, stop, reader(start, stop)) for start, stop in _column_chunks(n_bins, n_exp)]
    return chunked_robust_pca(
        chunks,
        n_exp,
        n_bins,
        n_components,
        clip=clip,
        n_iter=n_iter,
        max_bad_fraction=max_bad_fraction,
        max_residual_fraction=max_residual_fraction,
        has_noise=noise is not None,
        want_clipped=True,
    )


class SkyPcaConfig(Config):
    """Configuration of `SkyPcaTask`."""

    nComponents = RangeField[int](
        doc="Number of sky templates per detector; 1 gives today's single sky frame.", default=1, min=1
    )
    clip = RangeField[float](
        doc="Outlier threshold of the low-rank model, in robust sigmas of each bin.",
        default=3.0,
        min=0.0,
        inclusiveMin=False,
    )
    nIter = RangeField[int](doc="Rounds of the robust PCA (fill, SVD, clip, reject).", default=5, min=1)
    maxBadFraction = RangeField[float](
        doc="Reject an exposure with more than this fraction of its bins clipped.",
        default=0.2,
        min=0.0,
        max=1.0,
    )
    maxResidualFraction = Field[float](
        doc="Reject an exposure whose RMS residual from the K-component model, in excess of the bins' "
        "noise (their stats error), exceeds this fraction of the sky level (DES: 0.005); None disables.",
        default=0.005,
        optional=True,
    )
    maxMemoryGiB = RangeField[float](
        doc="Refuse (ProblemTooLargeError) a PCA whose working memory beyond the input backgrounds is "
        "estimated (pca_memory_bytes) above this: about 8 (2 nComponents + 1) + 12 nComponents bytes per "
        "bin of the whole focal plane (templates, bin sigmas, output images), the larger of one chunk of "
        "PCA_CHUNK_ENTRIES (exposure, bin) entries at PCA_BYTES_PER_ENTRY bytes each (at most 25 MiB) and "
        "one detector's average of all exposures (24 bytes per exposure and bin), and the exposures' Gram "
        "matrix. The inputs (about 10 bytes per exposure and bin) are not counted.",
        default=16.0,
        min=0.0,
        inclusiveMin=False,
    )
    sky = ConfigurableField(target=SkyMeasurementTask, doc="Background binning and combination.")


def pca_memory_bytes(
    n_exposures: int, n_bins: int, n_components: int = 2, largest_block: int | None = None
) -> int:
    """Estimated peak working memory of the robust PCA, beyond its inputs.

    Parameters
    ----------
    n_exposures, n_bins : `int`
        The problem: exposures and bins of the whole focal plane.
    n_components : `int`, optional
        K.
    largest_block : `int`, optional
        Bins of the largest detector: the estimate of `SkyPcaTask.run`,
        which chunks each detector separately, then averages each
        detector's backgrounds into component 1 and makes the K output
        images.  `None`: the estimate of `robust_pca` on one
        (n_exposures, n_bins) array.

    Returns
    -------
    bytes : `int`
        The sum of ``PCA_BYTES_PER_BIN_ROW`` per bin for each of 2K + 1
        focal-plane rows (the previous and the current round's templates and
        the bins' robust sigma), the float64 Gram matrix and per-exposure
        K x K normal equations, and the larger of ``PCA_BYTES_PER_ENTRY`` per
        entry of the largest chunk (``min(largest_block, PCA_CHUNK_ENTRIES //
        n_exposures)`` columns of every exposure: the chunk's values, noise,
        masks, model, residuals and the quartile sort) and, for
        `SkyPcaTask`, ``PCA_AVERAGE_BYTES_PER_ENTRY`` per exposure and bin of
        the largest detector; for `SkyPcaTask` also
        ``PCA_OUTPUT_BYTES_PER_BIN`` per bin and component (the output
        images).  With ``PCA_CHUNK_ENTRIES`` = 2¹⁸ the chunk term is at most
        25 MiB whatever the number of exposures; only the Gram matrix and the
        per-detector average grow with it.

    Notes
    -----
    Neither the inputs (the caller's arrays or `BackgroundList` objects,
    about 10 bytes per exposure and bin as float32 stats images) nor
    `robust_pca`'s (n_exposures, n_bins) bool ``clipped`` result are counted.
    """
    n_exp = max(int(n_exposures), 1)
    n_comp = int(n_components)
    block = int(n_bins) if largest_block is None else min(int(largest_block), int(n_bins))
    chunk = PCA_BYTES_PER_ENTRY * n_exp * min(block, _chunk_columns(n_exp))
    average = 0 if largest_block is None else PCA_AVERAGE_BYTES_PER_ENTRY * n_exp * block
    outputs = 0 if largest_block is None else PCA_OUTPUT_BYTES_PER_BIN * n_comp
    per_bin = (PCA_BYTES_PER_BIN_ROW * (2 * n_comp + 1) + 1 + outputs) * int(n_bins)
    per_exposure = 8 * n_exp * (3 * n_exp + 4 * n_comp**2 + 8)
    return int(max(chunk, average) + per_bin + per_exposure)


def _detector_grid(bgs: Sequence[BackgroundList | None], detector: object) -> tuple[Box, Box]:
    """The image box and bin grid every present background of a detector shares."""
    present = [bg for bg in bgs if bg is not None]
    if not present:
        raise NoDataError(f"SkyPcaTask: detector {detector} has no background for any exposure.")
    for bg in present:
        if len(bg) != 1:
            raise ValueError(
                f"SkyPcaTask: detector {detector} has a background list of length {len(bg)}; "
                "pass single-element lists from measureBackground."
            )
    first = present[0][0][0]
    bbox, grid = first.getImageBBox(), first.getStatsImage().bbox
    for index, bg in enumerate(bgs):
        if bg is None:
            continue
        background = bg[0][0]
        if background.getImageBBox() != bbox or background.getStatsImage().bbox != grid:
            raise BoxMismatchError(
                f"SkyPcaTask: detector {detector} exposure {index} covers {background.getImageBBox()} "
                f"with bins {background.getStatsImage().bbox}, others {bbox} with {grid}."
            )
    return bbox, grid


def _read_bins(bgs: Sequence[BackgroundList | None], start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Bins ``[start, stop)`` (row-major) of a detector: (n_exposures, n) values and errors.

    NaN for BAD bins and missing exposures.  Read afresh at every pass of the
    PCA, so that only one chunk of the detector is ever held in float64.
    """
    values = np.full((len(bgs), stop - start), np.nan)
    errors = np.full((len(bgs), stop - start), np.nan)
    for index, bg in enumerate(bgs):
        if bg is None:
            continue
        stats = bg[0][0].getStatsImage()
        values[index] = stats.image.array.ravel()[start:stop]
        if "BAD" in stats.mask.schema.names:
            values[index, stats.mask.get("BAD").ravel()[start:stop]] = np.nan
        # The stats image's variance plane holds the bin's standard error (afw's convention).
        errors[index] = stats.variance.array.ravel()[start:stop]
    return values, errors


class SkyPcaTask(Task):
    """Build K sky templates per detector from all detectors' residual backgrounds.

    The robust PCA runs on the whole focal plane at once (each exposure's
    detectors concatenated), so one set of coefficients per exposure describes
    every detector, as the templates are later fitted per visit.
    """

    ConfigClass = SkyPcaConfig
    _DefaultName = "skyPca"
    config: SkyPcaConfig

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.makeSubtask("sky")

    @timeMethod
    def run(
        self,
        backgrounds: Mapping[int, Sequence[BackgroundList | None]],
        exposureIds: Sequence[int],
        *,
        nComponents: int | None = None,
        sky: SkyMeasurementTask | None = None,
    ) -> Struct:
        """Make the templates.

        Parameters
        ----------
        backgrounds : `~collections.abc.Mapping` [`int`, sequence of `BackgroundList` or `None`]
            Per detector id, one single-element normalised residual background
            per exposure, in the order of ``exposureIds``; `None` where the
            exposure lacks the detector.
        exposureIds : sequence of `int`
            The exposures.
        nComponents : `int`, optional
            Number of templates; ``config.nComponents`` if `None`.
            (`~lsst.skyframes.build.CpSkyCombineTask` passes its own
            ``nComponents``, so there is one place to set it in a pipeline.)
        sky : `SkyMeasurementTask`, optional
            Task whose ``averageBackgrounds`` and ``backgroundToExposure``
            make the sky-frame images; the ``sky`` subtask if `None`.
            `~lsst.skyframes.build.CpSkyCombineTask` passes its own, so that
            component 1 is combined exactly as its single sky frame.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``skyFrames``: dict detector → list of K `MaskedImage` (see the
            module docstring for the format); ``varianceExplained`` (K,);
            ``coefficients`` (n_exposures, K); ``rejectedExposures``: list of
            (exposure id, reason); ``usedExposures``: list of ids.

        Raises
        ------
        lsst.skyframes.errors.NoDataError
            Raised for empty inputs or too few usable exposures.
        ValueError
            Raised if a detector's sequence length differs from ``exposureIds``.
        """
        ids = [int(e) for e in exposureIds]
        n_comp = self.config.nComponents if nComponents is None else int(nComponents)
        if n_comp < 1:
            raise ValueError(f"SkyPcaTask.run needs nComponents >= 1; got {n_comp}.")
        sky = self.sky if sky is None else sky
        if not backgrounds or not ids:
            raise NoDataError("SkyPcaTask.run needs at least one detector and one exposure.")
        detectors = sorted(backgrounds)
        measured, choices = backgrounds, self._chooseBinSizes(backgrounds, detectors, sky)
        if choices:
            # The PCA runs on the bins the sky frame is made at.
            backgrounds = {
                det: [
                    None if bg is None else rebin_background(bg, choices[det].binSize) for bg in measured[det]
                ]
                for det in detectors
            }
        chunks: list[Chunk] = []
        sizes: list[int] = []
        for det in detectors:
            if len(backgrounds[det]) != len(ids):
                raise ValueError(
                    f"SkyPcaTask: detector {det} has {len(backgrounds[det])} backgrounds for "
                    f"{len(ids)} exposures; pass None for a missing one."
                )
            grid = _detector_grid(backgrounds[det], det)[1]
            size = grid.shape[0] * grid.shape[1]
            offset = sum(sizes)
            # Chunks within one detector, so each reads one detector's backgrounds.
            for start, stop in _column_chunks(size, len(ids)):
                chunks.append(
                    Chunk(
                        offset + start,
                        offset + stop,
                        functools.partial(_read_bins, backgrounds[det], start, stop),
                    )
                )
            sizes.append(size)
        needed = pca_memory_bytes(len(ids), sum(sizes), n_comp, largest_block=max(sizes))
        if needed > self.config.maxMemoryGiB * 2**30:
            raise ProblemTooLargeError(
                f"SkyPcaTask: {len(ids)} exposures x {sum(sizes)} bins of {len(detectors)} detectors and "
                f"{n_comp} components need about {needed / 2**30:.2f} GiB of working memory beyond the "
                f"inputs, more than maxMemoryGiB = {self.config.maxMemoryGiB:g}. Use coarser bins for the "
                "residual backgrounds (e.g. pipetask -c parameters:xBinSize=128 -c parameters:yBinSize=128 "
                "with pipelines/BuildSkyTemplates.yaml, DES's 128-px blocks: 16x fewer bins than 32 px), "
                "fewer components, or raise pca.maxMemoryGiB on a bigger machine."
            )
        result = chunked_robust_pca(
            chunks,
            len(ids),
            sum(sizes),
            n_comp,
            clip=self.config.clip,
            n_iter=self.config.nIter,
            max_bad_fraction=self.config.maxBadFraction,
            max_residual_fraction=self.config.maxResidualFraction,
            has_noise=True,
            want_clipped=False,
        )
        rejected = {index for index, _ in result.rejected_exposures}
        frames: dict[int, list[MaskedImage]] = {}
        starts = np.cumsum([0, *sizes])
        for det, start, stop in zip(detectors, starts[:-1], starts[1:], strict=True):
            used = [bg for i, bg in enumerate(measured[det]) if bg is not None and i not in rejected]
            # Component 1 is made exactly as today's sky frame, so single-frame
            # consumers see no difference.
            first = sky.averageBackgrounds(used, binSizeChoice=choices.get(det))
            background = used[0][0][0]
            grid = background.getStatsImage().bbox
            components = [first]
            for k in range(1, n_comp):
                values = result.templates[k, start:stop].reshape(grid.shape)
                missing = ~np.isfinite(values)
                mask = default_mask_schema()
                stats = MaskedImage(
                    Image(np.where(missing, 0.0, values).astype(np.float32), bbox=grid),
                    mask_schema=mask,
                )
                stats.mask.set("NO_DATA", missing)
                stats.variance.array[...] = 0.0
                components.append(sky.backgroundToExposure(stats, background.getImageBBox()))
            for k, frame in enumerate(components, start=1):
                frame.metadata["SKY_COMPONENT"] = k
                frame.metadata["SKY_NCOMPONENTS"] = n_comp
                if det in choices:
                    choices[det].toMetadata(frame.metadata)
            frames[det] = components
        self.metadata["varianceExplained"] = [float(v) for v in result.variance_explained]
        self.metadata["nRejected"] = len(result.rejected_exposures)
        return Struct(
            skyFrames=frames,
            varianceExplained=result.variance_explained,
            coefficients=result.coefficients,
            rejectedExposures=[(ids[i], reason) for i, reason in result.rejected_exposures],
            usedExposures=[e for i, e in enumerate(ids) if i not in rejected],
        )

    @staticmethod
    def _chooseBinSizes(
        backgrounds: Mapping[int, Sequence[BackgroundList | None]],
        detectors: Sequence[int],
        sky: SkyMeasurementTask,
    ) -> dict[int, BinSizeChoice]:
        """Each detector's bin size with ``binSizeChoice='crossValidated'`` (none with 'fixed').

        The size is chosen from all the detector's inputs as for its single
        sky frame, so component 1 is that frame and every component shares
        its bins.
        """
        if sky.config.background.binSizeChoice != "crossValidated":
            return {}
        return {
            det: sky.chooseBinSize([bg for bg in backgrounds[det] if bg is not None]) for det in detectors
        }


def _as_background(template: MaskedImage | BackgroundList) -> BackgroundList:
    if isinstance(template, BackgroundList):
        return template
    return SkyMeasurementTask.exposureToBackground(template)


def _component_samples(
    image: MaskedImage, templates: Sequence[BackgroundList], config: SkyMeasurementConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Samples of one detector: (n_samples,) image and (n_samples, K) templates.

    The boxes, statistic and mask planes are those of
    `SkyMeasurementTask.measureScale`; the image is measured once for all
    components.
    """
    pixels, mask = image_and_mask(image)
    height, width = pixels.bbox.shape
    x_edges = np.linspace(0, width, min(config.xNumSamples, width) + 1).astype(int)
    y_edges = np.linspace(0, height, min(config.yNumSamples, height) + 1).astype(int)
    stats = config.stats

    def sample(array: np.ndarray, bad: np.ndarray | None) -> np.ndarray:
        result = binned_statistics(
            array, bad, x_edges, y_edges, stats.statistic, clip=stats.clip, n_iter=stats.nIter
        )
        return result.value.T.ravel()

    bad = bad_pixel_mask(mask, list(stats.mask)) if mask is not None else None
    columns = []
    for template in templates:
        rendered = template.getImage()
        require_same_bbox(pixels.bbox, rendered.bbox, "fit_component_scales image and template")
        columns.append(sample(rendered.array, None))
    return sample(pixels.array, bad), np.stack(columns, axis=1)


def fit_component_scales(
    images: Sequence[MaskedImage],
    templates_per_detector: Sequence[Sequence[MaskedImage | BackgroundList]],
    sky_config: SkyMeasurementConfig | None = None,
) -> np.ndarray:
    """Fit one set of K template coefficients to all detectors of a visit.

    Parameters
    ----------
    images : sequence of `lsst.images.MaskedImage`
        The visit's detector images (after any large-scale model).
    templates_per_detector : sequence of sequences
        For each image, its K templates (sky-frame exposures from
        `SkyPcaTask` or their `BackgroundList`s), same order everywhere.
    sky_config : `SkyMeasurementConfig`, optional
        Sample boxes (``xNumSamples``, ``yNumSamples``), their statistic and
        the rejection (``skyRej``, ``skyIter``).

    Returns
    -------
    coefficients : `numpy.ndarray`
        (K,) float64: image ≈ Σ_k c_k · template_k.

    Raises
    ------
    lsst.skyframes.errors.NoDataError
        Raised if fewer finite sample sets than components remain.
    ValueError
        Raised if the inputs' lengths or component counts disagree.

    Notes
    -----
    Linear least squares without intercept over every detector's samples;
    ``skyIter`` rounds reject samples whose residual exceeds ``skyRej`` ×
    0.741 × IQR of the kept residuals (the reference's constant,
    `~lsst.skyframes.sky_measurement.REFERENCE_IQR_TO_SIGMA`), cumulatively:
    the fit of `SkyMeasurementTask.solveScales` (the same code), which with
    one template gives the same number bit for bit.
    """
    config = sky_config if sky_config is not None else SkyMeasurementConfig()
    if len(images) != len(templates_per_detector):
        raise ValueError(
            f"fit_component_scales got {len(images)} images but {len(templates_per_detector)} template sets."
        )
    if not images:
        raise NoDataError("fit_component_scales needs at least one image.")
    n_comp = {len(t) for t in templates_per_detector}
    if len(n_comp) != 1 or 0 in n_comp:
        raise ValueError(
            f"fit_component_scales: every detector needs the same K ≥ 1 templates; got {n_comp}."
        )
    ys, xs = [], []
    for image, templates in zip(images, templates_per_detector, strict=True):
        y, x = _component_samples(image, [_as_background(t) for t in templates], config)
        ys.append(y)
        xs.append(x)
    return clipped_least_squares(
        np.concatenate(ys),
        np.concatenate(xs),
        n_iter=config.skyIter,
        rejection=config.skyRej,
        iqr_to_sigma=REFERENCE_IQR_TO_SIGMA,
        too_few_message=lambda kept, components: (
            f"fit_component_scales: {kept} usable samples for {components} components; "
            "check the image masks or use more sample boxes (xNumSamples, yNumSamples)."
        ),
    )


def subtract_components(
    image: MaskedImage,
    templates: Sequence[MaskedImage | BackgroundList],
    coefficients: Sequence[float],
    bgList: BackgroundList | None = None,
) -> None:
    """Subtract Σ_k c_k · template_k from an image, in place.

    Parameters
    ----------
    image : `lsst.images.MaskedImage`
        Image to correct; only its image plane changes.
    templates : sequence of `MaskedImage` or `BackgroundList`
        The detector's K templates.
    coefficients : sequence of `float`
        K coefficients from `fit_component_scales`.
    bgList : `BackgroundList`, optional
        If given, each scaled template is appended (as
        `SkyMeasurementTask.subtractSkyFrame` does), so the list keeps
        describing everything subtracted.

    Raises
    ------
    ValueError
        Raised if the numbers of templates and coefficients differ.
    lsst.skyframes.errors.NoDataError
        Raised for a non-finite coefficient.
    """
    if len(templates) != len(coefficients):
        raise ValueError(
            f"subtract_components got {len(templates)} templates but {len(coefficients)} coefficients."
        )
    task = SkyMeasurementTask()
    for template, coefficient in zip(templates, coefficients, strict=True):
        task.subtractSkyFrame(image, _as_background(template), float(coefficient), bgList)
