"""``skyframes demo``: build and apply sky frames the way a survey does, on synthetic data.

Creates a SQLite butler repository, registers a synthetic camera, simulates and
ingests exposures, runs ``pipelines/BuildSkyFrame.yaml`` through pipe_base's
executor (the quantum graph ``pipetask run`` would execute), certifies the
``sky`` calibrations, and scores them against the simulation's truth. Then it
simulates held-out science visits (``preliminary_visit_image`` with a
per-detector background already subtracted), corrects them with
``pipelines/ApplySkyFrame.yaml`` with and without the sky frames, and compares
their large-scale residual sky against truth, also with no correction at all.
Finally (``DemoSettings.n_components`` > 0) it does the same in a second
filter whose sky varies with two independent patterns
(`~lsst.skyframes.simulate.plan_exposures` with ``secondary_weight_range``):
builds multi-component templates (``pipelines/BuildSkyTemplates.yaml``), certifies
``sky`` and ``sky_components``, corrects two held-out two-pattern visits with
K = 1 .. ``n_components`` templates and compares their residuals.

Every step can be repeated: an existing repository is reopened, ingested files
are skipped, finished build and correction runs are reused, certification is
idempotent.
"""

from __future__ import annotations

__all__ = ["DemoSettings", "run_demo"]

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

from .build import CpSkyImageConfig
from .camera import Camera, make_synthetic_camera
from .camera_overrides import camera_sized_config
from .certify import certify_calibrations, certify_sky_frames
from .correction import register_correction_inputs
from .focal_plane import FocalPlaneBackgroundConfig
from .ingest import ingest_image, register_input
from .instrument import SkyFramesInstrument
from .mosaic import focal_plane_mosaic, plot_mosaics
from .plotting import plot_focal_plane
from .repo import calib_collection, create_repo, register_camera
from .simulate import (
    ExposurePlan,
    ScienceDetector,
    exposure_header,
    plan_exposures,
    put_science_visit,
    simulate_detector,
    simulate_science_visit,
)
from .sky_measurement import SkyMeasurementConfig
from .truth import (
    expected_noise,
    good_pixel_counts,
    large_scale_residual,
    noiseless_sky_frames,
    visit_sky_level,
)

