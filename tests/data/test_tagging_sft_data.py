"""data=conll and data=sft as DataModules: sub-word labels on the first sub-word of each word, words
lost to truncation counted, instruction records masked up to the response, end-of-text appended, the
Alpaca file layouts and their bad records."""

from __future__ import annotations

import logging

import pytest
import torch

from tests.helpers import write_conll_distribution, write_instruction_files
from vitrain.data.finetune import GPT1_TOKENS, IGNORE_INDEX
from vitrain.data.sft import ALPACA, PromptTemplate, SFTDataModule, read_records
from vitrain.data.tagging import ConllDataModule
from vitrain.errors import UserError


def conll(tmp_path, root, **kwargs) -> ConllDataModule:
    args = dict(vocab_size=150, max_length=32, batch_size=4, cache_dir=str(tmp_path / "cache"))
    return ConllDataModule("masked", root=str(root) if root else None, **{**args, **kwargs})


def sft(tmp_path, **kwargs) -> SFTDataModule:
    args = dict(vocab_size=300, max_length=200, batch_size=4, cache_dir=str(tmp_path / "cache"))
    return SFTDataModule("causal", **{**args, **kwargs})


def test_first_sub_word_labels_and_lost_words(tmp_path, caplog):
    root = write_conll_distribution(tmp_path / "conll2003")
    data = conll(tmp_path, root)
    data.setup()
    assert data.classes == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"] and data.found_num_labels() == 5
    tok = data.tokenizer
    for item, sentence in zip(data.train_set, data.sentences["train"], strict=False):
        labels = item["labels"].tolist()
        assert labels[0] == labels[-1] == IGNORE_INDEX  # [CLS], [SEP]
        words = [
            tok.decode(tok.encode([w], is_pretokenized=True, add_special_tokens=False).ids)
            for w in sentence.words
        ]
        assert sum(label != IGNORE_INDEX for label in labels) == len(words)
        assert [data.classes[label] for label in labels if label != IGNORE_INDEX] == sentence.tags
        assert item["lost"] == 0
    # a word the normaliser empties (a control character) is [UNK]: the words after it keep their labels
    sentence = data.sentences["train"][0]
    sentence.words[1], sentence.tags[1] = "\x07", "O"
    encoded, _ = data.encode(tok, [sentence], data.classes)
    item = {k: v[: encoded.offsets[1]] for k, v in encoded.tokens.items()}
    assert tok.id_to_token(int(item["input_ids"][2])) == "[UNK]" and int(encoded.sequences["lost"][0]) == 0
    assert [data.classes[t] for t in item["labels"] if t != IGNORE_INDEX] == sentence.tags
    # a sentence longer than max_length loses its last words: counted per split, logged once
    caplog.set_level(logging.WARNING)
    short = conll(tmp_path, root, max_length=6)
    short.setup()
    lost = sum(int(item["lost"]) for item in short.train_set)
    assert lost > 0 and f"{lost} words of the train split are past data.max_length=6" in caplog.text
    short.setup()
    assert caplog.text.count("words of the train split") == 1
    batch = next(iter(short.train_dataloader()))
    assert batch["input_ids"].shape[1] <= 6 and set(batch) >= {
        "labels",
        "attention_mask",
        "token_type_ids",
        "lost",
    }


def test_a_validation_tag_training_never_had(tmp_path):
    root = write_conll_distribution(tmp_path / "conll2003")
    testa = root / "eng.testa"
    testa.write_text(testa.read_text().replace("I-LOC", "I-ORG", 1))
    with pytest.raises(
        UserError, match=r"eng.testa:\d+: the tag 'B-ORG' of the val split never occurs in the training"
    ):
        conll(tmp_path, root).setup()


def test_instruction_records_mask_the_prompt_and_end_with_eot(tmp_path):
    files = write_instruction_files(tmp_path / "alpaca")
    data = sft(tmp_path, train=str(files["json"]), val=str(files["jsonl"]))
    data.setup()
    tok = data.tokenizer
    assert all(tok.token_to_id(t) is None for t in GPT1_TOKENS)  # instruction tuning adds none
    eot = tok.token_to_id("<|endoftext|>")
    responses = {r.response for r in read_records(files["json"], "data.train")}
    for item in data.train_set:
        ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
        start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
        assert ids[-1] == eot and labels[start:] == ids[start:] and set(labels[:start]) == {IGNORE_INDEX}
        assert tok.decode(ids[:start]).startswith(ALPACA["no_input"][:40])
        assert tok.decode(ids[:start]).endswith("### Response:\n") and tok.decode(ids[start:-1]) in responses
    batch = next(iter(data.val_dataloader()))
    pads = batch["attention_mask"] == 0
    assert (batch["labels"][pads] == IGNORE_INDEX).all() and (batch["input_ids"][pads] == eot).all()


