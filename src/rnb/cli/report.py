"""``rnb-report DIR [DIR ...] [--out DIR] [--ignore KEY ...]``: tables and figures of runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rnb.report.build import write_report

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnb-report",
        description=(
            "Find every run (summary.json) under the given run or multirun directories and "
            "write report.md, report.csv, runs.csv, per_domain.csv and figures/*.png."
        ),
    )
    p.add_argument("dirs", nargs="+", type=Path, help="run dirs, multirun dirs or any folders")
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default: <first dir>/report)"
    )
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KEY",
        help="a config key (fnmatch pattern) that must not separate runs, e.g. "
        "strategy.from_summary; repeatable",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (0, or 2 when no run was found)."""
    args = _parser().parse_args(argv)
    out = args.out or args.dirs[0] / "report"
    try:
        report = write_report(args.dirs, out, ignore=args.ignore)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
