"""Experiment reports: a Markdown table and plots from the ``summary.json`` of finished runs.

``python -m vitrain.report DIR [DIR ...] --out OUT [--title TITLE]`` writes ``OUT/report.md`` and
the plots of ``vitrain.results.report.write_report`` and prints the report.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vitrain.errors import UserError
from vitrain.results.report import PLOTS, write_report


def main(argv: list[str] | None = None) -> int:
    """``python -m vitrain.report DIR [DIR ...] --out OUT [--title TITLE]``."""
    parser = argparse.ArgumentParser(
        prog="python -m vitrain.report", description=__doc__.split("\n")[0].replace("``", "")
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md and the PNG plots")
    parser.add_argument("--title", default="Report", help="the report's heading")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.dirs, args.out, args.title)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path.read_text())
    print(f"Wrote {path} and {', '.join(PLOTS)} in {args.out}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
