"""Entry point: ``python train.py [group=option ...] [key=value ...]`` (see README.md)."""

import hydra
from omegaconf import DictConfig

from vitrain.run import main
from vitrain.run.cli import launch


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def app(cfg: DictConfig) -> float | None:
    return main(cfg)


if __name__ == "__main__":
    launch(app)