PIPELINE = Path(__file__).resolve().parents[3] / "pipelines" / "BuildSkyFrame.yaml"
APPLY_PIPELINE = PIPELINE.parent / "ApplySkyFrame.yaml"
TEMPLATES_PIPELINE = PIPELINE.parent / "BuildSkyTemplates.yaml"
INPUT_RUN = "demo/raw"
OUTPUT = "demo/skyframes"
VISIT_RUN = "demo/visits"
APPLY_OUTPUT = "demo/skycorr"
N_VISITS = 2
RESIDUAL_BIN = 32
# The multi-component section: its own raw run and build output, exposure ids
# after the first section's (1000 + n_exposures + N_VISITS), the next night.
PCA_INPUT_RUN = "demo/raw-pca"
PCA_OUTPUT = "demo/skyframes-pca"
PCA_FIRST_ID = 2000
PCA_START = "2026-11-02T03:00:00"
# Strength of the second pattern: its RMS over a detector is 0.6-2.3% of the
# sky (1% typical) at weight 1, like the main pattern's 1.0-1.3%, the order of
# the moonlight and scattered-light changes DES's templates follow.
PCA_SECONDARY_AMPLITUDE = 0.05
PCA_WEIGHT_RANGE = (-1.0, 1.0)
PCA_VISIT_WEIGHTS = (0.8, -0.7)


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Size of the demo.

    Attributes
    ----------
    n_detectors_side : `int`
        Detectors per side of the square synthetic camera.
    n_exposures : `int`
        Exposures the sky frames are built from.
    size : `int`
        Detector width and height in pixels.
    seed : `int`
        Simulation seed.
    amplitude : `float`
        Strength of the detectors' sky pattern (fraction of the sky).
    n_components : `int`
        Largest number K of sky templates the multi-component section
        builds and compares (K = 1 .. n_components); 0 skips that section.
    n_pca_exposures : `int`
        Exposures the multi-component templates are built from.
    """

    n_detectors_side: int = 3
    n_exposures: int = 20
    size: int = 512
    seed: int = 1
    amplitude: float = 0.1
    n_components: int = 4
    n_pca_exposures: int = 12

    def __post_init__(self) -> None:
        if self.n_components < 0:
            raise ValueError(f"n_components must be >= 0 (0 skips that section), not {self.n_components}.")


def _log(message: str) -> None:
    print(message, flush=True)


def _simulate_and_ingest(
    butler: Butler,
    camera: Camera,
    plans: Sequence[ExposurePlan],
    *,
    seed: int,
    run: str,
    log: Callable,
    **kwargs: Any,
) -> None:
    """Simulate every detector of the planned exposures and ingest the images
    as ``post_isr_image`` into ``run``, skipping those already there.

    ``kwargs`` go to `~lsst.skyframes.simulate.simulate_detector` (amplitudes).
    """
    total = len(plans) * len(camera)
    done = skipped = 0
    register_input(butler, run)
    start = time.monotonic()
    for plan in plans:
        for detector in camera:
            data_id = {"instrument": camera.instrument, "exposure": plan.exposure_id, "detector": detector.id}
            if butler.find_dataset("post_isr_image", data_id, collections=run) is not None:
                skipped += 1
            else:
                simulated = simulate_detector(detector, plan, seed=seed, **kwargs)
                ingest_image(
                    butler,
                    camera,
                    simulated.image,
                    exposure_header(detector, plan),
                    source="simulated",
                    run=run,
                )
            done += 1
        log(
            f"  simulate+ingest: {done}/{total} images ({skipped} already present), "
            f"{time.monotonic() - start:.0f} s"
        )


def _new_run(butler: Butler, output: str, inputs: Sequence[str]) -> tuple[str, Butler]:
    """Register a timestamped RUN and the CHAINED ``output`` = [run, *inputs];
    return the run and a butler that reads ``output`` and writes the run."""
    run = f"{output}/{time.strftime('%Y%m%dT%H%M%S')}"
    butler.registry.registerCollection(run, CollectionType.RUN)
    butler.registry.registerCollection(output, CollectionType.CHAINED)
    butler.registry.setCollectionChain(output, [run, *inputs])
    return run, Butler.from_config(butler=butler, collections=[output], run=run)


def _pipeline(path: Path, camera: Camera, overrides: dict[str, dict[str, Any]]) -> Any:
    """Load a pipeline and apply ``{task label: {config field: value}}`` overrides.

    The camera's instrument is added, as ``pipetask run --instrument`` does,
    so its overrides size the focal-plane models from the camera.
    """
    from lsst.pipe.base import Pipeline

    pipeline = Pipeline.from_uri(str(path))
    pipeline.addInstrument(SkyFramesInstrument.from_camera(camera))
    for label, fields in overrides.items():
        for field, value in fields.items():
            pipeline.addConfigOverride(label, field, value)
    return pipeline


def _kernel_threads() -> int:
    """Number of threads numba's parallel kernels use in this process."""
    import numba

    return numba.get_num_threads()


