"""The sweep table written while a multirun goes: a Hydra callback (registered under
``hydra.callbacks`` in ``conf/hydra/default.yaml``) around ``vitrain.results.sweep_table``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from vitrain.results.sweep_table import CSV_NAME, MD_NAME, _fmt, best_row, write_sweep_table

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    """Hydra callback: write the sweep table into the sweep directory.

    The table is refreshed after every job of a multirun (so it exists even when a job crashes
    with a traceback, which stops Hydra's basic sweeper before ``on_multirun_end``, and shows
    progress during a long sweep; jobs still running elsewhere show as ``missing`` until they
    finish) and written once more, complete, when the multirun ends.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """In a multirun, rewrite the table after each job (on rank 0 only); never fail the job."""
        if config.hydra.mode != RunMode.MULTIRUN or _rank() != 0:
            return
        try:
            rows = write_sweep_table(Path(str(config.hydra.sweep.dir)))
        except Exception as err:  # a report must not turn a finished job into a failed one
            log.warning("Could not update the sweep table: %s", err)
            return
        log.debug("Sweep table updated: %d jobs so far", len(rows))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Scan ``config.hydra.sweep.dir`` and write ``sweep_summary.csv`` and ``sweep_summary.md``."""
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            log.warning("No sweep table: the sweep directory %s does not exist", sweep_dir)
            return
        try:
            rows = write_sweep_table(sweep_dir)
        except OSError as err:
            log.warning("Could not write the sweep table in %s: %s", sweep_dir, err)
            return
        log.info("Sweep table of %d jobs: %s (and %s)", len(rows), sweep_dir / MD_NAME, sweep_dir / CSV_NAME)
        best = best_row(rows)
        if best is not None:
            log.info(
                "Best job: %s (%s=%s) in %s",
                best["job"],
                best["monitor"],
                _fmt(best["best"]),
                sweep_dir / best["subdir"],
            )


def _rank() -> int:
    """This process's global rank when an outside launcher started several (SLURM/submitit, torchrun)."""
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0
