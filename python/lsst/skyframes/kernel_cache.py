"""Compile every numba kernel the tasks use, once, into the kernel cache.

A fresh process loads the kernels it finds in numba's cache in well under a
second; one that finds none compiles them, about a minute before its first
quantum. ``skyframes compile-kernels`` (or
``python -m lsst.skyframes.kernel_cache``) fills the cache ahead of time by
running the build and apply tasks on a tiny synthetic camera: the kernels
are compiled for exactly the argument types (float32 images, the mask
planes' integers, the layouts) the tasks pass them, since a kernel compiled
for one signature does not serve another. ``make venv`` runs it at install
time.

Where the cache goes is decided by `lsst.skyframes._jit`: ``NUMBA_CACHE_DIR``
if set, else the package's ``__pycache__`` if writeable, else
``$XDG_CACHE_HOME/skyframes/numba`` (``~/.cache/skyframes/numba``). The
installer of a shared read-only installation runs the command before making
the files read-only: each user's first process then copies that cache into
their directory. Otherwise each user (or a job's set-up) runs the command
once for their cache directory, or points ``NUMBA_CACHE_DIR`` at a writeable
directory filled by one run of the command.
"""

from __future__ import annotations

__all__ = [
    "KernelCacheEntry",
    "cache_entries",
    "compile_kernels",
    "index_file",
    "kernel_dispatchers",
    "main",
    "run",
]

import argparse
import dataclasses
import importlib
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numba.core.dispatcher import Dispatcher

from ._jit import PACKAGE_DIR, cache_location

# Not __name__'s parent: this module also runs as __main__.
_PACKAGE = "lsst.skyframes"

# A tiny camera keeps the warm-up to the compile time itself: the kernels'
# signatures do not depend on the image size.
_WARMUP_CAMERA = {"n_x": 2, "n_y": 2, "size": 256, "gap_px": 32}
_WARMUP_EXPOSURES = 3
_WARMUP_SEED = 20261203


@dataclasses.dataclass(frozen=True)
class KernelCacheEntry:
    """One kernel and the state of its cache.

    Attributes
    ----------
    name : `str`
        ``module.function`` of the kernel.
    signatures : `int`
        Signatures compiled in this process (kernels loaded from the cache
        count theirs; kernels called only by a cached kernel count none).
    index : `pathlib.Path`
        The kernel's cache index file (``.nbi``).
    used : `bool`
        Whether the package calls the kernel anywhere (its name appears in
        the sources other than where it is defined).
    """

    name: str
    signatures: int
    index: Path
    used: bool = True

    @property
    def cached(self) -> bool:
        """Whether the kernel's cache index exists."""
        return self.index.is_file()


def _kernel_module_names() -> list[str]:
    """Return the package's modules that define numba kernels.

    Found from the sources (a kernel module uses ``@njit``), so a new kernel
    module is picked up without a list to maintain, and without importing
    every module of the package.
    """
    return sorted(
        f"{_PACKAGE}.{path.stem}"
        for path in PACKAGE_DIR.glob("*.py")
        if "@njit" in path.read_text(encoding="utf-8")
    )


def kernel_dispatchers() -> dict[str, Dispatcher]:
    """Return every numba kernel of the package, by ``module.function``.

    Every numba dispatcher defined (not merely imported) in the package's
    kernel modules.
    """
    found: dict[str, Dispatcher] = {}
    for module_name in _kernel_module_names():
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if isinstance(value, Dispatcher) and value.py_func.__module__ == module_name:
                found[f"{module_name}.{name}"] = value
    return found


def _referenced_names() -> dict[str, int]:
    """Return how often each identifier occurs in the package's sources."""
    counts: dict[str, int] = {}
    for path in PACKAGE_DIR.glob("*.py"):
        for word in re.findall(r"\w+", path.read_text(encoding="utf-8")):
            counts[word] = counts.get(word, 0) + 1
    return counts


def index_file(dispatcher: Dispatcher) -> Path:
    """Return the path of ``dispatcher``'s cache index (``.nbi``) file.

    Raises
    ------
    ValueError
        If the kernel is not compiled with ``cache=True``.
    """
    cache = dispatcher._cache
    if not cache.cache_path:
        raise ValueError(
            f"kernel {dispatcher.py_func.__qualname__} of {dispatcher.py_func.__module__} has no disk cache: "
            "decorate it with njit(cache=True)"
        )
    return Path(cache._cache_file._index_path)


