"""What a perfect sky-frame build would produce from simulated data.

A built sky frame is the residual after the large-scale focal-plane model, in
units of the sky level, so it is the injected detector pattern minus whatever
part of it the large-scale model absorbs.  The reference for scoring a build is
therefore the same chain applied to the noiseless, object-free sky of every
exposure (`noiseless_sky_frames`): any difference from it comes from noise,
objects and masking, and should be consistent with the expected noise
(`expected_noise`).  The components themselves (focal-plane model, binning,
combination) are checked against analytic fields in their own tests.
"""

from __future__ import annotations

__all__ = [
    "expected_noise",
    "good_pixel_counts",
    "large_scale_residual",
    "noiseless_sky_frames",
    "visit_sky_level",
]

from collections.abc import Sequence

import numpy as np

from lsst.images import Image, MaskedImage

from .camera import Camera
from .focal_plane import FocalPlaneBackground, FocalPlaneBackgroundConfig
from .mask_planes import default_mask_schema
from .object_mask import ObjectMask
from .simulate import (
    ExposurePlan,
    SimulatedExposure,
    detector_pattern,
    large_scale_field,
    noiseless_sky,
    sky_response,
)
from .sky_measurement import measurement_bin_edges
from .statistics import bad_pixel_mask, bin_edges, binned_statistics


def _noiseless_sky(camera: Camera, plan: ExposurePlan, amplitude: float) -> dict[int, np.ndarray]:
    return {
        d.id: plan.sky_level
        * detector_pattern(d.id, amplitude=amplitude).render(d.width, d.height)
        * (large_scale_field(d, plan) * sky_response(d, plan))
        for d in camera
    }


def noiseless_sky_frames(
    camera: Camera,
    plans: Sequence[ExposurePlan],
    *,
    focal_plane_config: FocalPlaneBackgroundConfig,
    bin_size: tuple[int, int],
    amplitude: float = 0.1,
    include_alternate_background: bool = False,
) -> dict[int, np.ndarray]:
    """Return the sky frame each detector would get from noiseless data.

    Parameters
    ----------
    camera : `Camera`
        The simulated camera.
    plans : sequence of `ExposurePlan`
        The exposures combined.
    focal_plane_config : `FocalPlaneBackgroundConfig`
        The resolved large-scale background configuration of the build.
    bin_size : `tuple` [`int`, `int`]
        Sky-frame bin size (x, y) in pixels (``SkyMeasurementConfig.background``).
    amplitude : `float`, optional
        Pattern amplitude of the simulation.
    include_alternate_background : `bool`, optional
        Model each physical type's detectors apart, with a large-scale
        model and sky level of their own (the build's
        ``includeAlternateBackground``); by default one model and one level
        cover every detector.

    Returns
    -------
    frames : `dict` [`int`, `numpy.ndarray`]
        Per detector, the mean over exposures of the binned mean of
        (sky − large-scale model) / sky level, on the build's bin grid.
        With ``include_alternate_background`` a type's frames do not depend
        on the plans' `~lsst.skyframes.simulate.ExposurePlan.type_responses`:
        its model and level scale with its response.
    """
    groups = (
        [[d for d in camera if d.physical_type == t] for t in camera.physical_types]
        if include_alternate_background
        else [list(camera)]
    )
    sums: dict[int, np.ndarray] = {}
    for plan in plans:
        skies = _noiseless_sky(camera, plan, amplitude)
        images = {
            d.id: MaskedImage(Image(skies[d.id].astype(np.float32)), mask_schema=default_mask_schema())
            for d in camera
        }
        for group in groups:
            _add_residuals(sums, group, camera, skies, images, focal_plane_config, bin_size)
    return {key: value / len(plans) for key, value in sums.items()}


def _add_residuals(
    sums: dict[int, np.ndarray],
    detectors: Sequence,
    camera: Camera,
    skies: dict[int, np.ndarray],
    images: dict[int, MaskedImage],
    focal_plane_config: FocalPlaneBackgroundConfig,
    bin_size: tuple[int, int],
) -> None:
    """Add the binned normalised residuals of ``detectors`` under one model of them alone to ``sums``."""
    model = FocalPlaneBackground.fromCamera(focal_plane_config, camera)
    for d in detectors:
        model.addCcd(images[d.id], d)
    stats = model.getStatsImage()
    scale = float(np.median(stats[np.isfinite(stats)]))
    for d in detectors:
        residual = (skies[d.id] - model.toCcdBackground(d, images[d.id].bbox).getImage().array) / scale
        x_edges = measurement_bin_edges(d.width, bin_size[0])
        y_edges = measurement_bin_edges(d.height, bin_size[1])
        binned = binned_statistics(residual, None, x_edges, y_edges, "MEAN")
        sums[d.id] = sums.get(d.id, 0.0) + binned.value


