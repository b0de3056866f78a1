"""``python -m vitrain.sweep SWEEP_DIR``: (re)write the sweep table of a multirun directory
(``vitrain.results.sweep_table``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vitrain.results.sweep_table import CSV_NAME, MD_NAME, MISSING, write_sweep_table

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """``python -m vitrain.sweep SWEEP_DIR``: (re)write the table of a sweep directory."""
    parser = argparse.ArgumentParser(
        prog="python -m vitrain.sweep",
        description=f"(Re)write {CSV_NAME} and {MD_NAME} of a sweep directory: one row per job, "
        "from each job's .hydra/overrides.yaml and summary.json (a job without summary.json is "
        f"listed as {MISSING}).",
    )
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (hydra.sweep.dir)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a directory")
    rows = write_sweep_table(args.sweep_dir)
    log.info("Sweep table of %d jobs: %s", len(rows), args.sweep_dir / MD_NAME)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
