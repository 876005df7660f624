"""``skyframes demo``: build and apply sky frames the way a survey does, on synthetic data.

Creates a SQLite butler repository, registers a synthetic camera, simulates and
ingests exposures, runs ``pipelines/BuildSkyFrame.yaml`` through pipe_base's
executor (the quantum graph ``pipetask run`` would execute), certifies the
``sky`` calibrations, and scores them against the simulation's truth. Then it
simulates held-out science visits (``preliminary_visit_image`` with a
per-detector background already subtracted), corrects them with
``pipelines/ApplySkyFrame.yaml`` with and without the sky frames, and compares
their large-scale residual sky against truth, also with no correction at all.

Every step can be repeated: an existing repository is reopened, ingested files
are skipped, finished build and correction runs are reused, certification is
idempotent.
"""

from __future__ import annotations

__all__ = [
    "DemoSettings",
    "ScienceDetector",
    "large_scale_residual",
    "run_demo",
    "simulate_science_visit",
    "visit_sky_level",
]

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import astropy.time
import astropy.units
import numpy as np

from lsst.daf.butler import Butler, CollectionType, MissingCollectionError
from lsst.images import Image, MaskedImage

from .background import BackgroundList
from .build import CpSkyImageConfig, resolve_focal_plane_config
from .camera import Camera, make_synthetic_camera
from .certify import certify_calibrations
from .correction import define_visit_detectors, register_correction_inputs
from .focal_plane import FocalPlaneBackground, FocalPlaneBackgroundConfig
from .ingest import ingest_image, register_input
from .mosaic import focal_plane_mosaic, plot_mosaics
from .plotting import plot_focal_plane
from .repo import calib_collection, create_repo, insert_exposure, register_camera
from .simulate import (
    ExposurePlan,
    SimulatedExposure,
    detector_pattern,
    exposure_header,
    large_scale_field,
    plan_exposures,
    simulate_detector,
)
from .sky_measurement import SkyMeasurementConfig, SkyMeasurementTask
from .statistics import bin_edges, binned_statistics
from .truth import expected_noise, good_pixel_counts, noiseless_sky_frames

PIPELINE = Path(__file__).resolve().parents[3] / "pipelines" / "BuildSkyFrame.yaml"
APPLY_PIPELINE = PIPELINE.parent / "ApplySkyFrame.yaml"
INPUT_RUN = "demo/raw"
OUTPUT = "demo/skyframes"
VISIT_RUN = "demo/visits"
APPLY_OUTPUT = "demo/skycorr"
N_VISITS = 2
RESIDUAL_BIN = 32


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Size of the demo."""

    n_detectors_side: int = 3
    n_exposures: int = 20
    size: int = 512
    seed: int = 1
    amplitude: float = 0.1


# ---------------------------------------------------------------------------------------------------------
# Science visits with known truth (used by the demo and the sky-correction tests)
# ---------------------------------------------------------------------------------------------------------


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


def visit_sky_level(
    camera: Camera, plan: ExposurePlan, focal_plane_config: FocalPlaneBackgroundConfig, amplitude: float = 0.1
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
    """
    model = FocalPlaneBackground.fromCamera(focal_plane_config, camera)
    for detector in camera:
        sky = (
            plan.sky_level
            * detector_pattern(detector.id, amplitude=amplitude).render(detector.width, detector.height)
            * large_scale_field(detector, plan)
        )
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


def _log(message: str) -> None:
    print(message, flush=True)


def _simulate_and_ingest(butler: Butler, camera: Camera, settings: DemoSettings, log: Callable) -> list:
    plans = plan_exposures(settings.n_exposures, camera.physical_filters[0], seed=settings.seed)
    total = len(plans) * len(camera)
    done = skipped = 0
    register_input(butler, INPUT_RUN)
    start = time.monotonic()
    for plan in plans:
        for detector in camera:
            data_id = {"instrument": camera.instrument, "exposure": plan.exposure_id, "detector": detector.id}
            if butler.find_dataset("post_isr_image", data_id, collections=INPUT_RUN) is not None:
                skipped += 1
            else:
                simulated = simulate_detector(
                    detector, plan, seed=settings.seed, amplitude=settings.amplitude
                )
                ingest_image(
                    butler,
                    camera,
                    simulated.image,
                    exposure_header(detector, plan),
                    source="simulated",
                    run=INPUT_RUN,
                )
            done += 1
        log(
            f"  simulate+ingest: {done}/{total} images ({skipped} already present), "
            f"{time.monotonic() - start:.0f} s"
        )
    return plans


