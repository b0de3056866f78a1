"""What a checkpoint needs to be used without the training data: net config, class names."""

from __future__ import annotations

import lightning as L


class CheckpointMetadata(L.Callback):
    """Stores ``checkpoint["vitrain"] = {"net": <net config>, "class_names": [...]}``.

    ``net`` is the network's constructor config (``_target_`` plus arguments, primitives
    only) so exports and predictions can rebuild it; the class names come from the
    DataModule's ``classes``.
    """

    def __init__(self, net_config: dict) -> None:
        self.net_config = net_config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        classes = list(getattr(trainer.datamodule, "classes", []) or [])
        checkpoint["vitrain"] = {"net": self.net_config, "class_names": classes}
