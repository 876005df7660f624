"""The generic instrument's configuration: what an obs package's override files would set.

The reference leaves the focal-plane models' bin sizes to the obs packages
(``config/skyCorr.py``, ``config/focalPlaneBackground.py``, pipeline config
blocks), and so does this package: `~lsst.skyframes.focal_plane.FocalPlaneBackgroundConfig`
has no default ``xSize``/``ySize``, and cpSkyImage and skyCorr use the values
they are given. For cameras without an obs package the sizes can instead be
derived from the camera description, as an explicit choice:

- `camera_sized_config` is the one rule: bins a given number of detectors
  wide and high, in the camera's pixel size.
- `CAMERA_OVERRIDES` lists, per task ``_DefaultName`` and dotted field path,
  what is set from the camera; `apply_camera_overrides` applies it. pipe_base
  calls it through `~lsst.skyframes.instrument.SkyFramesInstrument.applyConfigOverrides`
  (``pipetask run --instrument ...``, a pipeline's ``instrument:`` key or
  ``Pipeline.addInstrument``); tests and notebooks call it directly, or
  `camera_config` for a task's default config with them applied.

`CAMERA_OVERRIDES` also holds the generic instrument's masking choices
(plain values, no camera needed): detection thresholds with ``stdev`` as the
obs packages set it for sky correction, cpSkyImage keeps ``DETECTED`` after
the replacement, and detection searches the smoothing kernel's border
(``searchEdge``); the comments beside each entry say why.

Values applied this way come before pipeline config blocks and ``-c``
options, which therefore still override them.
"""

from __future__ import annotations

__all__ = [
    "CAMERA_OVERRIDES",
    "LARGE_SCALE_DETECTORS",
    "apply_camera_overrides",
    "camera_config",
    "camera_sized_config",
]

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lsst.pex.config import Config
    from lsst.pipe.base import Task

    from .camera import Camera
    from .focal_plane import FocalPlaneBackgroundConfig


def camera_sized_config(
    config: FocalPlaneBackgroundConfig, camera: Camera, detectorsPerBin: float
) -> FocalPlaneBackgroundConfig:
    """Size a focal-plane model's bins from a camera, in place.

    Parameters
    ----------
    config : `~lsst.skyframes.focal_plane.FocalPlaneBackgroundConfig`
        Configuration to modify: ``pixelSize``, ``xSize`` and ``ySize`` are
        set, every other field is left as it is.
    camera : `~lsst.skyframes.camera.Camera`
        The camera.
    detectorsPerBin : `float`
        Bin size in units of the largest detector: ``xSize`` becomes this
        many times the widest detector's width, ``ySize`` the tallest's
        height (both in mm).

    Returns
    -------
    config : `~lsst.skyframes.focal_plane.FocalPlaneBackgroundConfig`
        ``config`` itself, for chaining.

    Notes
    -----
    ``pixelSize`` becomes the camera's most common pixel size (mm), so
    ``xSize / pixelSize`` is the bin width in pixels, as the reference's
    ``minFrac`` test expects.
    """
    detectors = list(camera)
    sizes = [d.pixel_size_mm for d in detectors]
    config.pixelSize = max(set(sizes), key=sizes.count)
    config.xSize = max(d.width * d.pixel_size_mm for d in detectors) * detectorsPerBin
    config.ySize = max(d.height * d.pixel_size_mm for d in detectors) * detectorsPerBin
    return config


LARGE_SCALE_DETECTORS = 1
"""Bin size, in detectors, of the build's large-scale model (cpSkyImage's
``largeScaleBackground``) and of the apply's first one (skyCorr's ``bgModel1``).

The two must be the same: the sky frame holds what ``largeScaleBackground``
leaves of each exposure, and its scale is fitted to what ``bgModel1`` leaves
of the visit. The reference keeps them equal (cp_pipe's 122.88 mm for
cpSkyImage, obs_subaru's focalPlaneBackground.py for skyCorr: both HSC's
8192 px). With ``bgModel1`` twice as coarse, the demo's visits kept 3.5 and
6.0 e of large-scale residual and the scale absorbed the difference
(1.03-1.22 x the level); with equal bins, 2.0 and 2.9 e: 1.24 and 1.37 x the
floor the demo prints beside them (the visit's own noise and the scaled sky
frame's noise, in quadrature)."""