def _build(butler: Butler, camera: Camera, log: Callable) -> str:
    from lsst.pipe.base.simple_pipeline_executor import SimplePipelineExecutor

    try:
        found = butler.query_datasets("sky", collections=OUTPUT, explain=False)
    except MissingCollectionError:
        found = []
    except Exception:  # the dataset type may not be registered yet
        found = []
    if len(found) == len(camera):
        log(f"  build: {len(found)} sky frames already in {OUTPUT!r}; reusing them")
        return found[0].run
    run = f"{OUTPUT}/{time.strftime('%Y%m%dT%H%M%S')}"
    butler.registry.registerCollection(run, CollectionType.RUN)
    butler.registry.registerCollection(OUTPUT, CollectionType.CHAINED)
    butler.registry.setCollectionChain(OUTPUT, [run, INPUT_RUN, calib_collection(camera.instrument)])
    work = Butler.from_config(butler=butler, collections=[OUTPUT], run=run)
    executor = SimplePipelineExecutor.from_pipeline_filename(
        str(PIPELINE), where=f"instrument = '{camera.instrument}'", butler=work
    )
    n_quanta = len(executor.quantum_graph)
    log(f"  build: {n_quanta} quanta (cpSkyImage, cpSkyScaleMeasure, cpSkySubtractBackground, cpSkyCombine)")
    start = time.monotonic()
    for index, _ in enumerate(executor.as_generator(register_dataset_types=True), 1):
        if index % max(n_quanta // 10, 1) == 0 or index == n_quanta:
            log(f"  build: {index}/{n_quanta} quanta done, {time.monotonic() - start:.0f} s")
    return run


# ---------------------------------------------------------------------------------------------------------
# Applying the sky frames (steps 6-8)
# ---------------------------------------------------------------------------------------------------------


def _visit_plans(camera: Camera, build_plans: Sequence[ExposurePlan]) -> list[ExposurePlan]:
    """Two held-out visits after the build's exposures, with their own level and gradient."""
    last = build_plans[-1]
    start = astropy.time.Time(last.obs_start, scale="utc")
    levels = (1200.0, 2000.0)
    gradients = ((6e-4, -4e-4), (-5e-4, 7e-4))
    return [
        ExposurePlan(
            exposure_id=last.exposure_id + 1 + index,
            physical_filter=camera.physical_filters[0],
            sky_level=levels[index % 2],
            gradient=gradients[index % 2],
            obs_start=(start + (index + 1) * 2 * astropy.units.min).isot,
        )
        for index in range(N_VISITS)
    ]


def _ingest_visits(
    butler: Butler, camera: Camera, plans: Sequence[ExposurePlan], settings: DemoSettings, log: Callable
) -> dict[int, dict[int, ScienceDetector]]:
    register_correction_inputs(butler, VISIT_RUN)
    visits = {}
    for plan in plans:
        visit = simulate_science_visit(camera, plan, seed=settings.seed + 1, amplitude=settings.amplitude)
        insert_exposure(
            butler,
            camera,
            exposure_id=plan.exposure_id,
            physical_filter=plan.physical_filter,
            day_obs=None,
            obs_start=astropy.time.Time(plan.obs_start, scale="utc"),
            exposure_time_s=plan.exposure_time,
        )
        define_visit_detectors(butler, camera.instrument, plan.exposure_id, list(visit))
        n_new = 0
        for detector_id, science in visit.items():
            data_id = {"instrument": camera.instrument, "visit": plan.exposure_id, "detector": detector_id}
            if butler.find_dataset("preliminary_visit_image", data_id, collections=VISIT_RUN) is None:
                butler.put(science.image, "preliminary_visit_image", data_id, run=VISIT_RUN)
                butler.put(science.background, "preliminary_visit_image_background", data_id, run=VISIT_RUN)
                n_new += 1
        log(
            f"  visit {plan.exposure_id}: sky {plan.sky_level:.0f} e, gradient {plan.gradient} /mm; "
            f"{n_new} of {len(visit)} detectors newly ingested"
        )
        visits[plan.exposure_id] = visit
    return visits


def _run_apply(
    butler: Butler,
    camera: Camera,
    name: str,
    overrides: dict[str, Any],
    visit_ids: Sequence[int],
    log: Callable,
) -> str:
    """Run ApplySkyFrame into ``demo/skycorr/<name>``, or reuse a finished run."""
    from lsst.pipe.base import Pipeline
    from lsst.pipe.base.simple_pipeline_executor import SimplePipelineExecutor

    output = f"{APPLY_OUTPUT}/{name}"
    where = f"instrument = '{camera.instrument}' AND visit IN ({', '.join(str(v) for v in visit_ids)})"
    try:
        found = butler.query_datasets("skyCorr", collections=output, where=where, explain=False)
    except Exception:  # collection or dataset type not there yet
        found = []
    if len(found) == len(visit_ids) * len(camera):
        log(f"  {name}: {len(found)} skyCorr already in {output!r}; reusing them")
        return output
    run = f"{output}/{time.strftime('%Y%m%dT%H%M%S')}"
    butler.registry.registerCollection(run, CollectionType.RUN)
    butler.registry.registerCollection(output, CollectionType.CHAINED)
    butler.registry.setCollectionChain(output, [run, VISIT_RUN, calib_collection(camera.instrument)])
    work = Butler.from_config(butler=butler, collections=[output], run=run)
    pipeline = Pipeline.from_uri(str(APPLY_PIPELINE))
    for field, value in overrides.items():
        pipeline.addConfigOverride("skyCorr", field, value)
    executor = SimplePipelineExecutor.from_pipeline(pipeline, where=where, butler=work)
    start = time.monotonic()
    n_quanta = sum(1 for _ in executor.as_generator(register_dataset_types=True))
    log(f"  {name}: {n_quanta} visit quanta in {time.monotonic() - start:.0f} s -> {output!r}")
    return output


def _residuals(
    butler: Butler, camera: Camera, visit_id: int, visit: dict[int, ScienceDetector], collection: str | None
) -> dict[int, np.ndarray]:
    """Large-scale residuals of one visit: corrected by skyCorr of ``collection``, or by a
    constant sky (the visit's level) when ``collection`` is `None`."""
    residuals = {}
    for detector_id, science in visit.items():
        if collection is None:
            level = science.truth.sky_level
            corrected = science.truth.image.image.array - level
        else:
            data_id = {"instrument": camera.instrument, "visit": visit_id, "detector": detector_id}
            image = butler.get("preliminary_visit_image", data_id, collections=VISIT_RUN)
            sky_corr = butler.get("skyCorr", data_id, collections=collection)
            corrected = image.image.array - sky_corr.getImage().array
        residuals[detector_id] = large_scale_residual(
            corrected, science.truth, science.truth.image.mask.get("BAD"), RESIDUAL_BIN
        )
    return residuals


def _rms(arrays: Sequence[np.ndarray]) -> float:
    values = np.concatenate([a.ravel() for a in arrays])
    return float(np.sqrt(np.nanmean(values**2)))


def _apply(
    butler: Butler,
    camera: Camera,
    settings: DemoSettings,
    build_plans: Sequence[ExposurePlan],
    fp_config: FocalPlaneBackgroundConfig,
    output: str,
    log: Callable,
) -> dict[str, Any]:
    """Steps 6-8: ingest held-out visits, correct them three ways, score against truth."""
    start = time.monotonic()
    plans = _visit_plans(camera, build_plans)
    log(f"[6/8] simulating {len(plans)} held-out science visits as preliminary_visit_image")
    visits = _ingest_visits(butler, camera, plans, settings, log)
    log("[7/8] running pipelines/ApplySkyFrame.yaml: with sky frames, and focal-plane models only")
    visit_ids = [plan.exposure_id for plan in plans]
    cases = {
        "sky frame": _run_apply(butler, camera, "sky", {}, visit_ids, log),
        "focal-plane models only": _run_apply(butler, camera, "models", {"doSky": False}, visit_ids, log),
        "no correction": None,
    }
    log("[8/8] scoring the corrected visits against truth")
    results: dict[str, Any] = {"visits": {}, "residual_bin_px": RESIDUAL_BIN}
    for plan in plans:
        visit = visits[plan.exposure_id]
        residuals = {
            name: _residuals(butler, camera, plan.exposure_id, visit, c) for name, c in cases.items()
        }
        metadata = butler.get(
            "skyCorr_metadata",
            instrument=camera.instrument,
            visit=plan.exposure_id,
            collections=cases["sky frame"],
        )
        scale = float(metadata["skyCorr"]["skyFrameScale"])
        expected = visit_sky_level(camera, plan, fp_config, settings.amplitude)
        per_case = {
            name: {
                "per_detector": {camera[d].name: _rms([r]) for d, r in res.items()},
                "overall": _rms(list(res.values())),
            }
            for name, res in residuals.items()
        }
        figure = os.path.join(output, f"sky_correction_visit{plan.exposure_id}.png")
        plot_mosaics(
            [
                (
                    f"{name} (RMS {per_case[name]['overall']:.2f} e)",
                    focal_plane_mosaic(camera, res, RESIDUAL_BIN),
                )
                for name, res in residuals.items()
            ],
            figure,
            title=f"Visit {plan.exposure_id}: large-scale residual sky ({RESIDUAL_BIN} px clipped means, "
            f"objects masked) against truth",
            label="residual [e]",
            symmetric=True,
        )
        results["visits"][str(plan.exposure_id)] = {
            "sky_level": plan.sky_level,
            "expected_scale": expected,
            "sky_frame_scale": scale,
            "noise_per_bin": float(np.sqrt(plan.sky_level) / RESIDUAL_BIN),
            "residual_rms": per_case,
            "figure": figure,
        }
        log("")
        log(
            f"Visit {plan.exposure_id}: large-scale residual RMS against truth [e] "
            f"({RESIDUAL_BIN} px bins, noise alone ~{np.sqrt(plan.sky_level) / RESIDUAL_BIN:.2f} e)"
        )
        names = list(per_case)
        log("  detector  " + "".join(f"{name:>26s}" for name in names))
        for detector in camera:
            row = "".join(f"{per_case[name]['per_detector'][detector.name]:26.2f}" for name in names)
            log(f"  {detector.name:8s}  {row}")
        log("  overall   " + "".join(f"{per_case[name]['overall']:26.2f}" for name in names))
        log(
            f"  sky-frame scale {scale:.1f} (visit level in sky-frame units {expected:.1f}: "
            f"{100 * (scale / expected - 1):+.2f}%)"
        )
        log(f"  figure: {figure}")
    results["seconds"] = time.monotonic() - start
    log(f"Sky correction steps 6-8 done in {results['seconds']:.0f} s")
    return results


def run_demo(output: str, settings: DemoSettings = DemoSettings(), log: Callable = _log) -> dict:
    """Run the whole demo; return the metrics (also written to ``metrics.json``).

    Parameters
    ----------
    output : `str`
        Directory: the repository is ``<output>/repo``; figures and metrics
        are written beside it.
    settings : `DemoSettings`, optional
        Camera size, number of exposures, detector size, seed.
    log : callable, optional
        Where progress lines go.

    Returns
    -------
    metrics : `dict`
        Per-detector and overall RMS error of the sky frames against truth,
        in units of the expected noise.
    """
    start = time.monotonic()
    os.makedirs(output, exist_ok=True)
    root = os.path.join(output, "repo")
    existed = os.path.exists(os.path.join(root, "butler.yaml"))
    camera = make_synthetic_camera(
        n_x=settings.n_detectors_side, n_y=settings.n_detectors_side, size=settings.size
    )
    log(f"[1/8] {'reopening' if existed else 'creating'} butler repository {root}")
    butler = create_repo(root)
    register_camera(butler, camera)
    log(f"[2/8] simulating {settings.n_exposures} exposures x {len(camera)} detectors of {settings.size} px")
    plans = _simulate_and_ingest(butler, camera, settings, log)
    log("[3/8] running pipelines/BuildSkyFrame.yaml")
    run = _build(butler, camera, log)
    log(f"[4/8] certifying sky frames into {calib_collection(camera.instrument)!r}")
    n_new = certify_calibrations(butler, run)
    log(f"  {n_new} newly certified" if n_new else "  already certified")

    log("[5/8] scoring the sky frames against truth")
    sky_config = SkyMeasurementConfig()
    bin_size = (sky_config.background.xBinSize, sky_config.background.yBinSize)
    fp_config = resolve_focal_plane_config(CpSkyImageConfig().largeScaleBackground, camera)
    truth = noiseless_sky_frames(
        camera, plans, focal_plane_config=fp_config, bin_size=bin_size, amplitude=settings.amplitude
    )
    recovered, errors, per_detector, offsets = {}, {}, {}, {}
    calib = calib_collection(camera.instrument)
    for detector in camera:
        data_id = {"instrument": camera.instrument, "detector": detector.id}
        # Found the way a later science exposure would find it: calibration lookup by time.
        sky = butler.get("sky", data_id, exposure=plans[-1].exposure_id, collections=[calib, INPUT_RUN])
        # Expected noise from the pixels the build actually used, after its object masking.
        counts = [
            good_pixel_counts(
                butler.get("cpSkyMaskedIsrExp", data_id, exposure=plan.exposure_id, collections=run),
                bin_size,
                sky_config.background.mask,
            )
            for plan in plans
        ]
        noise = expected_noise([plan.sky_level for plan in plans], counts)
        recovered[detector.id] = sky.image.array.astype(np.float64)
        difference = recovered[detector.id] - truth[detector.id]
        offsets[detector.name] = float(difference.mean())
        errors[detector.id] = (difference - difference.mean()) / noise
        per_detector[detector.name] = float(np.sqrt(np.mean(errors[detector.id] ** 2)))
    overall = float(np.sqrt(np.mean(np.concatenate([e.ravel() for e in errors.values()]) ** 2)))
    figure = os.path.join(output, "sky_frame_focal_plane.png")
    plot_focal_plane(
        camera,
        [
            ("sky frame (built)", recovered, "relative sky", False),
            ("truth (noiseless chain)", truth, "relative sky", False),
            ("(error - mean offset) / expected noise", errors, "sigma", True),
        ],
        figure,
        title=f"Sky frames of {len(camera)} detectors from {len(plans)} exposures",
    )
    metrics = {
        "n_exposures": len(plans),
        "n_detectors": len(camera),
        "size": settings.size,
        "rms_error_over_noise": per_detector,
        "mean_offset": offsets,
        "overall_rms_error_over_noise": overall,
        "figure": figure,
    }
    log("")
    log("Sky-frame recovery against truth, per detector")
    log("  RMS error / expected noise (1 = noise-limited), and mean offset (fraction of the sky level)")
    for name, value in per_detector.items():
        log(f"  {name}: {value:5.2f}   offset {offsets[name]:+.2e}")
    log(f"  overall: {overall:5.2f}")
    log(f"Figure: {figure}")
    log("")

    metrics["sky_correction"] = _apply(butler, camera, settings, plans, fp_config, output, log)
    metrics["seconds"] = time.monotonic() - start
    with open(os.path.join(output, "metrics.json"), "w") as stream:
        json.dump(metrics, stream, indent=2)
    log(f"Repository: {root}  (sky frames in {calib!r}, outputs in {OUTPUT!r}, {APPLY_OUTPUT!r}/*)")
    log(f"Done in {metrics['seconds']:.0f} s")
    return metrics
