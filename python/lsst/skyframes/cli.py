"""The ``skyframes`` command."""

from __future__ import annotations

__all__ = ["main"]

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_task_demo

    print(
        f"skyframes demo: {args.exposures} synthetic exposures of {args.size}x{args.size} px "
        f"-> sky frame -> applied to a new exposure (output in {args.output}/)"
    )
    result = run_task_demo(args.output, n_exposures=args.exposures, size=args.size, seed=args.seed)
    ratio = result.sky_frame_rms_error / result.sky_frame_expected_noise
    print()
    print("Sky frame recovery against truth (normalised units)")
    print(f"  RMS error of the sky-frame bins   {result.sky_frame_rms_error:.3e}")
    print(f"  expected noise of the bin means   {result.sky_frame_expected_noise:.3e}")
    print(f"  ratio (1 = noise-limited)         {ratio:.2f}")
    print("Applying to a new exposure")
    print(f"  true sky level                    {result.true_scale:.2f} e-/px")
    print(
        f"  fitted scale                      {result.fitted_scale:.2f} "
        f"({100 * (result.fitted_scale / result.true_scale - 1):+.3f} %)"
    )
    print(
        f"  large-scale residual RMS before   {result.residual_before:.2f} e-/px "
        f"({100 * result.residual_before / result.pattern_amplitude:.2f} % of the pattern amplitude)"
    )
    print(
        f"  large-scale residual RMS after    {result.residual_after:.2f} e-/px "
        f"({100 * result.residual_after / result.pattern_amplitude:.2f} % of the pattern amplitude)"
    )
    print(f"Figure: {result.figure}")
    print(f"Done in {result.seconds:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``skyframes`` command."""
    parser = argparse.ArgumentParser(prog="skyframes", description="Build, persist and apply sky frames.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="Build and apply a sky frame on synthetic data; print metrics.")
    demo.add_argument("--output", default="demo", help="Directory for figures (default: demo/).")
    demo.add_argument("--exposures", type=int, default=20, help="Exposures in the sky frame (default 20).")
    demo.add_argument("--size", type=int, default=1024, help="Detector size in pixels (default 1024).")
    demo.add_argument("--seed", type=int, default=1, help="Simulation seed.")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``skyframes`` command line."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