def test_alpaca_files_and_their_bad_records(tmp_path, caplog):
    files = write_instruction_files(tmp_path / "alpaca")
    from_json = read_records(files["json"], "data.train")
    from_jsonl = read_records(files["jsonl"], "data.val")
    assert from_json[0].where == f"{files['json']}:2" and from_json[1].where == f"{files['json']}:7"
    assert any(r.input for r in from_json) and any(not r.input for r in from_json)
    assert from_jsonl[0].instruction and from_jsonl[0].response  # the prompt / response layout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "Say hi.", "output": "hi"}\n\n{"instruction": "Say bye.", "input": ""}\n')
    with pytest.raises(UserError, match=rf"{bad}:3: the record has no response \('output' missing"):
        read_records(bad, "data.train")
    bad.write_text('{"prompt": "Say hi."}\n')
    with pytest.raises(UserError, match=rf"{bad}:1: the record has no response \('response' missing"):
        read_records(bad, "data.train")
    bad.write_text('{"input": "x", "output": "y"}\n')
    with pytest.raises(UserError, match=rf"{bad}:1: the record has no 'instruction'"):
        read_records(bad, "data.train")
    with pytest.raises(UserError, match="data.train is required here"):
        sft(tmp_path, require_files=True)
    with pytest.raises(UserError, match="data.root is required here"):
        conll(tmp_path, None, require_files=True)
    (tmp_path / "obj.json").write_text('{"instruction": "x", "output": "y"}')
    with pytest.raises(UserError, match="is one JSON list"):
        read_records(tmp_path / "obj.json", "data.train")
    with pytest.raises(UserError, match=r"data.template_no_input='Q: \{input\}' lacks \{instruction\}"):
        PromptTemplate.build("alpaca", no_input="Q: {input}")
    assert PromptTemplate.build("plain").format("Add.", "1 2") == "Add.\n1 2\n"
    short = sft(tmp_path, train=str(files["json"]), max_length=8)
    with caplog.at_level(logging.WARNING):
        short.setup()
    assert (
        f"keep no response token within data.max_length=8 (the prompt fills it; first: {files['json']}:"
        in caplog.text
    )
    assert (
        f"of {len(short.train_set)} train sequences were longer than data.max_length=8 tokens" in caplog.text
    )
    assert all((item["labels"] == IGNORE_INDEX).all() for item in short.train_set)


def test_embedded_sets_split_like_the_pretraining_corpus(tmp_path):
    """The embedded tagging task holds out the help topics data=text holds out; the embedded
    instruction set has records with and without an input."""
    from vitrain.data.code_spans import code_span_sentences
    from vitrain.data.text import TextDataModule

    held = TextDataModule(cache_dir=str(tmp_path / "text"))._held_out_documents()  # bert_cpu's split
    splits = conll(tmp_path, None).read_examples()
    assert {s.document for s in splits["test"]} == {i for i, split in held.items() if split == "test"}
    assert {s.document for s in splits["val"]} == {i for i, split in held.items() if split == "val"}
    assert (
        splits["predict"] is splits["test"]
        and code_span_sentences(held)["test"][0].words == splits["test"][0].words
    )
    from vitrain.data.python_instructions import python_instructions

    def names(records):  # the objects asked about, the type left out (bytes.split ~ str.split)
        return {r["instruction"].split("`")[1].split(".")[-1] for r in records if "`" in r["instruction"]}

    records = python_instructions()
    assert not names(records["train"]) & (names(records["val"]) | names(records["test"]))
    data = sft(tmp_path, vocab_size=1000, max_length=256)
    data.setup()
    assert len(data.train_set) > 300 and len(data.val_set) > 20 and len(data.test_set) > 20
    item = data.test_set[0]
    assert item["labels"][-1] == data.tokenizer.token_to_id("<|endoftext|>")
    assert torch.equal(
        item["labels"][item["labels"] != IGNORE_INDEX], item["input_ids"][item["labels"] != IGNORE_INDEX]
    )