CAMERA_OVERRIDES: Mapping[str, Mapping[str, Callable[[Any, Camera], None] | Any]] = {
    "CpSkyImage": {
        # One detector per bin: the sky frame then holds what is finer than a detector.
        "largeScaleBackground": partial(camera_sized_config, detectorsPerBin=LARGE_SCALE_DETECTORS),
        # Threshold against the clipped noise of the smoothed image, as the obs packages set it for
        # sky correction: the per-pixel variance (pixel_stdev) takes every sky-frame feature finer
        # than the 1024 px detection background for an object, which on small detectors masks the
        # very pattern the sky frame is to hold.
        "maskTask.detection.thresholdType": "stdev",
        # Keep the replaced pixels flagged, so that the sky-frame bins (whose mask holds DETECTED)
        # leave them out instead of taking the 256 px replacement model for sky.
        "maskTask.clearDetected": False,
        # Search the smoothing kernel's border for objects too (17 px for detectSigma 5: on small
        # detectors a large share of the pixels, whose object light would otherwise reach the sky
        # frame or, kept out as EDGE, leave its edge bins measured off their centres).
        "maskTask.detection.searchEdge": True,
    },
    "skyCorr": {
        # bgModel1 the build's large-scale bins (LARGE_SCALE_DETECTORS says why), bgModel2 one detector.
        "bgModel1": partial(camera_sized_config, detectorsPerBin=LARGE_SCALE_DETECTORS),
        "bgModel2": partial(camera_sized_config, detectorsPerBin=1),
        # As obs_subaru's and obs_lsst's config/skyCorr.py.
        "maskObjects.detection.thresholdType": "stdev",
        "maskObjects.detection.searchEdge": True,
    },
}
"""What `apply_camera_overrides` sets, keyed by task ``_DefaultName`` and then
by dotted field path. An entry is either a callable ``(target, camera)`` that
modifies the config object at its path in place, or a plain value assigned to
the field at its path (e.g. ``"maskObjects.detection.thresholdType": "stdev"``).
Add new camera-derived settings here, and nowhere else."""


def apply_camera_overrides(name: str, config: Config, camera: Camera | None) -> list[str]:
    """Apply the settings of `CAMERA_OVERRIDES` to a task config.

    Parameters
    ----------
    name : `str`
        The task's ``_DefaultName`` (``"CpSkyImage"``, ``"skyCorr"``); other
        names have no entries and change nothing.
    config : `lsst.pex.config.Config`
        The task's configuration, modified in place.
    camera : `~lsst.skyframes.camera.Camera` or `None`
        The camera; `None` if it is not known, in which case only the plain
        values are applied.

    Returns
    -------
    skipped : `list` [`str`]
        Paths of the camera-derived entries left unapplied for want of a
        camera (empty if ``camera`` is given).
    """
    skipped = []
    for path, override in CAMERA_OVERRIDES.get(name, {}).items():
        *parents, leaf = path.split(".")
        parent = config
        for part in parents:
            parent = getattr(parent, part)
        if not callable(override):
            setattr(parent, leaf, override)
        elif camera is None:
            skipped.append(path)
        else:
            override(getattr(parent, leaf), camera)
    return skipped


def camera_config(taskClass: type[Task], camera: Camera) -> Config:
    """Return a task's default config with the camera-derived settings applied.

    Parameters
    ----------
    taskClass : `type` [`lsst.pipe.base.Task`]
        The task (its ``ConfigClass`` and ``_DefaultName`` are used).
    camera : `~lsst.skyframes.camera.Camera`
        The camera.

    Returns
    -------
    config : `lsst.pex.config.Config`
        A new ``taskClass.ConfigClass()``, as ``pipetask run --instrument``
        would configure it before any config block or ``-c`` option.
    """
    config = taskClass.ConfigClass()
    apply_camera_overrides(taskClass._DefaultName, config, camera)
    return config
