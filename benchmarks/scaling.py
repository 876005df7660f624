"""How the sky-frame build chain scales with the number of exposures.

Runs the four build steps at the Task level (no butler) for one 4096 x 4096
detector of the 3 x 3 synthetic camera, over N exposures generated on the
fly (default N = 10, 50 and 200), each N in a fresh process:

    per exposure: CpSkyImageTask.run (object masking, focal-plane binning)
                  -> CpSkyScaleMeasureTask.run -> CpSkySubtractBackgroundTask.run
                  (the exposure and its full-resolution planes are then dropped;
                  only the binned residual background is kept)
    at the end:   CpSkyCombineTask.run over the N residual backgrounds

It prints, per N, the time per exposure of the chain (generation excluded,
reported separately) and the peak memory: the peak resident set size
(Linux ``VmHWM``, which counts NumPy and numba allocations alike) above the
baseline after imports, a warm-up exposure and the generator's set-up, next
to the size of one input masked image (image + mask + variance). With
``--tracemalloc`` it also reports the tracemalloc peak (NumPy and Python
allocations only; numba's own allocations are not traced), at some cost in
speed.

Targets (from the performance issue): time per exposure constant within
20 % across N; peak memory independent of N and at most 4 x one input
masked image.

Usage: ``.venv/bin/python benchmarks/scaling.py [--counts 10 50 200]``;
results also go to ``benchmarks/results/scaling-<time>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    detector_exposure,
    detector_pattern_image,
    load_average,
    machine_info,
    masked_image_nbytes,
    reset_peak_rss,
    rss_bytes,
    run_build_chain,
    write_json,
)

MIB = 2**20


def run_chain(n_exposures: int, size: int, use_tracemalloc: bool) -> dict[str, object]:
    """Run the build chain over ``n_exposures`` exposures in this process."""
    from lsst.skyframes.build import (
        CpSkyCombineTask,
        CpSkyImageTask,
        CpSkyScaleMeasureTask,
        CpSkySubtractBackgroundTask,
    )
    from lsst.skyframes.camera import make_synthetic_camera
    from lsst.skyframes.camera_overrides import camera_config

    camera = make_synthetic_camera(size=size)
    cpu_times: list[float] = []
    detectors = list(camera)
    detector = detectors[len(detectors) // 2]
    pattern = detector_pattern_image(detector)
    image_task = CpSkyImageTask(config=camera_config(CpSkyImageTask, camera))
    scale_task = CpSkyScaleMeasureTask()
    subtract_task = CpSkySubtractBackgroundTask()
    combine_task = CpSkyCombineTask()

    def one_exposure(exposure_id):
        exposure = detector_exposure(detector, pattern, exposure_id)
        start = time.perf_counter()
        cpu_start = time.process_time()
        residual = run_build_chain(image_task, scale_task, subtract_task, exposure, camera, detector)
        cpu_times.append(time.process_time() - cpu_start)
        return residual, time.perf_counter() - start, masked_image_nbytes(exposure)

    # Warm-up (compiled-kernel loading, first-call costs), not counted.
    warm, _, input_bytes = one_exposure(999_999)
    combine_task.run(inputBkgs=[warm, warm], exposureIds=[1, 2])
    del warm
    cpu_times.clear()
    gc.collect()
    baseline, _ = rss_bytes()
    peak_resettable = reset_peak_rss()
    if use_tracemalloc:
        tracemalloc.start()

    residuals = []
    chain_times = []
    generation = 0.0
    for index in range(n_exposures):
        start = time.perf_counter()
        background, chain_time, _ = one_exposure(1000 + index)
        generation += time.perf_counter() - start - chain_time
        residuals.append(background)
        chain_times.append(chain_time)
    start = time.perf_counter()
    sky = combine_task.run(inputBkgs=residuals, exposureIds=list(range(1000, 1000 + n_exposures))).outputCalib
    combine_time = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1] if use_tracemalloc else None
    if use_tracemalloc:
        tracemalloc.stop()
    _, peak = rss_bytes()
    return {
        "n_exposures": n_exposures,
        "detector_shape": list(pattern.shape),
        "input_masked_image_bytes": input_bytes,
        "chain_s_per_exposure": sum(chain_times) / n_exposures,
        "chain_s_per_exposure_min": min(chain_times),
        "chain_s_per_exposure_max": max(chain_times),
        "chain_s_per_exposure_incl_combine": (sum(chain_times) + combine_time) / n_exposures,
        "chain_cpu_s_per_exposure": sum(cpu_times) / n_exposures,
        "combine_s": combine_time,
        "generation_s_per_exposure": generation / n_exposures,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak,
        "peak_rss_above_baseline_bytes": peak - baseline,
        "peak_rss_is_since_baseline": peak_resettable,
        "tracemalloc_peak_bytes": traced_peak,
        "sky_frame_shape": list(sky.bbox.shape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 50, 200], help="numbers of exposures")
    parser.add_argument("--size", type=int, default=4096, help="detector size in pixels")
    parser.add_argument("--tracemalloc", action="store_true", help="also report the tracemalloc peak")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print("SCALING-JSON " + json.dumps(run_chain(args.child, args.size, args.tracemalloc)))
        return

    info = machine_info()
    load_before = load_average()
    print(f"skyframes build-chain scaling - {info['date']} - {info['cpu']} ({info['cores']} cores)")
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    rows = []
    for count in args.counts:
        command = [sys.executable, __file__, "--child", str(count), "--size", str(args.size)]
        if args.tracemalloc:
            command.append("--tracemalloc")
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("SCALING-JSON ")]
        if proc.returncode != 0 or not lines:
            print(f"N={count}: failed\n{proc.stderr[-3000:]}")
            continue
        row = json.loads(lines[-1].split(" ", 1)[1])
        rows.append(row)
        print(
            f"N={count:4d}: chain {row['chain_s_per_exposure']:.3f} s/exposure "
            f"(incl. combine {row['chain_s_per_exposure_incl_combine']:.3f}; "
            f"CPU {row['chain_cpu_s_per_exposure']:.3f} s), "
            f"generation {row['generation_s_per_exposure']:.3f} s/exposure, "
            f"peak RSS +{row['peak_rss_above_baseline_bytes'] / MIB:.0f} MiB",
            flush=True,
        )
    if not rows:
        sys.exit(1)
    load_after = load_average()
    input_mib = rows[0]["input_masked_image_bytes"] / MIB
    times = [row["chain_s_per_exposure_incl_combine"] for row in rows]
    cpu = [row["chain_cpu_s_per_exposure"] for row in rows]
    peaks = [row["peak_rss_above_baseline_bytes"] / MIB for row in rows]
    lines = [
        "",
        f"One input masked image: {input_mib:.0f} MiB (limit 4x = {4 * input_mib:.0f} MiB)",
        f"{'N':>5s} {'s/exposure':>11s} {'vs first':>9s} {'CPU s/exp':>10s} "
        f"{'peak RSS above baseline (MiB)':>30s} {'x input':>8s} {'tracemalloc peak (MiB)':>23s}",
    ]
    for row, seconds, cpu_seconds, peak in zip(rows, times, cpu, peaks, strict=True):
        traced = row["tracemalloc_peak_bytes"]
        traced_text = "-" if traced is None else f"{traced / MIB:.0f}"
        lines.append(
            f"{row['n_exposures']:5d} {seconds:11.3f} {seconds / times[0]:9.3f} {cpu_seconds:10.3f} "
            f"{peak:30.0f} {peak / input_mib:8.2f} {traced_text:>23s}"
        )
    spread = max(times) / min(times) - 1.0
    verdict = "met" if spread <= 0.2 else "NOT met"
    lines.append(f"time per exposure spread: {100 * spread:.1f} % (target <= 20 %: {verdict})")
    cpu_spread = max(cpu) / min(cpu) - 1.0
    lines.append(f"CPU time per exposure spread: {100 * cpu_spread:.1f} % (insensitive to other load)")
    peak_spread = max(peaks) - min(peaks)
    lines.append(
        f"peak memory: {min(peaks):.0f}-{max(peaks):.0f} MiB above baseline, spread {peak_spread:.0f} MiB; "
        f"<= 4 x input: {'met' if max(peaks) <= 4 * input_mib else 'NOT met'}"
    )
    lines.append(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    text = "\n".join(lines)
    print(text)
    path = write_json({"machine": info, "rows": rows, "table": text}, "scaling")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
