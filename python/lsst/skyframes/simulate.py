"""Synthetic detector exposures with a known sky-frame pattern.

Everything here is deterministic for a seed and returns its truth beside the
data, so tests and the demo can score what the algorithms recover: exposures
to build sky frames from (`simulate_detector`), and science visits as a
calibration pipeline hands them on, with a per-detector background already
subtracted (`simulate_science_visit`, stored by `put_science_visit`).
"""

from __future__ import annotations

__all__ = [
    "ExposurePlan",
    "ScienceDetector",
    "SimulatedExposure",
    "SkyPattern",
    "binned_background",
    "define_planned_exposure",
    "detector_pattern",
    "exposure_header",
    "large_scale_field",
    "noiseless_sky",
    "object_field",
    "plan_exposures",
    "put_science_visit",
    "secondary_pattern",
    "simulate_detector",
    "simulate_exposure",
    "simulate_science_visit",
    "sky_response",
    "two_pattern_sky",
]

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import astropy.time
import numpy as np

from lsst.daf.butler import Butler
from lsst.images import Box, Image, Mask, MaskedImage

from .background import BackgroundList
from .camera import Camera
from .ingest import define_visit_detectors
from .mask_planes import default_mask_schema
from .repo import insert_exposure
from .sky_measurement import SkyMeasurementConfig, SkyMeasurementTask


@dataclasses.dataclass(frozen=True)
class SkyPattern:
    """A smooth multiplicative sky-frame pattern of one detector, around 1.

    The pattern is 1 + vignetting + ring + gradient + amplifier offsets, each
    term scaled so that the whole stays within about ``amplitude`` of 1.

    Parameters
    ----------
    amplitude : `float`
        Overall strength of the pattern (fraction of the sky level).
    centre : `tuple` [`float`, `float`]
        Optical-axis position (x, y) in units of the detector size, for the
        vignetting and the ring.
    ring_radius, ring_width : `float`
        Ring radius and Gaussian width, in units of the detector size.
    gradient : `tuple` [`float`, `float`]
        Linear slope (x, y) across the detector, as a fraction of amplitude.
    n_amplifiers : `int`
        Number of amplifier strips along x, each with its own offset.
    amp_step_width : `float`
        Width of the smooth step between amplifiers, in units of the detector
        width (a binned model only follows steps broader than a bin).
    amp_offsets_seed : `int`
        Seed of the amplifier offsets.
    """

    amplitude: float = 0.2
    centre: tuple[float, float] = (0.3, 0.6)
    ring_radius: float = 0.45
    ring_width: float = 0.12
    gradient: tuple[float, float] = (0.25, -0.15)
    n_amplifiers: int = 4
    amp_offsets_seed: int = 7
    amp_step_width: float = 0.04

    def evaluate(self, x: np.ndarray, y: np.ndarray, width: int, height: int) -> np.ndarray:
        """Evaluate the pattern at pixel positions of a ``width`` × ``height`` detector.

        Parameters
        ----------
        x, y : `numpy.ndarray`
            Local pixel coordinates (broadcastable).
        width, height : `int`
            Detector size in pixels.

        Returns
        -------
        pattern : `numpy.ndarray`
            float64 values around 1.
        """
        u = (np.asarray(x, dtype=np.float64) + 0.5) / width
        v = (np.asarray(y, dtype=np.float64) + 0.5) / height
        r = np.hypot(u - self.centre[0], v - self.centre[1])
        vignetting = -0.35 * r**2
        ring = 0.25 * np.exp(-0.5 * ((r - self.ring_radius) / self.ring_width) ** 2)
        gradient = self.gradient[0] * (u - 0.5) + self.gradient[1] * (v - 0.5)
        offsets = np.random.default_rng(self.amp_offsets_seed).uniform(-0.1, 0.1, self.n_amplifiers)
        edges = np.arange(1, self.n_amplifiers) / self.n_amplifiers
        amps = offsets[0] + sum(
            (offsets[i + 1] - offsets[i]) * 0.5 * (1 + np.tanh((u - edge) / self.amp_step_width))
            for i, edge in enumerate(edges)
        )
        return 1.0 + self.amplitude * (vignetting + ring + gradient + amps)

    def render(self, width: int, height: int) -> np.ndarray:
        """Return the pattern at every pixel, shape (height, width), float64."""
        y, x = np.mgrid[0:height, 0:width]
        return self.evaluate(x, y, width, height)


