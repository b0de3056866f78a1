"""vitrain: config-driven training of transformer models with Lightning and Hydra."""

__version__ = "0.1.0"
