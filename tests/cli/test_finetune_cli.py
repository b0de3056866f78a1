"""Fine-tuning from the command line: a GPT pretraining run's checkpoint fine-tuned on the embedded
classification task (its tokenizer and weights reused), and each bad input as one message (exit 1, a
failed summary.json, no traceback), among them a Hugging Face head whose label names are not the data's."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from tests.helpers import assert_user_error, run_train, write_glue_task
from vitrain.data.finetune import TOKENIZER_KEY
from vitrain.data.tokenizer import train_tokenizer
from vitrain.models import create_gpt

pytestmark = pytest.mark.xdist_group("finetune_cli")

SMALL = ["+model.net.n_layer=1", "+model.net.n_embd=32", "+model.net.n_head=2", "+model.net.n_positions=64"]
CLS = ["data=text_classification", "data.max_length=48", "data.batch_size=16", "data.vocab_size=300",
       "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1"]  # fmt: skip


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    """A tiny GPT pretraining run on the embedded corpus (data=text): its last.ckpt."""
    run_dir = tmp_path_factory.mktemp("pretrain") / "gpt"
    proc = run_train(run_dir, "model=gpt_tiny", *SMALL, "data=text", "data.vocab_size=300", "data.seq_len=32",
                     "data.batch_size=8", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
                     "trainer.limit_val_batches=1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir / "checkpoints" / "last.ckpt"


def test_a_pretraining_checkpoint_is_fine_tuned_with_its_tokenizer(tmp_path, gpt_run):
    proc = run_train(tmp_path / "cls", "model=gpt_tiny_cls", *CLS, f"model.net.init_from={gpt_run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"model.net.init_from={gpt_run} loaded into the GPT trunk" in proc.stderr
    assert "3 token embedding rows added" in proc.stderr
    pretrained = torch.load(gpt_run, weights_only=True)
    finetuned = torch.load(tmp_path / "cls" / "checkpoints" / "last.ckpt", weights_only=True)
    base = json.loads(pretrained[TOKENIZER_KEY])["model"]["vocab"]
    tokens = json.loads(finetuned[TOKENIZER_KEY])["model"]["vocab"]
    assert all(tokens[t] == i for t, i in base.items())  # the pretraining vocabulary, ids unchanged
    wte = finetuned["state_dict"]["net.trunk.wte.weight"]
    assert wte.shape[0] == len(base) + 3
    assert finetuned["vitrain"]["class_names"] == sorted(finetuned["vitrain"]["class_names"])
    assert len(finetuned["vitrain"]["class_names"]) == 8
    # a GPT checkpoint given to a BERT model: one message naming both
    bad = run_train(tmp_path / "bad", "model=bert_tiny_cls", *CLS, f"model.net.init_from={gpt_run}")
    assert_user_error(bad, "holds vitrain.models.create_gpt (name=gpt_tiny, model=gpt_tiny), whose tokenizer lacks "
                      "[PAD], [UNK], [CLS], [SEP], [MASK]: it is not a BERT checkpoint")  # fmt: skip


def bad_inputs(tmp_path, case):
    """(overrides, message) of each bad input, with the files it needs (the Hugging Face models: only
    ``case``'s)."""
    (tmp_path / "train.csv").write_text(
        "sentence,label\n" + "".join(f"a b c {i},{i % 2}\n" for i in range(20))
    )
    (tmp_path / "val.csv").write_text("sentence,label\na b,0\nb c,7\n")
    write_glue_task(tmp_path / "glue", "SST-2")
    (tmp_path / "glue" / "RTE").symlink_to(tmp_path / "glue" / "SST-2")
    tok = train_tokenizer(["a b c d e f g"] * 20, "causal", 300)
    gpt = create_gpt("gpt_tiny", tok.get_vocab_size(), n_layer=1, n_embd=32, n_head=2, n_positions=64)
    meta = {"net": {"_target_": "vitrain.models.create_gpt", "name": "gpt_tiny", "n_layer": 1, "n_embd": 32,
                    "n_head": 2, "n_positions": 64}}  # fmt: skip
    state = {f"net.{k}": v for k, v in gpt.state_dict().items()}
    torch.save({"state_dict": state, "vitrain": meta, TOKENIZER_KEY: tok.to_str()}, tmp_path / "gpt.ckpt")
    other = train_tokenizer(["x y z w"] * 20, "causal", 280)
    other.save(str(tmp_path / "other.json"))
    train = f"data.train={tmp_path / 'train.csv'}"
    # a checkpoint of another task (no token embedding)
    vit = {"net.patch_embed.proj.weight": torch.zeros(4, 3, 2, 2)}
    torch.save({"state_dict": vit, "vitrain": {"net": {"_target_": "vitrain.models.create_vit", "name": "vit_ti16"}}},
               tmp_path / "vit.ckpt")  # fmt: skip
    # Hugging Face GPT-2 classifiers: one with another vocabulary, one whose head names other labels
    hf = dict(n_embd=32, n_layer=1, n_head=2, n_positions=64, num_labels=2, pad_token_id=0)
    if case == "hf_vocabulary":
        config = transformers.GPT2Config(vocab_size=101, **hf)
        transformers.GPT2ForSequenceClassification(config).save_pretrained(tmp_path / "hf_vocab")
    if case == "head_labels":
        named = transformers.GPT2Config(vocab_size=other.get_vocab_size(), id2label={0: "yes", 1: "no"}, **hf)
        transformers.GPT2ForSequenceClassification(named).save_pretrained(tmp_path / "hf_head")
    text = "data.text_column=sentence"
    return {
        "label_column": ([train, "data.text_column=sentence", "data.label_column=target"],
                         "has no 'target' column (data.label_column=target); the columns found are sentence, label"),
        "text_column": ([train], "has no 'text' column (data.text_column=text); the columns found are sentence, label"),
        "unseen_label": ([train, f"data.val={tmp_path / 'val.csv'}", "data.text_column=sentence"],
                         "val.csv:3: label '7' never occurs in the training split (its labels: 0, 1)"),
        "pair_task": (["data=glue", "data.task=rte", f"data.root={tmp_path / 'glue'}"],
                      "data.task=rte (RTE, a sentence-pair task) needs at least 4"),
        "vocabulary": ([f"model.net.init_from={tmp_path / 'gpt.ckpt'}", f"data.tokenizer={tmp_path / 'other.json'}"],
                       f"data.tokenizer={tmp_path / 'other.json'} ({other.get_vocab_size()} tokens) is not the tokenizer "
                       f"model.net.init_from={tmp_path / 'gpt.ckpt'} was trained with ({tok.get_vocab_size()} tokens"),
        "num_labels": (["data.num_labels=3"], "data.num_labels=3 but the training data has 8 labels"),
        "model_num_labels": (["model.net.num_labels=3"],
                             "model.net.num_labels=3 but model.net.label_names (null: the data's labels) has 8"),
        "other_task": ([f"model.net.init_from={tmp_path / 'vit.ckpt'}"],
                       f"model.net.init_from={tmp_path / 'vit.ckpt'} holds vitrain.models.create_vit (name=vit_ti16, "
                       "model=None), not a GPT (it has no token embedding)"),
        "hf_vocabulary": ([f"model.net.hf_weights={tmp_path / 'hf_vocab'}", f"data.tokenizer={tmp_path / 'other.json'}"],
                          f"the tokenizer has {other.get_vocab_size() + 3} tokens but the token embedding of "
                          f"model.net.hf_weights={tmp_path / 'hf_vocab'} has 101 rows"),
        "head_labels": ([train, text, f"model.net.hf_weights={tmp_path / 'hf_head'}",
                         f"data.tokenizer={tmp_path / 'other.json'}"],
                        f"model.net.hf_weights={tmp_path / 'hf_head'}: its head predicts the labels yes, no (in row "
                        "order) but the data's labels are 0, 1"),
    }  # fmt: skip


@pytest.mark.parametrize("case", ["label_column", "text_column", "unseen_label", "pair_task", "vocabulary",
                                  "num_labels", "model_num_labels", "other_task", "hf_vocabulary", "head_labels"])  # fmt: skip
def test_bad_input_is_one_message_and_a_failed_summary(tmp_path, case):
    overrides, message = bad_inputs(tmp_path, case)[case]
    proc = run_train(tmp_path / "run", "model=gpt_tiny_cls", *CLS, *overrides)
    assert_user_error(proc, message)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and message in summary["error"]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resuming_with_another_tokenizer_is_refused(tmp_path, gpt_run):
    """A rebuilt token cache may hold a retrained tokenizer (training is not reproducible bit for bit):
    continuing a checkpoint with it would read the wrong embedding rows."""
    from vitrain.data.text import embedded_documents

    other = train_tokenizer([doc[::-1] for doc in embedded_documents()], "causal", 300)
    other.save(str(tmp_path / "other.json"))
    proc = run_train(tmp_path / "resume", "model=gpt_tiny", *SMALL, "data=text", f"data.tokenizer={tmp_path / 'other.json'}",
                     "data.seq_len=32", "data.batch_size=8", "trainer.max_epochs=2", "trainer.limit_train_batches=4",
                     "trainer.limit_val_batches=1", f"ckpt_path={gpt_run}")  # fmt: skip
    written = tmp_path / "resume" / "checkpoint_tokenizer.json"
    assert_user_error(
        proc, "the checkpoint was trained with another tokenizer than the data's", f"data.tokenizer={written}"
    )
    assert json.loads(written.read_text()) == json.loads(
        torch.load(gpt_run, weights_only=True)[TOKENIZER_KEY]
    )


def test_a_table_run_predicts_a_file_without_labels(tmp_path):
    """data=text_classification: mode=predict labels data.predict (no label column) with the label
    names, in the file's order (predictions.tsv)."""
    rows = [f"{'yes' if i % 2 else 'no'} w{i % 5} x,{'pos' if i % 2 else 'neg'}\n" for i in range(24)]
    (tmp_path / "train.csv").write_text("sentence,label\n" + "".join(rows))
    (tmp_path / "new.csv").write_text("sentence\nyes w1 x\nno w2 x\nyes w3 x\n")
    table = [f"data.train={tmp_path / 'train.csv'}", "data.text_column=sentence", "data.batch_size=8"]
    proc = run_train(tmp_path / "fit", "model=gpt_tiny_cls", *SMALL, *CLS, *table)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = json.loads((tmp_path / "fit" / "summary.json").read_text())["checkpoints"]["last"]
    out = tmp_path / "predict"
    proc = run_train(
        out,
        "mode=predict",
        f"ckpt_path={ckpt}",
        "data=text_classification",
        f"data.predict={tmp_path / 'new.csv'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (out / "predictions.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and [line.split("\t")[0] for line in lines[1:]] == ["0", "1", "2"]
    assert {line.split("\t")[1] for line in lines[1:]} <= {"neg", "pos"}