@dataclasses.dataclass
class SimulatedExposure:
    """One synthetic exposure and its truth.

    Attributes
    ----------
    image : `lsst.images.MaskedImage`
        Pixels (float32, electrons), mask (DETECTED on objects, BAD on bad
        columns) and variance.
    sky_level : `float`
        Sky level that multiplies the pattern.
    sky : `numpy.ndarray`
        Noiseless sky (level × pattern × any large-scale term), float64.
    objects : `numpy.ndarray`
        Noiseless object flux, float64.
    """

    image: MaskedImage
    sky_level: float
    sky: np.ndarray
    objects: np.ndarray


def _add_gaussian_objects(
    canvas: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray, sigma: np.ndarray, radius: int
) -> None:
    """Add circular Gaussians to ``canvas`` in place, vectorised over objects."""
    height, width = canvas.shape
    offsets = np.arange(-radius, radius + 1)
    xi = np.round(x).astype(int)[:, None, None] + offsets[None, None, :]
    yi = np.round(y).astype(int)[:, None, None] + offsets[None, :, None]
    dx = xi - x[:, None, None]
    dy = yi - y[:, None, None]
    s = sigma[:, None, None]
    values = flux[:, None, None] / (2 * np.pi * s**2) * np.exp(-0.5 * (dx**2 + dy**2) / s**2)
    xi, yi = np.broadcast_arrays(xi, yi)
    inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
    np.add.at(canvas, (yi[inside], xi[inside]), np.broadcast_to(values, xi.shape)[inside])


def object_field(
    width: int,
    height: int,
    sky_level: float,
    rng: np.random.Generator,
    *,
    n_stars: int = 150,
    n_galaxies: int = 30,
    psf_sigma: float = 2.0,
) -> np.ndarray:
    """Draw stars and galaxies: the object light of `simulate_exposure`.

    Parameters
    ----------
    width, height : `int`
        Size in pixels.
    sky_level : `float`
        Sky level (electrons per pixel) that sets the objects' peak signal
        to noise.
    rng : `numpy.random.Generator`
        Source of positions and fluxes.
    n_stars, n_galaxies : `int`, optional
        Number of point sources (PSF-sized) and extended sources (2–4× wider).
    psf_sigma : `float`, optional
        Gaussian PSF sigma in pixels.

    Returns
    -------
    objects : `numpy.ndarray`
        float64, shape (height, width), electrons. Peak signal to noise
        follows a power law: many objects at 2 sigma, a few at 200.
    """
    objects = np.zeros((height, width), dtype=np.float64)
    n_objects = n_stars + n_galaxies
    if n_objects:
        x = rng.uniform(0, width, n_objects)
        y = rng.uniform(0, height, n_objects)
        sigma = np.full(n_objects, psf_sigma)
        sigma[n_stars:] *= rng.uniform(2, 4, n_galaxies)
        # Peak signal-to-noise from a power law: many faint objects, a few at 200 sigma.
        peak_snr = 2.0 * (1.0 - rng.uniform(0.0, 0.99, n_objects)) ** -1.0
        flux = peak_snr * np.sqrt(sky_level) * 2 * np.pi * sigma**2
        radius = int(np.ceil(5 * sigma.max()))
        _add_gaussian_objects(objects, x, y, flux, sigma, radius)
    return objects


