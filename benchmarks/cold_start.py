"""Cold start: how long a fresh process compiles before its first quantum.

Every scenario runs in fresh subprocesses against a scratch copy of the
package (``python/lsst/skyframes``, or ``--source``) put ahead on
``PYTHONPATH``, with ``XDG_CACHE_HOME`` in the scratch directory (so neither
the worktree's nor the user's numba cache is read or written) and
``NUMBA_CACHE_DIR`` unset (as root, without the capability that lets root
write to read-only files):

1. ``empty cache``: a writeable copy with no cache (a new installation, or
   after ``make clean-numba-cache``);
2. ``warm-up command``: ``python -m lsst.skyframes.kernel_cache`` run once
   in that copy (timed), then a fresh process;
3. ``read-only, first process``: another copy, made read-only
   (``chmod -R a-w``) with no cache, as a shared installation is;
4. ``read-only, after warm-up``: the warm-up command run once against the
   read-only copy (its cache goes to the user cache directory), then a
   fresh process;
5. ``read-only, read-only home``: the read-only copy in a process that can
   write neither ``$HOME`` nor ``XDG_CACHE_HOME`` (only ``TMPDIR``);
6. ``read-only, install-time cache``: a third copy in which the warm-up
   command ran while it was writeable (as an installer would, into
   ``__pycache__``), then made read-only; a fresh process of a user with an
   empty cache directory.

Each fresh process imports the package (timed), generates one synthetic
``--size``-squared detector exposure of a 3 x 3 camera (not timed), then runs
the first quantum of each build task at the Task level: CpSkyImageTask.run
(object masking, focal-plane binning), CpSkyScaleMeasureTask.run,
CpSkySubtractBackgroundTask.run and CpSkyCombineTask.run over two residual
backgrounds; then the same again on another exposure (the steady state).
Compile seconds are the wall time numba spends in its outermost compile
events (``numba:compile``; loading a cached kernel is not one), over the
first pass; the kernels compiled are listed. The ratio is the first pass
over the second.

Usage: ``.venv/bin/python benchmarks/cold_start.py [--size 2048]``; results
also go to ``benchmarks/results/cold_start-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, load_average, machine_info, write_json  # noqa: E402

PACKAGE = BENCH_DIR.parent / "python" / "lsst" / "skyframes"


def child(size: int) -> dict[str, object]:
    """Time the import and two passes of the build tasks in this process."""
    start = time.perf_counter()
    import numba.core.event as ev

    import lsst.skyframes
    from lsst.skyframes.build import (
        CpSkyCombineTask,
        CpSkyImageTask,
        CpSkyScaleMeasureTask,
        CpSkySubtractBackgroundTask,
    )
    from lsst.skyframes.camera import make_synthetic_camera
    from lsst.skyframes.camera_overrides import camera_config

    import_s = time.perf_counter() - start

    from common import detector_exposure, detector_pattern_image, run_build_chain

    class OutermostCompiles(ev.Listener):
        """Wall time of the outermost compile events and the kernels compiled."""

        def __init__(self) -> None:
            self.depth = 0
            self.seconds = 0.0
            self.kernels: list[str] = []

        def on_start(self, event) -> None:
            if self.depth == 0:
                self.started = time.perf_counter()
                func = event.data["dispatcher"].py_func
                self.kernels.append(f"{func.__module__}.{func.__qualname__}")
            self.depth += 1

        def on_end(self, event) -> None:
            self.depth -= 1
            if self.depth == 0:
                self.seconds += time.perf_counter() - self.started

    camera = make_synthetic_camera(size=size)
    detector = list(camera)[len(camera.detectors) // 2]
    pattern = detector_pattern_image(detector)
    image_task = CpSkyImageTask(config=camera_config(CpSkyImageTask, camera))
    scale_task = CpSkyScaleMeasureTask()
    subtract_task = CpSkySubtractBackgroundTask()
    combine_task = CpSkyCombineTask()

    def first_quanta(exposure) -> None:
        residual = run_build_chain(image_task, scale_task, subtract_task, exposure, camera, detector)
        combine_task.run(inputBkgs=[residual, residual], exposureIds=[1, 2])

    passes = []
    listener = OutermostCompiles()
    for exposure_id in (1, 2):
        exposure = detector_exposure(detector, pattern, exposure_id)
        wall, cpu = time.perf_counter(), time.process_time()
        with ev.install_listener("numba:compile", listener):
            first_quanta(exposure)
        passes.append((time.perf_counter() - wall, time.process_time() - cpu, listener.seconds))
        listener.seconds = 0.0
    try:
        from lsst.skyframes._jit import cache_location
    except ImportError:  # a package from before the cache location was chosen here
        location = None
    else:
        location = cache_location()
    return {
        "package": str(Path(lsst.skyframes.__file__).parent),
        "cache": None if location is None else [str(location.path), location.source],
        "import_s": import_s,
        "first_s": passes[0][0],
        "first_cpu_s": passes[0][1],
        "compile_s": passes[0][2],
        "later_s": passes[1][0],
        "later_compile_s": passes[1][2],
        "compiled": listener.kernels,
    }


def copy_package(source: Path, site: Path) -> Path:
    """Copy the package sources (no caches) to ``site/lsst/skyframes``."""
    target = site / "lsst" / "skyframes"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def make_read_only(root: Path) -> None:
    """``chmod -R a-w`` ``root``."""
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def make_writeable(root: Path) -> None:
    """Undo `make_read_only`, so the scratch directory can be removed."""
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def environment(site: Path, scratch: Path, read_only_home: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(BENCH_DIR)])
    env["XDG_CACHE_HOME"] = str(scratch / "xdg-cache")
    env["TMPDIR"] = str(scratch / "tmp")
    for path in (scratch / "xdg-cache", scratch / "tmp"):
        path.mkdir(parents=True, exist_ok=True)
    if read_only_home:
        # Neither $HOME nor the user's cache directory can be written (a batch node).
        home = scratch / "home"
        (home / ".cache").mkdir(parents=True, exist_ok=True)
        env["HOME"] = str(home)
        env["XDG_CACHE_HOME"] = str(home / ".cache")
        make_read_only(home)
    return env


def unprivileged() -> list[str]:
    """Return the command prefix that makes ``chmod a-w`` binding.

    root writes to read-only files regardless (the DAC-override
    capability); as root the children run with that capability dropped.
    """
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        raise RuntimeError("running as root: install util-linux's setpriv, or run as another user")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


def run_child(site: Path, scratch: Path, size: int, read_only_home: bool = False) -> dict[str, object]:
    out = subprocess.run(
        [*unprivileged(), sys.executable, str(Path(__file__).resolve()), "--child", "--size", str(size)],
        env=environment(site, scratch, read_only_home),
        capture_output=True,
        text=True,
    )
    if out.returncode:
        return {"failed": out.stderr.strip().splitlines()[-1][:120], "compiled": []}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["package"].startswith(str(site)):
        raise RuntimeError(f"the child imported {result['package']}, not the copy in {site}")
    return result


def run_warmup(site: Path, scratch: Path) -> float | None:
    """Run the warm-up command; its wall seconds, None where it does not exist."""
    if not (site / "lsst" / "skyframes" / "kernel_cache.py").exists():
        return None
    start = time.perf_counter()
    subprocess.run(
        [*unprivileged(), sys.executable, "-m", "lsst.skyframes.kernel_cache"],
        env=environment(site, scratch),
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=2048, help="Detector width and height (pixels).")
    parser.add_argument("--source", type=Path, default=PACKAGE, help="Package directory to copy.")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.size)))
        return

    load_before = load_average()
    scenarios: list[tuple[str, float | None, dict[str, object]]] = []
    with tempfile.TemporaryDirectory(prefix="skyframes-cold-") as tmp:
        scratch = Path(tmp)
        writeable = scratch / "site-rw"
        copy_package(args.source, writeable)
        scenarios.append(("empty cache", None, run_child(writeable, scratch / "rw", args.size)))
        warmup = run_warmup(writeable, scratch / "rw")
        if warmup is not None:
            scenarios.append(("warm-up command", warmup, run_child(writeable, scratch / "rw", args.size)))
        read_only = scratch / "site-ro"
        copy_package(args.source, read_only)
        make_read_only(read_only)
        try:
            # The second process shares the first's user cache directory.
            for name in ("read-only, first process", "read-only, second process"):
                scenarios.append((name, None, run_child(read_only, scratch / "ro", args.size)))
            warmup = run_warmup(read_only, scratch / "ro3")
            if warmup is not None:
                scenarios.append(
                    ("read-only, after warm-up", warmup, run_child(read_only, scratch / "ro3", args.size))
                )
            home = run_child(read_only, scratch / "ro4", args.size, read_only_home=True)
            scenarios.append(("read-only, read-only home", None, home))
        finally:
            make_writeable(read_only)
        # The installer compiles the kernels before making the files read-only.
        installed = scratch / "site-installed"
        copy_package(args.source, installed)
        warmup = run_warmup(installed, scratch / "inst")
        if warmup is not None:
            make_read_only(installed)
            try:
                result = run_child(installed, scratch / "inst-user", args.size)
                scenarios.append(("read-only, install-time cache", warmup, result))
            finally:
                make_writeable(installed)
            if (scratch / "ro4" / "home").exists():
                make_writeable(scratch / "ro4" / "home")
    load_after = load_average()

    print(f"one {args.size}^2 detector; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    header = (
        f"{'scenario':<27} {'warm-up s':>9} {'import s':>8} {'compile s':>9} {'first s':>8} "
        f"{'later s':>8} {'first/later':>11}  cache"
    )
    print(header)
    for name, warm, result in scenarios:
        if "failed" in result:
            print(f"{name:<27} fails: {result['failed']}")
            continue
        cache = "-" if result["cache"] is None else result["cache"][1]
        print(
            f"{name:<27} {'-' if warm is None else f'{warm:.1f}':>9} {result['import_s']:8.2f} "
            f"{result['compile_s']:9.2f} {result['first_s']:8.2f} {result['later_s']:8.2f} "
            f"{result['first_s'] / result['later_s']:11.2f}  {cache}"
        )
        if result["compiled"] and result["compile_s"] < 5:
            print(f"{'':<27} compiled: {', '.join(result['compiled'])}")
    path = write_json(
        {
            "size": args.size,
            "source": str(args.source),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "scenarios": [{"name": n, "warmup_s": w, **r} for n, w, r in scenarios],
            "machine": machine_info(("numba", "numpy")),
        },
        "cold_start",
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
