"""The build and apply pipelines through pipetask against the same work at the Task level.

One run, side by side, on ``--exposures`` exposures of a camera of ``--nx`` x ``--ny`` detectors
of ``--size``² pixels (default 4 exposures of 2 x 1 detectors of 4096²), simulated with
`lsst.skyframes.simulate` and written as the FITS files users ingest:

1. **pipetask**, the way the README runs it: ``skyframes create-repo``, ``register`` and
   ``ingest`` (set-up, not timed), then ``pipetask run`` of pipelines/BuildSkyFrame.yaml with
   the instrument's overrides, ``skyframes certify``, one science visit put as the calibration
   pipeline would leave it, and ``pipetask run`` of pipelines/ApplySkyFrame.yaml. For each
   ``pipetask`` the wall and CPU time of the whole process (``RUSAGE_CHILDREN``) and, from every
   quantum's ``<label>_metadata``: its CPU time (``quantum.start``..``end``), the wall time in
   butler ``get`` (read: inputs, and deferred handles read inside ``run``) and ``put`` (write),
   and the rest of its wall time (compute). *Framework* is the process CPU not inside any
   quantum (imports, graph building, the executor).
2. **Task level**: the same images in memory, the tasks' ``run`` methods called as the pipeline
   would call them (cpSkyImage per exposure and detector, cpSkyScaleMeasure per exposure,
   cpSkySubtractBackground per exposure and detector, cpSkyCombine per detector;
   SkyCorrectionTask per visit), CPU time per task.

It prints per task the quanta's CPU, read/compute/write wall split, the Task-level CPU and the
ratio pipeline / Task level, then the totals; what each dataset type costs on disk; and the
apply pipeline's peak memory through pipetask against the detectors of a visit
(``--memory-counts``, default 2 4 6 detectors of ``--memory-size``² = 1024², see `apply_memory`).
``--jobs 1 2`` also runs each pipetask with
``-j 2`` (and NUMBA_NUM_THREADS = cores / 2, so that the quanta run at once share the cores
instead of each starting a thread per core) and prints the wall-time speed-up. Results go to
``benchmarks/results/pipeline-throughput-<time>.json``.

Run with ``.venv/bin/python benchmarks/pipeline_throughput.py`` (about 10-15 min at 4096² on
2 cores); ``--size 1024`` for a quick look.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_average, machine_info, pipeline_configs, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "pipelines" / "BuildSkyFrame.yaml"
APPLY = ROOT / "pipelines" / "ApplySkyFrame.yaml"
INSTRUMENT = "lsst.skyframes.instrument.SkyFramesInstrument"
SEED = 2027
BUILD_TASKS = ("cpSkyImage", "cpSkyScaleMeasure", "cpSkySubtractBackground", "cpSkyCombine")


@dataclasses.dataclass
class Scenario:
    camera: object
    plans: list
    visit_plan: object


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name)


def _scenario(args) -> Scenario:
    from lsst.skyframes.camera import make_synthetic_camera
    from lsst.skyframes.simulate import ExposurePlan, plan_exposures

    camera = make_synthetic_camera(n_x=args.nx, n_y=args.ny, size=args.size)
    plans = plan_exposures(args.exposures, camera.physical_filters[0], seed=SEED)
    visit_plan = ExposurePlan(
        exposure_id=9000,
        physical_filter=camera.physical_filters[0],
        sky_level=1500.0,
        gradient=(8e-4, -5e-4),
        obs_start="2026-11-20T03:00:00",
    )
    return Scenario(camera, plans, visit_plan)


def _images(scenario: Scenario):
    """The build's exposures, as the tests simulate them: {(exposure, detector): MaskedImage}."""
    from lsst.skyframes.simulate import simulate_detector

    return {
        (plan.exposure_id, detector.id): simulate_detector(
            detector, plan, seed=SEED, n_stars=40, n_galaxies=8
        ).image
        for plan in scenario.plans
        for detector in scenario.camera
    }


def _science_visit(scenario: Scenario):
    from lsst.skyframes.simulate import simulate_science_visit

    return simulate_science_visit(
        scenario.camera, scenario.visit_plan, seed=SEED + 1, n_stars=40, n_galaxies=8
    )