def simulate_exposure(
    width: int,
    height: int,
    sky_level: float,
    pattern: SkyPattern,
    rng: np.random.Generator,
    *,
    n_stars: int = 150,
    n_galaxies: int = 30,
    psf_sigma: float = 2.0,
    bad_columns: tuple[int, ...] = (),
    large_scale: np.ndarray | None = None,
    detection_threshold: float = 0.05,
    yx0: tuple[int, int] = (0, 0),
    objects: np.ndarray | None = None,
) -> SimulatedExposure:
    """Simulate one exposure: sky level × pattern + objects + noise.

    Parameters
    ----------
    width, height : `int`
        Size in pixels.
    sky_level : `float`
        Sky level in electrons per pixel.
    pattern : `SkyPattern`
        The detector's sky-frame pattern.
    rng : `numpy.random.Generator`
        Source of randomness (object positions, fluxes, noise).
    n_stars, n_galaxies : `int`, optional
        Number of point sources (PSF-sized) and extended sources (2–4× wider).
    psf_sigma : `float`, optional
        Gaussian PSF sigma in pixels.
    bad_columns : `tuple` [`int`], optional
        Columns set to 0 and flagged BAD.
    large_scale : `numpy.ndarray`, optional
        Extra multiplicative sky term (e.g. a focal-plane gradient), shape
        (height, width).
    detection_threshold : `float`, optional
        Object pixels brighter than this many noise sigmas are flagged
        DETECTED (an ideal detection, so the truth of the masking is known).
    yx0 : `tuple` [`int`, `int`], optional
        Origin of the image's bounding box.
    objects : `numpy.ndarray`, optional
        The object light (electrons, shape (height, width)) in place of
        objects drawn for this exposure, e.g. this exposure's window of one
        `object_field` seen through dithers; ``n_stars``, ``n_galaxies``
        and ``psf_sigma`` are then unused.

    Returns
    -------
    exposure : `SimulatedExposure`
    """
    sky = sky_level * pattern.render(width, height)
    if large_scale is not None:
        sky = sky * large_scale
    if objects is None:
        objects = object_field(
            width, height, sky_level, rng, n_stars=n_stars, n_galaxies=n_galaxies, psf_sigma=psf_sigma
        )
    elif np.shape(objects) != (height, width):
        raise ValueError(f"objects has shape {np.shape(objects)}; the exposure is {(height, width)}.")
    expected = sky + objects
    pixels = rng.normal(expected, np.sqrt(expected)).astype(np.float32)
    bbox = Box.from_shape((height, width), start=yx0)
    mask = Mask(0, schema=default_mask_schema(), bbox=bbox)
    mask.set("DETECTED", objects > detection_threshold * np.sqrt(sky))
    if bad_columns:
        bad = np.zeros((height, width), dtype=bool)
        bad[:, list(bad_columns)] = True
        pixels[bad] = 0.0
        mask.set("BAD", bad)
    image = MaskedImage(
        Image(pixels, bbox=bbox),
        mask=mask,
        variance=Image(expected.astype(np.float32), bbox=bbox),
    )
    return SimulatedExposure(image=image, sky_level=sky_level, sky=sky, objects=objects)


@dataclasses.dataclass(frozen=True)
class ExposurePlan:
    """What one simulated exposure of a whole camera looks like.

    Attributes
    ----------
    exposure_id : `int`
        Butler exposure id.
    physical_filter : `str`
        Physical filter.
    sky_level : `float`
        Sky level (electrons per pixel) at the focal-plane origin.
    gradient : `tuple` [`float`, `float`]
        Large-scale focal-plane gradient: fractional change of the sky per
        millimetre in x and y.
    obs_start : `str`
        Observation start, ISO 8601 UTC.
    exposure_time : `float`
        Exposure time in seconds.
    secondary_weight : `float`
        Weight of a second, independent sky pattern (`secondary_pattern`) in
        this exposure, as in `two_pattern_sky`; 0 (the default) for a sky with
        one fixed pattern.
    type_responses : `tuple` [`tuple` [`str`, `float`], ...]
        ``(physical_type, response)`` pairs: the sky of every detector of
        that physical type is multiplied by ``response`` in this exposure
        (sensors of different make see a sky of a given colour differently,
        as LSSTCam's E2V and ITL do); types not listed respond 1. Empty (the
        default) for a camera of one response.
    """

    exposure_id: int
    physical_filter: str
    sky_level: float
    gradient: tuple[float, float]
    obs_start: str
    exposure_time: float = 30.0
    secondary_weight: float = 0.0
    type_responses: tuple[tuple[str, float], ...] = ()

    def response_of(self, physical_type: str) -> float:
        """Return the sky response of detectors of ``physical_type`` (1 if not listed)."""
        return dict(self.type_responses).get(physical_type, 1.0)


