"""Peak memory of the multi-component PCA (SkyPcaTask) against the number of exposures.

Each case runs `lsst.skyframes.pca.SkyPcaTask.run` in a fresh process on
synthetic normalised residual backgrounds
(`lsst.skyframes.simulate.binned_background`): per detector a fixed pattern,
a second zero-mean pattern with a random weight per exposure and Gaussian
bin noise of 0.001, so that the robust PCA does all its rounds with real
clipping.  Reported per case:

- ``inputs``: RSS after the backgrounds were made, minus the RSS after the
  imports (the caller's BackgroundLists: what cpSkyCombine holds anyway);
- ``working``: peak RSS during ``run`` (Linux ``VmHWM``, reset just before)
  minus the RSS just before it: the PCA's own memory;
- ``estimate``: `lsst.skyframes.pca.pca_memory_bytes`, and the previous
  design's dense estimate (120 bytes per exposure and bin).

Two series: 20 and 80 exposures at a fixed focal plane (the growth per extra
exposure), and 100 exposures at two focal-plane sizes, whose per-bin slope
scales the measurement to LSSTCam (189 detectors of 128 x 128 bins, i.e.
4096² detectors at 32-px bins).  Run with
``.venv/bin/python benchmarks/pca_memory.py``; results also go to
``benchmarks/results/pca-memory-<time>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_average, machine_info, reset_peak_rss, rss_bytes, write_json  # noqa: E402

GIB = 2**30
MIB = 2**20
SEED = 77
NOISE = 1e-3
OLD_BYTES_PER_ENTRY = 120  # the dense design's pca_memory_bytes
LSSTCAM = {"exposures": 100, "detectors": 189, "grid": 128}


def make_backgrounds(n_exposures: int, n_detectors: int, grid: int) -> dict[int, list]:
    """Synthetic residual backgrounds: per detector p1 + w_e (p2 − mean p2) + noise."""
    from lsst.skyframes.simulate import binned_background

    rng = np.random.default_rng(SEED)
    y, x = np.mgrid[0:grid, 0:grid] / grid
    weights = rng.uniform(-1.0, 1.0, n_exposures)
    backgrounds = {}
    for det in range(n_detectors):
        phase = rng.uniform(0.0, 2 * np.pi, 4)
        p1 = 1.0 + 0.05 * np.sin(3 * x + phase[0]) * np.cos(2 * y + phase[1])
        p2 = 0.02 * np.cos(5 * x + phase[2]) * np.sin(4 * y + phase[3])
        p2 -= p2.mean()
        backgrounds[det] = [
            binned_background(p1 + w * p2 + rng.normal(0.0, NOISE, p1.shape), NOISE) for w in weights
        ]
    return backgrounds


def child(n_exposures: int, n_detectors: int, grid: int, n_components: int) -> dict[str, object]:
    """Measure one SkyPcaTask.run in this (fresh) process."""
    from lsst.skyframes.pca import SkyPcaConfig, SkyPcaTask, pca_memory_bytes

    config = SkyPcaConfig()
    config.nComponents = n_components
    task = SkyPcaTask(config=config)
    # Load every compiled kernel first, so that "working" is memory, not code.
    task.run(make_backgrounds(8, 1, 16), list(range(8)))
    gc.collect()
    baseline, _ = rss_bytes()
    backgrounds = make_backgrounds(n_exposures, n_detectors, grid)
    gc.collect()
    before_run, _ = rss_bytes()
    resettable = reset_peak_rss()
    start = time.perf_counter()
    result = task.run(backgrounds, list(range(n_exposures)))
    elapsed = time.perf_counter() - start
    _, peak = rss_bytes()
    n_bins = n_detectors * grid * grid
    return {
        "exposures": n_exposures,
        "detectors": n_detectors,
        "grid": grid,
        "bins": n_bins,
        "components": n_components,
        "run_s": elapsed,
        "rejected": len(result.rejectedExposures),
        "inputs_bytes": before_run - baseline,
        "working_bytes": peak - before_run if resettable else None,
        "estimate_bytes": pca_memory_bytes(n_exposures, n_bins, n_components, largest_block=grid * grid),
        "old_estimate_bytes": OLD_BYTES_PER_ENTRY * n_exposures * n_bins,
    }


def run_case(n_exposures: int, n_detectors: int, grid: int, n_components: int) -> dict[str, object]:
    args = [str(n_exposures), str(n_detectors), str(grid), str(n_components)]
    output = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _row(case: dict) -> str:
    working = case["working_bytes"]
    return (
        f"| {case['exposures']:>4} | {case['detectors']:>4} x {case['grid']}² | {case['bins']:>9,} "
        f"| {case['inputs_bytes'] / MIB:>8.0f} "
        f"| {working / MIB if working is not None else float('nan'):>8.0f} "
        f"| {case['estimate_bytes'] / MIB:>8.0f} | {case['old_estimate_bytes'] / MIB:>10.0f} "
        f"| {case['run_s']:>6.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=4, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--grid", type=int, default=128, help="bins per detector side (default 128)")
    parser.add_argument("--detectors", type=int, default=16, help="detectors of the growth series")
    parser.add_argument("--exposures", type=int, nargs=2, default=(20, 80), help="the growth series")
    parser.add_argument(
        "--scale-detectors", type=int, nargs=2, default=(8, 24), help="detectors of the 100-exposure series"
    )
    parser.add_argument("--components", type=int, default=3, help="K (default 3)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    from lsst.skyframes.pca import pca_memory_bytes

    load_before = load_average()
    # A first, small case warms the numba cache, so no case pays for compiling.
    run_case(4, 1, 16, args.components)
    growth = [run_case(n, args.detectors, args.grid, args.components) for n in args.exposures]
    scale = [
        run_case(LSSTCAM["exposures"], d, LSSTCAM["grid"], args.components) for d in args.scale_detectors
    ]
    load_after = load_average()

    print(f"SkyPcaTask.run, K = {args.components}; memory in MiB (working: peak RSS in run - RSS before)")
    print("| exposures | detectors x bins | bins | inputs | working | estimate | old estimate | run (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in growth + scale:
        print(_row(case))
    (low, high) = growth
    per_exposure = (high["working_bytes"] - low["working_bytes"]) / (high["exposures"] - low["exposures"])
    old_per_exposure = OLD_BYTES_PER_ENTRY * low["bins"]
    print(
        f"\nGrowth from {low['exposures']} to {high['exposures']} exposures at {low['bins']:,} bins: "
        f"{per_exposure / MIB:+.2f} MiB per extra exposure "
        f"({per_exposure / low['bins']:+.2f} bytes per bin); "
        f"the dense design: {old_per_exposure / MIB:.0f} MiB per exposure."
    )
    (small, large) = scale
    per_bin = (large["working_bytes"] - small["working_bytes"]) / (large["bins"] - small["bins"])
    inputs_per_entry = large["inputs_bytes"] / (large["bins"] * large["exposures"])
    n_bins = LSSTCAM["detectors"] * LSSTCAM["grid"] ** 2
    scaled = small["working_bytes"] + per_bin * (n_bins - small["bins"])
    estimate = pca_memory_bytes(
        LSSTCAM["exposures"], n_bins, args.components, largest_block=LSSTCAM["grid"] ** 2
    )
    inputs = inputs_per_entry * n_bins * LSSTCAM["exposures"]
    print(
        f"LSSTCam, {LSSTCAM['exposures']} exposures x {LSSTCAM['detectors']} detectors x "
        f"{LSSTCAM['grid']}² bins ({n_bins:,} bins), K = {args.components}: working memory "
        f"{scaled / GIB:.2f} GiB scaled from the measurement ({per_bin:.1f} bytes per bin), "
        f"{estimate / GIB:.2f} GiB estimated (pca_memory_bytes); the input BackgroundLists "
        f"{inputs / GIB:.2f} GiB ({inputs_per_entry:.1f} bytes per exposure and bin); "
        f"together {(scaled + inputs) / GIB:.2f} GiB. The dense design's estimate: "
        f"{OLD_BYTES_PER_ENTRY * n_bins * LSSTCAM['exposures'] / GIB:.1f} GiB."
    )
    print(f"Load average before {load_before[0]:.2f}, after {load_after[0]:.2f}.")
    path = write_json(
        {
            "machine": machine_info(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "growth": growth,
            "scale": scale,
            "per_exposure_bytes": per_exposure,
            "per_bin_bytes": per_bin,
            "inputs_bytes_per_entry": inputs_per_entry,
            "lsstcam": {
                **LSSTCAM,
                "components": args.components,
                "working_scaled_bytes": scaled,
                "estimate_bytes": estimate,
                "inputs_bytes": inputs,
            },
        },
        "pca-memory",
    )
    print(f"Results written to {path}")


if __name__ == "__main__":
    main()
