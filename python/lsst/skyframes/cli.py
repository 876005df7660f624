"""The ``skyframes`` command.

Subcommands: ``create-repo``, ``register``, ``ingest``, ``certify`` (the steps
around ``pipetask run -p pipelines/BuildSkyFrame.yaml``), ``report`` and
``plot`` (looking at what a build made), ``demo`` and ``compile-kernels``
(fill the numba kernel cache, see `lsst.skyframes.kernel_cache`).

A mistake the user can fix (a missing file, repository or collection, a bad
date, an unknown dataset) ends the command with a one-line message naming it
and exit code 2; per-file ingest failures give exit code 1.
"""

from __future__ import annotations

__all__ = ["build_parser", "main"]

import argparse
import sys


def _create_repo(args: argparse.Namespace) -> int:
    from .repo import create_repo

    create_repo(args.repo, db_url=args.db)
    print(f"Repository ready at {args.repo}")
    return 0


def _register(args: argparse.Namespace) -> int:
    from .camera import Camera
    from .repo import calib_collection, create_repo, register_camera

    camera = Camera.from_yaml(args.camera)
    butler = create_repo(args.repo) if args.create else _open(args.repo)
    register_camera(butler, camera)
    print(
        f"Instrument {camera.instrument!r}: {len(camera)} detectors, {len(camera.filters)} filters "
        f"registered; camera certified in {calib_collection(camera.instrument)!r}"
    )
    return 0


def _open(repo: str, writeable: bool = True):
    from .repo import open_repo

    return open_repo(repo, writeable=writeable)


def _ingest(args: argparse.Namespace) -> int:
    from .camera import Camera
    from .ingest import HeaderKeys, ingest_files
    from .repo import check_camera

    camera = Camera.from_yaml(args.camera)
    butler = _open(args.repo)
    # Before anything is written: the images are checked against this camera.
    check_camera(butler, camera, source=f"Camera file {args.camera}", repo=args.repo)
    keys = HeaderKeys(
        exposure=args.key_exposure,
        detector=args.key_detector,
        physical_filter=args.key_filter,
        obs_start=args.key_date,
        exposure_time=args.key_exptime,
        gain=args.key_gain,
        read_noise=args.key_read_noise,
    )
    total = len(args.files)
    count = 0

    def progress(path: str) -> None:
        nonlocal count
        count += 1
        if count % 25 == 0 or count == total:
            print(f"  {count}/{total} files", flush=True)

    report = ingest_files(
        butler,
        camera,
        args.files,
        run=args.run,
        dataset_type=args.dataset_type
        or ("preliminary_visit_image" if args.visit_images else "post_isr_image"),
        keys=keys,
        progress=progress,
        per_visit=args.visit_images,
        replace=args.replace,
    )
    for path, replaced in report.replaced.items():
        print(f"REPLACED {replaced} with {path}")
    for path, reason in report.failed.items():
        print(f"FAILED {path}: {reason}", file=sys.stderr)
    print(f"Ingest into {args.run!r}: {report.summary()}")
    return 1 if report.failed else 0


def _certify(args: argparse.Namespace) -> int:
    from .certify import certify_calibrations, certify_sky_frames

    butler = _open(args.repo)
    window = {"collection": args.collection, "begin": args.begin, "end": args.end}
    if args.dataset_type is None:
        counts = certify_sky_frames(butler, args.run, **window)
    else:
        counts = {
            args.dataset_type: certify_calibrations(
                butler, args.run, dataset_type=args.dataset_type, **window
            )
        }
    for dataset_type, n in counts.items():
        print(
            f"{n} {dataset_type!r} datasets newly certified" if n else f"No new {dataset_type!r} to certify"
        )
    return 0


