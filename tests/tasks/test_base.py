"""The Task base class: the contract checks, the shared optimizer, export and predict hooks."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from vitrain.errors import UserError
from vitrain.models import create_vit
from vitrain.tasks import CausalLMTask, ClassificationTask, DetectionTask, MAETask, MaskedLMTask, Task
from vitrain.tasks.optim import warmup_cosine


def test_every_task_is_a_task_with_a_valid_contract():
    for cls in (ClassificationTask, MAETask, DetectionTask, CausalLMTask, MaskedLMTask):
        assert issubclass(cls, Task)
        assert cls.monitor_mode in ("max", "min") and cls.monitor and cls.data_kind
        # no task copies the optimizer boilerplate: one configure_optimizers / build_optimizer
        assert "configure_optimizers" not in vars(cls) and "build_optimizer" not in vars(cls)


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"monitor": "val/loss", "monitor_mode": "min"}, "data_kind"),
        ({"data_kind": "text", "monitor_mode": "min"}, "monitor"),
        ({"data_kind": "text", "monitor": "val/loss", "monitor_mode": "lowest"}, "monitor_mode"),
    ],
)
def test_a_task_without_its_class_attributes_is_refused_at_definition(attrs, message):
    with pytest.raises(TypeError, match=message):
        type("Broken", (Task,), attrs)


class Tiny(Task):
    data_kind = "image_classification"
    monitor = "val/loss"
    monitor_mode = "min"


def test_base_builds_groups_optimizer_and_per_step_schedule():
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    task = Tiny(
        net, partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05), partial(warmup_cosine, warmup_epochs=1)
    )
    decay, no_decay = task.param_groups()
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3

    class FakeTrainer:
        estimated_stepping_batches = 10
        max_epochs = 2

    task.trainer = FakeTrainer()  # type: ignore[assignment]
    out = Task.configure_optimizers(task)
    assert out["lr_scheduler"]["interval"] == "step"
    assert out["optimizer"].param_groups[0]["lr"] == pytest.approx(1e-3 / 5)  # warm-up: 5 steps/epoch


def test_predict_rows_default_refuses_and_classification_gives_top5():
    task = Tiny(nn.Linear(2, 2), partial(torch.optim.SGD, lr=0.1))
    with pytest.raises(UserError, match="mode=predict"):
        task.predict_rows([], [], [])
    net = create_vit(
        "vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=1, num_classes=6
    )
    clf = ClassificationTask(net, partial(torch.optim.SGD, lr=0.1))
    probs = [
        torch.tensor([[0.1, 0.2, 0.3, 0.05, 0.05, 0.3]]),
        torch.tensor([[0.9, 0.02, 0.02, 0.02, 0.02, 0.02]]),
    ]
    header, rows = clf.predict_rows(probs, ["a.png", "b.png"], list("uvwxyz"))
    assert header[:3] == ["file", "class_1", "prob_1"] and len(header) == 11
    assert rows[0][0] == "a.png" and rows[0][1] in ("w", "z") and rows[0][2] == "0.300000"
    assert rows[1][1:3] == ["u", "0.900000"]


def test_export_writes_the_loaded_network(tmp_path):
    net = create_vit(
        "vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=1, num_classes=3
    )
    task = ClassificationTask(net, partial(torch.optim.SGD, lr=0.1))
    meta = {
        "net": {"_target_": "vitrain.models.create_vit", "name": "vit_tiny_patch16_224"},
        "class_names": ["a", "b", "c"],
    }
    out = task.export(tmp_path / "export", meta)
    state = load_file(out / "model.safetensors")
    assert torch.equal(state["head.weight"], net.head.weight.detach())
    assert json.loads((out / "config.json").read_text())["class_names"] == ["a", "b", "c"]
