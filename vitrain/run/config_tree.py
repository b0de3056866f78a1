"""A rich tree of the composed config, printed at start and saved in the run directory with the
resolved config."""

from __future__ import annotations

from pathlib import Path

import rich
import rich.syntax
import rich.tree
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

ORDER = ("data", "model", "optimizer", "scheduler", "callbacks", "logger", "trainer", "paths")


def config_tree(cfg: DictConfig) -> rich.tree.Tree:
    """One branch per top-level group (resolved YAML), the main groups first."""
    tree = rich.tree.Tree("CONFIG", style="bold", guide_style="dim")
    keys = [k for k in ORDER if k in cfg] + [k for k in cfg if k not in ORDER]
    for key in keys:
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        tree.add(f"[bold]{key}[/]").add(rich.syntax.Syntax(text, "yaml"))
    return tree


def save_config_tree(cfg: DictConfig, run_dir: Path, show: bool = True) -> None:
    """Print the tree (when ``show``) and write it to ``run_dir/config_tree.log``."""
    tree = config_tree(cfg)
    if show:
        rich.print(tree)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "config_tree.log", "w") as f:
        rich.print(tree, file=f)


def save_config(cfg: DictConfig, run_dir: Path) -> None:
    """On rank zero: print the config tree, save it as ``config_tree.log`` and the fully resolved
    config as ``resolved_config.yaml`` in ``run_dir``."""
    if rank_zero_only.rank == 0:
        save_config_tree(cfg, run_dir)
        OmegaConf.save(cfg, run_dir / "resolved_config.yaml", resolve=True)
