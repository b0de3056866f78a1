"""Sequence classification / regression end to end on generated GLUE folders: each task's metrics and
score, MNLI's matched / mismatched test parts, GLUE submission files from mode=predict, and GPT-1's
auxiliary language-model loss."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from tests.helpers import run_train, write_glue_task
from vitrain.models import create_gpt_classifier
from vitrain.tasks.text_classification import GPTSequenceClassificationTask, language_model_loss

pytestmark = pytest.mark.xdist_group("text_classification")

SMALL = ["+model.net.n_layer=1", "+model.net.n_embd=32", "+model.net.n_head=2", "+model.net.n_positions=64"]
FAST = ["data.max_length=48", "data.batch_size=8", "data.vocab_size=300", "optimizer.lr=3e-3",
        "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "scheduler.warmup_epochs=0"]  # fmt: skip


def train(tmp_path, name, model, task, *extra):
    write_glue_task(
        tmp_path / "glue", {"mrpc": "MRPC", "mnli": "MNLI", "stsb": "STS-B", "cola": "CoLA"}[task]
    )
    run_dir = tmp_path / name
    proc = run_train(run_dir, f"model={model}", "data=glue", f"data.task={task}", f"data.root={tmp_path / 'glue'}",
                     *SMALL, *FAST, *extra)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, json.loads((run_dir / "summary.json").read_text()), proc


def predict(tmp_path, run_dir):
    out = tmp_path / f"{run_dir.name}_predict"
    ckpt = json.loads((run_dir / "summary.json").read_text())["checkpoints"]["best"]
    proc = run_train(out, "mode=predict", f"ckpt_path={ckpt}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text())


def read_tsv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


@pytest.mark.parametrize(("task", "model", "metrics"), [
    ("mrpc", "bert_tiny_cls", ["f1", "acc"]),
    ("cola", "gpt_tiny_cls", ["mcc"]),
    ("stsb", "bert_tiny_cls", ["pearson", "spearman"]),
])  # fmt: skip
def test_glue_task_metrics_score_and_submission_file(tmp_path, task, model, metrics):
    run_dir, summary, _ = train(tmp_path, task, model, task)
    best, test = summary["best"], summary["test"]
    assert summary["monitor"] == {"metric": "val/score", "mode": "max"}
    for split, values in (("val", best), ("test", test)):
        assert all(f"{split}/{m}" in values for m in metrics)
        assert values[f"{split}/score"] == pytest.approx(
            sum(values[f"{split}/{m}"] for m in metrics) / len(metrics)
        )
    assert ("val/acc" in best) == (task != "cola" and task != "stsb")  # only the task's own metrics
    out, predicted = predict(tmp_path, run_dir)
    folder = {"mrpc": "MRPC", "cola": "CoLA", "stsb": "STS-B"}[task]
    rows = read_tsv(out / f"{folder}.tsv")
    assert predicted["predictions"] == str(out / f"{folder}.tsv") and predicted["files"] == 6
    assert rows[0] == ["index", "prediction"] and [r[0] for r in rows[1:]] == [str(i) for i in range(6)]
    if task == "stsb":
        assert all(0 <= float(r[1]) < 10 and len(r[1].split(".")[1]) == 3 for r in rows[1:])
    else:
        assert {r[1] for r in rows[1:]} <= {"0", "1"}


def test_mnli_reports_matched_and_mismatched_and_writes_both_files(tmp_path):
    run_dir, summary, proc = train(tmp_path, "mnli", "gpt_tiny_cls", "mnli")
    test = summary["test"]
    assert test["test/acc"] == pytest.approx((test["test/acc_matched"] + test["test/acc_mismatched"]) / 2)
    assert "val/acc_matched" not in summary["best"]  # the selection slice has one part
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    lm = [float(r["train/lm_loss"]) for r in rows if r.get("train/lm_loss")]
    total = [
        (float(r["train/loss"]), float(r["train/cls_loss"]), float(r["train/lm_loss"]))
        for r in rows
        if r.get("train/lm_loss")
    ]
    assert lm and all(t == pytest.approx(c + 0.5 * m, rel=1e-5) for t, c, m in total)
    assert lm[-1] < lm[0]  # the auxiliary language model learns the fine-tuning texts
    out, predicted = predict(tmp_path, run_dir)
    assert predicted["predictions"] == [str(out / "MNLI-m.tsv"), str(out / "MNLI-mm.tsv")]
    for name in ("MNLI-m.tsv", "MNLI-mm.tsv"):
        rows = read_tsv(out / name)
        assert len(rows) == 7 and {r[1] for r in rows[1:]} <= {"contradiction", "entailment", "neutral"}


def test_gpt_objective_is_classification_plus_lambda_language_model():
    torch.manual_seed(0)
    net = create_gpt_classifier("gpt_tiny", num_labels=3, vocab_size=50, n_layer=1, n_embd=32, n_head=2, dropout=0.0,
                                classifier_dropout=0.0)  # fmt: skip
    ids = torch.randint(1, 50, (4, 7))
    mask = torch.ones_like(ids)
    mask[2, 4:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, 1, 1])}
    losses = {}
    for weight in (0.0, 0.5):
        task = GPTSequenceClassificationTask(net, torch.optim.AdamW, lm_weight=weight)
        losses[weight] = task.training_step(batch, 0).item()
    logits = net.lm_logits(net.hidden(ids))[:, :-1]
    lm = language_model_loss(logits, ids[:, 1:], mask[:, 1:])
    per_token = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none"
    )
    assert lm.item() == pytest.approx(
        per_token[mask[:, 1:].flatten().bool()].mean().item(), rel=1e-5
    )  # pads out
    assert losses[0.5] == pytest.approx(losses[0.0] + 0.5 * lm.item(), rel=1e-5)
