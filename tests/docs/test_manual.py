"""The manual: `mkdocs build --strict` passes (no broken link, page or anchor), every config option and
key appears in the generated reference, and the reference describes keys as docs/hooks/ says."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import ROOT

HOOKS = ROOT / "docs" / "hooks"


def _hook_module(name: str):
    spec = importlib.util.spec_from_file_location(f"manual_{name}", HOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


config_reference = _hook_module("config_reference")


def test_manual_builds_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(site),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the generated parts are there: the configuration and API references, the result pages
    model_page = (site / "configuration" / "model" / "index.html").read_text()
    assert 'id="vit_b16"' in model_page and "model.net.name" in model_page
    assert 'id="vitrain.tasks.base.Task"' in (site / "api" / "tasks" / "index.html").read_text()
    assert (site / "experiments" / "digits_mae" / "index.html").is_file()
    assert (site / "experiments" / "results" / "digits_mae" / "curves.png").is_file()
    # the build lists what the references cannot describe
    assert "config reference:" in proc.stderr and "without a docstring" in proc.stderr


def test_every_option_and_key_is_in_the_reference() -> None:
    groups = config_reference.option_files(ROOT / "conf")
    assert {"", "model", "data", "trainer", "experiment", "hydra/launcher", "_base"} <= set(groups)
    pages = {page: config_reference.render_page(page, groups) for page, _ in config_reference.pages(groups)}
    count = 0
    for group, options in groups.items():
        text = pages[config_reference.page_name(group)]
        for option in options:
            assert f"{{ #{config_reference._anchor(group, option.name)} }}" in text, option.path
            if group in config_reference.RECIPE_GROUPS:
                continue
            for key in option.keys:
                if key.leaf and key.path != "defaults":  # the defaults list is shown above the table
                    assert f"<code>{option.full_path(key)}</code>" in text, (option.path, key.path)
                    count += 1
    assert count > 300


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def test_comments_describe_keys(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "data/toy.yaml",
        """
        # Toy data: mean/std default to the network's own.
        _target_: lightning.pytorch.LightningDataModule
        # where the files are
        root: /data/toy
        batch_size: 8
        # random erasing: re_prob, and the fill
        re_prob: 0.25
        re_mode: pixel
        re_count: 1
        mean: null
        loader:
          # worker processes
          workers: 2
          pin: false
        eval: {crop: 0.9}  # centre crop of evaluation
        help:
          text: |
            first: line
            second: line
        """,
    )
    _write(
        tmp_path,
        "data/toy_big.yaml",
        """
        # The toy data, bigger batches.
        defaults:
          - toy
          - _self_

        batch_size: 64
        root: /data/big
        """,
    )
    _write(
        tmp_path,
        "debug/fast.yaml",
        """
        # @package _global_
        # Fewer batches.
        data:
          root: /tmp/x
        """,
    )
    groups = config_reference.option_files(tmp_path)
    config_reference.inherit_descriptions(groups)
    toy = {key.path: key for key in groups["data"][0].keys}
    assert groups["data"][0].description == "Toy data: mean/std default to the network's own."
    assert toy["root"].how == config_reference.OWN and toy["root"].comment == "where the files are"
    assert toy["re_mode"].how == config_reference.NONE  # not named by re_prob's comment
    assert toy["re_prob"].how == config_reference.OWN
    assert toy["mean"].how == config_reference.NAMED  # named in the description
    assert toy["loader.workers"].comment == "worker processes" and toy["loader.workers"].value == 2
    assert toy["eval"].comment == "centre crop of evaluation" and toy["eval"].value == {"crop": 0.9}
    assert "help.text" in toy and not any(path.startswith("help.text.") for path in toy)
    big = {key.path: key for key in groups["data"][1].keys}
    assert big["root"].how == config_reference.INHERITED  # described in toy
    assert "where the files are" in big["root"].see
    fast = groups["debug"][0]
    assert fast.package == "_global_" and fast.full_path(fast.keys[-1]) == "data.root"
    assert fast.keys[-1].how == config_reference.INHERITED  # data.root, described in data/toy
    missing = config_reference.undocumented(groups)
    assert any(entry.endswith(" data.batch_size") and "toy.yaml" in entry for entry in missing)
    assert any(entry.endswith(" data.re_mode") for entry in missing)
    assert not any(entry.endswith(" data.root") for entry in missing)
    assert not any("_target_" in entry for entry in missing)


def test_target_docstrings_describe_their_arguments(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "callbacks/toy.yaml",
        """
        # Toy callbacks.
        mine:
          _target_: vitrain.callbacks.Mine
          every: 2
          other: 1
        theirs:
          _target_: lightning.pytorch.callbacks.LearningRateMonitor
          logging_interval: step
        """,
    )
    option = config_reference.option_files(tmp_path)["callbacks"][0]
    documented = {"vitrain.callbacks.Mine": ("vitrain.callbacks.mine.Mine", {"every": "how often"})}
    config_reference.describe_targets(option, documented.get)
    keys = {key.path: key for key in option.keys}
    assert keys["mine._target_"].target == "vitrain.callbacks.mine.Mine"  # linked to the API reference
    assert keys["mine.every"].how == config_reference.DOCSTRING and "how often" in keys["mine.every"].see
    assert keys["mine.other"].how == config_reference.NONE  # the docstring does not name it
    assert keys["theirs.logging_interval"].how == config_reference.UPSTREAM
    assert config_reference.undocumented({"callbacks": [option]}) == [f"{option.path}:5 callbacks.mine.other"]
