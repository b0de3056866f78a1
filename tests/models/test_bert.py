"""BERT network: exact parameter counts, Hugging Face weights, padding masks."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vitrain.errors import UserError
from vitrain.models.bert import create_bert, load_hf_weights

TINY = dict(n_layer=2, n_head=2, n_embd=32, n_positions=16)


def hf_config(**kwargs):
    from transformers import BertConfig

    args = dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=128, max_position_embeddings=16)  # fmt: skip
    return BertConfig(**{**args, **kwargs})


def save_hf(hf, path):
    """Save like ``save_pretrained``: safetensors without the tied decoder entries, .bin with all."""
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    if path.suffix == ".safetensors":
        state = {k: v for k, v in state.items() if not k.startswith("cls.predictions.decoder.")}
        save_file(state, path)
    else:
        torch.save(state, path)


@pytest.mark.parametrize(
    ("name", "hf_arch", "expected"),
    [
        ("bert_base", dict(), 109_514_298),
        ("bert_large", dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16,
                            intermediate_size=4096), 335_174_458),
    ],
)  # fmt: skip
def test_parameter_counts_equal_bert_masked_lm(name, hf_arch, expected):
    from transformers import BertConfig, BertForMaskedLM, BertForPreTraining

    with torch.device("meta"):
        ours = sum(p.numel() for p in create_bert(name, vocab_size=30522).parameters())
        hf = sum(p.numel() for p in BertForMaskedLM(BertConfig(**hf_arch)).parameters())
        with_nsp = sum(p.numel() for p in create_bert(name, vocab_size=30522, nsp=True).parameters())
        hf_nsp = sum(p.numel() for p in BertForPreTraining(BertConfig(**hf_arch)).parameters())
    assert ours == hf == expected
    assert with_nsp == hf_nsp


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_hugging_face_weights_give_identical_logits(tmp_path, suffix):
    from transformers import BertForPreTraining

    torch.manual_seed(1)
    hf = BertForPreTraining(hf_config()).eval()
    path = tmp_path / f"bert{suffix}"
    save_hf(hf, path)
    net = create_bert("bert_tiny", vocab_size=61, hf_weights=str(path), nsp=True, **TINY).eval()
    ids = torch.randint(0, 61, (2, 12))
    types = torch.cat([torch.zeros(2, 6), torch.ones(2, 6)], dim=1).long()
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 9:] = 0  # padding in the second sequence
    with torch.no_grad():
        mlm, nsp = net(ids, types, mask)
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
    valid = mask.bool()
    assert torch.allclose(mlm[valid], ref.prediction_logits[valid], atol=1e-5)
    assert torch.allclose(nsp, ref.seq_relationship_logits, atol=1e-5)


def test_masked_lm_file_into_network_with_nsp_head(tmp_path):
    from transformers import BertForMaskedLM

    hf = BertForMaskedLM(hf_config()).eval()
    path = tmp_path / "mlm.safetensors"
    save_hf(hf, path)
    net = create_bert("bert_tiny", vocab_size=61, hf_weights=str(path), **TINY).eval()
    ids = torch.randint(0, 61, (1, 10))
    with torch.no_grad():
        assert torch.allclose(net(ids)[0], hf(input_ids=ids).logits, atol=1e-5)
    create_bert("bert_tiny", vocab_size=61, hf_weights=str(path), nsp=True, **TINY)  # fresh NSP head
    with pytest.raises(UserError, match="mlm.safetensors.*does not fit"):
        load_hf_weights(create_bert("bert_tiny", vocab_size=62, **TINY), path)


def test_padding_does_not_change_real_tokens_and_never_gives_nan():
    torch.manual_seed(0)
    net = create_bert("bert_tiny", vocab_size=50, dropout=0.0, **TINY).eval()
    ids = torch.randint(5, 50, (1, 8))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 8), torch.zeros(1, 4)], dim=1)
    with torch.no_grad():
        alone = net(ids)[0]
        with_pad = net(padded, attention_mask=mask)[0]
        empty = net(padded, attention_mask=torch.zeros(1, 12))[0]  # no real token at all
    assert torch.allclose(alone, with_pad[:, :8], atol=1e-5)
    assert torch.isfinite(with_pad).all() and torch.isfinite(empty).all()


def test_tied_decoder_and_unknown_variant():
    net = create_bert("bert_tiny", vocab_size=50, **TINY)
    hidden = torch.randn(3, 32)
    expected = torch.nn.functional.linear(
        net.mlm_norm(torch.nn.functional.gelu(net.mlm_dense(hidden))),
        net.word_embeddings.weight,
        net.mlm_bias,
    )
    assert torch.allclose(net.mlm_logits(hidden), expected)
    with pytest.raises(UserError, match="bert_base"):
        create_bert("roberta")


def test_mlm_mask_gives_the_logits_of_the_selected_positions_only():
    net = create_bert("bert_tiny", vocab_size=50, dropout=0.0, **TINY).eval()
    ids = torch.randint(5, 50, (2, 9))
    selected = torch.zeros(2, 9, dtype=torch.bool)
    selected[0, 1], selected[1, 4], selected[1, 8] = True, True, True
    full, _ = net(ids)
    picked, _ = net(ids, mlm_mask=selected)
    assert full.shape == (2, 9, 50) and picked.shape == (3, 50)
    torch.testing.assert_close(picked, full[selected])