def plan_exposures(
    n_exposures: int,
    physical_filter: str,
    *,
    seed: int,
    first_id: int = 1000,
    start: str = "2026-11-01T03:00:00",
    level_range: tuple[float, float] = (800.0, 2500.0),
    max_gradient: float = 1e-3,
    secondary_weight_range: tuple[float, float] | None = None,
    type_response_range: Mapping[str, tuple[float, float]] | None = None,
) -> list[ExposurePlan]:
    """Plan exposures with random sky levels, focal-plane gradients and,
    optionally, weights of a second sky pattern and sky responses per
    detector type.

    Parameters
    ----------
    n_exposures : `int`
        Number of exposures.
    physical_filter : `str`
        Their physical filter.
    seed : `int`
        Seed of the levels and gradients.
    first_id : `int`, optional
        Exposure id of the first; the rest follow consecutively.
    start : `str`, optional
        Start of the first exposure (ISO UTC); one exposure every 2 minutes.
    level_range : `tuple` [`float`, `float`], optional
        Range of sky levels.
    max_gradient : `float`, optional
        Largest gradient magnitude per axis (fraction per mm).
    secondary_weight_range : `tuple` [`float`, `float`], optional
        Range of the uniform per-exposure weights of the second sky pattern
        (`ExposurePlan.secondary_weight`); `None` (default) leaves them 0.
        They come from their own random stream, so the levels and gradients
        of a seed are the same with or without them.
    type_response_range : `~collections.abc.Mapping` [`str`, `tuple` [`float`, `float`]], optional
        Per physical type, the range of its uniform per-exposure sky response
        (`ExposurePlan.type_responses`), e.g. ``{"ITL": (1.02, 1.10)}``;
        `None` (default) or types not listed respond 1. Drawn from a stream of
        their own, as the secondary weights are.

    Returns
    -------
    plans : `list` [`ExposurePlan`]
    """
    import astropy.time
    import astropy.units as u

    rng = np.random.default_rng(seed)
    weights = np.zeros(n_exposures)
    if secondary_weight_range is not None:
        weights = np.random.default_rng([seed, 2]).uniform(*secondary_weight_range, n_exposures)
    response_rng = np.random.default_rng([seed, 3])
    responses = {
        physical_type: response_rng.uniform(low, high, n_exposures)
        for physical_type, (low, high) in sorted((type_response_range or {}).items())
    }
    t0 = astropy.time.Time(start, scale="utc")
    return [
        ExposurePlan(
            exposure_id=first_id + index,
            physical_filter=physical_filter,
            sky_level=float(rng.uniform(*level_range)),
            gradient=(
                float(rng.uniform(-max_gradient, max_gradient)),
                float(rng.uniform(-max_gradient, max_gradient)),
            ),
            obs_start=(t0 + index * 2 * u.min).isot,
            secondary_weight=float(weights[index]),
            type_responses=tuple((t, float(r[index])) for t, r in responses.items()),
        )
        for index in range(n_exposures)
    ]


