"""An interrupted run resumed mid-epoch ends bit-identical to the uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import TINY_VIT, run_cli, run_train

# digits with its random affine augmentation on, drop path on, 2 loader workers: every source
# of randomness a resume could disturb
RUN = [
    *TINY_VIT, "data.image_size=16", "data.batch_size=32", "data.num_workers=2", "data.augment=true",
    "model.net.drop_path_rate=0.1", "trainer.max_epochs=3", "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1", "callbacks.model_checkpoint.save_top_k=-1",
]  # fmt: skip


def weights(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "epoch002.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_mid_epoch_resume_with_workers_and_augmentation_is_bit_identical(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert run_train(straight, *RUN).returncode == 0
    # the signal needs a process of its own; the other two runs go in-process
    stop = ["+callbacks.stop._target_=tests.helpers.SignalAtStep", "+callbacks.stop.step=6"]
    proc = run_cli(interrupted, *RUN, *stop)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((interrupted / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["global_step"] == 6  # mid epoch 1
    proc = run_train(interrupted, *RUN, "resume=auto")
    assert proc.returncode == 0, proc.stderr
    assert "not resumable" not in proc.stderr
    a, b = weights(interrupted), weights(straight)
    assert a["global_step"] == b["global_step"] == 12
    for key in b["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0, msg=key)
