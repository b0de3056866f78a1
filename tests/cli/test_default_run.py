"""The embedded default (`make train`): ViT-Ti/16 on digits reaches >= 97% top-1 (validation and held-out test)."""

import json

import pytest

from tests.helpers import run_train


@pytest.mark.slow
def test_default_run_reaches_97_percent(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train(run_dir)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    test = summary["test"]["test/acc1"]  # the best checkpoint on the held-out test split
    print(
        f"default run: last val/acc1={summary['last']['val/acc1']:.4f}, test/acc1={test:.4f} in {summary['wall_time_s']} s"
    )
    assert summary["last"]["val/acc1"] >= 0.97
    assert test >= 0.97
    assert summary["epochs"] == 40
