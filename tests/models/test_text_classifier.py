"""Fine-tuning networks from their sources (vitrain.models.pretrained_lm, text_classifier): Hugging Face
classification heads give transformers' logits; vitrain pretraining checkpoints load without their
LM heads; GPT's embedding grows by GPT-1's tokens; wrong sources are one clear message."""

from __future__ import annotations

import logging

import pytest
import torch
import transformers

from vitrain.errors import UserError
from vitrain.models import create_bert, create_bert_classifier, create_gpt, create_gpt_classifier

TINY = dict(n_layer=2, n_embd=32, n_head=2, n_positions=64)


def fake_checkpoint(path, net, target, name, model_choice):
    """A vitrain Lightning checkpoint of ``net`` as a pretraining run writes it."""
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    meta = {"net": {"_target_": target, "name": name, **TINY, "vocab_size": net.vocab_size},
            "config": {"choices": {"model": model_choice, "data": "text"}}}  # fmt: skip
    torch.save({"state_dict": state, "vitrain": meta}, path)
    return str(path)


def test_hf_sequence_classification_heads_give_transformers_logits(tmp_path, caplog):
    """The logits of each label *name* equal transformers' (a head's label order is its own, as an
    MNLI head's): a named head's rows are matched to the data's labels by name."""
    torch.manual_seed(0)
    head_order = ["neutral", "contradiction", "entailment"]  # config.json id2label, not the data's order
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=37, max_position_embeddings=64, num_labels=3,
                                  id2label=dict(enumerate(head_order)))  # fmt: skip
    ref = transformers.BertForSequenceClassification(cfg).eval()
    ref.save_pretrained(tmp_path / "bert")
    data_order = ["contradiction", "entailment", "neutral"]  # GLUE MNLI's
    net = create_bert_classifier(
        "bert_tiny", num_labels=3, vocab_size=99, hf_weights=str(tmp_path / "bert"), label_names=data_order
    ).eval()
    ids = torch.randint(5, 99, (3, 10))
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    mask[1, 7:], types[:, 5:] = 0, 1
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = net(ids, mask, types)
    for index, name in enumerate(data_order):
        torch.testing.assert_close(got[:, index], expected[:, head_order.index(name)], atol=1e-5, rtol=1e-4)
    # names are compared ignoring case (transformers' run_glue.py); other names: one message naming both
    upper = create_bert_classifier("bert_tiny", num_labels=3, vocab_size=99, hf_weights=str(tmp_path / "bert"),
                                   label_names=[n.upper() for n in data_order]).eval()  # fmt: skip
    assert torch.equal(upper.classifier.weight, net.classifier.weight)
    with pytest.raises(UserError, match=r"bert: its head predicts the labels neutral, contradiction, entailment "
                       r"\(in row order\) but the data's labels are a, b, c"):  # fmt: skip
        create_bert_classifier("bert_tiny", num_labels=3, vocab_size=99, hf_weights=str(tmp_path / "bert"),
                               label_names=["a", "b", "c"])  # fmt: skip
    with pytest.raises(
        UserError,
        match=r"model.net.num_labels=3 but model.net.label_names \(null: the data's labels\) has 2: a, b",
    ):
        create_bert_classifier("bert_tiny", num_labels=3, vocab_size=99, label_names=["a", "b"])
    # generic names (LABEL_0, LABEL_1): the order is kept, and the log says it was assumed
    gcfg = transformers.GPT2Config(vocab_size=101, n_embd=32, n_layer=2, n_head=2, n_positions=64, num_labels=2,
                                   pad_token_id=0)  # fmt: skip
    ref = transformers.GPT2ForSequenceClassification(gcfg).eval()
    ref.save_pretrained(tmp_path / "gpt")
    with caplog.at_level(logging.INFO, logger="vitrain.models.pretrained_lm"):
        net = create_gpt_classifier(
            "gpt_tiny",
            num_labels=2,
            vocab_size=101,
            hf_weights=str(tmp_path / "gpt"),
            label_names=["neg", "pos"],
        ).eval()
    assert (
        "no label names (id2label LABEL_0, LABEL_1, ...): assumed to be the data's labels in order (neg, pos)"
        in (caplog.text)
    )
    ids = torch.randint(5, 101, (3, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:], ids[1, 7:] = 0, 0  # right padding with the pad id: the last real token is 6
    with torch.no_grad():
        torch.testing.assert_close(
            net(ids, mask), ref(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=1e-4
        )
    # a GPT-2 head with named labels in another order (the score layer has no bias)
    gcfg.id2label, gcfg.label2id = {0: "pos", 1: "neg"}, {"pos": 0, "neg": 1}
    ref.save_pretrained(tmp_path / "gpt_named")
    named = create_gpt_classifier("gpt_tiny", num_labels=2, vocab_size=101, hf_weights=str(tmp_path / "gpt_named"),
                                  label_names=["neg", "pos"]).eval()  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(named(ids, mask), ref(input_ids=ids, attention_mask=mask).logits.flip(-1))
    # a head of another label count starts fresh; the trunk still loads
    fresh = create_gpt_classifier("gpt_tiny", num_labels=5, vocab_size=101, hf_weights=str(tmp_path / "gpt"))
    assert torch.equal(fresh.trunk.wte.weight, net.trunk.wte.weight) and fresh.classifier.weight.shape == (
        5,
        32,
    )


def test_pretraining_checkpoints_load_without_their_lm_heads(tmp_path):
    torch.manual_seed(0)
    bert = create_bert("bert_tiny", 120, **TINY)
    path = fake_checkpoint(
        tmp_path / "bert.ckpt", bert, "vitrain.models.create_bert", "bert_tiny", "bert_tiny"
    )
    # the architecture is the checkpoint's (the variant says 4 layers, the checkpoint 2)
    net = create_bert_classifier("bert_tiny", num_labels=4, vocab_size=120, init_from=path)
    assert len(net.trunk.layers) == 2 and not hasattr(net.trunk, "mlm_dense")
    assert torch.equal(net.trunk.word_embeddings.weight, bert.word_embeddings.weight)
    ids = torch.randint(5, 120, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(net.eval().trunk.encode(ids), bert.eval().encode(ids))
    with pytest.raises(UserError, match=r"configured vs the checkpoint's\): n_layer=3 vs 2"):
        create_bert_classifier("bert_tiny", num_labels=4, vocab_size=120, init_from=path, n_layer=3)
    with pytest.raises(
        UserError, match=r"tokenizer has 130 tokens but the token embedding of model.net.init_from=.*120 rows"
    ):
        create_bert_classifier("bert_tiny", num_labels=4, vocab_size=130, init_from=path)
    # a checkpoint of another family names both networks
    with pytest.raises(
        UserError,
        match=r"bert.ckpt holds vitrain.models.create_bert \(name=bert_tiny, model=bert_tiny\), not a GPT",
    ):
        create_gpt_classifier("gpt_tiny", num_labels=2, vocab_size=120, init_from=path)


def test_gpt_checkpoint_grows_its_embedding_for_the_gpt1_tokens(tmp_path):
    torch.manual_seed(0)
    gpt = create_gpt("gpt_tiny", 120, **TINY)
    path = fake_checkpoint(tmp_path / "gpt.ckpt", gpt, "vitrain.models.create_gpt", "gpt_tiny", "gpt_tiny")
    net = create_gpt_classifier("gpt_tiny", num_labels=2, vocab_size=123, init_from=path)
    wte = net.trunk.wte.weight
    assert wte.shape == (123, 32) and torch.equal(wte[:120], gpt.wte.weight)
    assert net.trunk.lm_head.weight is wte  # still tied: the auxiliary LM loss covers the new tokens
    assert 0.005 < wte[120:].std() < 0.05  # the new rows keep GPT's N(0, 0.02) initialisation
    ids = torch.randint(5, 120, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(net.eval().lm_logits(net.hidden(ids))[..., :120], gpt.eval()(ids))
    with pytest.raises(UserError, match="tokenizer has 130 tokens but the token embedding"):
        create_gpt_classifier("gpt_tiny", num_labels=2, vocab_size=130, init_from=path)
    with pytest.raises(UserError, match="are both set: give one"):
        create_gpt_classifier("gpt_tiny", num_labels=2, init_from=path, hf_weights=path)
