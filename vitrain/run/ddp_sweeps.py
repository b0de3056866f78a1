"""DDP inside a Hydra multirun: make Lightning's re-launched ranks join the job, not start a sweep.

Why this module exists: Lightning's ``ddp`` strategy starts ranks 1..N-1 by running the same
command line again (``lightning.fabric.strategies.launchers.subprocess_script``) with
``hydra.run.dir`` set to Hydra's *run* directory. In a multirun that command line holds ``-m``
and the sweep lists, so every rank would start a sweep of its own (Lightning #11617, reverted
in #15727; still open upstream). ``ddp_ranks_in_this_job`` rewrites, for the duration of one job,
what the launcher reads: the command line becomes this job's own overrides and the run directory
this job's directory. Outside a multirun it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write


@contextlib.contextmanager
def ddp_ranks_in_this_job(run_dir: Path):
    """Make Lightning's DDP launcher start the other ranks as this job, not a new sweep.

    Lightning re-runs the command line for ranks > 0 with ``hydra.run.dir`` set to Hydra's
    *run* dir. In a multirun that command holds ``-m`` and the sweep lists, so every rank would
    start its own sweep (Lightning #11617). Inside this context the command is this job's own
    overrides and the run dir this job's directory. On exit the process group and the
    environment variables the launcher set (``LOCAL_RANK``, ``MASTER_PORT``, ...) are cleared,
    so the next job of the sweep launches its own ranks.
    """
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        yield
        return
    argv, environ = list(sys.argv), dict(os.environ)
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = str(run_dir)
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