def _warmup_camera():
    """Return the warm-up camera: a 2 x 2 grid, one detector slightly rotated.

    Real cameras' detectors are rarely exactly aligned with the focal-plane
    axes, and a rotated one takes the focal-plane binning's labelled path.
    """
    from .camera import Camera, make_synthetic_camera

    grid = make_synthetic_camera(**_WARMUP_CAMERA)
    detectors = list(grid.detectors)
    detectors[0] = dataclasses.replace(detectors[0], rotation_deg=0.5)
    return Camera(instrument=grid.instrument, detectors=tuple(detectors), filters=grid.filters)


def _array_like(array_type, shape: tuple[int, ...], fill: float = 0.0) -> np.ndarray:
    """Return an array of numba type ``array_type``'s dtype and layout.

    ``shape`` gives its leading dimensions (it has ``array_type.ndim``).
    """
    dtype = np.dtype(str(array_type.dtype))
    shape = tuple(shape[: array_type.ndim])
    if array_type.layout == "F":
        return np.full(shape, fill, dtype=dtype, order="F")
    if array_type.layout == "A":
        # A non-contiguous view: every other element of the last axis.
        wide = np.full((*shape[:-1], 2 * shape[-1]), fill, dtype=dtype)
        return wide[..., ::2]
    return np.full(shape, fill, dtype=dtype)


def _exercise_large_groups() -> None:
    """Compile the kernels only large inputs reach, for the tasks' signatures.

    The tasks on the warm-up camera run every kernel except those chosen by
    size or depth: bins and labels of more than ``_BIG_GROUP`` pixels
    (reduced by all threads together), stacks reduced by `_stack_kernel`
    (the MEAN of a stack, or one too deep for the sorting network), and the
    interpolation styles that need more samples than the warm-up's bins
    give. They are compiled here for the argument types the tasks passed to
    their neighbours (`_binned_kernel`, `_stack_network_kernel`,
    `_linear_kernel`), on small synthetic inputs.
    """
    from . import interpolate, statistics
    from ._binned_kernels import _BIG_GROUP
    from ._stack_kernels import _stack_network_kernel
    from .statistics import Property

    side = int(np.ceil(np.sqrt(_BIG_GROUP)))
    rng = np.random.default_rng(_WARMUP_SEED)
    for signature in statistics._binned_kernel.signatures:
        array = _array_like(signature[0], (side, side))
        array[...] = rng.normal(size=array.shape)
        bad = _array_like(signature[1], (side, side), False)
        edges = np.array([0, side])
        for prop in (Property.MEAN, Property.MEDIAN, Property.MEANCLIP):
            statistics.binned_statistics(array, bad, edges, edges, prop, 3.0, 3)
            labels = np.zeros(array.shape, dtype=np.int32)
            statistics.labelled_statistics(array, bad, labels, 1, prop, 3.0, 3)
    for signature in _stack_network_kernel.signatures:
        stack = _array_like(signature[0], (3, 4, 4))
        stack[...] = rng.normal(size=stack.shape)
        bad = _array_like(signature[1], (3, 4, 4), False)
        statistics.stack_statistics(stack, bad, Property.MEAN, 3.0, 3)
    nodes = np.arange(8, dtype=np.float64)
    for signature in interpolate._linear_kernel.signatures:
        values = _array_like(signature[1], (2, nodes.size))
        values[...] = rng.normal(size=values.shape)
        for style in (
            interpolate.Interpolate.CONSTANT,
            interpolate.Interpolate.LINEAR,
            interpolate.Interpolate.NATURAL_SPLINE,
            interpolate.Interpolate.AKIMA_SPLINE,
        ):
            interpolate._build(nodes, values, style)


