"""Peak memory of one quantum of each sky-frame task on 4096 x 4096 detectors.

Each task's ``run`` is called in a fresh process, on inputs simulated with
`lsst.skyframes.simulate.simulate_detector` for the 3 x 3 synthetic camera
``make_synthetic_camera(size=4096)``:

- cpSkyImage: one detector exposure (object masking, focal-plane binning);
- cpSkySubtractBackground: one object-masked detector image, its exposure's
  focal-plane background and scale;
- cpSkyCombine: the binned residual backgrounds of ``--combine-inputs``
  exposures (default 50; one measured, the rest perturbed copies);
- SkyCorrectionTask: one visit of all 9 detectors (default config with the
  camera overrides, as pipetask --instrument gives it; the sky
  frames are built by the three build tasks from one exposure).

Reported per task:

- ``ru_maxrss - baseline``: `resource.getrusage` peak RSS minus the RSS after
  the imports (this includes simulating the inputs);
- ``peak in run - baseline``: peak RSS while ``run`` executes (Linux
  ``VmHWM``, reset just before ``run``) minus the RSS after the imports:
  the inputs the quantum holds plus its working memory;
- ``peak in run - inputs``: the same peak minus the RSS just before
  ``run``: the task's own working memory;
- ``tracemalloc peak``: traced allocations during ``run`` (NumPy and
  Python objects; numba's own allocations are not traced);
- ``inputs``: the bytes of the input image planes.

The numba cache is warmed in a separate process first, as for any quantum
after the first. Run with ``.venv/bin/python benchmarks/quantum_memory.py``
(``make bench`` runs it); results also go to
``benchmarks/results/quantum-memory-<time>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_average, machine_info, reset_peak_rss, rss_bytes, write_json  # noqa: E402

MIB = 2**20
TASKS = ("cpSkyImage", "cpSkySubtractBackground", "cpSkyCombine", "SkyCorrectionTask")
SEED = 4242


def _planes_bytes(image) -> int:
    total = image.image.array.nbytes
    for name in ("mask", "variance"):
        plane = getattr(image, name, None)
        if plane is not None:
            total += plane.array.nbytes
    return int(total)


def _build_inputs(camera, detector, plan):
    """Run cpSkyImage and cpSkyScaleMeasure on one simulated exposure."""
    from lsst.skyframes.build import CpSkyImageTask, CpSkyScaleMeasureTask
    from lsst.skyframes.camera_overrides import camera_config
    from lsst.skyframes.simulate import simulate_detector

    exposure = simulate_detector(detector, plan, seed=SEED).image
    task = CpSkyImageTask(config=camera_config(CpSkyImageTask, camera))
    masked = task.run(inputExp=exposure, camera=camera, detector=detector)
    merged = CpSkyScaleMeasureTask().run(inputBkgs=[masked.maskedBkg])
    return masked.maskedExp, merged


def _residuals(camera, detector, plan, count):
    """Return ``count`` binned residual backgrounds (one measured, the rest
    copies with perturbed bins).
    """
    from lsst.skyframes.build import CpSkySubtractBackgroundTask

    image, merged = _build_inputs(camera, detector, plan)
    first = (
        CpSkySubtractBackgroundTask()
        .run(inputExp=image, inputBkg=merged.outputBkg, inputScale=merged.outputScale, detector=detector)
        .outputBkg
    )
    del image
    rng = np.random.default_rng(SEED)
    residuals = [first]
    for _ in range(count - 1):
        copy = first.clone()
        stats = copy[0][0].getStatsImage().image.array
        stats += rng.normal(0.0, 1e-3, stats.shape).astype(stats.dtype)
        residuals.append(copy)
    return residuals


def prepare(task_name: str, combine_inputs: int):
    """Return ``(run, inputs_bytes)``: a callable running one quantum of the
    task, and the size of the image planes it was given.
    """
    from lsst.skyframes.camera import make_synthetic_camera
    from lsst.skyframes.simulate import plan_exposures, simulate_detector

    camera = make_synthetic_camera(size=4096)
    detectors = list(camera)
    detector = detectors[len(detectors) // 2]
    plans = plan_exposures(2, camera.physical_filters[0], seed=SEED)

    if task_name == "cpSkyImage":
        from lsst.skyframes.build import CpSkyImageTask
        from lsst.skyframes.camera_overrides import camera_config

        exposure = simulate_detector(detector, plans[0], seed=SEED).image
        task = CpSkyImageTask(config=camera_config(CpSkyImageTask, camera))
        return (lambda: task.run(inputExp=exposure, camera=camera, detector=detector)), _planes_bytes(
            exposure
        )

    if task_name == "cpSkySubtractBackground":
        from lsst.skyframes.build import CpSkySubtractBackgroundTask

        image, merged = _build_inputs(camera, detector, plans[0])
        task = CpSkySubtractBackgroundTask()

        def run():
            return task.run(
                inputExp=image, inputBkg=merged.outputBkg, inputScale=merged.outputScale, detector=detector
            )

        return run, _planes_bytes(image)

    if task_name == "cpSkyCombine":
        from lsst.skyframes.build import CpSkyCombineTask

        residuals = _residuals(camera, detector, plans[0], combine_inputs)
        task = CpSkyCombineTask()
        size = sum(r[0][0].getStatsImage().image.array.nbytes * 3 for r in residuals)
        return (lambda: task.run(inputBkgs=residuals, exposureIds=list(range(len(residuals))))), size

    if task_name == "SkyCorrectionTask":
        from lsst.skyframes.build import CpSkyCombineTask
        from lsst.skyframes.camera_overrides import camera_config
        from lsst.skyframes.correction import SkyCorrectionTask
        from lsst.skyframes.simulate import simulate_science_visit

        sky = CpSkyCombineTask().run(inputBkgs=_residuals(camera, detector, plans[0], 5)).outputCalib
        visit = simulate_science_visit(camera, plans[1], seed=SEED + 1)
        ids = sorted(visit)
        cal_exps = [visit[d].image for d in ids]
        cal_bkgs = [visit[d].background for d in ids]
        del visit
        task = SkyCorrectionTask(config=camera_config(SkyCorrectionTask, camera))

        def run():
            return task.run(
                calExps=cal_exps, calBkgs=cal_bkgs, skyFrames=[sky] * len(ids), camera=camera, detectorIds=ids
            )

        return run, sum(_planes_bytes(image) for image in cal_exps)

    raise ValueError(f"Unknown task {task_name!r}; expected one of {', '.join(TASKS)}.")


def child(task_name: str, combine_inputs: int) -> dict[str, object]:
    """Measure one quantum of ``task_name`` in this (fresh) process."""
    import lsst.skyframes.build  # noqa: F401
    import lsst.skyframes.correction  # noqa: F401
    import lsst.skyframes.simulate  # noqa: F401

    gc.collect()
    baseline, _ = rss_bytes()
    baseline_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    run, inputs_bytes = prepare(task_name, combine_inputs)
    gc.collect()
    before_run, _ = rss_bytes()
    resettable = reset_peak_rss()
    tracemalloc.start()
    start = time.perf_counter()
    result = run()
    elapsed = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    _, peak = rss_bytes()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del result
    return {
        "task": task_name,
        "run_s": elapsed,
        "inputs_bytes": inputs_bytes,
        "baseline_rss_bytes": baseline,
        "baseline_maxrss_bytes": baseline_maxrss,
        "rss_before_run_bytes": before_run,
        "maxrss_minus_baseline_bytes": maxrss - baseline,
        "peak_in_run_minus_baseline_bytes": peak - baseline if resettable else None,
        "peak_in_run_minus_inputs_bytes": peak - before_run if resettable else None,
        "tracemalloc_peak_bytes": traced_peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--combine-inputs", type=int, default=50, help="exposures combined by cpSkyCombine")
    parser.add_argument("--child", choices=TASKS, help=argparse.SUPPRESS)
    parser.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warm:
        from lsst.skyframes.build import CpSkyImageTask, CpSkySubtractBackgroundTask  # noqa: F401
        from lsst.skyframes.camera import make_synthetic_camera
        from lsst.skyframes.simulate import plan_exposures, simulate_detector

        camera = make_synthetic_camera(size=512)
        detector = list(camera)[4]
        plan = plan_exposures(1, camera.physical_filters[0], seed=SEED)[0]
        _build_inputs(camera, detector, plan)
        simulate_detector(detector, plan, seed=SEED)
        return
    if args.child:
        print("QUANTUM-JSON " + json.dumps(child(args.child, args.combine_inputs)))
        return

    info = machine_info()
    load_before = load_average()
    print(f"skyframes per-quantum peak memory - {info['date']} - {info['cpu']} ({info['cores']} cores)")
    subprocess.run([sys.executable, __file__, "--warm"], capture_output=True, check=False)
    rows = []
    for name in args.tasks:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", name, "--combine-inputs", str(args.combine_inputs)],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("QUANTUM-JSON ")]
        if proc.returncode != 0 or not lines:
            rows.append({"task": name, "error": proc.stderr[-3000:]})
            print(f"{name}: FAILED\n{proc.stderr[-1500:]}", flush=True)
            continue
        rows.append(json.loads(lines[-1].split(" ", 1)[1]))
        print(f"{name}: done", flush=True)

    def mib(value):
        return "-" if value is None else f"{value / MIB:.0f}"

    header = (
        f"{'task (4096^2 detectors)':26s} {'run s':>6s} {'inputs':>7s} {'ru_maxrss-base':>15s} "
        f"{'peak-in-run-base':>17s} {'peak-in-run-inputs':>19s} {'tracemalloc':>12s}   (MiB)"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['task']:26s} FAILED (see JSON)")
            continue
        lines.append(
            f"{row['task']:26s} {row['run_s']:6.1f} {mib(row['inputs_bytes']):>7s} "
            f"{mib(row['maxrss_minus_baseline_bytes']):>15s} "
            f"{mib(row['peak_in_run_minus_baseline_bytes']):>17s} "
            f"{mib(row['peak_in_run_minus_inputs_bytes']):>19s} {mib(row['tracemalloc_peak_bytes']):>12s}"
        )
    load_after = load_average()
    lines.append(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    text = "\n".join(lines)
    print(text)
    path = write_json({"machine": info, "rows": rows, "table": text}, "quantum-memory")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
