"""Experiment loggers: a resumable CSV logger, a resumable, sweep-aware W&B logger, image logging
and a clean finish.

``CSVLogger`` is Lightning's, except that a restarted run keeps its ``metrics.csv`` and appends
to it (Lightning's deletes the file when the log directory exists); the run layer drops the rows
a crashed segment logged after the checkpoint the run resumes from
(``vitrain.run.lifecycle.trim_csv_history``).

``create_wandb_logger`` builds Lightning's ``WandbLogger`` so that

* ``mode="auto"`` runs online when W&B credentials exist (``WANDB_API_KEY``, an identity token
  file, a netrc entry for the W&B host, or an API key in the W&B settings) and offline otherwise;
  no network call is made to decide;
* the run id is created once and kept in ``<save_dir>/wandb_run_id.txt``, so a restarted job with
  the same run directory continues the same W&B run (``resume="allow"``);
* the jobs of a Hydra multirun get one run each, grouped by the sweep directory's name;
* the fully resolved config (``resolved_config.yaml``) is the run's config.

Only rank zero creates a run: Lightning's ``WandbLogger.experiment`` is rank-zero aware and this
module never calls ``wandb.init`` itself. ``finish_loggers`` ends the W&B runs of a job (call it
at the end of every job) and ``log_images`` logs images to every W&B and TensorBoard logger.
"""

from __future__ import annotations

