"""The tagging and instruction-tuning networks from their sources: a Hugging Face
BertForTokenClassification gives transformers' logits; vitrain checkpoints load (the tagger drops
the masked-LM head, the instruction-tuned GPT keeps its output layer)."""

from __future__ import annotations

import pytest
import torch
import transformers

from vitrain.errors import UserError
from vitrain.models import create_bert, create_bert_classifier, create_bert_tagger, create_gpt, create_gpt_sft

TINY = dict(n_layer=2, n_embd=32, n_head=2, n_positions=64)


def checkpoint_of(path, net, target: str, name: str, class_names: list[str] | None = None) -> str:
    """A vitrain Lightning checkpoint of ``net`` as a pretraining (fine-tuning) run writes it."""
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    meta = {"net": {"_target_": target, "name": name, **TINY, "vocab_size": net.vocab_size},
            "config": {"choices": {"model": name, "data": "text"}}, "class_names": class_names or []}  # fmt: skip
    torch.save({"state_dict": state, "vitrain": meta}, path)
    return str(path)


def test_hf_token_classification_gives_transformers_logits(tmp_path):
    """The logits of each tag *name* equal transformers' (a NER head's tag order is its own)."""
    torch.manual_seed(0)
    head_tags = ["B-PER", "O", "I-PER", "I-LOC", "B-LOC"]  # config.json id2label
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=37, max_position_embeddings=64, num_labels=5,
                                  id2label=dict(enumerate(head_tags)))  # fmt: skip
    ref = transformers.BertForTokenClassification(cfg).eval()
    ref.save_pretrained(tmp_path / "tagger")
    data_tags = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]  # vitrain.data.conll.tag_names' order
    net = create_bert_tagger(
        "bert_tiny", num_labels=5, vocab_size=99, hf_weights=str(tmp_path / "tagger"), label_names=data_tags
    ).eval()
    ids = torch.randint(5, 99, (3, 10))
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = net(ids, mask, types)
    assert got.shape == (3, 10, 5)
    rows = [head_tags.index(tag) for tag in data_tags]
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()][:, rows], atol=1e-5, rtol=1e-4)
    with pytest.raises(UserError, match=r"its head predicts the labels B-PER, O, I-PER, I-LOC, B-LOC \(in row "
                       r"order\) but the data's labels are O, B-MISC, I-MISC, B-PER, I-PER"):  # fmt: skip
        create_bert_tagger("bert_tiny", num_labels=5, vocab_size=99, hf_weights=str(tmp_path / "tagger"),
                           label_names=["O", "B-MISC", "I-MISC", "B-PER", "I-PER"])  # fmt: skip
    # the classifier came from the file (a fresh one would not give these logits); another tag count
    # starts a fresh head on the same encoder
    other = create_bert_tagger("bert_tiny", num_labels=9, vocab_size=99, hf_weights=str(tmp_path / "tagger"))
    assert other.classifier.weight.shape == (9, 32)
    assert torch.equal(other.trunk.word_embeddings.weight, net.trunk.word_embeddings.weight)
    # a token-classification head is not a sequence classifier's, even with as many rows
    cls = create_bert_classifier(
        "bert_tiny", num_labels=5, vocab_size=99, hf_weights=str(tmp_path / "tagger")
    )
    assert not torch.equal(cls.classifier.weight, net.classifier.weight)


def test_tagger_from_a_pretraining_checkpoint_and_from_a_tagger_checkpoint(tmp_path):
    torch.manual_seed(0)
    bert = create_bert("bert_tiny", 120, **TINY)
    path = checkpoint_of(tmp_path / "bert.ckpt", bert, "vitrain.models.create_bert", "bert_tiny")
    net = create_bert_tagger("bert_tiny", num_labels=7, vocab_size=120, init_from=path).eval()
    assert len(net.trunk.layers) == 2 and not hasattr(net.trunk, "mlm_dense") and net.trunk.pooler is None
    ids = torch.randint(5, 120, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(net.trunk.encode(ids), bert.eval().encode(ids))
    # a fine-tuned tagger's checkpoint starts another run with its head, rows matched to the tags by name
    torch.nn.init.normal_(net.classifier.weight)
    tags = ["O", "B-A", "I-A", "B-B", "I-B", "B-C", "I-C"]
    again = checkpoint_of(
        tmp_path / "tagger.ckpt", net, "vitrain.models.create_bert_tagger", "bert_tiny", tags
    )
    copy = create_bert_tagger(
        "bert_tiny", num_labels=7, vocab_size=120, init_from=again, label_names=tags
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(copy(ids), net(ids))
    moved = create_bert_tagger(
        "bert_tiny", num_labels=7, vocab_size=120, init_from=again, label_names=tags[::-1]
    )
    assert torch.equal(moved.classifier.weight, net.classifier.weight.flip(0))
    # its encoder (not its head) starts a sequence classifier with as many labels
    cls = create_bert_classifier(
        "bert_tiny", num_labels=7, vocab_size=120, init_from=again, label_names=list("abcdefg")
    )
    assert torch.equal(cls.trunk.word_embeddings.weight, net.trunk.word_embeddings.weight)
    assert not torch.equal(cls.classifier.weight, net.classifier.weight)


def test_sft_gpt_keeps_the_language_model_head(tmp_path):
    torch.manual_seed(0)
    gpt = create_gpt("gpt_tiny", 120, **TINY)
    path = checkpoint_of(tmp_path / "gpt.ckpt", gpt, "vitrain.models.create_gpt", "gpt_tiny")
    net = create_gpt_sft("gpt_tiny", vocab_size=120, init_from=path).eval()
    assert net.vocab_size == 120 and len(net.blocks) == 2 and net.lm_head.weight is net.wte.weight
    ids = torch.randint(5, 120, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(net(ids), gpt.eval()(ids))
    cfg = transformers.GPT2Config(vocab_size=101, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    ref = transformers.GPT2LMHeadModel(cfg).eval()
    ref.save_pretrained(tmp_path / "gpt2")
    net = create_gpt_sft("gpt_tiny", vocab_size=101, hf_weights=str(tmp_path / "gpt2")).eval()
    ids = torch.randint(0, 101, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(net(ids), ref(ids).logits, atol=1e-5, rtol=1e-4)