def good_pixel_counts(
    image: MaskedImage | ObjectMask, bin_size: tuple[int, int], planes: Sequence[str]
) -> np.ndarray:
    """Count the pixels of each sky-frame bin that no listed mask plane flags.

    Parameters
    ----------
    image : `lsst.images.MaskedImage` or `~lsst.skyframes.object_mask.ObjectMask`
        An input of the sky-frame build after object masking, or its
        object mask (``cpSkyObjectMask``): only the mask is read.
    bin_size : `tuple` [`int`, `int`]
        Sky-frame bin size (x, y) in pixels.
    planes : sequence of `str`
        Mask planes the binning ignores (``SkyMeasurementConfig.background.mask``).

    Returns
    -------
    counts : `numpy.ndarray`
        Good pixels per bin, on the build's bin grid.
    """
    height, width = image.bbox.shape
    good = ~bad_pixel_mask(image.mask, list(planes))
    x_edges = measurement_bin_edges(width, bin_size[0])
    y_edges = measurement_bin_edges(height, bin_size[1])
    fraction = binned_statistics(good.astype(np.float32), None, x_edges, y_edges, "MEAN").value
    return fraction * np.diff(y_edges)[:, None] * np.diff(x_edges)[None, :]


def expected_noise(levels: Sequence[float], good_counts: Sequence[np.ndarray]) -> np.ndarray:
    """Return the expected noise of each sky-frame bin, in units of the sky level.

    Parameters
    ----------
    levels : sequence of `float`
        Sky level of each exposure combined.
    good_counts : sequence of `numpy.ndarray`
        Good pixels per bin of each exposure (`good_pixel_counts`).

    Returns
    -------
    sigma : `numpy.ndarray`
        Per bin: the Poisson noise of a normalised pixel, sqrt(1/level),
        averaged over the bin's good pixels and over the exposures that
        measured the bin: sqrt(sum_k 1/(level_k N_k)) / n.

    Notes
    -----
    The combination is a clipped mean over exposures; its variance is close
    to that of the plain mean for Gaussian noise.
    """
    information = np.zeros_like(good_counts[0], dtype=np.float64)
    used = np.zeros_like(information)
    for level, counts in zip(levels, good_counts, strict=True):
        measured = counts > 0
        information += np.where(measured, 1.0 / (level * np.maximum(counts, 1)), 0.0)
        used += measured
    return np.sqrt(information) / np.maximum(used, 1)


def visit_sky_level(
    camera: Camera,
    plan: ExposurePlan,
    focal_plane_config: FocalPlaneBackgroundConfig,
    amplitude: float = 0.1,
    secondary_amplitude: float = 0.05,
    physical_type: str | None = None,
) -> float:
    """Return a visit's sky level in the units of sky frames built from the same camera.

    The build divides each exposure by the median of its merged focal-plane
    background (`~lsst.skyframes.build.CpSkyScaleMeasureTask`); the same
    median of the visit's noiseless sky is therefore the sky-frame scale a
    perfect correction fits. It differs from ``plan.sky_level`` by the mean
    of the patterns (here a few tenths of a percent).

    Parameters
    ----------
    camera : `~lsst.skyframes.camera.Camera`
        The camera.
    plan : `~lsst.skyframes.simulate.ExposurePlan`
        The visit.
    focal_plane_config : `FocalPlaneBackgroundConfig`
        The build's resolved large-scale background configuration.
    amplitude : `float`, optional
        Pattern amplitude of the simulation.
    secondary_amplitude : `float`, optional
        Amplitude of the second pattern (used if ``plan.secondary_weight`` is not 0).
    physical_type : `str`, optional
        Only the detectors of this physical type: the level of that type, as
        the build measures it with ``includeAlternateBackground``.
    """
    model = FocalPlaneBackground.fromCamera(focal_plane_config, camera)
    for detector in camera:
        if physical_type is not None and detector.physical_type != physical_type:
            continue
        sky = noiseless_sky(detector, plan, amplitude=amplitude, secondary_amplitude=secondary_amplitude)
        model.addCcd(Image(sky.astype(np.float32)), detector)
    stats = model.getStatsImage()
    return float(np.median(stats[np.isfinite(stats)]))


def large_scale_residual(
    corrected: np.ndarray, truth: SimulatedExposure, bad: np.ndarray | None = None, bin_size: int = 32
) -> np.ndarray:
    """Return the large-scale residual sky of a corrected image against the truth.

    Parameters
    ----------
    corrected : `numpy.ndarray`
        The sky-corrected image (truth: objects and noise on a zero sky).
    truth : `~lsst.skyframes.simulate.SimulatedExposure`
        Its simulation; object pixels (``truth.image``'s DETECTED plane,
        objects above 0.05 sigma of the sky noise) are left out.
    bad : `numpy.ndarray`, optional
        Further pixels to leave out (e.g. BAD).
    bin_size : `int`, optional
        Bin size in pixels.

    Returns
    -------
    residual : `numpy.ndarray`
        3-sigma clipped mean of every ``bin_size`` bin (afw bin layout),
        whose truth is 0.
    """
    height, width = corrected.shape
    skip = truth.image.mask.get("DETECTED").copy()
    if bad is not None:
        skip |= bad
    x_edges = bin_edges(width, max(width // bin_size, 1))
    y_edges = bin_edges(height, max(height // bin_size, 1))
    return binned_statistics(corrected, skip, x_edges, y_edges, "MEANCLIP").value
