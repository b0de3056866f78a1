"""Plain ``torch.nn.Module`` networks and their factories (no Lightning, no Hydra)."""

from vitrain.models.vit import create_vit, load_pretrained_file

__all__ = ["create_vit", "load_pretrained_file"]
