"""vitrain: config-driven training of transformer models with Lightning and Hydra.

The layers, each knowing only the ones below it: ``run/`` (from a composed config to a run
directory; the only code that touches Hydra), ``tasks/`` (LightningModules: how a network
learns), ``models/`` (plain ``nn.Module`` networks), ``data/`` (DataModules), ``callbacks/``.
Beside them: ``inference/`` (using a trained network: GPT text, SAM masks), ``results/`` (reading
run directories: sweep tables, reports) and ``tools/`` (the command-line tools; each
``vitrain/<tool>.py`` here only runs one, so that ``python -m vitrain.<tool>`` works). The other
modules here are shared: errors, seeding, checkpoints and weight files, the hub, loggers.
"""

__version__ = "0.1.0"
