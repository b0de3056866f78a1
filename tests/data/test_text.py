"""data=text: reading corpora, tokenizers, the token cache, GPT blocks and BERT sentence packing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import write_jsonl_corpus, write_txt_corpus
from vitrain.data.text import TextDataModule, embedded_documents, pack_sentences, sentences
from vitrain.data.tokenizer import load_tokenizer, train_tokenizer
from vitrain.errors import UserError


def text_data(tmp_path: Path, files, **kwargs) -> TextDataModule:
    files = [str(f) for f in files] if isinstance(files, list) else str(files)
    # no test split: these tests count train/val documents (tests/data/test_held_out_splits.py: test splits)
    args = dict(
        files=files,
        vocab_size=300,
        seq_len=32,
        batch_size=4,
        cache_dir=str(tmp_path / "cache"),
        test_fraction=0.0,
    )
    return TextDataModule(**{**args, **kwargs})


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_txt_corpus(tmp_path / "corpus")


def test_token_cache_is_built_once_reused_and_rebuilt_when_the_corpus_changes(tmp_path, corpus):
    first = text_data(tmp_path, corpus)
    first.setup()
    assert first.cache_built and (first.cache_path / "tokenizer.json").is_file()
    train_bin = first.cache_path / "train.bin"
    stamp = train_bin.stat().st_mtime_ns

    again = text_data(tmp_path, corpus)
    again.setup()
    assert not again.cache_built and again.cache_path == first.cache_path
    assert train_bin.stat().st_mtime_ns == stamp
    assert again.vocab_size == first.vocab_size == 300

    doc = corpus / "doc000.txt"
    doc.write_text(doc.read_text() + "A new sentence arrives.\n")
    changed = text_data(tmp_path, corpus)
    changed.setup()
    assert changed.cache_built and changed.cache_path != first.cache_path
    # other tokenizer settings make another cache too
    other = text_data(tmp_path, corpus, vocab_size=320)
    other.prepare()
    assert other.cache_built and other.vocab_size == 320


def test_causal_blocks_are_consecutive_tokens_with_end_of_text_between_documents(tmp_path, corpus):
    data = text_data(tmp_path, corpus)
    data.setup()
    eot = data.special_ids["eot"]
    meta = json.loads((data.cache_path / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["splits"]["val"]["documents"] == 4  # 10% of 40
    tokens = np.fromfile(data.cache_path / "train.bin", dtype=np.uint16)
    assert (tokens == eot).sum() == 36 and tokens[-1] == eot
    item = data.train_set[1]["tokens"]
    assert item.shape == (33,) and item.tolist() == tokens[32:65].tolist()
    batch = next(iter(data.train_dataloader()))
    assert batch["tokens"].shape == (4, 33)
    decoded = data.tokenizer.decode(tokens[:40].tolist())
    assert decoded.startswith((corpus / "doc001.txt").read_text()[:20]) or decoded[:1].isupper()


def test_split_by_document_is_fixed_by_the_split_seed(tmp_path, corpus):
    a = text_data(tmp_path, corpus)
    a.prepare()
    b = text_data(tmp_path / "other", corpus)
    b.prepare()
    c = text_data(tmp_path, corpus, split_seed=1)
    c.prepare()
    val = [np.fromfile(d.cache_path / "val.bin", dtype=np.uint16) for d in (a, b, c)]
    assert np.array_equal(val[0], val[1]) and not np.array_equal(val[0], val[2])


def test_masked_packing_cls_sep_and_length(tmp_path, corpus):
    data = text_data(tmp_path, corpus, packing="masked", vocab_size=200)
    data.setup()
    ids = data.special_ids
    lengths = []
    for i in range(len(data.train_set)):
        item = data.train_set[i]["input_ids"].tolist()
        assert item[0] == ids["cls"] and item[-1] == ids["sep"] and ids["sep"] not in item[1:-1]
        lengths.append(len(item))
    assert max(lengths) <= 32 and np.mean(lengths) > 20  # several sentences packed together
    batch = next(iter(data.val_dataloader()))
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    pad = batch["input_ids"][~batch["attention_mask"]]
    assert (pad == ids["pad"]).all()


def test_sentence_pairs_for_next_sentence_prediction(tmp_path, corpus):
    data = text_data(tmp_path, corpus, packing="masked", vocab_size=200, nsp=True)
    data.setup()
    sep = data.special_ids["sep"]
    labels = []
    for i in range(len(data.train_set)):
        item = data.train_set[i]
        ids, types = item["input_ids"].tolist(), item["token_type_ids"].tolist()
        first_sep = ids.index(sep)
        assert ids[-1] == sep and len(ids) <= 32
        assert set(types[: first_sep + 1]) == {0} and set(types[first_sep + 1 :]) == {1}
        labels.append(int(item["next_sentence_label"]))
    assert 0.3 < np.mean(labels) < 0.7
    assert data.train_set[3]["input_ids"].tolist() == data.train_set[3]["input_ids"].tolist()


def test_pack_sentences_keeps_documents_apart_and_cuts_long_sentences():
    spans = pack_sentences(np.array([3, 4, 2, 12, 1]), np.array([0, 0, 0, 1, 1]), budget=8, nsp=False, seed=0)
    assert spans[:, [0, 2, 3]].tolist() == [[0, 7, 0], [7, 9, 0], [9, 17, 1], [17, 22, 1]]
    assert ((spans[:, 2] - spans[:, 0]) <= 8).all()


def test_jsonl_and_txt_paragraphs_and_embedded_corpus(tmp_path):
    jsonl = write_jsonl_corpus(tmp_path / "c.jsonl", count=10)
    data = text_data(tmp_path, jsonl, seq_len=16)
    data.setup()
    assert json.loads((data.cache_path / "meta.json").read_text())["splits"]["train"]["documents"] == 9
    one_file = tmp_path / "book.txt"
    one_file.write_text("First paragraph. It has two sentences.\n\nSecond one!\n\nThird?\n")
    with pytest.raises(UserError, match="1 document"):
        text_data(tmp_path, one_file).prepare()
    assert sentences(one_file.read_text()) == [
        "First paragraph.",
        "It has two sentences.",
        "Second one!",
        "Third?",
    ]
    paragraphs = text_data(tmp_path, one_file, txt_documents="paragraphs", seq_len=4, val_fraction=0.3)
    paragraphs.prepare()
    docs = embedded_documents()
    assert len(docs) > 50 and sum(map(len, docs)) > 200_000


def test_tokenizer_files_gpt2_vocab_merges_and_bert_vocab_txt(tmp_path, corpus):
    texts = [p.read_text() for p in sorted(corpus.glob("*.txt"))]
    bpe = train_tokenizer(texts, "causal", 300)
    folder = tmp_path / "gpt2"
    folder.mkdir()
    bpe.model.save(str(folder))  # vocab.json + merges.txt, GPT-2's release layout
    loaded = load_tokenizer(folder / "vocab.json", "causal")
    assert loaded.encode("The cat sees a tree.").ids == bpe.encode("The cat sees a tree.").ids

    wordpiece = train_tokenizer(texts, "masked", 120)
    vocab = sorted(wordpiece.get_vocab().items(), key=lambda kv: kv[1])
    (tmp_path / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab))
    bert = load_tokenizer(tmp_path / "vocab.txt", "masked")
    assert bert.encode("The cat sees a tree.").ids == wordpiece.encode("The cat sees a tree.").ids

    data = text_data(tmp_path, corpus, packing="masked", tokenizer=str(tmp_path / "vocab.txt"))
    assert data.vocab_size == len(vocab) == wordpiece.get_vocab_size()
    with pytest.raises(UserError, match=r"lacks the token\(s\) \[PAD\].*\[MASK\]"):
        text_data(tmp_path, corpus, packing="masked", tokenizer=str(folder)).prepare()
    with pytest.raises(UserError, match="merges.txt"):
        os.remove(folder / "merges.txt")
        load_tokenizer(folder / "vocab.json", "causal")


def test_bad_corpora_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="data.files=/nonexistent/corpus: no such file"):
        text_data(tmp_path, "/nonexistent/corpus").prepare()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("  \n\n")
    (empty / "b.txt").write_text("")
    with pytest.raises(UserError, match="empty corpus"):
        text_data(tmp_path, empty).prepare()
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    with pytest.raises(UserError, match="holds no .txt or .jsonl"):
        text_data(tmp_path, tmp_path / "images").prepare()
    bad = write_txt_corpus(tmp_path / "bad", count=3)
    (bad / "doc001.txt").write_bytes(b"caf\xe9 latin-1 bytes")
    with pytest.raises(UserError, match=r"cannot read .*doc001.txt: not UTF-8"):
        text_data(tmp_path, bad).prepare()
    (bad / "doc001.txt").write_text("fine again")
    read_text = Path.read_text

    def no_permission(path, *args, **kwargs):  # chmod 000 does not stop root, so fake it
        if path.name == "doc002.txt":
            raise PermissionError(13, "Permission denied")
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", no_permission)
    with pytest.raises(UserError, match=r"cannot read .*doc002.txt \(Permission denied\)"):
        text_data(tmp_path, [bad / "doc000.txt", bad / "doc002.txt"]).prepare()
    monkeypatch.undo()
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    with pytest.raises(UserError, match="bad.jsonl line 2"):
        text_data(tmp_path, jsonl).prepare()
    with pytest.raises(UserError, match="data.seq_len=1"):
        text_data(tmp_path, jsonl, seq_len=1)
    with pytest.raises(UserError, match="data.nsp"):
        text_data(tmp_path, jsonl, nsp=True)
