"""Token classification and instruction tuning: entity scores as conlleval computes them, the
per-word loss of the tagger and the response-only loss of instruction tuning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from seqeval.metrics import classification_report, f1_score
from seqeval.scheme import IOB2

from vitrain.data.conll import to_iob2
from vitrain.data.finetune import IGNORE_INDEX
from vitrain.tasks.instruction import response_losses
from vitrain.tasks.tagging import EntityScores, entity_types, word_tags

# Two sentences in IOB1 (CoNLL-2003's scheme), gold and predicted. conlleval's report of them,
# worked out by hand from its chunk rules (a chunk starts at B-X, or at I-X after O or another type):
#   processed 12 tokens with 6 phrases; found: 5 phrases; correct: 2.
#   precision:  40.00%; recall:  33.33%; FB1:  36.36
#   LOC: precision: 0.00%; recall: 0.00%; FB1: 0.00 (gold: Baghdad, Spain, Italy; found: "Spain Italy")
#   MISC: precision: 0.00%; recall: 0.00%; FB1: 0.00
#   ORG: precision: 50.00%; recall: 100.00%; FB1: 66.67
#   PER: precision: 100.00%; recall: 100.00%; FB1: 100.00
GOLD = [
    ["I-ORG", "O", "I-PER", "O", "O", "I-LOC", "O"],  # U.N. official Ekeus heads for Baghdad .
    ["I-LOC", "B-LOC", "O", "I-MISC", "I-MISC"],  # Spain Italy and German British
]
PRED = [
    ["I-ORG", "O", "I-PER", "O", "O", "I-ORG", "O"],
    ["I-LOC", "I-LOC", "O", "I-MISC", "O"],
]
CONLLEVAL = {"precision": 0.40, "recall": 2 / 6, "f1": 0.3636, "f1_ORG": 0.6667, "f1_PER": 1.0,
             "f1_LOC": 0.0, "f1_MISC": 0.0}  # fmt: skip


@pytest.mark.parametrize("scheme", ["iob1", "iob2"])
def test_entity_scores_are_conllevals(scheme):
    """The model sees IOB2 tags (the data converts them once); the scores are conlleval's either way."""
    gold = GOLD if scheme == "iob1" else [to_iob2(tags) for tags in GOLD]
    pred = PRED if scheme == "iob1" else [to_iob2(tags) for tags in PRED]
    metric = EntityScores(["LOC", "MISC", "ORG", "PER"])
    metric.update(gold[:1], pred[:1])  # two updates sum like one
    metric.update(gold[1:], pred[1:])
    scores = metric.compute()
    assert metric.counts.sum(dim=0).tolist() == [6, 5, 2]
    for name, expected in CONLLEVAL.items():
        assert scores[name].item() == pytest.approx(expected, abs=1e-4), name
    # seqeval's default mode (what the module uses) agrees; its strict IOB2 mode does not on IOB1
    # tags, which is why the data converts IOB1 files before training
    assert f1_score(GOLD, PRED) == pytest.approx(CONLLEVAL["f1"], abs=1e-4)
    assert "ORG       0.50      1.00      0.67" in classification_report(GOLD, PRED)
    assert f1_score(GOLD, PRED, mode="strict", scheme=IOB2) != pytest.approx(CONLLEVAL["f1"], abs=1e-3)


def test_empty_scores_are_zero_not_nan():
    metric = EntityScores(["PER"])
    metric.update([["O", "O"]], [["O", "O"]])
    assert {k: v.item() for k, v in metric.compute().items()} == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "f1_PER": 0.0,
    }  # fmt: skip


def test_word_tags_read_the_first_sub_word_of_each_word():
    names = ["O", "B-PER", "I-PER"]
    assert entity_types(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]) == ["PER", "LOC"]
    # [CLS] Pe ##ter Black ##burn [SEP] [PAD]: words start at 1 and 3
    labels = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    predicted = torch.tensor([[0, 1, 0, 1, 2, 0, 0]])
    assert word_tags(labels, predicted, names) == ([["B-PER", "I-PER"]], [["B-PER", "B-PER"]])


def test_response_loss_counts_the_response_tokens_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    input_ids = torch.randint(11, (2, 6))
    # row 0: prompt of 3 tokens, response of 2, then pad; row 1: prompt of 2, response of 4
    labels = input_ids.clone()
    labels[0, :3] = IGNORE_INDEX
    labels[0, 5:] = IGNORE_INDEX
    labels[1, :2] = IGNORE_INDEX
    losses = response_losses(logits, labels)
    expected = [F.cross_entropy(logits[r, t - 1], input_ids[r, t]) for r, t in
                [(0, 3), (0, 4), (1, 2), (1, 3), (1, 4), (1, 5)]]  # fmt: skip
    assert torch.allclose(losses, torch.stack(expected))
    # changing a prompt token's label or a pad's logits changes nothing
    logits[0, 5] += 100.0
    assert torch.allclose(response_losses(logits, labels), losses)
