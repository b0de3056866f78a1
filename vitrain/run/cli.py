"""The command line around Hydra: one message, not a traceback, for a config that cannot compose.

Hydra reports a misspelled key (``trainer.max_epoch=3``) by suggesting to *add* it
(``+trainer.max_epoch=3``), which would train with the setting silently ignored. ``launch``
runs the Hydra app and turns composition errors into one message that names the closest
existing key or option (``did you mean trainer.max_epochs?``) and exits with status 1.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def launch(app: Callable[[], object], argv: list[str] | None = None) -> None:
    """Run the ``@hydra.main`` function ``app``; composition errors exit 1 with one message."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let composition errors reach this function
    # Optuna's storage module imports SQLAlchemy/alembic, which print deprecation noise on a sweep
    warnings.filterwarnings("ignore", message=r".*declarative_base\(\).*")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    args = argv if argv is not None else sys.argv[1:]
    try:
        app()
    except (ConfigCompositionException, MissingConfigException, OverrideParseException) as err:
        message = explain(err, args)
        print(f"Error in the command line: {message}", file=sys.stderr)
        record_composition_failure(args, err, message)
        sys.exit(1)


MULTIRUN_FLAGS = ("-m", "--multirun", "hydra.mode=MULTIRUN")
# overrides that place the run directory (hydra.run.dir = paths.log_dir/task_name/runs/run_name)
LOCATION_KEYS = ("hydra.run.dir", "run_name", "task_name", "paths.root_dir", "paths.log_dir")


def record_composition_failure(args: list[str], err: Exception, message: str) -> None:
    """Write the failed ``summary.json`` of a single run whose command line does not compose,
    into the run directory the rest of the command line names (``hydra.run.dir``, or
    ``paths.log_dir/task_name/runs/run_name``), as for any other mistake. A multirun has no
    single run directory: its jobs never started, so nothing is written."""
    if any(a in MULTIRUN_FLAGS for a in args):
        return
    run_dir = failed_run_dir(args, offending_keys(err))
    if run_dir is None:
        return
    from vitrain.run.summary import record_failure

    if record_failure(run_dir, message):
        print(f"(status: failed recorded in {run_dir / 'summary.json'})", file=sys.stderr)


def offending_keys(err: Exception) -> set[str]:
    """The config keys or groups a composition error names (empty when it names none)."""
    text = str(err)
    keys = set(re.findall(r"Could not override '([^']+)'", text))
    keys |= {group for group, _ in re.findall(r"Could not find '([^']+)/([^'/]+)'", text)}
    return keys


def failed_run_dir(args: list[str], offending: set[str]) -> Path | None:
    """The run directory of the command line ``args`` without the overrides of ``offending`` keys
    (else with only the overrides that place the run directory); None if neither composes."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    kept = [a for a in overrides if a.split("=", 1)[0].lstrip("+~") not in offending]
    located = [a for a in overrides if a.split("=", 1)[0].lstrip("+~") in LOCATION_KEYS]
    for attempt in (kept, located) if offending else (located,):
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name="train", overrides=attempt, return_hydra_config=True)
            return Path(str(cfg.hydra.run.dir))
        except Exception:  # noqa: BLE001  (another bad override: try the next attempt)
            continue
        finally:
            GlobalHydra.instance().clear()
    return None


def config_groups() -> str:
    """``--help``'s list of config groups and their options (internal ``_*`` folders left out)."""
    lines = []
    for folder in sorted(
        p for p in CONF_DIR.iterdir() if p.is_dir() and not p.name.startswith(("_", "hydra"))
    ):
        options = sorted(f.stem for f in folder.glob("*.yaml"))
        lines.append(f"{folder.name}: {', '.join(options)}")
    return "\n".join(lines)


def explain(err: Exception, argv: list[str]) -> str:
    """The message for a composition error, with a suggestion when a close key or option exists."""
    text = str(err).strip()
    bad_key = re.search(r"Could not override '([^']+)'", text)
    if bad_key:
        key = bad_key.group(1)
        line = next((a for a in argv if a.split("=", 1)[0] == key), key)
        message = f"{line}: there is no config key {key}."
        suggestion = closest_key(key, [a for a in argv if a.split("=", 1)[0] != key])
        if suggestion:
            value = line.split("=", 1)[1] if "=" in line else "..."
            return f"{message} Did you mean {suggestion}? ({suggestion}={value})"
        return f"{message} Check the spelling (python train.py --cfg job lists every key); '+{line}' adds a new key."
    missing = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.findall(r"^\s+(\S+)$", text.split("Available options", 1)[-1], flags=re.M)
        close = difflib.get_close_matches(option, options, n=1)
        hint = f" Did you mean {group}={close[0]}?" if close else ""
        return f"{group}={option}: Could not find '{group}/{option}', no such option.{hint} Options: {', '.join(options)}."
    return text


def closest_key(key: str, other_args: list[str]) -> str | None:
    """The existing config key closest to the misspelled ``key`` (same parent first)."""
    cfg = compose_quietly(other_args)
    if cfg is None:
        return None
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig):  # the parent is misspelled too: match the whole path
        candidates = list(all_keys(cfg))
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
        return close[0] if close else None
    close = difflib.get_close_matches(leaf, [str(k) for k in node], n=1, cutoff=0.6)
    return f"{parent}.{close[0]}" if close and parent else (close[0] if close else None)


def all_keys(cfg: DictConfig, prefix: str = ""):
    """Every dotted key path of ``cfg`` (values not resolved)."""
    for k in cfg:
        path = f"{prefix}{k}"
        yield path
        child = cfg._get_node(k)
        if isinstance(child, DictConfig):
            yield from all_keys(child, f"{path}.")


def compose_quietly(args: list[str]) -> DictConfig | None:
    """``conf/train.yaml`` composed with the other command-line overrides (None if that fails too)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [a for a in args if "=" in a and not a.startswith(("-", "hydra.", "+hydra.", "~hydra."))]
    for attempt in (overrides, []):
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                return compose(config_name="train", overrides=attempt)
        except Exception:  # noqa: BLE001  (another bad override: fall back to the defaults)
            continue
    return None
