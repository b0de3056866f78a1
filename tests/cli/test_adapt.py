"""``model.freeze`` from the command line: dry_run counts."""

from __future__ import annotations

import re

from hydra.utils import instantiate

from tests.helpers import TINY_VIT, compose_train, run_train


def test_dry_run_counts_reflect_freezing(tmp_path):
    proc = run_train(tmp_path / "run", *TINY_VIT, "dry_run=true", "model.freeze=[blocks.0,cls_token]")
    assert proc.returncode == 0, proc.stderr
    first, *table = proc.stdout.splitlines()
    total, trainable = map(int, re.fullmatch(r"params: total=(\d+) trainable=(\d+)", first).groups())
    net = instantiate(compose_train(*TINY_VIT).model.net)
    frozen = sum(
        p.numel() for n, p in net.named_parameters() if n.startswith("blocks.0.") or n == "cls_token"
    )
    assert total == sum(p.numel() for p in net.parameters()) and trainable == total - frozen
    blocks = sum(p.numel() for p in net.blocks.parameters())
    assert f"  blocks: total={blocks} trainable={blocks - frozen + 32}" in table  # cls_token: 32
    assert "  cls_token: total=32 trainable=0" in table
