"""Language tasks: BERT masking statistics, schedules, parameter groups, and GPT / BERT runs end to
end (vocabulary from the data, checkpoints with the tokenizer, generation, clear errors)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.helpers import assert_user_error, run_train, write_txt_corpus
from vitrain.data.text import TextDataModule
from vitrain.errors import UserError
from vitrain.inference.text import generate_text, load_gpt
from vitrain.models import create_bert, create_gpt
from vitrain.tasks.language import IGNORE_INDEX, check_data_fits, mask_tokens
from vitrain.tasks.optim import param_groups, warmup_decay
from vitrain.tools.generate import main as generate_main

pytestmark = pytest.mark.xdist_group("language")  # one worker builds the module-scoped gpt_run

TINY_GPT = ["model=gpt_tiny", "+model.net.n_layer=1", "+model.net.n_embd=32", "+model.net.n_head=2",
            "+model.net.n_positions=64"]  # fmt: skip
TINY_BERT = ["model=bert_tiny", "+model.net.n_layer=1", "+model.net.n_embd=32", "+model.net.n_head=2",
             "+model.net.n_positions=64"]  # fmt: skip
FAST = ["data=text", "data.vocab_size=300", "data.seq_len=32", "data.batch_size=8", "optimizer.lr=3e-3",
        "scheduler.warmup_epochs=0", "trainer.max_epochs=3", "trainer.limit_train_batches=12",
        "trainer.log_every_n_steps=4"]  # fmt: skip


def val_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")]


# ---------------------------------------------------------------- masking
def test_masking_statistics_on_a_large_sample():
    torch.manual_seed(0)
    ids = torch.randint(10, 1000, (256, 512))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True  # [CLS] ... [SEP]
    special[:, 400:] = True  # padding
    ids[:, 0], ids[:, 400:] = 2, 0
    generator = torch.Generator().manual_seed(1)
    inputs, labels = mask_tokens(ids, special, vocab_size=1000, mask_id=4, generator=generator)
    selected = labels != IGNORE_INDEX
    candidates = (~special).sum().item()
    assert not selected[special].any()
    assert abs(selected.sum().item() / candidates - 0.15) < 0.005
    assert torch.equal(labels[selected], ids[selected])
    n = selected.sum().item()
    masked = (inputs == 4) & selected
    unchanged = (inputs == ids) & selected
    randomised = selected & ~masked & ~unchanged
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    assert abs(unchanged.sum().item() / n - 0.1) < 0.01  # random draws equal to the original are rare
    assert abs(randomised.sum().item() / n - 0.1) < 0.01
    assert torch.equal(inputs[~selected], ids[~selected])
    again, _ = mask_tokens(ids, special, 1000, 4, torch.Generator().manual_seed(1))
    assert torch.equal(again, inputs)


def test_warmup_decay_schedules():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cosine = warmup_decay(opt, total_steps=100, steps_per_epoch=10, warmup_epochs=1, min_lr_ratio=0.1)
    factor = cosine.lr_lambdas[0]
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.55) and factor(100) == pytest.approx(0.1)
    linear = warmup_decay(opt, 100, 10, warmup_epochs=0, decay="linear", min_lr_ratio=0.0).lr_lambdas[0]
    assert linear(0) == 1.0 and linear(50) == pytest.approx(0.5) and linear(100) == 0.0
    with pytest.raises(UserError, match="scheduler.decay"):
        warmup_decay(opt, 100, 10, decay="step")


def test_weight_decay_on_embeddings_not_on_biases_and_norms():
    for net in (create_gpt("gpt_tiny", 50, n_layer=1, n_embd=32, n_head=2),
                create_bert("bert_tiny", 50, n_layer=1, n_embd=32, n_head=2, nsp=True)):  # fmt: skip
        decay, no_decay = param_groups(net)
        names = {id(p): n for n, p in net.named_parameters()}
        decayed = {names[id(p)] for p in decay["params"]}
        assert decayed and all(n.endswith("weight") and "norm" not in n and "ln" not in n for n in decayed)
        # nanoGPT and google-research/bert decay the embedding tables (GPT's wte is the tied head)
        embeddings = {
            n for n, _ in net.named_parameters() if "embeddings" in n or n in ("wte.weight", "wpe.weight")
        }
        assert embeddings and embeddings <= decayed
        assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))


def test_tokenizer_model_mismatches_are_user_errors(tmp_path):
    data = TextDataModule(files=str(write_txt_corpus(tmp_path / "c", count=10)), vocab_size=300, seq_len=32,
                          cache_dir=str(tmp_path / "cache"))  # fmt: skip
    with pytest.raises(UserError, match=r"tokenizer has 300 tokens but model.net.vocab_size=100"):
        check_data_fits(data, create_gpt("gpt_tiny", 100, n_layer=1), "causal")
    with pytest.raises(UserError, match=r"data.seq_len=32 .* model.net.n_positions=16"):
        check_data_fits(data, create_gpt("gpt_tiny", 300, n_layer=1, n_positions=16), "causal")
    check_data_fits(data, create_gpt("gpt_tiny", 320, n_layer=1), "causal")  # a padded vocabulary fits
    with pytest.raises(UserError, match="data.packing=causal"):
        check_data_fits(data, create_bert("bert_tiny", 300, n_layer=1), "masked")
    data.packing = "masked"
    with pytest.raises(UserError, match="model.net.nsp=True but data.nsp=False"):
        check_data_fits(data, create_bert("bert_tiny", 300, n_layer=1, nsp=True), "masked")


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_txt_corpus(tmp_path_factory.mktemp("text") / "corpus", count=40, sentences=20)


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory, corpus) -> Path:
    run_dir = tmp_path_factory.mktemp("gpt") / "run"
    proc = run_train(run_dir, *TINY_GPT, *FAST, f"data.files={corpus}", "callbacks=language",
                   "callbacks.samples.max_new_tokens=8", "callbacks.progress_bar=null")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return run_dir


def test_gpt_run_lowers_validation_loss_and_records_tokens(gpt_run):
    losses = val_losses(gpt_run)
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.5, losses
    summary = json.loads((gpt_run / "summary.json").read_text())
    assert summary["monitor"] == {"metric": "val/loss", "mode": "min"}
    assert summary["best"]["val/ppl"] == pytest.approx(
        torch.tensor(summary["best"]["val/loss"]).exp().item(), rel=1e-4
    )
    assert summary["throughput"]["tokens_per_s"] == pytest.approx(32 * summary["throughput"]["samples_per_s"])
    assert summary["train_samples_per_s"] > 0
    resolved = (gpt_run / "resolved_config.yaml").read_text()
    assert "vocab_size: 300" in resolved and "packing: causal" in resolved  # flowed from the data
    assert (gpt_run / "tokenizer.json").is_file()
    assert (gpt_run / "samples.txt").read_text().count("=== epoch") == 3


def test_generation_from_the_checkpoint_is_deterministic(gpt_run, capsys):
    ckpt = gpt_run / "checkpoints" / "last.ckpt"
    net, tokenizer = load_gpt(ckpt)
    assert net.vocab_size == 300 and tokenizer.get_vocab_size() == 300
    greedy = [generate_text(net, tokenizer, "The cat", 12, temperature=1.0, top_k=1, seed=s) for s in (0, 1)]
    assert greedy[0] == greedy[1] and greedy[0].startswith("The cat") and len(greedy[0]) > len("The cat")
    assert generate_main([str(ckpt), "--prompt", "A dog", "--top-k", "1", "--max-new-tokens", "6"]) == 0
    first = capsys.readouterr().out
    assert generate_main([str(ckpt), "--prompt", "A dog", "--top-k", "1", "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out == first and first.startswith("A dog")
    sampled = [generate_text(net, tokenizer, "", 10, temperature=1.0, top_k=20, seed=7) for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_generate_rejects_a_missing_or_foreign_checkpoint(tmp_path, capsys):
    assert generate_main([str(tmp_path / "none.ckpt")]) == 1
    assert "no such checkpoint file" in capsys.readouterr().err
    torch.save(
        {"state_dict": {}, "vitrain": {"net": {"_target_": "vitrain.models.create_vit"}}},
        tmp_path / "vit.ckpt",
    )
    assert generate_main([str(tmp_path / "vit.ckpt")]) == 1
    assert "not a GPT checkpoint" in capsys.readouterr().err


def test_bert_run_with_next_sentence_prediction(tmp_path, corpus):
    run_dir = tmp_path / "run"
    proc = run_train(run_dir, *TINY_BERT, *FAST, f"data.files={corpus}", "data.vocab_size=120",
                   "model.net.nsp=true", "data.nsp=true", "model.net.dropout=0.0")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    last = summary["last"]
    assert {"val/loss", "val/acc", "val/ppl", "val/nsp_acc"} <= set(last)
    losses = val_losses(run_dir)
    assert losses[-1] < losses[0], losses
    assert "packing: masked" in (run_dir / "resolved_config.yaml").read_text()
    ckpt = torch.load(summary["checkpoints"]["last"], map_location="cpu", weights_only=True)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(ckpt["vitrain_tokenizer"])  # a small corpus: WordPiece stops below 120
    assert ckpt["vitrain"]["net"]["vocab_size"] == tokenizer.get_vocab_size() <= 120
    assert tokenizer.token_to_id("[MASK]") is not None


def test_bert_training_skips_the_accuracy_that_validation_computes():
    """The argmax over the vocabulary serves only val/acc: a training step does not pay for it."""
    from functools import partial

    from vitrain.tasks import MaskedLMTask

    torch.manual_seed(0)
    net = create_bert("bert_tiny", vocab_size=64, n_layer=1, n_embd=32, n_head=2, dropout=0.0)
    task = MaskedLMTask(net, optimizer=partial(torch.optim.AdamW, lr=1e-3), mask_prob=0.5)
    task.special_ids = {"pad": 0, "cls": 1, "sep": 2, "mask": 3}
    batch = {"input_ids": torch.randint(4, 64, (2, 16))}
    assert set(task.losses(batch, seed=0)) == {"mlm"}
    out = task.losses(batch, seed=0, hits=True)
    inputs, labels = task.mask(batch["input_ids"], 0)
    selected = labels != IGNORE_INDEX
    logits, _ = net(inputs, None, None, selected)
    assert torch.equal(out["hits"], (logits.argmax(-1) == labels[selected]).float())
    assert torch.equal(out["mlm"], task.losses(batch, seed=0)["mlm"])


def test_cli_missing_corpus_is_one_clear_message(tmp_path):
    proc = run_train(tmp_path / "run", "model=gpt_tiny", "data=text", "data.files=/nonexistent")
    assert_user_error(proc, "data.files=/nonexistent: no such file or folder")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


@pytest.mark.parametrize(
    ("experiment", "net", "seq_len", "lr"),
    [("gpt2_124m_owt", "gpt2_124m", 1024, 6e-4), ("bert_base", "bert_base", 128, 1e-4),
     ("bert_base_512", "bert_base", 512, 1e-4), ("gpt_cpu", "gpt_tiny", 128, 2e-3),
     ("bert_cpu", "bert_tiny", 128, 5e-4)],
)  # fmt: skip
def test_recipes_compose(experiment, net, seq_len, lr):
    from hydra.utils import get_class

    from tests.helpers import compose_train

    cfg = compose_train(f"experiment={experiment}")
    assert cfg.model.net.name == net and cfg.data.seq_len == seq_len and cfg.optimizer.lr == lr
    assert cfg.data.packing == get_class(cfg.model._target_).packing
    assert cfg.scheduler._target_ in (
        "vitrain.tasks.optim.warmup_cosine",
        "vitrain.tasks.optim.warmup_linear",
    )
    if cfg.data.require_files:  # a real-corpus recipe without data.files fails clearly
        with pytest.raises(UserError, match="data.files is required"):
            TextDataModule(files=None, require_files=True)
