"""SkyCorrectionTask's peak memory against the number of detectors in a visit.

For 2, 4 and 6 detectors of ``--size``² pixels (default 1024; the 3 x 2 synthetic camera, the
visit's first n detectors), each in a fresh process, one visit is corrected two ways:

- ``held``: the images given in memory (every image of the visit resident, as before issue 15:
  pipetask's deferred handles were read and then held the same way);
- ``butler-held``: the images put in a butler repository and given as its deferred handles, as
  pipetask gives them, each read once and then held (the design before issue 15, emulated by
  holding them in `lsst.skyframes._visit_store.HeldImages`);
- ``butler``: the same handles, each read once, restored and object-masked, then kept in
  scratch files (`lsst.skyframes._visit_store.ScratchImages`) until the passes over the focal
  plane are done (the design now).

Reported per run: peak RSS during ``run`` minus the RSS after the imports (Linux ``VmHWM``,
reset just before ``run``; for ``held`` this includes the inputs, as it would in a quantum),
wall and CPU seconds of ``run``. Then, per way, the growth of that peak per extra detector in
units of one detector's image planes (12 bytes per pixel: the issue's measure), and the time per
detector of ``butler`` against ``butler-held``. The results of the two ways are equal bit for bit
(tests/test_visit_store.py).

Run with ``.venv/bin/python benchmarks/skycorr_memory.py`` (about 2 min at 1024²); results also
go to ``benchmarks/results/skycorr-memory-<time>.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_average, machine_info, reset_peak_rss, rss_bytes, write_json  # noqa: E402

MIB = 2**20
SEED = 777
COUNTS = (2, 4, 6)
WAYS = ("held", "butler-held", "butler")


def _sky_frame(camera, plan):
    """One sky frame (from one simulated exposure), used for every detector."""
    from lsst.skyframes.build import CpSkyCombineTask
    from quantum_memory import _residuals

    detector = list(camera)[0]
    return CpSkyCombineTask().run(inputBkgs=_residuals(camera, detector, plan, 3)).outputCalib


def child(way: str, n_detectors: int, size: int) -> dict[str, object]:
    """Correct one visit of ``n_detectors`` in this (fresh) process."""
    import resource

    from lsst.daf.butler import Butler

    from lsst.skyframes.camera import make_synthetic_camera
    from lsst.skyframes.camera_overrides import camera_config
    from lsst.skyframes.correction import SkyCorrectionTask, register_correction_inputs
    from lsst.skyframes.repo import create_repo, register_camera
    from lsst.skyframes.simulate import plan_exposures, put_science_visit, simulate_science_visit

    gc.collect()
    baseline, _ = rss_bytes()
    camera = make_synthetic_camera(n_x=3, n_y=2, size=size)
    plans = plan_exposures(2, camera.physical_filters[0], seed=SEED)
    sky = _sky_frame(camera, plans[0])
    ids = [d.id for d in camera][:n_detectors]
    visit = simulate_science_visit(camera, plans[1], seed=SEED + 1, detector_ids=ids)
    calBkgs = [visit[d].background for d in ids]
    scratch = None
    if way == "held":
        calExps = [visit[d].image for d in ids]
    if way == "butler-held":
        # The design before issue 15: each handle read once, then every image held.
        from lsst.skyframes._visit_store import HeldImages

        SkyCorrectionTask._makeStore = lambda self, calExps: HeldImages()
    if way != "held":
        scratch = tempfile.TemporaryDirectory(prefix="skycorr-memory-")
        butler = create_repo(f"{scratch.name}/repo")
        register_camera(butler, camera)
        register_correction_inputs(butler, "visits")
        put_science_visit(butler, camera, plans[1], {d: visit[d] for d in ids}, "visits")
        butler = Butler.from_config(f"{scratch.name}/repo", collections="visits")
        calExps = [
            butler.getDeferred(
                "preliminary_visit_image",
                instrument=camera.instrument,
                visit=plans[1].exposure_id,
                detector=d,
            )
            for d in ids
        ]
    del visit
    task = SkyCorrectionTask(config=camera_config(SkyCorrectionTask, camera))
    gc.collect()
    # Hand freed heap (the simulation's) back to the system, so the RSS
    # before run is what is really held.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before_run, _ = rss_bytes()
    resettable = reset_peak_rss()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = task.run(calExps, calBkgs, [sky] * len(ids), camera, ids)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    _, peak = rss_bytes()
    scale = result.skyFrameScale
    result.store.close()
    if scratch is not None:
        scratch.cleanup()
    return {
        "way": way,
        "n_detectors": n_detectors,
        "size": size,
        "run_s": elapsed,
        "cpu_s": cpu,
        "baseline_rss_bytes": baseline,
        "rss_before_run_bytes": before_run,
        "peak_in_run_minus_baseline_bytes": peak - baseline if resettable else None,
        "peak_in_run_minus_before_bytes": peak - before_run if resettable else None,
        "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "skyFrameScale": scale,
    }


def _slope(rows: list[dict], key: str) -> float:
    """Least-squares growth of ``key`` per extra detector."""
    import numpy as np

    n = np.array([r["n_detectors"] for r in rows], dtype=float)
    y = np.array([r[key] for r in rows], dtype=float)
    return float(np.polyfit(n, y, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1024, help="detector side in pixels (default 1024)")
    parser.add_argument("--counts", type=int, nargs="+", default=list(COUNTS), help="detectors per visit")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        way, n = args.child
        print("SKYCORR-JSON " + json.dumps(child(way, int(n), args.size)))
        return

    info = machine_info()
    load_before = load_average()
    print(f"SkyCorrectionTask peak memory per visit - {info['date']} - {info['cpu']} ({info['cores']} cores)")
    # Warm the numba cache first, as for any quantum after the first.
    subprocess.run([sys.executable, __file__, "--child", "held", "1", "--size", "256"], capture_output=True)
    rows = []
    for n in args.counts:
        for way in WAYS:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", way, str(n), "--size", str(args.size)],
                capture_output=True,
                text=True,
                check=False,
            )
            lines = [line for line in proc.stdout.splitlines() if line.startswith("SKYCORR-JSON ")]
            if proc.returncode != 0 or not lines:
                raise SystemExit(f"{way} with {n} detectors failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(lines[-1].split(" ", 1)[1]))
            print(f"{way} {n}: done", flush=True)

    image_bytes = 12 * args.size**2
    header = (
        f"{'way':8s} {'detectors':>9s} {'run s':>7s} {'cpu s':>7s} {'before run - base':>18s} "
        f"{'peak in run - base':>19s} {'scale':>10s}"
    )
    title = f"detectors of {args.size}^2 (one image: {image_bytes / MIB:.0f} MiB); memory in MiB"
    lines = [title, header, "-" * len(header)]
    for row in rows:
        before = row["rss_before_run_bytes"] - row["baseline_rss_bytes"]
        lines.append(
            f"{row['way']:8s} {row['n_detectors']:9d} {row['run_s']:7.2f} {row['cpu_s']:7.2f} "
            f"{before / MIB:18.0f} {row['peak_in_run_minus_baseline_bytes'] / MIB:19.0f} "
            f"{row['skyFrameScale']:10.3f}"
        )
    summary = {}
    for way in WAYS:
        mine = [r for r in rows if r["way"] == way]
        growth = _slope(mine, "peak_in_run_minus_baseline_bytes") / image_bytes
        per_detector = _slope(mine, "cpu_s")
        summary[way] = {"growth_images_per_detector": growth, "cpu_s_per_detector": per_detector}
        lines.append(
            f"{way}: peak grows by {growth:.2f} detector images per extra detector; "
            f"{per_detector:.2f} CPU s per extra detector"
        )
    ratio = summary["butler"]["cpu_s_per_detector"] / summary["butler-held"]["cpu_s_per_detector"]
    lines.append(f"butler / butler-held CPU time per detector (now / before): {ratio:.2f}")
    load_after = load_average()
    lines.append(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    text = "\n".join(lines)
    print(text)
    path = write_json({"machine": info, "rows": rows, "summary": summary, "table": text}, "skycorr-memory")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