def _exercise_tasks() -> None:
    """Run every build and apply task once on a tiny synthetic camera."""
    from .build import (
        CpSkyCombineConfig,
        CpSkyCombineTask,
        CpSkyImageTask,
        CpSkyScaleMeasureTask,
        CpSkySubtractBackgroundTask,
    )
    from .camera_overrides import camera_config
    from .correction import SkyCorrectionTask
    from .simulate import plan_exposures, simulate_detector, simulate_science_visit

    camera = _warmup_camera()
    plans = plan_exposures(_WARMUP_EXPOSURES, camera.physical_filters[0], seed=_WARMUP_SEED)
    image_task = CpSkyImageTask(config=camera_config(CpSkyImageTask, camera))
    scale_task = CpSkyScaleMeasureTask()
    subtract_task = CpSkySubtractBackgroundTask()
    residuals: dict[int, list] = {detector.id: [] for detector in camera}
    for plan in plans:
        masked, backgrounds = {}, []
        for detector in camera:
            exposure = simulate_detector(detector, plan, seed=_WARMUP_SEED)
            result = image_task.run(exposure.image, camera, detector)
            masked[detector.id] = result.maskedExp
            backgrounds.append(result.maskedBkg)
        merged = scale_task.run(backgrounds)
        for detector in camera:
            bkg, scale = merged.outputBkg, merged.outputScale
            subtracted = subtract_task.run(masked[detector.id], bkg, scale, detector)
            residuals[detector.id].append(subtracted.outputBkg)
    combine_task = CpSkyCombineTask(config=CpSkyCombineConfig(sky=subtract_task.config.sky))
    skies = {d: combine_task.run(residuals[d]).outputCalib for d in camera.detector_ids}
    templates_config = CpSkyCombineConfig(sky=subtract_task.config.sky)
    templates_config.nComponents = 2
    # Three noisy exposures cannot pass the PCA's residual test; its kernels are the same.
    templates_config.pca.maxResidualFraction = None
    exposure_ids = [plan.exposure_id for plan in plans]
    CpSkyCombineTask(config=templates_config).runComponents(residuals, exposure_ids)

    visit = simulate_science_visit(camera, plans[0], seed=_WARMUP_SEED + 1)
    ids = sorted(visit)
    SkyCorrectionTask(config=camera_config(SkyCorrectionTask, camera)).run(
        calExps=[visit[d].image for d in ids],
        calBkgs=[visit[d].background for d in ids],
        skyFrames=[skies[d] for d in ids],
        camera=camera,
        detectorIds=ids,
    )


def compile_kernels() -> list[KernelCacheEntry]:
    """Compile the kernels the tasks use into the cache; report every kernel.

    Returns
    -------
    entries : `list` of `KernelCacheEntry`
        Every kernel of the package (`kernel_dispatchers`), with the number
        of signatures it now has and its cache index.
    """
    _exercise_tasks()
    _exercise_large_groups()
    return cache_entries()


def cache_entries() -> list[KernelCacheEntry]:
    """Return every kernel of the package and the state of its cache."""
    counts = _referenced_names()
    return [
        KernelCacheEntry(
            name,
            len(dispatcher.signatures),
            index_file(dispatcher),
            used=counts.get(dispatcher.py_func.__name__, 0) > 1,
        )
        for name, dispatcher in sorted(kernel_dispatchers().items())
    ]


def run(args: argparse.Namespace) -> int:
    """Compile the kernels, print where their cache is; 1 if any is missing."""
    location = cache_location()
    print(f"skyframes: compiling the numba kernels into {location.path} ({location.source})")
    entries = compile_kernels()
    missing = [entry for entry in entries if not entry.cached]
    if args.verbose:
        for entry in entries:
            print(f"  {entry.name}: {entry.signatures} signature(s), {entry.index}")
    print(f"skyframes: {len(entries) - len(missing)} of {len(entries)} kernels cached")
    for entry in missing:
        why = "the tasks did not reach it" if entry.used else "defined but never called"
        print(f"skyframes: no cache for {entry.name} ({why})", file=sys.stderr)
    return 1 if any(entry.used for entry in missing) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m lsst.skyframes.kernel_cache``: ``skyframes compile-kernels``."""
    from .cli import build_parser

    argv = sys.argv[1:] if argv is None else list(argv)
    return run(build_parser().parse_args(["compile-kernels", *argv]))


if __name__ == "__main__":
    sys.exit(main())
