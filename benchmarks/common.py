"""Shared pieces of the benchmark scripts: the synthetic image, timers and
a description of the machine.

Nothing here is imported by the package or the tests.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

SKY_LEVEL = 1000.0
"""Sky level of the synthetic image (electrons per pixel)."""


def synthetic_image(
    size: int = 4096, seed: int = 12345, *, height: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return a seeded synthetic sky image and its bad-pixel mask.

    The image (float32) is a smooth sky of about `SKY_LEVEL` electrons with a
    gradient and a large-scale ripple, Poisson-like Gaussian noise, point
    sources (Gaussian PSF, sigma 2 px, power-law fluxes up to ~1000 sigma),
    about 0.05 % scattered NaN pixels plus a 64 x 64 NaN patch, and bad
    columns set to 0. The mask is True on the bad columns (the NaNs are left
    for each tool's own NaN handling or mask, as noted where timed).

    Parameters
    ----------
    size : `int`, optional
        Width (and height, unless ``height`` is given) in pixels.
    seed : `int`, optional
        Seed of the random numbers.
    height : `int`, optional
        Height in pixels; defaults to ``size``.

    Returns
    -------
    image : `numpy.ndarray`
        ``(height, size)`` float32 pixels.
    bad : `numpy.ndarray`
        ``(height, size)`` bool, True on the bad columns.
    """
    width = size
    height = size if height is None else height
    rng = np.random.default_rng(seed)
    y = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, np.newaxis]
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)[np.newaxis, :]
    sky = SKY_LEVEL * (1.0 + 0.05 * x - 0.03 * y + 0.02 * np.sin(3.0 * x) * np.cos(2.0 * y))
    image = sky + np.float32(np.sqrt(SKY_LEVEL)) * rng.standard_normal((height, width), dtype=np.float32)
    # Point sources: ~4000 per 4096 x 4096, peak S/N from 3 to ~1000.
    n_stars = max(1, int(4000 * width * height / 4096**2))
    sigma = 2.0
    radius = 8
    sx = rng.uniform(radius, width - radius, n_stars)
    sy = rng.uniform(radius, height - radius, n_stars)
    peak = 3.0 * np.sqrt(SKY_LEVEL) * (1.0 - rng.uniform(0.0, 0.997, n_stars)) ** -1.0
    offsets = np.arange(-radius, radius + 1)
    for k in range(n_stars):
        ix, iy = int(sx[k]), int(sy[k])
        dx = ix + offsets[np.newaxis, :] - sx[k]
        dy = iy + offsets[:, np.newaxis] - sy[k]
        stamp = peak[k] * np.exp(-0.5 * (dx * dx + dy * dy) / sigma**2)
        image[iy - radius : iy + radius + 1, ix - radius : ix + radius + 1] += stamp.astype(np.float32)
    nan_pixels = rng.integers(0, width * height, size=max(1, width * height // 2000))
    image.reshape(-1)[nan_pixels] = np.nan
    patch = min(64, width // 4, height // 4)
    image[height // 3 : height // 3 + patch, width // 5 : width // 5 + patch] = np.nan
    bad = np.zeros((height, width), dtype=bool)
    columns = rng.choice(width, size=max(1, 8 * width // 4096), replace=False)
    bad[:, columns] = True
    image[:, columns] = 0.0
    return np.ascontiguousarray(image, dtype=np.float32), bad


def masked_image(image: np.ndarray, bad: np.ndarray):
    """Wrap pixels and bad columns as an `lsst.images.MaskedImage` (BAD plane
    set on the bad columns, variance = sky level).
    """
    from lsst.images import Image, Mask, MaskedImage

    from lsst.skyframes.mask_planes import default_mask_schema

    mask = Mask(0, schema=default_mask_schema(), shape=image.shape)
    mask.set("BAD", bad)
    variance = np.full(image.shape, SKY_LEVEL, dtype=np.float32)
    return MaskedImage(Image(image), mask=mask, variance=Image(variance))


def best_of(func: Callable[[], object], repeat: int = 5, warmup: int = 1) -> tuple[float, list[float]]:
    """Return the minimum and all wall-clock times (seconds) of ``repeat``
    calls of ``func`` after ``warmup`` untimed calls.
    """
    for _ in range(warmup):
        func()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times), times


def load_average() -> tuple[float, float, float]:
    """Return the 1, 5 and 15 minute load averages (zeros where unknown)."""
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def cpu_model() -> str:
    """Return the CPU model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_simd() -> str:
    """Return the widest x86 vector extensions the CPU reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return " ".join(f for f in ("sse4_2", "avx2", "fma", "avx512f") if f in flags)
    except OSError:
        pass
    return ""


def threading_layer() -> str:
    """Return numba's threading layer in use (after a parallel kernel ran)."""
    try:
        import numba

        return numba.threading_layer()
    except (ImportError, ValueError):
        return "not started"


def machine_info(packages: tuple[str, ...] = ()) -> dict[str, object]:
    """Describe the machine and the versions of ``packages``."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("lsst-skyframes", "numpy", "numba", "scipy", "astropy", *packages):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    try:
        import numba

        threads = numba.config.NUMBA_NUM_THREADS
        layer = numba.config.THREADING_LAYER
    except ImportError:
        threads, layer = None, None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "simd": cpu_simd(),
        "cores": os.cpu_count(),
        "numba_threads": threads,
        "numba_threading_layer": layer,
        "platform": platform.platform(),
        "git_commit": commit,
        "versions": versions,
        "argv": sys.argv,
    }


def write_json(payload: dict, stem: str) -> Path:
    """Write ``payload`` to ``results/<stem>-<timestamp>.json`` and
    ``results/<stem>-latest.json``; return the first path.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    if isinstance(payload.get("machine"), dict):
        payload["machine"]["numba_threading_layer"] = threading_layer()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"{stem}-{stamp}.json"
    text = json.dumps(payload, indent=2, default=float)
    path.write_text(text)
    (RESULTS_DIR / f"{stem}-latest.json").write_text(text)
    return path


def detector_pattern_image(detector) -> np.ndarray:
    """Return the float32 sky-frame pattern of ``detector`` (around 1), the
    one `lsst.skyframes.simulate.detector_pattern` describes, evaluated row
    block by row block so no full-size float64 temporaries are made.
    """
    from lsst.skyframes.simulate import detector_pattern

    pattern = detector_pattern(detector.id)
    height, width = detector.height, detector.width
    out = np.empty((height, width), dtype=np.float32)
    x = np.arange(width)[np.newaxis, :]
    step = 256
    for y0 in range(0, height, step):
        y = np.arange(y0, min(y0 + step, height))[:, np.newaxis]
        out[y0 : y0 + y.shape[0]] = pattern.evaluate(x, y, width, height)
    return out


def detector_exposure(detector, pattern: np.ndarray, exposure_id: int, seed: int = 2024):
    """Return one synthetic exposure of ``detector`` as an
    `lsst.images.MaskedImage`, built in float32 with few temporaries.

    Sky = level x pattern x (1 + a small random gradient), with a level
    drawn per exposure between 800 and 2500 electrons, Gaussian noise of
    the sky's Poisson width, ~2000 stars per 4096^2 at random positions
    (dithered: different in every exposure) and two bad columns (BAD).
    """
    from lsst.images import Image, Mask, MaskedImage

    from lsst.skyframes.mask_planes import default_mask_schema

    rng = np.random.default_rng([seed, exposure_id, detector.id])
    height, width = pattern.shape
    level = np.float32(rng.uniform(800.0, 2500.0))
    gx, gy = rng.uniform(-0.02, 0.02, 2)
    ramp_x = (1.0 + gx * np.linspace(-1.0, 1.0, width, dtype=np.float32))[np.newaxis, :]
    ramp_y = (1.0 + gy * np.linspace(-1.0, 1.0, height, dtype=np.float32))[:, np.newaxis]
    sky = pattern * ramp_y
    sky *= ramp_x
    sky *= level
    image = rng.standard_normal((height, width), dtype=np.float32)
    image *= np.sqrt(sky)
    image += sky
    del sky
    n_stars = max(1, int(2000 * width * height / 4096**2))
    radius = 8
    sx = rng.uniform(radius, width - radius, n_stars)
    sy = rng.uniform(radius, height - radius, n_stars)
    peak = 3.0 * np.sqrt(level) * (1.0 - rng.uniform(0.0, 0.995, n_stars)) ** -1.0
    offsets = np.arange(-radius, radius + 1)
    for k in range(n_stars):
        ix, iy = int(sx[k]), int(sy[k])
        dx = ix + offsets[np.newaxis, :] - sx[k]
        dy = iy + offsets[:, np.newaxis] - sy[k]
        stamp = peak[k] * np.exp(-0.125 * (dx * dx + dy * dy))
        image[iy - radius : iy + radius + 1, ix - radius : ix + radius + 1] += stamp.astype(np.float32)
    mask = Mask(0, schema=default_mask_schema(), shape=(height, width))
    columns = [width // 3 + detector.id, (2 * width) // 3]
    bad = np.zeros((height, width), dtype=bool)
    bad[:, columns] = True
    mask.set("BAD", bad)
    del bad
    image[:, columns] = 0.0
    variance = np.full((height, width), level, dtype=np.float32)
    return MaskedImage(Image(image), mask=mask, variance=Image(variance))


def run_build_chain(image_task, scale_task, subtract_task, exposure, camera, detector):
    """Run CpSkyImageTask, CpSkyScaleMeasureTask and CpSkySubtractBackgroundTask
    on one exposure of one detector; return its residual background list.
    """
    masked = image_task.run(inputExp=exposure, camera=camera, detector=detector)
    scale = scale_task.run(inputBkgs=[masked.maskedBkg])
    return subtract_task.run(
        inputExp=masked.maskedExp,
        inputBkg=scale.outputBkg,
        inputScale=scale.outputScale,
        detector=detector,
    ).outputBkg


def masked_image_nbytes(mi) -> int:
    """Return the bytes of the image, mask and variance arrays of ``mi``."""
    return int(mi.image.array.nbytes + mi.mask.array.nbytes + mi.variance.array.nbytes)


def reset_peak_rss() -> bool:
    """Reset the process's peak resident set size (Linux ``VmHWM``); return
    whether that is supported.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_bytes() -> tuple[int, int]:
    """Return the current and peak resident set size (``VmRSS``,
    ``VmHWM``) in bytes, from ``/proc/self/status`` where available, else
    the peak from `resource.getrusage` for both.
    """
    try:
        fields = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
        return fields["VmRSS"], fields["VmHWM"]
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return peak, peak


def pipeline_configs(
    pipeline_file: Path, camera, overrides: dict[str, dict[str, object]] | None = None
) -> dict[str, object]:
    """Each task's config as pipetask builds it: the YAML's blocks, the instrument's overrides
    and then ``overrides`` (``{label: {field: value}}``, as ``-c label:field=value``)."""
    from lsst.pipe.base import Pipeline

    from lsst.skyframes.instrument import SkyFramesInstrument

    pipeline = Pipeline.from_uri(str(pipeline_file))
    pipeline.addInstrument(SkyFramesInstrument.from_camera(camera))
    for label, fields in (overrides or {}).items():
        for field, value in fields.items():
            pipeline.addConfigOverride(label, field, value)
    return {label: node.config for label, node in pipeline.to_graph().tasks.items()}
