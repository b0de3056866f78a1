"""What a checkpoint needs to be used alone: net config, class names, composed model/data configs."""

from __future__ import annotations

import lightning as L


class CheckpointMetadata(L.Callback):
    """Stores ``checkpoint["vitrain"] = {"net": <net config>, "class_names": [...], "config": ...}``.

    ``net`` is the network's constructor config (``_target_`` plus arguments, primitives
    only) so exports and predictions can rebuild it; the class names come from the
    DataModule's ``classes``; ``config`` (optional) holds the composed model and data choices
    and configs (``vitrain.run.stored_config.checkpoint_config``), so evaluation needs only the file.
    """

    def __init__(self, net_config: dict, config: dict | None = None) -> None:
        self.net_config = net_config
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        classes = list(getattr(trainer.datamodule, "classes", []) or [])
        checkpoint["vitrain"] = {"net": self.net_config, "class_names": classes}
        if self.config is not None:
            checkpoint["vitrain"]["config"] = self.config
