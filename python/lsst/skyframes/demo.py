"""``skyframes demo``: build a sky frame the way a survey does, on synthetic data.

Creates a SQLite butler repository, registers a synthetic camera, simulates and
ingests exposures, runs ``pipelines/BuildSkyFrame.yaml`` through pipe_base's
executor (the quantum graph ``pipetask run`` would execute), certifies the
``sky`` calibrations, and scores them against the simulation's truth.

Every step can be repeated: an existing repository is reopened, ingested files
are skipped, a finished build is reused, certification is idempotent.
"""

from __future__ import annotations

__all__ = ["DemoSettings", "run_demo"]

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lsst.daf.butler import Butler, CollectionType, MissingCollectionError

from .build import CpSkyImageConfig, resolve_focal_plane_config
from .camera import Camera, make_synthetic_camera
from .certify import certify_calibrations
from .ingest import ingest_image, register_input
from .plotting import plot_focal_plane
from .repo import calib_collection, create_repo, register_camera
from .simulate import exposure_header, plan_exposures, simulate_detector
from .sky_measurement import SkyMeasurementConfig
from .truth import expected_noise, good_pixel_counts, noiseless_sky_frames

PIPELINE = Path(__file__).resolve().parents[3] / "pipelines" / "BuildSkyFrame.yaml"
INPUT_RUN = "demo/raw"
OUTPUT = "demo/skyframes"


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Size of the demo."""

    n_detectors_side: int = 3
    n_exposures: int = 20
    size: int = 512
    seed: int = 1
    amplitude: float = 0.1


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
    log(f"[1/5] {'reopening' if existed else 'creating'} butler repository {root}")
    butler = create_repo(root)
    register_camera(butler, camera)
    log(f"[2/5] simulating {settings.n_exposures} exposures x {len(camera)} detectors of {settings.size} px")
    plans = _simulate_and_ingest(butler, camera, settings, log)
    log("[3/5] running pipelines/BuildSkyFrame.yaml")
    run = _build(butler, camera, log)
    log(f"[4/5] certifying sky frames into {calib_collection(camera.instrument)!r}")
    n_new = certify_calibrations(butler, run)
    log(f"  {n_new} newly certified" if n_new else "  already certified")

    log("[5/5] scoring against truth")
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
        "seconds": time.monotonic() - start,
    }
    with open(os.path.join(output, "metrics.json"), "w") as stream:
        json.dump(metrics, stream, indent=2)
    log("")
    log("Sky-frame recovery against truth, per detector")
    log("  RMS error / expected noise (1 = noise-limited), and mean offset (fraction of the sky level)")
    for name, value in per_detector.items():
        log(f"  {name}: {value:5.2f}   offset {offsets[name]:+.2e}")
    log(f"  overall: {overall:5.2f}")
    log(f"Figure: {figure}")
    log(f"Repository: {root}  (sky frames in {calib!r}, outputs in {OUTPUT!r})")
    log(f"Done in {metrics['seconds']:.0f} s")
    return metrics