def detector_pattern(detector_id: int, *, amplitude: float = 0.1) -> SkyPattern:
    """Return the sky-frame pattern of one detector (deterministic per id).

    Parameters
    ----------
    detector_id : `int`
        Detector id; sets the ring, vignetting centre, gradient and amplifier offsets.
    amplitude : `float`, optional
        Strength of the pattern as a fraction of the sky.

    Returns
    -------
    pattern : `SkyPattern`
    """
    rng = np.random.default_rng(10_000 + detector_id)
    return SkyPattern(
        amplitude=amplitude,
        centre=(float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8))),
        ring_radius=float(rng.uniform(0.3, 0.5)),
        ring_width=float(rng.uniform(0.1, 0.15)),
        gradient=(float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.3, 0.3))),
        amp_offsets_seed=detector_id,
        amp_step_width=0.08,
    )


def sky_response(detector, plan: ExposurePlan) -> float:
    """Return how strongly a detector responds to the sky in an exposure.

    Parameters
    ----------
    detector : `lsst.skyframes.camera.DetectorGeometry`
        The detector; its ``physical_type`` selects the response.
    plan : `ExposurePlan`
        The exposure (`ExposurePlan.type_responses`).

    Returns
    -------
    response : `float`
        Factor of the detector's whole sky (1 for a type the plan does not list).
    """
    return plan.response_of(detector.physical_type)


def large_scale_field(detector, plan: ExposurePlan) -> np.ndarray:
    """Return the exposure's multiplicative focal-plane gradient on a detector's pixels.

    Parameters
    ----------
    detector : `lsst.skyframes.camera.DetectorGeometry`
        The detector.
    plan : `ExposurePlan`
        The exposure.

    Returns
    -------
    field : `numpy.ndarray`
        1 + gx·fx + gy·fy at every pixel (fx, fy in mm), shape (height, width).
    """
    y, x = np.mgrid[0 : detector.height, 0 : detector.width]
    fx, fy = detector.pixel_to_focal_plane(x, y)
    return 1.0 + plan.gradient[0] * fx + plan.gradient[1] * fy


