"""One check of variant names and overrides for every network factory, and every conf/model
network built by a registered factory."""

from __future__ import annotations

import pytest
import yaml
from hydra.utils import get_method

from tests.helpers import CONF
from vitrain.errors import UserError
from vitrain.models import create_bert, create_detr, create_gpt, create_mae, create_t2t_vit
from vitrain.models.registry import MODEL_FAMILIES, variant_args


def test_variant_args_merges_and_names_the_bad_key():
    variants = {"small": {"width": 8}, "large": {"width": 32}}
    assert variant_args("Toy", "small", variants, ["width", "depth"], {"depth": 2}, {"depth": 1}) == {
        "width": 8,
        "depth": 2,
    }
    with pytest.raises(
        UserError, match=r"model.net.name='huge' is not a Toy variant. Valid names: small, large"
    ):
        variant_args("Toy", "huge", variants, ["width"], {})
    with pytest.raises(UserError, match=r"unknown Toy argument\(s\) heigth. Architecture arguments: width"):
        variant_args("Toy", "small", variants, ["width"], {"heigth": 3})


@pytest.mark.parametrize(
    ("factory", "args", "family"),
    [(create_mae, {}, "MAE"), (create_t2t_vit, {}, "T2T-ViT"), (create_detr, {"num_classes": 3}, "DETR"),
     (create_gpt, {}, "GPT"), (create_bert, {}, "BERT")],
)  # fmt: skip
def test_every_factory_uses_the_registry_checks(factory, args, family):
    with pytest.raises(UserError, match=f"is not a {family} variant"):
        factory("no_such_variant", **args)


def net_target(path) -> str | None:
    """``net._target_`` of a config file, else of the first config it extends that sets it."""
    cfg = yaml.safe_load(path.read_text())
    target = (cfg.get("net") or {}).get("_target_")
    for entry in cfg.get("defaults", []):
        if target is None and isinstance(entry, str) and entry != "_self_":
            name = entry.split("@")[0]
            target = net_target(
                CONF / f"{name[1:]}.yaml" if name.startswith("/") else path.parent / f"{name}.yaml"
            )
    return target


def test_every_model_config_names_a_registered_factory():
    for path in sorted((CONF / "model").glob("*.yaml")):
        assert net_target(path) in MODEL_FAMILIES.values(), path.name
    for target in MODEL_FAMILIES.values():
        assert callable(get_method(target))
