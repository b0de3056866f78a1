"""The fine-tuning data plumbing (vitrain.data.finetune): formatting, padding, tokenizer sources, the
cache, truncation counts, label checks; data=text_classification's tables."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from vitrain.data.finetune import (
    GPT1_TOKENS,
    IGNORE_INDEX,
    TOKENIZER_KEY,
    PadCollate,
    join_segments,
    resolve_tokenizer_source,
    truncate_pair,
)
from vitrain.data.text_classification import TextClassificationDataModule, help_topic_passages
from vitrain.data.tokenizer import train_tokenizer
from vitrain.errors import UserError

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


def write_csv(path, rows, header=("text", "label")):
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n")
    return path


def sentences(n, seed=0, labels=("pos", "neg")):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        words = [
            WORDS[j]
            for j in torch.randint(len(WORDS), (int(torch.randint(3, 9, (1,), generator=g)),), generator=g)
        ]
        out.append((" ".join(words), labels[i % len(labels)]))
    return out


def data(tmp_path, packing="masked", **kwargs):
    args = dict(vocab_size=120, max_length=16, batch_size=4, cache_dir=str(tmp_path / "cache"))
    return TextClassificationDataModule(packing, **{**args, **kwargs})


def test_bert_and_gpt_formats_and_longest_first_truncation():
    ids = {"cls": 1, "sep": 2, "start": 7, "delim": 8, "extract": 9}
    tokens, types, cut = join_segments([10, 11], [20], "masked", ids, 16)
    assert tokens == [1, 10, 11, 2, 20, 2] and types == [0, 0, 0, 0, 1, 1] and not cut
    tokens, types, cut = join_segments([10, 11], [20], "causal", ids, 16)
    assert tokens == [7, 10, 11, 8, 20, 9] and types == [0] * 6
    assert join_segments([10, 11, 12], None, "causal", ids, 4) == ([7, 10, 11, 9], [0] * 4, True)
    # the longer text loses one token at a time (google-research/bert _truncate_seq_pair)
    assert truncate_pair([1, 2, 3, 4, 5], [6, 7], 5) == ([1, 2, 3], [6, 7], True)
    assert truncate_pair([1, 2], [3, 4, 5, 6], 4) == ([1, 2], [3, 4], True)


def test_batches_are_padded_to_their_longest_sequence():
    items = [
        {
            "input_ids": torch.tensor([5, 6, 7]),
            "token_type_ids": torch.tensor([0, 0, 1]),
            "labels": torch.tensor(1),
        },
        {"input_ids": torch.tensor([5]), "token_type_ids": torch.tensor([0]), "labels": torch.tensor(0)},
    ]
    batch = PadCollate(pad_id=3)(items)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 3, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1], [0, 0, 0]]
    assert batch["labels"].tolist() == [1, 0] and batch["input_ids"].dtype == torch.int64
    tagged = [
        {"input_ids": torch.tensor([5, 6]), "labels": torch.tensor([2, 4])},
        {"input_ids": torch.tensor([5]), "labels": torch.tensor([1])},
    ]
    assert PadCollate(0)(tagged)["labels"].tolist() == [[2, 4], [1, IGNORE_INDEX]]
    assert PadCollate(0, pad_to=6)(tagged)["input_ids"].shape == (2, 6)


def test_csv_classification_cache_truncation_and_labels(tmp_path, caplog, monkeypatch):
    train = write_csv(tmp_path / "train.csv", sentences(24) + [(" ".join(WORDS * 3), "pos")])
    val = write_csv(tmp_path / "val.csv", sentences(6, seed=1))
    dm = data(tmp_path, train=str(train), val=str(val), test_fraction=0.2)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert dm.cache_built and dm.classes == ["neg", "pos"] and dm.model_sizes()["num_labels"] == 2
    assert len(dm.train_set) == 20 and len(dm.val_set) == 6 and len(dm.test_set) == 5
    assert sum(dm.meta["truncated"].values()) == 1 and "1 of 20 train sequences were longer" in caplog.text
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "index"}
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == lengths.max() <= 16  # padded to the batch's longest
    assert (batch["input_ids"][:, 0] == dm.special_ids["cls"]).all()
    again = data(tmp_path, train=str(train), val=str(val), test_fraction=0.2)
    again.setup()
    assert not again.cache_built and again.cache_path == dm.cache_path
    # once per node: the other local ranks reuse it, and never tokenize a cache that is not there
    monkeypatch.setenv("LOCAL_RANK", "1")
    rank1 = data(tmp_path, train=str(train), val=str(val), test_fraction=0.2)
    rank1.setup()
    assert not rank1.cache_built and rank1.cache_path == dm.cache_path
    with pytest.raises(UserError, match="local rank 1 waited 0.1 s for local rank 0 to build the cache"):
        data(tmp_path, train=str(train), val=str(val), max_length=20, cache_wait_s=0.1).setup()
    monkeypatch.delenv("LOCAL_RANK")
    with pytest.raises(UserError, match=r"data.num_labels=3 but the training data has 2 labels \(neg, pos\)"):
        data(tmp_path, train=str(train), val=str(val), num_labels=3).setup()


def test_label_column_regression_and_pairs(tmp_path):
    rows = [
        (a, b, f"{i / 7:.2f}")
        for i, ((a, _), (b, _)) in enumerate(zip(sentences(12), sentences(12, 2), strict=True))
    ]
    train = write_csv(tmp_path / "pairs.csv", rows, header=("first", "second", "score"))
    dm = data(
        tmp_path, train=str(train), text_column="first", text_pair_column="second", label_column="score"
    )
    dm.setup()
    assert dm.regression and dm.classes == [] and dm.model_sizes()["num_labels"] == 1
    item = dm.train_set[0]
    assert item["labels"].dtype == torch.float32 and 1 in item["token_type_ids"].tolist()
    with pytest.raises(
        UserError,
        match=r"has no 'label' column \(data.label_column=label\); the columns found are first, second, score",
    ):
        data(tmp_path, train=str(train), text_column="first").setup()
    with pytest.raises(
        UserError, match=r"has no 'sentence' column .* the columns found are first, second, score"
    ):
        data(tmp_path, train=str(train), text_column="sentence", label_column="score").setup()
    with pytest.raises(
        UserError, match="has single texts but data.text_pair_column=other asks for text pairs"
    ):
        data(
            tmp_path, train=str(train), text_column="first", text_pair_column="other", label_column="score"
        ).setup()


def test_a_val_label_training_never_had_names_file_and_line(tmp_path):
    train = write_csv(tmp_path / "train.csv", sentences(10))
    val = write_csv(tmp_path / "val.csv", [("alpha beta", "pos"), ("gamma", "maybe")])
    with pytest.raises(
        UserError,
        match=r"val.csv:3: label 'maybe' never occurs in the training split \(its labels: neg, pos\)",
    ):
        data(tmp_path, train=str(train), val=str(val)).setup()


def test_jsonl_parquet_and_tsv_tables(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sentences(12)
    (tmp_path / "a.jsonl").write_text(
        "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows)
    )
    pq.write_table(
        pa.table({"text": [t for t, _ in rows], "label": [lab for _, lab in rows]}), tmp_path / "a.parquet"
    )
    (tmp_path / "a.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows))
    sizes = []
    for name in ("a.jsonl", "a.parquet", "a.tsv"):
        dm = data(tmp_path, train=str(tmp_path / name), test_fraction=0)
        dm.setup()
        sizes.append((len(dm.train_set), len(dm.val_set), dm.classes, dm.train_set[3]["input_ids"].tolist()))
    assert sizes[0] == sizes[1] == sizes[2]


def test_tokenizer_sources(tmp_path):
    assert resolve_tokenizer_source(None, None, None) == ("train", None)
    assert resolve_tokenizer_source(None, "run/last.ckpt", None) == ("checkpoint", "run/last.ckpt")
    with pytest.raises(UserError, match="is not a vitrain .ckpt, so it carries no tokenizer"):
        resolve_tokenizer_source(None, "enc.safetensors", None)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(UserError, match="is a weight file without tokenizer files: give data.tokenizer"):
        resolve_tokenizer_source(None, None, str(weights))
    folder = tmp_path / "hf_model"  # a Hugging Face model folder: its tokenizer files
    folder.mkdir()
    (folder / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n"
    )
    assert resolve_tokenizer_source(None, None, str(folder)) == ("file", str(folder))
    train = write_csv(tmp_path / "train.csv", sentences(12))
    dm = data(tmp_path, train=str(train), hf_weights=str(folder))
    assert dm.vocab_size == 5 + len(WORDS) and dm.tokenizer.encode("alpha beta").tokens == ["alpha", "beta"]
    # a pretraining checkpoint's tokenizer is the fine-tuning data's (GPT: plus GPT-1's tokens)
    tok = train_tokenizer([t for t, _ in sentences(40)], "causal", 300)
    ckpt = tmp_path / "gpt.ckpt"
    torch.save({"state_dict": {}, TOKENIZER_KEY: tok.to_str()}, ckpt)
    train = write_csv(tmp_path / "train.csv", sentences(12))
    dm = data(tmp_path, packing="causal", train=str(train), init_from=str(ckpt))
    dm.setup()
    assert dm.vocab_size == tok.get_vocab_size() + 3
    assert [dm.tokenizer.token_to_id(t) for t in GPT1_TOKENS] == [tok.get_vocab_size() + i for i in range(3)]
    assert dm.tokenizer.encode("alpha beta").ids == tok.encode("alpha beta").ids
    item = dm.train_set[0]["input_ids"].tolist()
    assert (
        item[0] == dm.special_ids["start"]
        and item[-1] == dm.special_ids["extract"]
        and "token_type_ids" not in dm.train_set[0]
    )
    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    with pytest.raises(
        UserError, match=r"bare.ckpt holds a network .* and carries no tokenizer .* data.tokenizer="
    ):
        data(tmp_path, packing="causal", train=str(train), init_from=str(tmp_path / "bare.ckpt")).setup()


def test_embedded_help_topic_task_labels_are_true_of_the_text():
    from pydoc_data.topics import topics

    passages = help_topic_passages(8)
    names = sorted({p.label for p in passages})
    assert len(names) == 8 and len(passages) > 400
    for passage in passages[::25]:
        owners = [n for n in topics if passage.text in " ".join(topics[n].split())]
        assert owners == [passage.label]  # found in its topic, and in no other


def test_bag_of_words_baseline_reads_the_words(tmp_path, capsys):
    from vitrain.data.text_classification import TextExample
    from vitrain.results.baseline import bag_of_words
    from vitrain.tools.baseline import main

    def split(n, seed):
        rows = sentences(n, seed, labels=("red", "green", "blue"))
        return [
            TextExample(f"{label} {text}", None, label, f"row {i}") for i, (text, label) in enumerate(rows)
        ]

    result = bag_of_words({"train": split(30, 0), "val": split(9, 1), "test": split(9, 2)})
    assert result["val/acc"] == result["test/acc"] == 1.0  # the label word is in every text
    assert result["test/loss"] < 1.0986 and result["sizes"] == {"train": 30, "val": 9, "test": 9}  # < ln 3
    # a file without the text column: one message naming the option, exit status 1
    table = write_csv(tmp_path / "t.csv", sentences(6), header=("review", "label"))
    assert main(["--train", str(table)]) == 1
    assert (
        "has no 'text' column (--text-column=text); the columns found are review, label"
        in capsys.readouterr().err
    )
