"""Plain ``torch.nn.Module`` networks and their factories (no Lightning, no Hydra)."""

from vitrain.models.bert import BERT, create_bert
from vitrain.models.detr import DETR, create_detr
from vitrain.models.gpt import GPT, create_gpt
from vitrain.models.mae import MaskedAutoencoderViT, create_mae
from vitrain.models.sam import SAM
from vitrain.models.sam_weights import create_sam
from vitrain.models.sft import create_gpt_sft
from vitrain.models.t2t_vit import create_t2t_vit
from vitrain.models.tagger import create_bert_tagger
from vitrain.models.text_classifier import create_bert_classifier, create_gpt_classifier
from vitrain.models.timm_net import create_timm
from vitrain.models.vit import create_vit, load_encoder

__all__ = [
    "MaskedAutoencoderViT",
    "create_mae",
    "create_t2t_vit",
    "create_vit",
    "create_timm",
    "load_encoder",
    "DETR",
    "create_detr",
    "BERT",
    "GPT",
    "create_bert",
    "create_gpt",
    "create_bert_classifier",
    "create_gpt_classifier",
    "create_bert_tagger",
    "create_gpt_sft",
    "SAM",
    "create_sam",
]