def _build(
    butler: Butler,
    camera: Camera,
    log: Callable,
    *,
    output: str = OUTPUT,
    input_run: str = INPUT_RUN,
    physical_filter: str | None = None,
    n_components: int = 1,
) -> str:
    """Run BuildSkyFrame into ``output`` (or reuse a finished run); return the RUN.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable butler.
    camera : `~lsst.skyframes.camera.Camera`
        The camera.
    log : callable
        Where progress lines go.
    output : `str`, optional
        CHAINED output collection: the new run, ``input_run``, the calibrations.
    input_run : `str`, optional
        RUN of the ``post_isr_image`` inputs.
    physical_filter : `str`, optional
        Build only this filter; all by default.
    n_components : `int`, optional
        Number of sky templates: 1 runs ``pipelines/BuildSkyFrame.yaml`` (one
        sky frame); more run ``pipelines/BuildSkyTemplates.yaml`` with
        ``cpSkyTemplates:nComponents`` set, which also writes ``sky_components``
        (a finished run is then reused only if it has them, with enough components).
    """
    from lsst.pipe.base.simple_pipeline_executor import SimplePipelineExecutor

    where = f"instrument = '{camera.instrument}'"
    if physical_filter is not None:
        where += f" AND physical_filter = '{physical_filter}'"
    found: dict[str, list] = {}
    for dataset_type in ("sky", "sky_components") if n_components > 1 else ("sky",):
        try:
            found[dataset_type] = butler.query_datasets(
                dataset_type, collections=output, where=where, explain=False
            )
        except MissingCollectionError:
            found[dataset_type] = []
        except Exception:  # the dataset type may not be registered yet
            found[dataset_type] = []
    if all(len(refs) == len(camera) for refs in found.values()):
        if n_components > 1:
            n_built = len(butler.get(found["sky_components"][0]))
            if n_built < n_components:
                raise ValueError(
                    f"{output!r} holds {n_built} sky components, not {n_components}: "
                    "use a new output directory to build more."
                )
        log(f"  build: {len(found['sky'])} sky frames already in {output!r}; reusing them")
        return found["sky"][0].run
    run, work = _new_run(butler, output, [input_run, calib_collection(camera.instrument)])
    if n_components > 1:
        path, overrides = TEMPLATES_PIPELINE, {"cpSkyTemplates": {"nComponents": n_components}}
    else:
        path, overrides = PIPELINE, {}
    executor = SimplePipelineExecutor.from_pipeline(
        _pipeline(path, camera, overrides), where=where, butler=work
    )
    n_quanta = len(executor.quantum_graph)
    log(f"  build: {n_quanta} quanta of pipelines/{path.name}")
    start = time.monotonic()
    for index, _ in enumerate(executor.as_generator(register_dataset_types=True), 1):
        if index % max(n_quanta // 10, 1) == 0 or index == n_quanta:
            log(f"  build: {index}/{n_quanta} quanta done, {time.monotonic() - start:.0f} s")
    return run


# ---------------------------------------------------------------------------------------------------------
# Applying the sky frames (steps 6-8)
# ---------------------------------------------------------------------------------------------------------


def _visit_plans(
    build_plans: Sequence[ExposurePlan], secondary_weights: Sequence[float] = (0.0,) * N_VISITS
) -> list[ExposurePlan]:
    """Held-out visits after the build's exposures, in their filter, with their own level
    and gradient, one per weight of the second sky pattern."""
    last = build_plans[-1]
    start = astropy.time.Time(last.obs_start, scale="utc")
    levels = (1200.0, 2000.0)
    gradients = ((6e-4, -4e-4), (-5e-4, 7e-4))
    return [
        ExposurePlan(
            exposure_id=last.exposure_id + 1 + index,
            physical_filter=last.physical_filter,
            sky_level=levels[index % 2],
            gradient=gradients[index % 2],
            obs_start=(start + (index + 1) * 2 * astropy.units.min).isot,
            secondary_weight=weight,
        )
        for index, weight in enumerate(secondary_weights)
    ]


def _ingest_visits(
    butler: Butler,
    camera: Camera,
    plans: Sequence[ExposurePlan],
    settings: DemoSettings,
    log: Callable,
    **kwargs: Any,
) -> dict[int, dict[int, ScienceDetector]]:
    """Simulate the visits (``kwargs`` to `simulate_science_visit`) and put what is not
    yet in `VISIT_RUN` there; return them with their truth."""
    register_correction_inputs(butler, VISIT_RUN)
    visits = {}
    for plan in plans:
        visit = simulate_science_visit(
            camera, plan, seed=settings.seed + 1, amplitude=settings.amplitude, **kwargs
        )
        n_new = put_science_visit(butler, camera, plan, visit, VISIT_RUN)
        second = f", second pattern weight {plan.secondary_weight:+.2f}" if plan.secondary_weight else ""
        log(
            f"  visit {plan.exposure_id} ({plan.physical_filter}): sky {plan.sky_level:.0f} e, "
            f"gradient {plan.gradient} /mm{second}; {n_new} of {len(visit)} detectors newly ingested"
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
    _, work = _new_run(butler, output, [VISIT_RUN, calib_collection(camera.instrument)])
    pipeline = _pipeline(APPLY_PIPELINE, camera, {"skyCorr": overrides})
    executor = SimplePipelineExecutor.from_pipeline(pipeline, where=where, butler=work)
    start = time.monotonic()
    n_quanta = sum(1 for _ in executor.as_generator(register_dataset_types=True))
    log(f"  {name}: {n_quanta} visit quanta in {time.monotonic() - start:.0f} s -> {output!r}")
    return output


# What `_residuals` subtracts from a visit instead of a skyCorr: its true sky, for the floor.
TRUE_SKY = "true sky"


def _residuals(
    butler: Butler, camera: Camera, visit_id: int, visit: dict[int, ScienceDetector], collection: str | None
) -> dict[int, np.ndarray]:
    """Large-scale residuals of one visit: corrected by skyCorr of ``collection``, by a constant
    sky (the visit's level) when ``collection`` is `None`, or by its true sky when it is
    `TRUE_SKY`."""
    residuals = {}
    for detector_id, science in visit.items():
        if collection is None:
            corrected = science.truth.image.image.array - science.truth.sky_level
        elif collection == TRUE_SKY:
            corrected = science.truth.image.image.array - science.truth.sky
        else:
            data_id = {"instrument": camera.instrument, "visit": visit_id, "detector": detector_id}
            image = butler.get("preliminary_visit_image", data_id, collections=VISIT_RUN)
            sky_corr = butler.get("skyCorr", data_id, collections=collection)
            corrected = image.image.array - sky_corr.getImage().array
        residuals[detector_id] = large_scale_residual(
            corrected, science.truth, science.truth.image.mask.get("BAD"), RESIDUAL_BIN
        )
    return residuals


def _sky_frame_errors(
    butler: Butler, camera: Camera, detector_ids: Sequence[int], build_plan: ExposurePlan
) -> dict[int, np.ndarray]:
    """Each sky frame's per-bin error (its variance plane, square-rooted), by detector id, found
    by calibration lookup from ``build_plan``, a build exposure."""
    calib = calib_collection(camera.instrument)
    return {
        detector_id: np.sqrt(
            butler.get(
                "sky",
                {"instrument": camera.instrument, "detector": detector_id},
                exposure=build_plan.exposure_id,
                collections=[calib, INPUT_RUN],
            ).variance.array.astype(np.float64)
        )
        for detector_id in detector_ids
    }


def _residual_floor(visit_noise: float, frame_errors: Sequence[np.ndarray], scale: float) -> dict[str, float]:
    """The least large-scale residual a sky-frame correction of one visit can leave, in e.

    Two parts, added in quadrature: ``visit_noise``, the visit's own noise as the residual that
    subtracting its true sky leaves, measured as the corrections are (`large_scale_residual`:
    its noise, the clipping's efficiency and the object light below the truth mask's
    threshold); and the sky frames' own noise times the fitted scale (``frame_errors``: the
    error of each bin's clipped mean across the inputs, RMS over bins and detectors).
    """
    frame_noise = abs(scale) * _rms(frame_errors)
    return {
        "visit_noise": visit_noise,
        "frame_noise": frame_noise,
        "floor": float(np.hypot(visit_noise, frame_noise)),
    }


def _rms(arrays: Sequence[np.ndarray]) -> float:
    values = np.concatenate([a.ravel() for a in arrays])
    return float(np.sqrt(np.nanmean(values**2)))


def _compare_corrections(
    butler: Butler,
    camera: Camera,
    plan: ExposurePlan,
    visit: dict[int, ScienceDetector],
    cases: dict[str, str | None],
    figure: str,
    log: Callable,
    *,
    detail: str = "",
    width: int = 26,
) -> dict[str, dict[str, Any]]:
    """Score one visit corrected several ways against truth: log a table of large-scale
    residual RMS, write their focal-plane mosaics to ``figure``.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        The repository.
    camera : `~lsst.skyframes.camera.Camera`
        The camera.
    plan : `~lsst.skyframes.simulate.ExposurePlan`
        The visit.
    visit : `dict` [`int`, `ScienceDetector`]
        Its simulation.
    cases : `dict` [`str`, `str` or `None`]
        Column name: skyCorr collection (`None`: a constant sky, see `_residuals`).
    figure : `str`
        PNG path.
    log : callable
        Where the table goes.
    detail : `str`, optional
        Appended to "Visit <id>" in the table's and the figure's title.
    width : `int`, optional
        Column width of the table.

    Returns
    -------
    per_case : `dict` [`str`, `dict`]
        Per case, ``per_detector`` (detector name: RMS) and ``overall`` RMS, in e.
    """
    residuals = {name: _residuals(butler, camera, plan.exposure_id, visit, c) for name, c in cases.items()}
    per_case = {
        name: {
            "per_detector": {camera[d].name: _rms([r]) for d, r in res.items()},
            "overall": _rms(list(res.values())),
        }
        for name, res in residuals.items()
    }
    separator = "\n" if detail else " "  # a detail gets its own line: few panels leave little width
    plot_mosaics(
        [
            (f"{name} (RMS {per_case[name]['overall']:.2f} e)", focal_plane_mosaic(camera, res, RESIDUAL_BIN))
            for name, res in residuals.items()
        ],
        figure,
        title=f"Visit {plan.exposure_id}{detail}:{separator}large-scale residual sky "
        f"({RESIDUAL_BIN} px clipped means, objects masked) against truth",
        label="residual [e]",
        symmetric=True,
    )
    log("")
    log(
        f"Visit {plan.exposure_id}{detail}: large-scale residual RMS against truth [e] "
        f"({RESIDUAL_BIN} px bins, noise alone ~{np.sqrt(plan.sky_level) / RESIDUAL_BIN:.2f} e)"
    )
    log("  detector  " + "".join(f"{name:>{width}s}" for name in per_case))
    for detector in camera:
        row = "".join(f"{per_case[name]['per_detector'][detector.name]:{width}.2f}" for name in per_case)
        log(f"  {detector.name:8s}  {row}")
    log("  overall   " + "".join(f"{per_case[name]['overall']:{width}.2f}" for name in per_case))
    return per_case


def _coefficients(
    butler: Butler, camera: Camera, visit_id: int, collection: str, n_components: int
) -> list[float]:
    """The sky-template coefficients skyCorr fitted to a visit: ``skyFrameScale`` with
    one template, ``skyComponentCoefficients`` (K values) with more."""
    metadata = butler.get(
        "skyCorr_metadata", instrument=camera.instrument, visit=visit_id, collections=collection
    )["skyCorr"]
    if n_components == 1:
        return [float(metadata["skyFrameScale"])]
    # getArray: item access would return only the last element of a list.
    return [float(value) for value in metadata.getArray("skyComponentCoefficients")]


def _apply(
    butler: Butler,
    camera: Camera,
    settings: DemoSettings,
    build_plans: Sequence[ExposurePlan],
    fp_config: FocalPlaneBackgroundConfig,
    output: str,
    n_steps: int,
    log: Callable,
) -> dict[str, Any]:
    """Steps 6-8: ingest held-out visits, correct them three ways, score against truth."""
    start = time.monotonic()
    plans = _visit_plans(build_plans)
    log(f"[6/{n_steps}] simulating {len(plans)} held-out science visits as preliminary_visit_image")
    visits = _ingest_visits(butler, camera, plans, settings, log)
    log(f"[7/{n_steps}] running pipelines/ApplySkyFrame.yaml: with sky frames, and focal-plane models only")
    visit_ids = [plan.exposure_id for plan in plans]
    cases = {
        "sky frame": _run_apply(butler, camera, "sky", {}, visit_ids, log),
        "focal-plane models only": _run_apply(butler, camera, "models", {"doSky": False}, visit_ids, log),
        "no correction": None,
    }
    log(f"[8/{n_steps}] scoring the corrected visits against truth")
    results: dict[str, Any] = {"visits": {}, "residual_bin_px": RESIDUAL_BIN}
    frame_errors = _sky_frame_errors(butler, camera, [detector.id for detector in camera], build_plans[-1])
    for plan in plans:
        figure = os.path.join(output, f"sky_correction_visit{plan.exposure_id}.png")
        per_case = _compare_corrections(butler, camera, plan, visits[plan.exposure_id], cases, figure, log)
        scale = _coefficients(butler, camera, plan.exposure_id, cases["sky frame"], 1)[0]
        expected = visit_sky_level(camera, plan, fp_config, settings.amplitude)
        results["visits"][str(plan.exposure_id)] = {
            "sky_level": plan.sky_level,
            "expected_scale": expected,
            "sky_frame_scale": scale,
            "noise_per_bin": float(np.sqrt(plan.sky_level) / RESIDUAL_BIN),
            "residual_rms": per_case,
            "figure": figure,
        }
        visit = visits[plan.exposure_id]
        visit_noise = _rms(list(_residuals(butler, camera, plan.exposure_id, visit, TRUE_SKY).values()))
        floor = _residual_floor(visit_noise, [frame_errors[d] for d in visit], scale)
        floor["ratio"] = per_case["sky frame"]["overall"] / floor["floor"]
        results["visits"][str(plan.exposure_id)]["floor"] = floor
        log(
            f"  sky-frame scale {scale:.1f} (visit level in sky-frame units {expected:.1f}: "
            f"{100 * (scale / expected - 1):+.2f}%)"
        )
        log(
            f"  floor {floor['floor']:.2f} e: visit noise {floor['visit_noise']:.2f} e (the true sky "
            f"subtracted, measured alike) and scaled sky-frame noise {floor['frame_noise']:.2f} e, in "
            f"quadrature; the sky frame leaves {floor['ratio']:.2f} x the floor"
        )
        log(f"  figure: {figure}")
    results["seconds"] = time.monotonic() - start
    log(f"Sky correction steps 6-8 done in {results['seconds']:.0f} s")
    return results


# ---------------------------------------------------------------------------------------------------------
# Multi-component sky templates on a sky with two independent patterns (steps 9-13)
# ---------------------------------------------------------------------------------------------------------


def _multi_component(
    butler: Butler,
    camera: Camera,
    settings: DemoSettings,
    fp_config: FocalPlaneBackgroundConfig,
    output: str,
    n_steps: int,
    log: Callable,
) -> dict[str, Any]:
    """Steps 9-13: build K-component templates in the camera's second filter from
    exposures whose sky has a second pattern of varying weight, correct two held-out
    such visits with K = 1 .. ``settings.n_components`` templates, score against truth."""
    start = time.monotonic()
    n_max = settings.n_components
    physical_filter = camera.physical_filters[1]
    seed = settings.seed + 2
    amplitudes = {"amplitude": settings.amplitude, "secondary_amplitude": PCA_SECONDARY_AMPLITUDE}
    plans = plan_exposures(
        settings.n_pca_exposures,
        physical_filter,
        seed=seed,
        first_id=PCA_FIRST_ID,
        start=PCA_START,
        secondary_weight_range=PCA_WEIGHT_RANGE,
    )
    log(
        f"[9/{n_steps}] simulating {len(plans)} exposures x {len(camera)} detectors in {physical_filter}: "
        f"sky = level x (pattern + w x (second pattern - mean)), second amplitude "
        f"{PCA_SECONDARY_AMPLITUDE}, w uniform in {PCA_WEIGHT_RANGE}"
    )
    _simulate_and_ingest(butler, camera, plans, seed=seed, run=PCA_INPUT_RUN, log=log, **amplitudes)
    log(
        f"[10/{n_steps}] building {n_max} sky template(s) for {physical_filter} "
        f"({'pipelines/BuildSkyTemplates.yaml' if n_max > 1 else 'pipelines/BuildSkyFrame.yaml'}); "
        "certifying them"
    )
    run = _build(
        butler,
        camera,
        log,
        output=PCA_OUTPUT,
        input_run=PCA_INPUT_RUN,
        physical_filter=physical_filter,
        n_components=n_max,
    )
    for dataset_type, n_new in certify_sky_frames(butler, run).items():
        log(f"  {dataset_type}: {f'{n_new} newly certified' if n_new else 'already certified'}")

    visit_plans = _visit_plans(plans, PCA_VISIT_WEIGHTS)
    log(f"[11/{n_steps}] simulating {len(visit_plans)} held-out two-pattern science visits")
    visits = _ingest_visits(
        butler, camera, visit_plans, settings, log, secondary_amplitude=PCA_SECONDARY_AMPLITUDE
    )
    visit_ids = [plan.exposure_id for plan in visit_plans]
    log(f"[12/{n_steps}] running pipelines/ApplySkyFrame.yaml with K = 1..{n_max} sky templates")
    cases = {
        f"K={k}": _run_apply(butler, camera, f"pca-K{k}", {"nComponents": k}, visit_ids, log)
        for k in range(1, n_max + 1)
    }
    log(f"[13/{n_steps}] scoring the corrected visits against truth")
    mean_weight = float(np.mean([plan.secondary_weight for plan in plans]))
    results: dict[str, Any] = {
        "physical_filter": physical_filter,
        "n_exposures": len(plans),
        "n_components": n_max,
        "secondary_amplitude": PCA_SECONDARY_AMPLITUDE,
        "build_weights": [plan.secondary_weight for plan in plans],
        "build_mean_weight": mean_weight,
        "residual_bin_px": RESIDUAL_BIN,
        "visits": {},
    }
    for plan in visit_plans:
        figure = os.path.join(output, f"pca_components_visit{plan.exposure_id}.png")
        detail = f" ({physical_filter}, second pattern weight {plan.secondary_weight:+.2f})"
        per_case = _compare_corrections(
            butler, camera, plan, visits[plan.exposure_id], cases, figure, log, detail=detail, width=10
        )
        coefficients = {
            name: _coefficients(butler, camera, plan.exposure_id, collection, k)
            for k, (name, collection) in enumerate(cases.items(), 1)
        }
        expected = visit_sky_level(camera, plan, fp_config, **amplitudes)
        results["visits"][str(plan.exposure_id)] = {
            "sky_level": plan.sky_level,
            "true_weight": plan.secondary_weight,
            "expected_first_coefficient": expected,
            "noise_per_bin": float(np.sqrt(plan.sky_level) / RESIDUAL_BIN),
            "coefficients": coefficients,
            "residual_rms": per_case,
            "figure": figure,
        }
        # Template 1 is the build's mean, which holds the mean weight's share of the second
        # pattern: c_2 follows level x (w - mean weight), and c_1 moves with it as far as the
        # two patterns overlap.
        log(
            f"  fitted coefficients c_1..c_K: true weight {plan.secondary_weight:+.2f} "
            f"(build mean {mean_weight:+.2f}, difference {plan.secondary_weight - mean_weight:+.2f}), "
            f"visit level in sky-frame units {expected:.1f}"
        )
        for name, values in coefficients.items():
            log(f"    {name}: {'  '.join(f'{value:9.2f}' for value in values)}")
        log(f"  figure: {figure}")
    results["seconds"] = time.monotonic() - start
    log(f"Multi-component steps 9-13 done in {results['seconds']:.0f} s")
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
    n_steps = 13 if settings.n_components else 8
    log(f"[1/{n_steps}] {'reopening' if existed else 'creating'} butler repository {root}")
    butler = create_repo(root)
    register_camera(butler, camera)
    log(
        f"[2/{n_steps}] simulating {settings.n_exposures} exposures x {len(camera)} detectors "
        f"of {settings.size} px"
    )
    plans = plan_exposures(settings.n_exposures, camera.physical_filters[0], seed=settings.seed)
    _simulate_and_ingest(
        butler, camera, plans, seed=settings.seed, run=INPUT_RUN, log=log, amplitude=settings.amplitude
    )
    log(f"[3/{n_steps}] running pipelines/BuildSkyFrame.yaml")
    log(
        f"  (in this process, one quantum at a time; its kernels run on {_kernel_threads()} numba threads, "
        "NUMBA_NUM_THREADS=N to change. With pipetask, -j N also runs N quanta at once, and BPS runs them "
        "on a cluster: README, 'Both cores are used')"
    )
    run = _build(butler, camera, log, physical_filter=camera.physical_filters[0])
    log(f"[4/{n_steps}] certifying sky frames into {calib_collection(camera.instrument)!r}")
    n_new = certify_calibrations(butler, run)
    log(f"  {n_new} newly certified" if n_new else "  already certified")

    log(f"[5/{n_steps}] scoring the sky frames against truth")
    sky_config = SkyMeasurementConfig()
    bin_size = (sky_config.background.xBinSize, sky_config.background.yBinSize)
    # The build's model, as the instrument's overrides size it.
    fp_config = camera_sized_config(CpSkyImageConfig().largeScaleBackground, camera, 1)
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
                butler.get("cpSkyObjectMask", data_id, exposure=plan.exposure_id, collections=run),
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

    metrics["sky_correction"] = _apply(butler, camera, settings, plans, fp_config, output, n_steps, log)
    if settings.n_components:
        log("")
        metrics["multi_component"] = _multi_component(
            butler, camera, settings, fp_config, output, n_steps, log
        )
    metrics["seconds"] = time.monotonic() - start
    with open(os.path.join(output, "metrics.json"), "w") as stream:
        json.dump(metrics, stream, indent=2)
    outputs = f"{OUTPUT!r}, {PCA_OUTPUT!r}" if settings.n_components else repr(OUTPUT)
    log(f"Repository: {root}  (sky frames in {calib!r}, outputs in {outputs}, {APPLY_OUTPUT!r}/*)")
    log(f"Done in {metrics['seconds']:.0f} s")
    return metrics
