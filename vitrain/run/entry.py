"""The entry ``train.py`` calls with the composed config, and its error handling.

A user mistake (:class:`vitrain.errors.UserError`, or a config that cannot be instantiated)
prints one message, never a traceback, and writes a failed ``summary.json``; the command line
itself (a config that does not compose) is ``vitrain.run.cli``'s.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from vitrain.errors import UserError, user_message
from vitrain.run.summary import record_failure
from vitrain.run.train import run

log = logging.getLogger("vitrain")


def main(cfg: DictConfig) -> float | None:
    """Command-line wrapper around ``run``.

    A user mistake logs one message and writes a failed ``summary.json``; a single run then
    exits with status 1, a multirun job returns NaN so the sweep goes on (Optuna records the
    trial as failed). Any other exception (a bug, NaN, out of memory) also writes a failed
    ``summary.json`` with the error; in a multirun it is logged with its traceback and the
    sweep goes on, in a single run it propagates (traceback, exit status 1).
    """
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return run(cfg)
    except (UserError, InstantiationException) as err:
        message = error_text(err)
        log.error(message)
        _record_failure(cfg, message)
        if multirun:
            return float("nan")
        sys.exit(1)
    except Exception as err:  # a bug or a crash (NaN, out of memory)
        _record_failure(cfg, f"{type(err).__name__}: {err}")
        if not multirun:
            raise
        log.exception("Job failed")
        return float("nan")


def _record_failure(cfg: DictConfig, message: str) -> None:
    """A failed ``summary.json`` in the run directory (rank zero only)."""
    if rank_zero_only.rank == 0:
        record_failure(Path(cfg.paths.output_dir), message)


def error_text(err: Exception) -> str:
    """The message to show for ``err``: the innermost ``UserError`` in its chain, if any."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, UserError):
            return user_message(cause)
        cause = cause.__cause__ or cause.__context__
    return str(err)
