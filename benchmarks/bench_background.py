"""Time skyframes' background and stack statistics against sep, photutils,
astropy and ccdproc on the same synthetic data, in one process and run.

Run with ``make bench`` (which installs the bench extras: sep, photutils,
ccdproc) or ``.venv/bin/python benchmarks/bench_background.py``. Prints a
table of times and ratios (ours / theirs) against the targets of the
performance issue and writes it, with every individual timing, the machine
and the package versions, to ``benchmarks/results/bench-<time>.json`` and
``benchmarks/results/bench-latest.json``.

What is timed (best of ``--repeat`` calls after one untimed warm-up call):

- ours: ``SkyMeasurementTask.measureBackground`` (MEANCLIP, 3 sigma, 3
  passes, the default mask planes) of a 4096 x 4096 float32
  `lsst.images.MaskedImage`, alone and followed by ``getImageF`` (AKIMA_SPLINE),
  with 128- and 32-pixel bins; ``makeBackground``; ``getImageF`` of every
  style; ``FocalPlaneBackground.addCcd`` of the same image as one detector of
  a 3 x 3 synthetic camera (bins one detector wide, as the instrument's
  overrides size the build's); ``stack_statistics`` MEANCLIP of 50 x 512 x 512 float32.
- sep: ``sep.Background(data, mask=bad | ~finite, bw=bh=box)`` (default
  3 x 3 mesh filter) then ``.back()``.
- photutils: ``Background2D(data, box, mask=bad | ~finite,
  sigma_clip=SigmaClip(sigma=3, maxiters=3), bkg_estimator=MedianBackground())``
  then ``.background`` (its full-resolution interpolation).
- astropy: ``sigma_clip(stack, sigma=3, maxiters=3, axis=0)`` then the mean
  of the unclipped values; ccdproc: ``Combiner`` of the 50 layers,
  ``sigma_clipping(3, 3, median, std)`` and ``average_combine()``.
- the floor: one ``copy()`` of the 4096 x 4096 float32 image.

The competitors' masks are built once, outside the timings (ours builds its
bad-pixel mask from the mask planes inside ``measureBackground``).

The start-up cost of the compiled kernels is measured in fresh processes
(``--startup``, on by default): once with an empty numba cache (compiling),
once with the cache that run left (the normal case), timing the first and
the later calls of the main operations.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    best_of,
    load_average,
    machine_info,
    masked_image,
    synthetic_image,
    write_json,
)

STYLES = ("CONSTANT", "LINEAR", "NATURAL_SPLINE", "AKIMA_SPLINE")

# (name, ours, theirs, target ratio or None, kind): kind "max" means
# ours / theirs must be <= target.
TARGETS = [
    ("measure+render AKIMA, 128 px vs sep", "ours_total_128", "sep_128", 0.75),
    ("measure+render AKIMA, 128 px vs photutils", "ours_total_128", "photutils_128", 0.10),
    ("measure+render AKIMA, 32 px vs sep", "ours_total_32", "sep_32", 1.0),
    ("measure+render AKIMA, 32 px vs photutils", "ours_total_32", "photutils_32", None),
    *[(f"render {style} 32x32 -> 4096^2 vs copy", f"render_{style}_128", "copy", 3.0) for style in STYLES],
    ("stack MEANCLIP 50x512^2 vs astropy sigma_clip", "stack_ours", "stack_astropy", 0.5),
    ("stack MEANCLIP 50x512^2 vs ccdproc", "stack_ours", "stack_ccdproc", None),
    (
        "FocalPlaneBackground.addCcd vs measureBackground 128 px",
        "focal_plane_addccd",
        "ours_measure_128",
        2.0,
    ),
    ("FocalPlaneBackground.addCcd vs measureBackground 32 px", "focal_plane_addccd", "ours_measure_32", 2.0),
]


def ours_backgrounds(mi, bin_sizes, repeat, results):
    """Time measureBackground, makeBackground and getImageF."""
    from lsst.skyframes.background import BackgroundControl, makeBackground
    from lsst.skyframes.interpolate import UndersampleStyle
    from lsst.skyframes.sky_measurement import SkyMeasurementConfig, SkyMeasurementTask
    from lsst.skyframes.statistics import StatisticsControl

    height, width = mi.bbox.shape
    for bin_size in bin_sizes:
        config = SkyMeasurementConfig()
        config.background.xBinSize = bin_size
        config.background.yBinSize = bin_size
        config.background.statistic = "MEANCLIP"
        config.background.algorithm = "AKIMA_SPLINE"
        task = SkyMeasurementTask(config=config)
        results[f"ours_measure_{bin_size}"] = best_of(lambda task=task: task.measureBackground(mi), repeat)
        results[f"ours_total_{bin_size}"] = best_of(
            lambda task=task: task.measureBackground(mi)[0][0].getImageF(), repeat
        )
        control = BackgroundControl(
            "AKIMA_SPLINE",
            max(int(width / bin_size + 0.5), 1),
            max(int(height / bin_size + 0.5), 1),
            UndersampleStyle.REDUCE_INTERP_ORDER,
            StatisticsControl(andMask=list(config.background.mask)),
            "MEANCLIP",
        )
        results[f"ours_make_{bin_size}"] = best_of(
            lambda control=control: makeBackground(mi, control), repeat
        )
        background = task.measureBackground(mi)[0][0]
        for style in STYLES:
            results[f"render_{style}_{bin_size}"] = best_of(
                lambda background=background, style=style: background.getImageF(style), repeat
            )


def competitor_backgrounds(image, mask, bin_sizes, repeat, photutils_repeat, results):
    """Time sep and photutils with the same boxes."""
    import sep
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground

    for bin_size in bin_sizes:
        results[f"sep_{bin_size}"] = best_of(
            lambda b=bin_size: sep.Background(image, mask=mask, bw=b, bh=b).back(), repeat
        )

        def photutils_run(b=bin_size):
            background = Background2D(
                image,
                (b, b),
                mask=mask,
                sigma_clip=SigmaClip(sigma=3.0, maxiters=3),
                bkg_estimator=MedianBackground(),
            )
            return background.background

        results[f"photutils_{bin_size}"] = best_of(photutils_run, photutils_repeat)


def stack_benchmarks(repeat, results, seed=7):
    """Time the clipped-mean stack: ours, astropy sigma_clip, ccdproc."""
    import warnings

    import ccdproc
    from astropy.nddata import CCDData
    from astropy.stats import sigma_clip

    from lsst.skyframes.statistics import stack_statistics

    rng = np.random.default_rng(seed)
    stack = (100.0 + 10.0 * rng.standard_normal((50, 512, 512), dtype=np.float32)).astype(np.float32)
    hits = rng.random(stack.shape) < 0.02
    stack[hits] += rng.exponential(1000.0, size=int(hits.sum())).astype(np.float32)

    results["stack_ours"] = best_of(lambda: stack_statistics(stack, None, "MEANCLIP"), repeat)

    def astropy_run():
        clipped = sigma_clip(stack, sigma=3.0, maxiters=3, axis=0)
        return clipped.mean(axis=0)

    results["stack_astropy"] = best_of(astropy_run, repeat)
    ccds = [CCDData(layer, unit="adu") for layer in stack]

    def ccdproc_run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            combiner = ccdproc.Combiner(ccds)
            combiner.sigma_clipping(low_thresh=3, high_thresh=3, func=np.ma.median, dev_func=np.ma.std)
            return combiner.average_combine()

    results["stack_ccdproc"] = best_of(ccdproc_run, repeat)


def focal_plane_benchmark(mi, repeat, results):
    """Time FocalPlaneBackground.addCcd of one 4096 x 4096 detector."""
    from lsst.skyframes.camera import make_synthetic_camera
    from lsst.skyframes.camera_overrides import camera_sized_config
    from lsst.skyframes.focal_plane import FocalPlaneBackground, FocalPlaneBackgroundConfig

    height, width = mi.bbox.shape
    camera = make_synthetic_camera(size=width)
    config = camera_sized_config(FocalPlaneBackgroundConfig(), camera, 1)
    detector = list(camera)[len(list(camera)) // 2]
    background = FocalPlaneBackground.fromCamera(config, camera)
    results["focal_plane_addccd"] = best_of(lambda: background.addCcd(mi, detector), repeat)


# ---------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------


def startup_child() -> None:
    """In a fresh process: time the first and later calls, print JSON."""
    t0 = time.perf_counter()
    from lsst.skyframes.camera import make_synthetic_camera
    from lsst.skyframes.camera_overrides import camera_sized_config
    from lsst.skyframes.focal_plane import FocalPlaneBackground, FocalPlaneBackgroundConfig
    from lsst.skyframes.sky_measurement import SkyMeasurementConfig, SkyMeasurementTask
    from lsst.skyframes.statistics import stack_statistics

    imports = time.perf_counter() - t0
    image, bad = synthetic_image()
    mi = masked_image(image, bad)
    rng = np.random.default_rng(7)
    stack = (100.0 + 10.0 * rng.standard_normal((50, 512, 512), dtype=np.float32)).astype(np.float32)
    config = SkyMeasurementConfig()
    config.background.xBinSize = config.background.yBinSize = 128
    config.background.algorithm = "AKIMA_SPLINE"
    task = SkyMeasurementTask(config=config)
    camera = make_synthetic_camera(size=4096)
    detector = list(camera)[4]
    fp_config = camera_sized_config(FocalPlaneBackgroundConfig(), camera, 1)

    operations = {
        "measureBackground+getImageF": lambda: task.measureBackground(mi)[0][0].getImageF(),
        "stack_statistics": lambda: stack_statistics(stack, None, "MEANCLIP"),
        "FocalPlaneBackground.addCcd": lambda: FocalPlaneBackground.fromCamera(fp_config, camera).addCcd(
            mi, detector
        ),
    }
    out = {"imports_s": imports}
    for name, func in operations.items():
        start = time.perf_counter()
        func()
        first = time.perf_counter() - start
        later, _ = best_of(func, repeat=3, warmup=0)
        out[name] = {"first_s": first, "later_s": later, "extra_s": first - later}
    print("STARTUP-JSON " + json.dumps(out))


def measure_startup() -> dict[str, object]:
    """Run `startup_child` with an empty numba cache, then with the cache it left."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="skyframes-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold_cache", "warm_cache"):
            proc = subprocess.run(
                [sys.executable, __file__, "--startup-child"],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            lines = [line for line in proc.stdout.splitlines() if line.startswith("STARTUP-JSON ")]
            if proc.returncode != 0 or not lines:
                results[label] = {"error": proc.stderr[-2000:]}
            else:
                results[label] = json.loads(lines[-1].split(" ", 1)[1])
    return results


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def table(results: dict[str, tuple[float, list[float]]]) -> tuple[list[dict], str]:
    """Return the rows (dicts) and the printed table of ratios vs targets."""
    rows = []
    lines = [
        f"{'comparison':58s} {'ours ms':>9s} {'theirs ms':>10s} {'ratio':>7s} {'target':>8s}  met",
        "-" * 102,
    ]
    for name, ours_key, theirs_key, target in TARGETS:
        if ours_key not in results or theirs_key not in results:
            continue
        ours = results[ours_key][0]
        theirs = results[theirs_key][0]
        ratio = ours / theirs
        met = None if target is None else ratio <= target
        rows.append(
            {
                "comparison": name,
                "ours": ours_key,
                "theirs": theirs_key,
                "ours_ms": ours * 1e3,
                "theirs_ms": theirs * 1e3,
                "ratio": ratio,
                "target": target,
                "met": met,
            }
        )
        target_text = "-" if target is None else f"<= {target:g}"
        met_text = "-" if met is None else ("yes" if met else "NO")
        lines.append(
            f"{name:58s} {ours * 1e3:9.1f} {theirs * 1e3:10.1f} {ratio:7.3f} {target_text:>8s}  {met_text}"
        )
    lines.append("")
    lines.append("All timings (best of the runs, ms):")
    for key, (best, _) in sorted(results.items()):
        lines.append(f"  {key:34s} {best * 1e3:9.1f}")
    return rows, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7, help="timed calls per measurement (best is kept)")
    parser.add_argument(
        "--photutils-repeat", type=int, default=5, help="timed calls of photutils (slow; at least 5)"
    )
    parser.add_argument("--no-startup", action="store_true", help="skip the fresh-process start-up timing")
    parser.add_argument("--startup-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.startup_child:
        startup_child()
        return

    load_before = load_average()
    info = machine_info(("sep", "photutils", "ccdproc", "lsst-images"))
    print(f"skyframes benchmark - {info['date']} - {info['cpu']} ({info['cores']} cores)")
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    image, bad = synthetic_image()
    mi = masked_image(image, bad)
    competitor_mask = bad | ~np.isfinite(image)
    results: dict[str, tuple[float, list[float]]] = {}
    results["copy"] = best_of(image.copy, args.repeat)
    ours_backgrounds(mi, (128, 32), args.repeat, results)
    focal_plane_benchmark(mi, args.repeat, results)
    competitor_backgrounds(image, competitor_mask, (128, 32), args.repeat, args.photutils_repeat, results)
    stack_benchmarks(args.repeat, results)
    load_after = load_average()
    rows, text = table(results)
    print()
    print(text)
    startup = None if args.no_startup else measure_startup()
    if startup:
        print()
        print("Compiled-kernel start-up (fresh processes; seconds):")
        for label, data in startup.items():
            if "error" in data:
                print(f"  {label}: failed: {data['error'][-300:]}")
                continue
            print(f"  {label}: imports {data['imports_s']:.2f}")
            for name, value in data.items():
                if isinstance(value, dict):
                    print(
                        f"    {name:30s} first {value['first_s']:7.3f}  later {value['later_s']:7.3f}  "
                        f"extra {value['extra_s']:7.3f}"
                    )
    print(f"\nload average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    path = write_json(
        {
            "machine": info,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "image": {
                "shape": list(image.shape),
                "dtype": "float32",
                "bad_columns": int(bad.any(axis=0).sum()),
            },
            "repeat": args.repeat,
            "timings_s": {key: {"best": best, "all": all_} for key, (best, all_) in results.items()},
            "comparisons": rows,
            "startup": startup,
            "table": text,
        },
        "bench",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
