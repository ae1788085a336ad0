"""Command line: ``python -m lightning_gan_monitor report LOGDIR -o report.png``."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0: written; 1: a problem, explained on stderr).

    Example:
        >>> main(["report", "no/such/folder", "-o", "report.png"])
        1

    """
    parser = argparse.ArgumentParser(
        prog="python -m lightning_gan_monitor", description="Tools for the logs GANMonitor writes."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = commands.add_parser(
        "report",
        help="draw the score plot, failure bands, fired rules, sample grids and diagnosis of one run or several",
        description="Draw a report of the GAN monitor's TensorBoard logs: one run, or every run under LOGDIR side "
        "by side.",
    )
    report.add_argument("logdir", metavar="LOGDIR", help="a run's log folder, or a folder of runs (lightning_logs)")
    report.add_argument(
        "-o", "--output", default="report.png", help="file to write: .png, .svg, .pdf or .html (default: report.png)"
    )
    report.add_argument("--dpi", type=_positive, default=100, help="resolution of PNG/HTML output (default: 100)")
    args = parser.parse_args(argv)

    from lightning_gan_monitor.report import write_report

    try:
        path, runs = write_report(args.logdir, args.output, dpi=args.dpi)
    except (ImportError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({runs} run{'s' if runs > 1 else ''})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
