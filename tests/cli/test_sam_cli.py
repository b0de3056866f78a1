"""SAM from the command line: dry-run counts, pairing, one training run with mask pictures,
mode=export, and ``python -m vitrain.segment`` on every kind of weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.helpers import compose_train, run_cli
from vitrain.errors import UserError
from vitrain.inference.sam import load_network
from vitrain.models.sam_weights import create_sam
from vitrain.run import run
from vitrain.tools import segment

TINY_NET = [
    "+model.net.encoder_embed_dim=32", "+model.net.encoder_depth=2", "+model.net.encoder_num_heads=2",
    "+model.net.encoder_global_attn_indexes=[1]", "+model.net.window_size=4", "+model.net.prompt_embed_dim=32",
    "+model.net.decoder_num_heads=2", "+model.net.decoder_mlp_dim=64", "+model.net.iou_head_hidden_dim=32",
]  # fmt: skip


def test_dry_run_prints_the_reference_count(tmp_path, capsys):
    cfg = compose_train("model=sam_vit_b", "data=shapes_masks", "data.image_size=1024", "dry_run=true",
                        output_dir=str(tmp_path))  # fmt: skip
    run(cfg)
    assert "params: total=93735472 trainable=93735472" in capsys.readouterr().out


def test_sam_with_classification_data_fails_naming_both(tmp_path):
    cfg = compose_train("model=sam_tiny", "data=digits", "dry_run=true", output_dir=str(tmp_path))
    with pytest.raises(
        UserError, match=r"model=sam_tiny \(SegmentationTask\) needs segmentation data.*data=digits"
    ):
        run(cfg)


@pytest.mark.slow
def test_train_export_and_segment(tmp_path, capsys):
    run_dir = tmp_path / "run"
    proc = run_cli(
        run_dir, "model=sam_tiny", "data=shapes_masks", "trainer=cpu", "callbacks=segmentation",
        "data.image_size=32", "data.train_size=8", "data.val_size=4", "data.test_size=4", "data.batch_size=4",
        "model.num_rounds=3", "model.mask_only_rounds=1", "model.val_clicks=2", "trainer.max_epochs=1",
        "callbacks.masks.num_images=2", *TINY_NET,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["monitor"]["metric"] == "val/miou_box"
    assert {"val/miou_box", "val/miou_point", "val/miou_click1", "val/miou_click2"} <= set(summary["last"])
    # the best checkpoint on the held-out test images (their own stream), after training
    assert {"test/miou_box", "test/miou_click2"} <= set(summary["test"])
    assert (run_dir / "masks" / "epoch000.png").is_file()
    ckpt = run_dir / "checkpoints" / "last.ckpt"

    cfg = compose_train("model=sam_tiny", "data=shapes_masks", "data.image_size=32", "mode=export",
                        f"ckpt_path={ckpt}", *TINY_NET, output_dir=str(tmp_path / "export"))  # fmt: skip
    run(cfg)
    export = tmp_path / "export" / "export"
    weights = load_file(str(export / "model.safetensors"))
    assert "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in weights
    config = json.loads((export / "config.json").read_text())
    assert config["name"] == "sam_tiny" and "checkpoint" not in config["kwargs"]

    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "masks"
    for weights_path in (ckpt, export):
        assert segment.main([str(weights_path), str(image), "--point", "10,20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("predicted IoU") == 6  # one point: 3 multimask outputs, twice
    mask = np.asarray(Image.open(out / "img_obj0_mask0.png"))
    assert mask.shape == (48, 64)


def test_segment_official_and_hf_weights_and_bad_prompts(tmp_path, capsys):
    torch.manual_seed(0)
    net = create_sam("sam_tiny")  # 64 px, the variant recognised from the shapes
    official = tmp_path / "sam_tiny.pth"
    torch.save(net.state_dict(), official)
    image = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (100, 50, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    args = [
        str(official),
        str(image),
        "--point",
        "10,20",
        "--point",
        "30,60,0",
        "--box",
        "5,5,40,90",
        "--out",
        str(out),
    ]
    assert segment.main(args) == 0
    assert capsys.readouterr().out.count("predicted IoU") == 1  # points + box: one object, one mask
    assert Image.open(out / "photo_obj0_mask0.png").size == (50, 100)
    # --each: every prompt an object of its own, one shared embedding
    calls = []
    original = net.__class__.encode
    net.__class__.encode = lambda self, x: calls.append(1) or original(self, x)
    try:
        assert segment.main([*args, "--each"]) == 0
    finally:
        net.__class__.encode = original
    assert len(calls) == 1 and capsys.readouterr().out.count("predicted IoU") == 3 + 3 + 1
    assert segment.main([str(official), str(image), "--point", "60,20"]) == 1
    assert "outside the image (50 x 100 pixels)" in capsys.readouterr().err
    assert segment.main([str(official), str(image), "--box", "5,5,4,9"]) == 1
    assert "x0 < x1" in capsys.readouterr().err
    assert segment.main([str(tmp_path / "none.pth"), str(image), "--point", "1,1"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_segment_reads_hugging_face_weights(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    v = transformers.SamVisionConfig(
        hidden_size=192, num_hidden_layers=6, num_attention_heads=3, image_size=64, patch_size=4,
        output_channels=64, window_size=8, global_attn_indexes=[2, 5], mlp_dim=768, num_pos_feats=32,
    )  # fmt: skip
    p = transformers.SamPromptEncoderConfig(
        hidden_size=64, image_size=64, patch_size=4, mask_input_channels=16
    )
    m = transformers.SamMaskDecoderConfig(
        hidden_size=64, num_attention_heads=4, mlp_dim=256, iou_head_hidden_dim=64
    )
    config = transformers.SamConfig(
        vision_config=v.to_dict(), prompt_encoder_config=p.to_dict(), mask_decoder_config=m.to_dict()
    )
    transformers.SamModel(config).save_pretrained(tmp_path / "hf")  # the sam_tiny shape
    net = load_network(tmp_path / "hf" / "model.safetensors")
    assert net.variant == "sam_tiny" and net.image_size == 64
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    hf_file = str(tmp_path / "hf" / "model.safetensors")
    assert segment.main([hf_file, str(image), "--box", "1,1,30,30", "--out", str(tmp_path)]) == 0
    assert "predicted IoU" in capsys.readouterr().out