import csv
import logging
import netrc
import os
import secrets
import string
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import yaml
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from vitrain.errors import require_choice

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_run_id.txt"
MODES = ("auto", "online", "offline", "disabled")
DEFAULT_BASE_URL = "https://api.wandb.ai"
_ID_ALPHABET = string.ascii_lowercase + string.digits


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer that continues an existing ``metrics.csv`` instead of deleting it.

    The columns of the existing file are known columns: rows are appended under them, and a
    metric never logged before rewrites the file once with the union of the columns.
    """

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class CSVLogger(LightningCSVLogger):
    """Metrics to ``<save_dir>/<name>/<version>/metrics.csv``, appended across restarts.

    Args:
        save_dir: the folder the logs go under.
        name: the subfolder of ``save_dir``.
        version: the subfolder of ``name`` (``""``: none; None: Lightning's next ``version_<n>``).
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_credentials_found() -> bool:
    """Whether W&B credentials are configured on this machine, decided without a network call.

    Looks where ``wandb.login`` looks: the ``WANDB_API_KEY`` and ``WANDB_IDENTITY_TOKEN_FILE``
    environment variables, the netrc file (``NETRC`` or ``~/.netrc``) entry for the W&B host
    (``WANDB_BASE_URL``, default ``api.wandb.ai``) and an ``api_key`` in the W&B settings files.
    A key of invalid format still counts: the run then fails with W&B's own message.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        from wandb.errors import AuthenticationError
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth
    except ImportError:  # an older wandb without the wbauth module
        return _netrc_has_wandb_entry()
    try:
        settings = wandb_setup.singleton().settings
        host = wbauth.HostUrl(settings.base_url, app_url=settings.app_url)
        auth = wbauth.authenticate_session(
            host=host, source="vitrain", prompt=False, update_session=False, verify=False
        )
    except AuthenticationError:
        return True
    except Exception as err:  # noqa: BLE001  (a changed private API must not break training)
        log.debug("wandb credential lookup failed (%s); checking netrc directly", err)
        return _netrc_has_wandb_entry()
    return auth is not None


def _netrc_has_wandb_entry() -> bool:
    """Fallback credential check: a netrc entry with a password for the W&B host."""
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).netloc
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def resolve_wandb_mode(mode: str = "auto") -> str:
    """The W&B mode to run in: ``online``, ``offline`` or ``disabled``.

    ``auto`` follows ``WANDB_MODE`` when it is set and otherwise picks ``online`` when
    credentials are found (``wandb_credentials_found``) and ``offline`` when not.
    """
    require_choice("logger.wandb.mode", mode, MODES)
    if mode != "auto":
        return mode
    env_mode = os.environ.get("WANDB_MODE", "")
    env_mode = {"dryrun": "offline", "run": "online"}.get(env_mode, env_mode)
    if env_mode in ("online", "offline", "disabled"):
        return env_mode
    return "online" if wandb_credentials_found() else "offline"


def load_or_create_run_id(save_dir: str | os.PathLike) -> str:
    """The W&B run id kept in ``<save_dir>/wandb_run_id.txt``; created and saved on first use."""
    path = Path(save_dir) / RUN_ID_FILE
    if path.is_file() and (run_id := path.read_text().strip()):
        return run_id
    run_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def _is_multirun(hydra_mode: Any) -> bool:
    """Whether Hydra's mode (a ``RunMode`` enum, its name, or None) is a multirun."""
    return str(getattr(hydra_mode, "name", hydra_mode) or "").upper() == "MULTIRUN"


def _run_settings(settings: Any = None) -> Any:
    """``wandb.Settings`` in which every ``wandb.init`` of this process creates its own run.

    ``settings`` may be a mapping of further settings (merged) or a ``wandb.Settings`` object
    (used as it is).
    """
    import wandb

    if isinstance(settings, wandb.Settings):
        return settings
    extra = dict(settings or {})
    try:
        return wandb.Settings(**{"reinit": "create_new", **extra})
    except Exception:  # noqa: BLE001  (wandb < 0.19.10 knows only reinit=True)
        return wandb.Settings(**{"reinit": True, **extra})


def _load_config(config_file: str | os.PathLike | None) -> dict | None:
    """The resolved run config from ``config_file`` (YAML), or None when it is not there."""
    if config_file is None:
        return None
    path = Path(config_file)
    if not path.is_file():
        log.warning("W&B: config file %s not found; the run will not carry the resolved config", path)
        return None
    return yaml.safe_load(path.read_text()) or {}


def create_wandb_logger(
    save_dir: str | os.PathLike,
    project: str,
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: Iterable[str] = (),
    notes: str | None = None,
    log_model: bool | str = False,
    mode: str = "auto",
    config_file: str | os.PathLike | None = None,
    sweep_dir: str | os.PathLike | None = None,
    hydra_mode: Any = None,
    **kwargs: Any,
) -> WandbLogger:
    """Lightning's ``WandbLogger`` for a run directory; no W&B run starts before ``.experiment``.

    Args:
        save_dir: the run directory; W&B files go to ``<save_dir>/wandb/`` and the run id to
            ``<save_dir>/wandb_run_id.txt``.
        project, entity, name, group, tags, notes: passed to ``wandb.init``.
        log_model: Lightning's checkpoint upload (``False``, ``True`` or ``"all"``); only online,
            otherwise downgraded to ``False`` with a warning.
        mode: ``auto`` (online with credentials, else offline), ``online``, ``offline`` or
            ``disabled``.
        config_file: YAML file with the resolved config, logged as the run config.
        sweep_dir, hydra_mode: Hydra's sweep directory and mode; in a multirun ``group``
            defaults to the sweep directory's name.
        kwargs: further ``WandbLogger`` / ``wandb.init`` arguments (``job_type``, ...);
            ``settings`` (a mapping) is merged into ``wandb.Settings(reinit="create_new")``.
    """
    save_dir = Path(save_dir)
    if group is None and sweep_dir is not None and _is_multirun(hydra_mode):
        group = Path(sweep_dir).name
    init_args: dict[str, Any] = {
        "entity": entity,
        "group": group,
        "tags": [str(t) for t in tags or ()],
        "notes": notes,
    }
    run_id = None
    if rank_zero_only.rank == 0:
        resolved = resolve_wandb_mode(mode)
        if log_model and resolved != "online":
            log.warning(
                "W&B runs %s: log_model=%s needs an online run, using log_model=false", resolved, log_model
            )
            log_model = False
        run_id = load_or_create_run_id(save_dir)
        if resolved == "offline":
            why = (
                "no credentials found; `wandb login` or WANDB_API_KEY to go online"
                if mode == "auto"
                else "mode"
            )
            log.info(
                "W&B is offline (%s). Upload later with: wandb sync %s",
                why,
                save_dir / "wandb" / f"offline-run-*-{run_id}",
            )
        init_args["mode"] = resolved
        if (config := _load_config(config_file)) is not None:
            init_args["config"] = config
    else:  # other ranks never create a run; they only need a logger object
        log_model = False
        if (save_dir / RUN_ID_FILE).is_file():
            run_id = (save_dir / RUN_ID_FILE).read_text().strip() or None
    init_args["settings"] = _run_settings(kwargs.pop("settings", None))
    init_args.update(kwargs)
    # offline stays False: Lightning's offline flag sets WANDB_MODE for the whole process;
    # the mode goes to wandb.init instead (and log_model was checked above).
    logger = WandbLogger(
        name=name,
        save_dir=str(save_dir),
        project=project,
        id=run_id,
        log_model=log_model,
        offline=False,
        resume="allow",
        **init_args,
    )
    # Lightning always passes anonymous=None, which recent wandb versions warn about.
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous", "") is None:
        del init["anonymous"]
    return logger


def finish_loggers(loggers: Iterable[Logger] | Logger | None) -> None:
    """Finish the W&B run of every ``WandbLogger`` in ``loggers``; ignore other loggers.

    Safe with any list (or None), on any rank, and more than once: loggers whose run never
    started are skipped, and a failure to finish is logged, not raised.
    """
    if loggers is None:
        return
    if isinstance(loggers, Logger):
        loggers = [loggers]
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        run = getattr(logger, "_experiment", None)  # never `.experiment`: that would start a run
        if run is None or not hasattr(run, "finish"):
            continue
        try:
            run.finish()
        except Exception as err:  # noqa: BLE001  (the job's result matters more than W&B's)
            log.warning("W&B: finishing run %s failed: %s", getattr(run, "id", "?"), err)
        logger._experiment = None


def _as_array(image: Any) -> np.ndarray:
    """An image (HWC or HW numpy array, PIL image) as a numpy array TensorBoard accepts."""
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL image
        if image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGB")
        return np.asarray(image)
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise ValueError(f"log_images expects HWC or HW images, got shape {array.shape}")
    return array


def log_images(
    loggers: Iterable[Logger] | Logger | None,
    key: str,
    images: Sequence[Any],
    captions: Sequence[str] | None = None,
    step: int | None = None,
) -> None:
    """Log ``images`` under ``key`` to every W&B and TensorBoard logger in ``loggers``.

    ``images`` are HWC (or HW) uint8 numpy arrays or PIL images. W&B gets one list of images
    with ``captions``; TensorBoard gets one image per tag ``<key>/<index>`` (no captions). Other
    loggers are ignored, and nothing happens on ranks other than zero.
    """
    if loggers is None or rank_zero_only.rank != 0 or not images:
        return
    if isinstance(loggers, Logger):
        loggers = [loggers]
    images = list(images)
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"log_images got {len(images)} images but {len(captions)} captions")
    arrays: list[np.ndarray] | None = None
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            extra = {"caption": list(captions)} if captions is not None else {}
            logger.log_image(key=key, images=images, step=step, **extra)
        elif isinstance(logger, TensorBoardLogger):
            arrays = arrays if arrays is not None else [_as_array(image) for image in images]
            for index, array in enumerate(arrays):
                dataformats = "HW" if array.ndim == 2 else "HWC"
                logger.experiment.add_image(
                    f"{key}/{index}", array, global_step=step, dataformats=dataformats
                )