def _report(args: argparse.Namespace) -> int:
    from .repo import require_collection
    from .report import format_quality_table, load_quality, write_quality_figure

    butler = _open(args.repo, writeable=False)
    require_collection(butler, args.collection)
    print(format_quality_table(load_quality(butler, args.collection)))
    for path in write_quality_figure(butler, args.collection, args.output):
        print(f"Figure: {path}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .errors import UsageError
    from .repo import require_collection
    from .report import plot_dataset

    data_id: dict[str, object] = {}
    for item in args.data_id:
        key, equals, value = item.partition("=")
        if not (key and equals and value):
            raise UsageError(f"--data-id {item!r} is not KEY=VALUE (e.g. detector=4 visit=1020).")
        data_id[key] = int(value) if value.lstrip("-").isdigit() else value
    butler = _open(args.repo, writeable=False)
    require_collection(butler, args.collection)
    path = plot_dataset(butler, args.dataset, args.collection, data_id, args.output)
    print(f"Figure: {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoSettings, run_demo

    settings = DemoSettings(
        n_detectors_side=args.detectors,
        n_exposures=args.exposures,
        size=args.size,
        seed=args.seed,
        n_components=args.components,
    )
    run_demo(args.output, settings)
    return 0


def _compile_kernels(args: argparse.Namespace) -> int:
    from .kernel_cache import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``skyframes`` command."""
    parser = argparse.ArgumentParser(prog="skyframes", description="Build, persist and apply sky frames.")
    commands = parser.add_subparsers(dest="command", required=True)

    create = commands.add_parser(
        "create-repo", help="Create a butler repository that knows skyframes' types."
    )
    create.add_argument("repo", help="Repository root.")
    create.add_argument("--db", default=None, help="Registry database URL (default: SQLite in the repo).")
    create.set_defaults(func=_create_repo)

    register = commands.add_parser(
        "register",
        help="Register a camera's instrument, detectors and filters; store the camera calibration.",
    )
    register.add_argument("repo", help="Repository root.")
    register.add_argument("camera", help="Camera description (YAML).")
    register.add_argument("--create", action="store_true", help="Create the repository first if needed.")
    register.set_defaults(func=_register)

    ingest = commands.add_parser(
        "ingest",
        help="Ingest processed single-detector images.",
        description=(
            "Ingest processed single-detector images, one dataset per file. A file whose data ID is "
            "already in the RUN collection is skipped if its image, mask and variance are identical, "
            "refused otherwise (naming both files) unless --replace is given. A file that contradicts "
            "an exposure already defined (start time, filter, exposure time), or has no usable pixel "
            "(all NaN, or all masked BAD, SAT or NO_DATA) is refused; the other files go on. --camera "
            "must equal the registered camera. Each file lands whole (dataset, exposure and visit "
            "records) or not at all. Files without a VARIANCE HDU get an estimated variance, with a "
            "warning: max(image, 0)/gain + (read noise/gain)^2 (ADU^2) where the gain key (e-/ADU) is in "
            "the header (read noise in e-, 0 without its key), otherwise a constant: the square of the "
            "background noise measured on the image (1.4826 x MAD of neighbouring-pixel differences / "
            "sqrt 2, masked pixels left out). Exit code 1 if any file failed, 2 if nothing could start."
        ),
    )
    ingest.add_argument("repo", help="Repository root.")
    ingest.add_argument("files", nargs="+", help="FITS files (plain, or written by lsst.images).")
    ingest.add_argument("--camera", required=True, help="Camera description (YAML).")
    ingest.add_argument("--run", default="skyframes/raw", help="RUN collection (default skyframes/raw).")
    ingest.add_argument(
        "--dataset-type",
        default=None,
        help="Dataset type (default post_isr_image; preliminary_visit_image with --visit-images).",
    )
    ingest.add_argument(
        "--visit-images",
        action="store_true",
        help="Calibrated images to apply sky frames to: store per (instrument, visit, detector).",
    )
    ingest.add_argument("--key-exposure", default="EXPID", help="Header key of the exposure id (EXPID).")
    ingest.add_argument(
        "--key-detector", default="DETECTOR", help="Header key of the detector id (DETECTOR)."
    )
    ingest.add_argument("--key-filter", default="FILTER", help="Header key of the physical filter (FILTER).")
    ingest.add_argument(
        "--key-date",
        default="DATE-OBS",
        help="Header key of the start time, ISO 8601 in the header's TIMESYS, UTC if absent (DATE-OBS).",
    )
    ingest.add_argument(
        "--key-exptime", default="EXPTIME", help="Header key of the exposure time, s (EXPTIME)."
    )
    ingest.add_argument(
        "--key-gain",
        default="GAIN",
        help="Header key of the gain, e-/ADU, for files without a VARIANCE HDU (GAIN).",
    )
    ingest.add_argument(
        "--key-read-noise",
        default="RDNOISE",
        help="Header key of the read noise, e-, for files without a VARIANCE HDU (RDNOISE).",
    )
    ingest.add_argument(
        "--replace",
        action="store_true",
        help="Replace a dataset already in the RUN collection whose content differs (same data ID); "
        "the new dataset records the replaced one's id and source.",
    )
    ingest.set_defaults(func=_ingest)

    certify = commands.add_parser("certify", help="Certify sky frames into <instrument>/calib.")
    certify.add_argument("repo", help="Repository root.")
    certify.add_argument("run", help="Collection holding the sky frames (pipetask's output).")
    certify.add_argument(
        "--begin", default=None, help="Start of validity, ISO 8601 TAI as in butler (default unbounded)."
    )
    certify.add_argument(
        "--end", default=None, help="End of validity (exclusive), ISO 8601 TAI (default unbounded)."
    )
    certify.add_argument(
        "--dataset-type",
        default=None,
        help="Dataset type (default: sky, and sky_components where the build made them).",
    )
    certify.add_argument(
        "--collection", default=None, help="CALIBRATION collection (default <instrument>/calib)."
    )
    certify.set_defaults(func=_certify)

    report = commands.add_parser("report", help="Table and figure of the sky frames' quality reports.")
    report.add_argument("repo", help="Repository root.")
    report.add_argument("--collection", required=True, help="The build's output collection.")
    report.add_argument("--output", default="sky_quality.png", help="Figure path (filter name is appended).")
    report.set_defaults(func=_report)

    plot = commands.add_parser("plot", help="Draw a sky, sky_components, skyCorr or mosaic dataset.")
    plot.add_argument("repo", help="Repository root.")
    plot.add_argument("dataset", help="Dataset type name (sky, sky_components, skyCorr, a mosaic...).")
    plot.add_argument("--collection", required=True, help="Collection to search.")
    plot.add_argument("--data-id", nargs="*", default=[], help="KEY=VALUE pairs, e.g. detector=4 visit=1020.")
    plot.add_argument("--output", default="plot.png", help="Output PNG.")
    plot.set_defaults(func=_plot)

    demo = commands.add_parser(
        "demo", help="Build and apply sky frames on synthetic data in a new butler repo; print metrics."
    )
    demo.add_argument(
        "--output", default="demo", help="Directory for the repo, figures, metrics (default demo/)."
    )
    demo.add_argument(
        "--detectors", type=int, default=3, help="Detectors per side of the camera (default 3)."
    )
    demo.add_argument("--exposures", type=int, default=20, help="Exposures (default 20).")
    demo.add_argument("--size", type=int, default=512, help="Detector size in pixels (default 512).")
    demo.add_argument("--seed", type=int, default=1, help="Simulation seed.")
    demo.add_argument(
        "--components",
        type=int,
        default=4,
        help="Compare K = 1..N sky templates on a two-pattern sky (default 4; 0 skips it).",
    )
    demo.set_defaults(func=_demo)

    compile_kernels = commands.add_parser(
        "compile-kernels",
        help="Compile every numba kernel the tasks use into the kernel cache (once per installation "
        "and cache directory; NUMBA_CACHE_DIR chooses the directory).",
    )
    compile_kernels.add_argument("--verbose", action="store_true", help="List each kernel and its cache.")
    compile_kernels.set_defaults(func=_compile_kernels)
    return parser


def _user_error(err: Exception) -> str | None:
    """Return the one-line message of an error the user can fix, `None` for a bug."""
    from lsst.daf.butler import ButlerUserError

    from .errors import SkyFramesError

    if isinstance(err, SkyFramesError):
        return str(err)
    if isinstance(err, ButlerUserError):
        # The butler's own user-facing errors (unknown dataset type, collection or data ID key).
        return f"{err} (butler {type(err).__name__})"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the ``skyframes`` command line."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:
        message = _user_error(err)
        if message is None:
            raise
        print(f"skyframes {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
