"""Plot background time against image size for skyframes, sep and photutils.

For square synthetic images of 1024, 2048, 4096 and 8192 pixels a side (the
image of ``bench_background.py``: stars, NaNs, bad columns), times, in one
process, best of ``--repeat`` calls after a warm-up:

- skyframes: ``SkyMeasurementTask.measureBackground`` (MEANCLIP, 128-px bins)
  + ``getImageF`` (AKIMA_SPLINE);
- sep: ``Background(data, mask, bw=bh=128)`` + ``back()``;
- photutils: ``Background2D(data, (128, 128), mask, SigmaClip(3, maxiters=3),
  MedianBackground())`` + ``.background``;
- one ``copy()`` of the image, the floor.

Writes ``benchmarks/time_vs_size.png`` (committed) and
``benchmarks/results/size-<time>.json``. Usage:
``.venv/bin/python benchmarks/size_plot.py [--sizes 1024 2048 4096 8192]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BENCH_DIR,
    best_of,
    load_average,
    machine_info,
    masked_image,
    synthetic_image,
    write_json,
)

BOX = 128


def time_size(size: int, repeat: int, photutils_repeat: int) -> dict[str, float]:
    """Return the best times (seconds) of every tool on a ``size``^2 image."""
    import sep
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground

    from lsst.skyframes.sky_measurement import SkyMeasurementConfig, SkyMeasurementTask

    image, bad = synthetic_image(size)
    mi = masked_image(image, bad)
    mask = bad | ~np.isfinite(image)
    config = SkyMeasurementConfig()
    config.background.xBinSize = config.background.yBinSize = BOX
    config.background.algorithm = "AKIMA_SPLINE"
    task = SkyMeasurementTask(config=config)

    def photutils_run():
        background = Background2D(
            image,
            (BOX, BOX),
            mask=mask,
            sigma_clip=SigmaClip(sigma=3.0, maxiters=3),
            bkg_estimator=MedianBackground(),
        )
        return background.background

    return {
        "skyframes": best_of(lambda: task.measureBackground(mi)[0][0].getImageF(), repeat)[0],
        "sep": best_of(lambda: sep.Background(image, mask=mask, bw=BOX, bh=BOX).back(), repeat)[0],
        "photutils": best_of(photutils_run, photutils_repeat)[0],
        "copy": best_of(image.copy, repeat)[0],
    }


def plot(sizes: list[int], times: dict[int, dict[str, float]], info: dict, path: Path) -> None:
    """Draw time against image size, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {
        "skyframes": ("skyframes measureBackground + getImageF", "C0", "o"),
        "sep": ("sep Background + back()", "C1", "s"),
        "photutils": ("photutils Background2D + background", "C2", "^"),
        "copy": ("one image copy (floor)", "0.5", "."),
    }
    fig, ax = plt.subplots(figsize=(7.0, 4.8), dpi=110)
    megapixels = np.array(sizes, dtype=float) ** 2 / 1e6
    for key, (label, colour, marker) in styles.items():
        values = [times[s][key] * 1e3 for s in sizes]
        ax.plot(
            megapixels,
            values,
            marker=marker,
            color=colour,
            label=label,
            linestyle="--" if key == "copy" else "-",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(megapixels)
    ax.set_xticklabels([f"{s}²" for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("image size (float32, 128-px boxes, MEANCLIP / sigma-clipped)")
    ax.set_ylabel("time (ms, best of runs)")
    machine = f"{info['cpu']}, {info['cores']} cores, {info['date'][:10]}"
    ax.set_title(f"Background estimation + full-resolution model\n{machine}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--photutils-repeat", type=int, default=3)
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "time_vs_size.png")
    args = parser.parse_args()
    info = machine_info(("sep", "photutils"))
    load_before = load_average()
    times = {}
    for size in args.sizes:
        times[size] = time_size(size, args.repeat, args.photutils_repeat)
        row = "  ".join(f"{key} {value * 1e3:8.1f} ms" for key, value in times[size].items())
        print(f"{size:5d}^2: {row}", flush=True)
    load_after = load_average()
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    plot(args.sizes, times, info, args.output)
    print(f"wrote {args.output}")
    path = write_json(
        {"machine": info, "box": BOX, "times_s": times, "load": [load_before, load_after]}, "size"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