def _run(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run a command; return its wall and CPU (user + system, children) seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{result.stderr[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def _quanta(root: str, collection: str, labels) -> dict[str, dict[str, float]]:
    """Per task label: the sums over its quanta of CPU, read, write and compute seconds."""
    from lsst.daf.butler import Butler

    butler = Butler.from_config(root)
    totals: dict[str, dict[str, float]] = {}
    for label in labels:
        sums = defaultdict(float)
        for ref in butler.query_datasets(f"{label}_metadata", collections=collection, explain=False):
            # TaskMetadata gives the last value of a list: one per quantum here.
            quantum = butler.get(ref)["quantum"]
            cpu = quantum["endCpuTime"] - quantum["startCpuTime"]
            metrics = quantum["butler_metrics"]
            wall = _utc(quantum["endUtc"]) - _utc(quantum["startUtc"])
            sums["quanta"] += 1
            sums["cpu_s"] += cpu
            sums["wall_s"] += wall
            sums["read_s"] += metrics["time_in_get"]
            sums["write_s"] += metrics["time_in_put"]
            sums["compute_s"] += wall - metrics["time_in_get"] - metrics["time_in_put"]
        totals[label] = dict(sums)
    return totals


def _disk(root: str, collections: dict[str, str], pixels: int) -> dict[str, dict[str, float]]:
    """Per dataset type written (or ingested): datasets, mean file size, bytes per detector pixel."""
    from lsst.daf.butler import Butler

    butler = Butler.from_config(root)
    sizes: dict[str, dict[str, float]] = {}
    for name, collection in collections.items():
        refs = butler.query_datasets(name, collections=collection, explain=False)
        if not refs:
            continue
        total = sum(butler.getURI(ref).size() for ref in refs)
        sizes[name] = {"datasets": len(refs), "mean_bytes": total / len(refs)}
        sizes[name]["bytes_per_pixel"] = sizes[name]["mean_bytes"] / pixels
    return sizes


# What the build writes, and its input, per dataset type (the collection each is in).
DISK_DATASETS = {
    "post_isr_image": "raw",
    "cpSkyObjectMask": "build",
    "cpSkyDetectorBackground": "build",
    "cpSkyExpBackground": "build",
    "cpSkyExpScale": "build",
    "cpSkyExpResidualBackground": "build",
    "sky": "build",
    "sky_quality": "build",
    "skyCorr": "skycorr",
}


def _utc(text: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(text).timestamp()


@dataclasses.dataclass
class BuiltRepo:
    root: str
    env: dict[str, str]
    calib: str
    build: dict[str, float]


def _jobs_option(jobs: int) -> list[str]:
    return ["-j", str(jobs)] if jobs > 1 else []


def _jobs_env(jobs: int) -> dict[str, str]:
    """Environment for ``pipetask -j jobs``: the cores shared out among the quanta run at once.

    Each quantum's kernels run on NUMBA_NUM_THREADS threads (default: every core), so ``-j 2`` on
    2 cores would run 4 threads; pipetask's processes inherit the environment.
    """
    return {"NUMBA_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))} if jobs > 1 else {}


def _built_repo(scenario: Scenario, workdir: Path, jobs: int) -> BuiltRepo:
    """Ingest the scenario's exposures from FITS files (not timed), build (timed) and certify sky frames."""
    from lsst.skyframes.ingest import write_processed_fits
    from lsst.skyframes.repo import calib_collection
    from lsst.skyframes.simulate import exposure_header

    camera = scenario.camera
    root = str(workdir / "repo")
    camera_file = workdir / "camera.yaml"
    camera.to_yaml(camera_file)
    files = []
    for (exposure, d), image in _images(scenario).items():
        plan = next(p for p in scenario.plans if p.exposure_id == exposure)
        path = workdir / f"image_{exposure}_{d}.fits"
        write_processed_fits(path, image, exposure_header(camera[d], plan))
        files.append(str(path))
    env = dict(os.environ, SKYFRAMES_CAMERA=str(camera_file), PYTHONUNBUFFERED="1") | _jobs_env(jobs)
    skyframes = _tool("skyframes")
    for command in (
        [skyframes, "create-repo", root],
        [skyframes, "register", root, str(camera_file)],
        [skyframes, "ingest", root, "--camera", str(camera_file), "--run", "raw", *files],
    ):
        _run(command, env)
    calib = calib_collection(camera.instrument)
    build = _run(
        [_tool("pipetask"), "run", "-b", root, "-i", f"raw,{calib}", "-o", "build", "-p", str(BUILD)]
        + ["--instrument", INSTRUMENT, "--register-dataset-types", *_jobs_option(jobs)],
        env,
    )
    _run([skyframes, "certify", root, "build", "--begin", "2026-10-01T00:00:00"], env)
    return BuiltRepo(root, env, calib, build)


# Starts a command from a small process. A child forked from this (large) process and then exec'd
# starts with this process's resident set as its peak (Linux keeps the high-water mark of the
# forked copy across exec), so its own peak RSS, as pipetask records it, would be this one's.
_SMALL_PARENT = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"]


def _apply(
    repo: BuiltRepo, output: str, options: list[str], *, small_parent: bool = False
) -> dict[str, float]:
    """Run pipelines/ApplySkyFrame.yaml with pipetask on the repository's ``visits``."""
    return _run(
        (_SMALL_PARENT if small_parent else [])
        + [_tool("pipetask"), "run", "-b", repo.root, "-i", f"visits,{repo.calib}", "-o", output]
        + ["-p", str(APPLY), "--instrument", INSTRUMENT, "--register-dataset-types", *options],
        repo.env,
    )


def pipelines(scenario: Scenario, workdir: Path, jobs: int) -> dict[str, object]:
    """Set up a repository from FITS files and run both pipelines with pipetask."""
    from lsst.daf.butler import Butler

    from lsst.skyframes.correction import register_correction_inputs
    from lsst.skyframes.simulate import put_science_visit

    repo = _built_repo(scenario, workdir, jobs)
    butler = Butler.from_config(repo.root, writeable=True)
    register_correction_inputs(butler, "visits")
    put_science_visit(butler, scenario.camera, scenario.visit_plan, _science_visit(scenario), "visits")
    del butler
    apply = _apply(repo, "skycorr", _jobs_option(jobs))
    detector = scenario.camera[0]
    return {
        "build": {"process": repo.build, "tasks": _quanta(repo.root, "build", BUILD_TASKS)},
        "apply": {"process": apply, "tasks": _quanta(repo.root, "skycorr", ("skyCorr",))},
        "disk": _disk(repo.root, DISK_DATASETS, detector.width * detector.height),
    }


def apply_memory(size: int, counts: list[int], workdir: Path) -> dict[str, object]:
    """Peak memory of the apply pipeline, through pipetask, against the detectors in a visit.

    A 3 x 2 camera of ``size``² detectors: the build (4 exposures), then for each count n one
    visit of the first n detectors, each corrected by its own ``pipetask run`` (``-d visit=...``).
    The skyCorr quantum's ``endMaxResidentSetSize`` (the process's peak RSS) per visit, and its
    least-squares growth per extra detector in units of one detector's image planes (12 bytes per
    pixel).
    """
    import numpy as np
    from lsst.daf.butler import Butler

    from lsst.skyframes.camera import make_synthetic_camera
    from lsst.skyframes.correction import register_correction_inputs
    from lsst.skyframes.simulate import (
        ExposurePlan,
        plan_exposures,
        put_science_visit,
        simulate_science_visit,
    )

    camera = make_synthetic_camera(n_x=3, n_y=2, size=size)
    scenario = Scenario(camera, plan_exposures(4, camera.physical_filters[0], seed=SEED), visit_plan=None)
    repo = _built_repo(scenario, workdir, 1)
    butler = Butler.from_config(repo.root, writeable=True)
    register_correction_inputs(butler, "visits")
    visits = {}
    for n in counts:
        plan = ExposurePlan(
            exposure_id=9000 + n,
            physical_filter=camera.physical_filters[0],
            sky_level=1500.0,
            gradient=(8e-4, -5e-4),
            obs_start=f"2026-11-20T0{n}:00:00",
        )
        visit = simulate_science_visit(camera, plan, seed=SEED + n, n_stars=40, n_galaxies=8)
        first = sorted(visit)[:n]
        put_science_visit(butler, camera, plan, {d: visit[d] for d in first}, "visits")
        visits[n] = plan.exposure_id
    del butler
    rows = []
    for n, visit_id in visits.items():
        output = f"skycorr{n}"
        _apply(repo, output, ["-d", f"visit = {visit_id}"], small_parent=True)
        butler = Butler.from_config(repo.root)
        (ref,) = butler.query_datasets("skyCorr_metadata", collections=output, explain=False)
        peak = butler.get(ref)["quantum"]["endMaxResidentSetSize"]
        rows.append({"n_detectors": n, "peak_rss_bytes": peak})
    slope = float(np.polyfit([r["n_detectors"] for r in rows], [r["peak_rss_bytes"] for r in rows], 1)[0])
    return {"size": size, "rows": rows, "growth_images_per_detector": slope / (12 * size * size)}


def task_level(scenario: Scenario) -> dict[str, dict[str, float]]:
    """The same work through the tasks' run methods, on images in memory: CPU per task."""
    from lsst.skyframes.build import (
        CpSkyCombineTask,
        CpSkyImageTask,
        CpSkyScaleMeasureTask,
        CpSkySubtractBackgroundTask,
    )
    from lsst.skyframes.correction import SkyCorrectionTask

    camera = scenario.camera
    configs = pipeline_configs(BUILD, camera) | pipeline_configs(APPLY, camera)
    images = _images(scenario)
    cpu: dict[str, float] = defaultdict(float)

    def timed(label, method, *args):
        start = time.process_time()
        result = method(*args)
        cpu[label] += time.process_time() - start
        return result

    image_task = CpSkyImageTask(config=configs["cpSkyImage"])
    scale_task = CpSkyScaleMeasureTask(config=configs["cpSkyScaleMeasure"])
    subtract_task = CpSkySubtractBackgroundTask(config=configs["cpSkySubtractBackground"])
    combine_task = CpSkyCombineTask(config=configs["cpSkyCombine"])
    residuals = defaultdict(list)
    for plan in scenario.plans:
        masked = {}
        for detector in camera:
            image = images.pop((plan.exposure_id, detector.id))
            masked[detector.id] = timed("cpSkyImage", image_task.run, image, camera, detector)
        backgrounds = [m.maskedBkg for m in masked.values()]
        merged = timed("cpSkyScaleMeasure", scale_task.run, backgrounds)
        for detector in camera:
            exposure = masked.pop(detector.id).maskedExp
            result = timed(
                "cpSkySubtractBackground",
                subtract_task.run,
                exposure,
                merged.outputBkg,
                merged.outputScale,
                detector,
            )
            residuals[detector.id].append(result.outputBkg)
    skies = {d: timed("cpSkyCombine", combine_task.run, residuals[d]).outputCalib for d in residuals}
    visit = _science_visit(scenario)
    ids = sorted(visit)
    correction = SkyCorrectionTask(config=configs["skyCorr"])
    calExps = [visit[d].image for d in ids]
    calBkgs = [visit[d].background for d in ids]
    timed("skyCorr", correction.run, calExps, calBkgs, [skies[d] for d in ids], camera, ids)
    return dict(cpu)


def _table(runs: dict[int, dict], tasks: dict[str, float]) -> str:
    first = runs[min(runs)]
    lines = [
        f"{'task':24s} {'quanta':>6s} {'pipeline CPU':>12s} {'read':>7s} {'compute':>8s} {'write':>7s} "
        f"{'Task CPU':>9s} {'ratio':>6s}",
    ]
    lines.append("-" * len(lines[0]))
    for chain, labels in (("build", BUILD_TASKS), ("apply", ("skyCorr",))):
        process = first[chain]["process"]
        quanta_cpu = 0.0
        task_cpu = 0.0
        for label in labels:
            row = first[chain]["tasks"][label]
            quanta_cpu += row["cpu_s"]
            task_cpu += tasks[label]
            lines.append(
                f"{label:24s} {row['quanta']:6.0f} {row['cpu_s']:12.1f} {row['read_s']:7.1f} "
                f"{row['compute_s']:8.1f} {row['write_s']:7.1f} {tasks[label]:9.1f} "
                f"{row['cpu_s'] / tasks[label]:6.2f}"
            )
        framework = process["cpu_s"] - quanta_cpu
        lines.append(
            f"{chain + ' quanta':24s} {'':6s} {quanta_cpu:12.1f} {'':7s} {'':8s} {'':7s} {task_cpu:9.1f} "
            f"{quanta_cpu / task_cpu:6.2f}"
        )
        lines.append(
            f"{chain + ' pipetask process':24s} {'':6s} {process['cpu_s']:12.1f} "
            f"(framework {framework:.1f} s CPU; wall {process['wall_s']:.1f} s) {task_cpu:9.1f} "
            f"{process['cpu_s'] / task_cpu:6.2f}"
        )
    for jobs in sorted(runs)[1:]:
        for chain in ("build", "apply"):
            one, many = runs[1][chain]["process"]["wall_s"], runs[jobs][chain]["process"]["wall_s"]
            lines.append(
                f"{chain}: pipetask -j {jobs} (NUMBA_NUM_THREADS={_jobs_env(jobs)['NUMBA_NUM_THREADS']}) "
                f"wall {many:.1f} s against {one:.1f} s: x{one / many:.2f}"
            )
    lines.append(
        "read/compute/write: wall seconds summed over the quanta (read includes deferred reads in run)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--nx", type=int, default=2)
    parser.add_argument("--ny", type=int, default=1)
    parser.add_argument("--exposures", type=int, default=4)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1], help="pipetask -j values (1 first)")
    parser.add_argument(
        "--memory-counts",
        type=int,
        nargs="*",
        default=[2, 4, 6],
        help="detectors per visit for the apply pipeline's memory growth (none: skip)",
    )
    parser.add_argument("--memory-size", type=int, default=1024, help="detector side for the memory runs")
    args = parser.parse_args()
    if args.jobs[0] != 1:
        args.jobs.insert(0, 1)
    info = machine_info()
    load_before = load_average()
    print(
        f"skyframes pipeline throughput - {info['date']} - {info['cpu']} ({info['cores']} cores)", flush=True
    )
    scenario = _scenario(args)
    runs = {}
    # The Task level just before and just after the pipetask -j 1 run, and their mean in the
    # ratios: a shared machine's speed drifts over minutes (by 40 % here), which this brackets.
    brackets = []
    for jobs in args.jobs:
        if jobs == 1:
            brackets.append(task_level(scenario))
            print("Task level (before): done", flush=True)
        with tempfile.TemporaryDirectory(prefix="skyframes-throughput-") as workdir:
            runs[jobs] = pipelines(scenario, Path(workdir), jobs)
        print(f"pipetask -j {jobs}: done", flush=True)
        if jobs == 1:
            brackets.append(task_level(scenario))
            print("Task level (after): done", flush=True)
    tasks = {label: sum(b[label] for b in brackets) / len(brackets) for label in brackets[0]}
    title = f"{args.exposures} exposures x {args.nx * args.ny} detectors of {args.size}^2, one visit"
    text = f"{title}; CPU seconds\n" + _table(runs, tasks)
    before, after = brackets[0], brackets[-1]
    text += "\nTask level CPU: the mean of the runs before / after pipetask -j 1: " + ", ".join(
        f"{label} {before[label]:.1f} / {after[label]:.1f}" for label in tasks
    )
    disk = runs[1]["disk"]
    text += "\n\non disk (pipetask -j 1 run): dataset type, datasets, mean size, bytes per detector pixel"
    for name, row in disk.items():
        size = row["mean_bytes"] / 1e6
        text += f"\n{name:28s} {row['datasets']:4d} {size:10.3f} MB {row['bytes_per_pixel']:8.4f}"
    memory = None
    if args.memory_counts:
        with tempfile.TemporaryDirectory(prefix="skyframes-throughput-memory-") as workdir:
            memory = apply_memory(args.memory_size, args.memory_counts, Path(workdir))
        text += (
            f"\n\napply through pipetask, {args.memory_size}^2 detectors: peak RSS of the process per visit"
        )
        for row in memory["rows"]:
            text += f"\n  {row['n_detectors']} detectors: {row['peak_rss_bytes'] / 2**20:8.0f} MiB"
        text += (
            f"\n  growth per extra detector: {memory['growth_images_per_detector']:.3f} detector images "
            "(12 bytes per pixel)"
        )
    load_after = load_average()
    text += f"\nload average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}"
    print(text)
    path = write_json(
        {
            "machine": info,
            "args": vars(args),
            "pipelines": runs,
            "task_level": tasks,
            "task_level_before_after": brackets,
            "apply_memory": memory,
            "table": text,
        },
        "pipeline-throughput",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
