"""Token classification and instruction tuning end to end, in this process, on tiny networks:
CoNLL-2003 files as distributed -> entity scores, a predictions file conlleval reads; Alpaca files ->
response loss and perplexity, a checkpoint that vitrain.generate answers from; a vitrain GPT
checkpoint as the start; bad input as one message."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from seqeval.metrics import f1_score

from tests.helpers import assert_user_error, run_train, write_conll_distribution, write_instruction_files
from vitrain.data.sft import ALPACA
from vitrain.data.tokenizer import train_tokenizer
from vitrain.inference.text import load_generator, respond
from vitrain.models import create_gpt
from vitrain.tools.generate import main as generate_main

pytestmark = pytest.mark.xdist_group("tagging_sft")

SMALL = ["+model.net.n_layer=1", "+model.net.n_embd=32", "+model.net.n_head=2", "+model.net.n_positions=160"]
TAGGING = ["model=bert_tiny_tagging", "data=conll", "data.max_length=32", "data.batch_size=8",
           "data.vocab_size=150", "optimizer.lr=5e-3", "scheduler.warmup_epochs=0", "trainer.max_epochs=4",
           "trainer.log_every_n_steps=1", "model.net.dropout=0.0"]  # fmt: skip
SFT = ["model=gpt_tiny_sft", "data=sft", "data.max_length=160", "data.batch_size=8", "data.vocab_size=400",
       "optimizer.lr=5e-3", "scheduler.warmup_epochs=0", "trainer.max_epochs=5", "trainer.log_every_n_steps=1",
       "model.net.dropout=0.0"]  # fmt: skip


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def conll_run(tmp_path_factory) -> tuple[Path, Path]:
    root = write_conll_distribution(tmp_path_factory.mktemp("conll") / "conll2003")
    run_dir = root.parent / "run"
    proc = run_train(run_dir, *TAGGING, *SMALL, f"data.root={root}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, root


def test_tagging_scores_entities_and_writes_a_conlleval_file(conll_run):
    run_dir, root = conll_run
    summary = summary_of(run_dir)
    assert summary["monitor"] == {"metric": "val/f1", "mode": "max"}
    best, test = summary["best"], summary["test"]
    assert {"val/f1", "val/precision", "val/recall", "val/acc", "val/f1_LOC", "val/f1_PER"} <= set(best)
    assert best["val/f1"] > 0.5, best  # names and places from a small set: learnable in 24 steps
    ckpt = summary["checkpoints"]["best"]
    assert torch.load(ckpt, weights_only=True, map_location="cpu")["vitrain"]["class_names"][:3] == [
        "O", "B-LOC", "I-LOC",
    ]  # fmt: skip
    out = run_dir.parent / "predict"
    proc = run_train(out, "mode=predict", f"ckpt_path={ckpt}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = (out / "predictions.conll").read_text().split("\n\n")
    source = [
        s for s in (root / "eng.testb").read_text().split("\n\n") if s and not s.startswith("-DOCSTART-")
    ]
    assert len([s for s in written if s.strip()]) == len(source)
    gold, predicted = [], []
    for sentence, original in zip(written, source, strict=False):
        rows = [line.split() for line in sentence.strip().splitlines()]
        assert [r[:4] for r in rows] == [line.split() for line in original.strip().splitlines()]
        gold.append([r[3] for r in rows])
        predicted.append([r[4] for r in rows])
    # the file is IOB1 again, and conlleval's F1 of it is the test F1 of the same checkpoint
    assert any(tag.startswith("I-") for tags in predicted for tag in tags)
    assert f1_score(gold, predicted) == pytest.approx(test["test/f1"], abs=1e-5)
    # a file of words alone (one column) is tagged too
    words = run_dir.parent / "words.txt"
    words.write_text("Ada\nLovelace\nvisits\nSpain\n.\n\nAlan\nTuring\ncalls\nLyon\nItaly\n.\n")
    proc = run_train(
        run_dir.parent / "predict_words",
        "mode=predict",
        f"ckpt_path={ckpt}",
        "data=conll",
        f"data.predict={words}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [
        line.split()
        for line in (run_dir.parent / "predict_words" / "predictions.conll").read_text().splitlines()
    ]
    assert [r[0] for r in rows if r] == (words.read_text().split()) and all(len(r) == 2 for r in rows if r)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory) -> Path:
    files = write_instruction_files(tmp_path_factory.mktemp("sft") / "alpaca", count=48)
    run_dir = files["json"].parent.parent / "run"
    proc = run_train(run_dir, *SFT, *SMALL, f"data.train={files['json']}", f"data.val={files['jsonl']}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_instruction_tuning_lowers_response_loss_and_generates_a_response(sft_run, capsys):
    summary = summary_of(sft_run)
    assert summary["monitor"] == {"metric": "val/loss", "mode": "min"}
    best, test = summary["best"], summary["test"]
    assert best["val/ppl"] == pytest.approx(torch.tensor(best["val/loss"]).exp().item(), rel=1e-4)
    assert {"test/loss", "test/ppl"} <= set(test)
    with open(sft_run / "csv" / "metrics.csv") as f:
        losses = [float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")]
    assert len(losses) == 5 and losses[-1] < losses[0] - 0.5, losses
    ckpt = summary["checkpoints"]["best"]
    net, tokenizer, template = load_generator(ckpt)
    assert template.no_input == ALPACA["no_input"] and tokenizer.token_to_id("<|start|>") is None
    answer = respond(net, tokenizer, template, "Add the two numbers.", "3 4", max_new_tokens=6, top_k=1)
    assert "###" not in answer  # the response alone, the template stays out
    args = [
        ckpt,
        "--prompt",
        "Add the two numbers.",
        "--input",
        "3 4",
        "--top-k",
        "1",
        "--max-new-tokens",
        "6",
    ]
    assert generate_main(args) == 0
    assert capsys.readouterr().out.strip() == answer.strip()
    assert generate_main([ckpt, "--prompt", "Add", "--raw", "--top-k", "1", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("Add")


def test_instruction_tuning_from_a_vitrain_gpt_checkpoint(tmp_path):
    """init_from: the checkpoint's tokenizer (no GPT-1 token added) and its weights, output layer kept
    (lr 0 keeps them: how docs/language.md measures the response perplexity before tuning)."""
    files = write_instruction_files(tmp_path / "alpaca")
    texts = [r["instruction"] + r["input"] + r["output"] for r in json.loads(files["json"].read_text())]
    tok = train_tokenizer(texts * 4, "causal", 300)
    torch.manual_seed(0)
    gpt = create_gpt("gpt_tiny", tok.get_vocab_size(), n_layer=1, n_embd=32, n_head=2, n_positions=160)
    meta = {"net": {"_target_": "vitrain.models.create_gpt", "name": "gpt_tiny", "n_layer": 1, "n_embd": 32,
                    "n_head": 2, "n_positions": 160, "vocab_size": tok.get_vocab_size()}}  # fmt: skip
    state = {f"net.{k}": v for k, v in gpt.state_dict().items()}
    torch.save(
        {"state_dict": state, "vitrain": meta, "vitrain_tokenizer": tok.to_str()}, tmp_path / "gpt.ckpt"
    )
    run_dir = tmp_path / "run"
    overrides = [a for a in SFT if not a.startswith(("optimizer.lr", "trainer.max_epochs"))]
    proc = run_train(run_dir, *overrides, "optimizer.lr=0.0", "trainer.max_epochs=1", "data.template=plain",
                     f"model.net.init_from={tmp_path / 'gpt.ckpt'}", f"data.train={files['json']}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = summary_of(run_dir)
    ckpt = torch.load(summary["checkpoints"]["last"], weights_only=True, map_location="cpu")
    assert ckpt["vitrain_tokenizer"] == tok.to_str() and ckpt["vitrain_gpt_config"]["n_layer"] == 1
    assert torch.equal(ckpt["state_dict"]["net.wte.weight"], gpt.wte.weight)
    net, _, template = load_generator(summary["checkpoints"]["last"])
    assert template.no_input == "{instruction}\n"
    with torch.no_grad():
        torch.testing.assert_close(net(torch.tensor([[5, 6, 7]])), gpt.eval()(torch.tensor([[5, 6, 7]])))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("columns", "eng.train:5 has 3 column(s) where the file's lines have 4"),
        ("scheme", "starts an entity with 'I-PER', which IOB2 never does: the file is IOB1"),
        ("response", "alpaca_data.json:7: the record has no response ('output' missing or empty"),
        ("template", "data.template_no_input='Q:' lacks {instruction}"),
    ],
)
def test_bad_tagging_and_instruction_input_is_one_message(tmp_path, case, message):
    if case in ("columns", "scheme"):
        root = write_conll_distribution(tmp_path / "conll2003")
        if case == "columns":
            lines = (root / "eng.train").read_text().splitlines()
            lines[4] = " ".join(lines[4].split()[:3])
            (root / "eng.train").write_text("\n".join(lines) + "\n")
        args = [*TAGGING, f"data.root={root}", *(["data.scheme=iob2"] if case == "scheme" else [])]
    else:
        files = write_instruction_files(tmp_path / "alpaca")
        if case == "response":
            records = json.loads(files["json"].read_text())
            del records[1]["output"]
            files["json"].write_text(json.dumps(records, indent=4))
        args = [
            *SFT,
            f"data.train={files['json']}",
            *(["data.template_no_input=Q:"] if case == "template" else []),
        ]
    run_dir = tmp_path / "run"
    proc = run_train(run_dir, *args, *SMALL)
    assert proc.returncode == 1
    assert_user_error(proc, message)
    summary = summary_of(run_dir)
    assert summary["status"] == "failed" and message in summary["error"]