def simulate_detector(
    detector,
    plan: ExposurePlan,
    *,
    seed: int,
    amplitude: float = 0.1,
    secondary_amplitude: float = 0.05,
    **kwargs,
) -> SimulatedExposure:
    """Simulate one detector of one planned exposure.

    The noiseless sky is ``level · response · large_scale · p1`` with ``p1``
    the detector's `detector_pattern`, ``large_scale`` the exposure's
    `large_scale_field` and ``response`` the `sky_response` of the
    detector's type; with a non-zero ``plan.secondary_weight`` ``w``,
    ``p1`` becomes ``p1 + w · (p2 − mean(p2))`` with ``p2`` the detector's
    `secondary_pattern` (the model of `two_pattern_sky`).

    Parameters
    ----------
    detector : `lsst.skyframes.camera.DetectorGeometry`
        The detector.
    plan : `ExposurePlan`
        The exposure.
    seed : `int`
        Base seed; the detector's randomness derives from (seed, exposure, detector),
        so any subset of detectors simulates identically in any order.
    amplitude : `float`, optional
        Sky-frame pattern amplitude.
    secondary_amplitude : `float`, optional
        Amplitude of the second pattern (used only when
        ``plan.secondary_weight`` is not 0).
    **kwargs
        Passed to `simulate_exposure` (n_stars, n_galaxies, psf_sigma, bad_columns...).

    Returns
    -------
    exposure : `SimulatedExposure`
    """
    rng = np.random.default_rng([seed, plan.exposure_id, detector.id])
    kwargs.setdefault("bad_columns", (detector.width // 3 + detector.id,))
    pattern = detector_pattern(detector.id, amplitude=amplitude)
    large_scale = _plan_large_scale(detector, plan, pattern, secondary_amplitude)
    return simulate_exposure(
        detector.width, detector.height, plan.sky_level, pattern, rng, large_scale=large_scale, **kwargs
    )


def noiseless_sky(
    detector, plan: ExposurePlan, *, amplitude: float = 0.1, secondary_amplitude: float = 0.05
) -> np.ndarray:
    """Return the noiseless sky `simulate_detector` simulates, without simulating the rest.

    Parameters
    ----------
    detector : `lsst.skyframes.camera.DetectorGeometry`
        The detector.
    plan : `ExposurePlan`
        The exposure.
    amplitude, secondary_amplitude : `float`, optional
        Pattern amplitudes, as for `simulate_detector`.

    Returns
    -------
    sky : `numpy.ndarray`
        float64 electrons per pixel, shape (height, width).
    """
    pattern = detector_pattern(detector.id, amplitude=amplitude)
    p1 = pattern.render(detector.width, detector.height)
    return plan.sky_level * p1 * _plan_large_scale(detector, plan, pattern, secondary_amplitude)


def _plan_large_scale(
    detector, plan: ExposurePlan, pattern: SkyPattern, secondary_amplitude: float
) -> np.ndarray:
    """Return the factor by which a planned exposure multiplies ``level · pattern``.

    The focal-plane gradient (`large_scale_field`) times the detector type's
    `sky_response` times, for a non-zero ``plan.secondary_weight``, the factor
    that adds the weighted `secondary_pattern` (`_secondary_factor`).
    """
    # A response of 1 (the default) multiplies exactly: skies without types are unchanged.
    large_scale = large_scale_field(detector, plan) * sky_response(detector, plan)
    if plan.secondary_weight != 0:
        large_scale = large_scale * _secondary_factor(
            pattern.render(detector.width, detector.height),
            secondary_pattern(detector.id, amplitude=secondary_amplitude),
            plan.secondary_weight,
        )
    return large_scale


def exposure_header(detector, plan: ExposurePlan) -> dict[str, object]:
    """Return the header cards ingest reads for a simulated detector image."""
    return {
        "EXPID": plan.exposure_id,
        "DETECTOR": detector.id,
        "FILTER": plan.physical_filter,
        "DATE-OBS": plan.obs_start,
        "EXPTIME": plan.exposure_time,
        "SKYLEVEL": plan.sky_level,
        "SKYW2": plan.secondary_weight,
    }


def secondary_pattern(detector_id: int, *, amplitude: float = 0.05) -> SkyPattern:
    """Return a second, independent sky pattern of one detector.

    Different ring, vignetting centre, gradient and amplifier offsets from
    `detector_pattern` (its seeds are offset), e.g. a Moon-dependent scattered
    light term whose strength changes from exposure to exposure.

    Parameters
    ----------
    detector_id : `int`
        Detector id.
    amplitude : `float`, optional
        Strength of the pattern as a fraction of the sky.

    Returns
    -------
    pattern : `SkyPattern`
    """
    rng = np.random.default_rng(20_000 + detector_id)
    return SkyPattern(
        amplitude=amplitude,
        centre=(float(rng.uniform(-0.5, 1.5)), float(rng.uniform(-0.5, 1.5))),
        ring_radius=float(rng.uniform(0.6, 0.9)),
        ring_width=float(rng.uniform(0.15, 0.25)),
        gradient=(float(rng.uniform(-0.8, 0.8)), float(rng.uniform(-0.8, 0.8))),
        # One amplifier: a scattered-light term has no amplifier steps.
        n_amplifiers=1,
        amp_offsets_seed=1_000 + detector_id,
    )


def two_pattern_sky(
    width: int,
    height: int,
    sky_level: float,
    weight: float,
    pattern1: SkyPattern,
    pattern2: SkyPattern,
    rng: np.random.Generator,
    **kwargs,
) -> SimulatedExposure:
    """Simulate an exposure whose sky varies with two independent patterns.

    The noiseless sky is ``sky_level · (p1 + weight · (p2 − mean(p2)))``:
    ``p1`` the fixed sky frame, ``p2 − mean(p2)`` (mean over the detector) a
    second, zero-mean pattern whose weight
    changes per exposure, as the multi-component templates of `lsst.skyframes.pca`
    model.

    Parameters
    ----------
    width, height : `int`
        Size in pixels.
    sky_level : `float`
        Sky level in electrons per pixel.
    weight : `float`
        Per-exposure weight ``a`` of the second pattern (e.g. uniform in −1..1).
    pattern1, pattern2 : `SkyPattern`
        The two patterns (e.g. `detector_pattern` and `secondary_pattern`).
    rng : `numpy.random.Generator`
        Source of randomness.
    **kwargs
        Passed to `simulate_exposure` (not ``large_scale``).

    Returns
    -------
    exposure : `SimulatedExposure`
    """
    factor = _secondary_factor(pattern1.render(width, height), pattern2, weight)
    return simulate_exposure(width, height, sky_level, pattern1, rng, large_scale=factor, **kwargs)


def _secondary_factor(p1: np.ndarray, pattern2: SkyPattern, weight: float) -> np.ndarray:
    """Return the multiplicative factor that turns ``p1`` into ``p1 + weight · (p2 − mean(p2))``.

    Parameters
    ----------
    p1 : `numpy.ndarray`
        The first pattern rendered on the detector, shape (height, width).
    pattern2 : `SkyPattern`
        The second pattern.
    weight : `float`
        Its weight.

    Returns
    -------
    factor : `numpy.ndarray`
        ``1 + weight · (p2 − mean(p2)) / p1``: `simulate_exposure` multiplies
        ``level · p1`` by its ``large_scale``, so this factor (times any other
        large-scale term) makes the product the additive two-pattern sky.
    """
    height, width = p1.shape
    p2 = pattern2.render(width, height)
    # Zero mean over the detector: a constant part would be degenerate with
    # the sky level, leaving "weight" ill-defined.
    return 1.0 + weight * (p2 - p2.mean()) / p1


# ---------------------------------------------------------------------------------------------------------
# Science visits with known truth (used by the demo and the sky-correction tests)
# ---------------------------------------------------------------------------------------------------------


def binned_background(values: np.ndarray, errors: np.ndarray | float, bin_size: int = 32) -> BackgroundList:
    """Wrap one detector's bin values as the background `SkyMeasurementTask.measureBackground` returns.

    For the multi-component PCA at focal-plane sizes, where simulating and
    binning every image would take far longer than the PCA itself.

    Parameters
    ----------
    values : `numpy.ndarray`
        (ny, nx) bin values (e.g. a normalised residual background); NaN
        marks bins without data.
    errors : `numpy.ndarray` or `float`
        Standard error of each bin (the stats image's variance plane holds a
        sigma, as afw's does).
    bin_size : `int`, optional
        Bin size in pixels: the background covers ``bin_size`` × the grid.

    Returns
    -------
    background : `BackgroundList`
        One element, its stats image holding ``values`` and ``errors`` as float32.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"binned_background needs a 2-d grid of bin values; got shape {values.shape}.")
    stats = MaskedImage(Image(values.astype(np.float32)), mask_schema=default_mask_schema())
    stats.variance.array[...] = errors
    height, width = values.shape
    bbox = Box.from_shape((height * bin_size, width * bin_size))
    task = SkyMeasurementTask()
    return SkyMeasurementTask.exposureToBackground(task.backgroundToExposure(stats, bbox))


@dataclasses.dataclass
class ScienceDetector:
    """One detector of a simulated science visit, as a calibration pipeline hands it on.

    Attributes
    ----------
    image : `lsst.images.MaskedImage`
        The image with ``background`` subtracted (``preliminary_visit_image``).
    background : `~lsst.skyframes.background.BackgroundList` or `None`
        The per-detector background subtracted from it
        (``preliminary_visit_image_background``), `None` if none was.
    truth : `~lsst.skyframes.simulate.SimulatedExposure`
        The simulation: noiseless ``sky`` and ``objects``.
    """

    image: MaskedImage
    background: BackgroundList | None
    truth: SimulatedExposure


def simulate_science_visit(
    camera: Camera,
    plan: ExposurePlan,
    *,
    seed: int,
    amplitude: float = 0.1,
    detector_ids: Sequence[int] | None = None,
    background_bin_size: int | None = 128,
    **kwargs: Any,
) -> dict[int, ScienceDetector]:
    """Simulate a science visit and subtract a per-detector background from it.

    Parameters
    ----------
    camera : `~lsst.skyframes.camera.Camera`
        The camera.
    plan : `~lsst.skyframes.simulate.ExposurePlan`
        Sky level, focal-plane gradient, filter and time of the visit.
    seed : `int`
        Base seed (`~lsst.skyframes.simulate.simulate_detector`).
    amplitude : `float`, optional
        Sky-frame pattern amplitude (the same patterns as the build data).
    detector_ids : sequence of `int`, optional
        Detectors to simulate; all by default.
    background_bin_size : `int` or `None`, optional
        Bin size of the per-detector background a calibration pipeline
        would have subtracted (`SkyMeasurementTask.measureBackground`,
        objects masked); `None` subtracts nothing.
    **kwargs
        Passed to `~lsst.skyframes.simulate.simulate_detector`.

    Returns
    -------
    visit : `dict` [`int`, `ScienceDetector`]
        Per detector id.
    """
    ids = camera.detector_ids if detector_ids is None else detector_ids
    config = SkyMeasurementConfig()
    if background_bin_size is not None:
        config.background.xBinSize = config.background.yBinSize = background_bin_size
    measure = SkyMeasurementTask(config=config)
    visit = {}
    for detector_id in ids:
        truth = simulate_detector(camera[detector_id], plan, seed=seed, amplitude=amplitude, **kwargs)
        image = truth.image.copy()
        background = None
        if background_bin_size is not None:
            background = measure.measureBackground(image)
            image.image.array -= background.getImage().array
        visit[detector_id] = ScienceDetector(image=image, background=background, truth=truth)
    return visit


def define_planned_exposure(butler: Butler, camera: Camera, plan: ExposurePlan) -> None:
    """Define a planned exposure and its one-to-one visit in a repository, as ingest would.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable butler where ``camera`` is registered.
    camera : `~lsst.skyframes.camera.Camera`
        The camera.
    plan : `ExposurePlan`
        The exposure (id, filter, start time as UTC, exposure time).
    """
    insert_exposure(
        butler,
        camera,
        exposure_id=plan.exposure_id,
        physical_filter=plan.physical_filter,
        day_obs=None,
        obs_start=astropy.time.Time(plan.obs_start, scale="utc"),
        exposure_time_s=plan.exposure_time,
    )


def put_science_visit(
    butler: Butler, camera: Camera, plan: ExposurePlan, visit: dict[int, ScienceDetector], run: str
) -> int:
    """Store a simulated science visit as a calibration pipeline would leave it.

    Defines the exposure and its one-to-one visit (with the
    ``visit_detector_region`` records per-visit graphs need) and puts each
    detector's ``preliminary_visit_image`` and
    ``preliminary_visit_image_background`` (if one was subtracted) into
    ``run`` unless already there.
    The dataset types must be registered
    (`~lsst.skyframes.correction.register_correction_inputs`).

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable butler.
    camera : `~lsst.skyframes.camera.Camera`
        The camera.
    plan : `~lsst.skyframes.simulate.ExposurePlan`
        The visit's exposure.
    visit : `dict` [`int`, `ScienceDetector`]
        From `simulate_science_visit`.
    run : `str`
        RUN collection.

    Returns
    -------
    n_new : `int`
        Detectors newly stored.
    """
    define_planned_exposure(butler, camera, plan)
    define_visit_detectors(butler, camera.instrument, plan.exposure_id, list(visit))
    n_new = 0
    for detector_id, science in visit.items():
        data_id = {"instrument": camera.instrument, "visit": plan.exposure_id, "detector": detector_id}
        if butler.find_dataset("preliminary_visit_image", data_id, collections=run) is None:
            butler.put(science.image, "preliminary_visit_image", data_id, run=run)
            if science.background is not None:
                butler.put(science.background, "preliminary_visit_image_background", data_id, run=run)
            n_new += 1
    return n_new
