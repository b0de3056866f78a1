"""SAM network: reference parameter counts and key layout, Hugging Face conversion (equal
outputs), official-checkpoint loading, MAE initialisation, prompt handling."""

from __future__ import annotations

import pytest
import torch

from vitrain.errors import UserError
from vitrain.models.mae import create_mae
from vitrain.models.sam import SAM_VARIANTS, window_partition, window_unpartition
from vitrain.models.sam_weights import convert_hf_state_dict, create_sam, load_hf_weights

# parameter counts of segment_anything.build_sam at 1024 px (the module docstring's table)
REFERENCE_COUNTS = {"sam_vit_b": 93_735_472, "sam_vit_l": 312_342_832, "sam_vit_h": 641_090_608}
# a SAM small enough for tests: 32 px, patch 8 -> 4x4 grid, windows of 3 (padded), 1 global block
TINY = dict(
    image_size=32, patch_size=8, window_size=3, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
    encoder_global_attn_indexes=(1,), prompt_embed_dim=32, mask_in_chans=8, decoder_num_heads=2,
    decoder_mlp_dim=64, iou_head_hidden_dim=32,
)  # fmt: skip


def tiny_sam(**extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_sam("sam_tiny", **{**TINY, **extra}).eval()


def randomise(net: torch.nn.Module) -> None:
    """Non-trivial values everywhere (the zero-initialised position tables included)."""
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.2)


@pytest.mark.parametrize("name", list(REFERENCE_COUNTS))
def test_parameter_counts_equal_the_reference(name):
    with torch.device("meta"):
        net = create_sam(name)
    assert sum(p.numel() for p in net.parameters()) == REFERENCE_COUNTS[name]
    assert net.low_res_size == 256
    keys = net.state_dict().keys()
    assert {k.split(".")[0] for k in keys} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    globals_ = [i for i, b in enumerate(net.image_encoder.blocks) if b.window_size == 0]
    assert globals_ == list(SAM_VARIANTS[name]["encoder_global_attn_indexes"])
    # relative tables: 2 * 14 - 1 in windowed blocks, 2 * 64 - 1 in global ones
    assert net.image_encoder.blocks[0].attn.rel_pos_h.shape[0] == 27
    assert net.image_encoder.blocks[globals_[0]].attn.rel_pos_h.shape[0] == 127


def test_state_dict_layout_equals_segment_anything():
    sa = pytest.importorskip("segment_anything")
    with torch.device("meta"):
        ours, ref = create_sam("sam_vit_b"), sa.sam_model_registry["vit_b"]()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }


def test_window_partition_pads_and_inverts():
    x = torch.randn(2, 5, 7, 4)
    windows, padded = window_partition(x, 3)
    assert windows.shape == (2 * 2 * 3, 3, 3, 4) and padded == (6, 9)
    assert torch.equal(window_unpartition(windows, 3, padded, (5, 7)), x)


def test_prompts_shapes_padding_point_and_multimask():
    net = tiny_sam()
    images = torch.randn(2, 3, 32, 32)
    points = (torch.tensor([[[3.0, 4.0]], [[20.0, 9.0]]]), torch.ones(2, 1, dtype=torch.long))
    sparse, dense = net.prompt_encoder(points, None, None)
    assert sparse.shape == (2, 2, 32)  # the point and one padding point
    assert torch.allclose(sparse[:, 1], net.prompt_encoder.not_a_point_embed.weight.expand(2, -1))
    assert torch.allclose(
        dense, net.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(dense)
    )
    boxes = torch.tensor([[1.0, 2.0, 10.0, 12.0], [0.0, 0.0, 31.0, 31.0]])
    assert net.prompt_encoder(points, boxes, None)[0].shape == (2, 3, 32)  # no padding with a box
    masks, iou = net(images, points=points, multimask_output=True)
    assert masks.shape == (2, 3, 16, 16) and iou.shape == (2, 3)
    single, iou1 = net(images, points=points, multimask_output=False)
    full, full_iou = net.mask_decoder.predict_masks(
        net.encode(images), net.prompt_encoder.get_dense_pe(), *net.prompt_encoder(points, None, None)
    )
    assert torch.allclose(single[:, 0], full[:, 0], atol=1e-6) and torch.allclose(
        masks, full[:, 1:], atol=1e-6
    )
    # three objects on two images: the shared embeddings are indexed per object
    index = torch.tensor([0, 1, 1])
    p3 = (torch.rand(3, 2, 2) * 32, torch.tensor([[1, 0], [1, 1], [1, -1]]))
    m3, _ = net(images, points=p3, image_index=index, mask_inputs=torch.randn(3, 1, 16, 16))
    assert m3.shape == (3, 1, 16, 16) and torch.isfinite(m3).all()


def test_postprocess_crops_padding_then_resizes():
    net = tiny_sam()
    low = torch.zeros(1, 1, 16, 16)
    low[..., :8, :] = 1.0  # the top half of the padded frame: the resized image is 16 x 32
    out = net.postprocess_masks(low, (16, 32), (40, 80))
    assert out.shape == (1, 1, 40, 80) and (out > 0.5).float().mean() > 0.9


def hf_tiny_model():
    transformers = pytest.importorskip("transformers")
    v = transformers.SamVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
        output_channels=32, window_size=3, global_attn_indexes=[1], mlp_dim=128, num_pos_feats=16,
    )  # fmt: skip
    p = transformers.SamPromptEncoderConfig(
        hidden_size=32, image_size=32, patch_size=8, mask_input_channels=8
    )
    m = transformers.SamMaskDecoderConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, iou_head_hidden_dim=32
    )
    torch.manual_seed(0)
    config = transformers.SamConfig(
        vision_config=v.to_dict(), prompt_encoder_config=p.to_dict(), mask_decoder_config=m.to_dict()
    )
    model = transformers.SamModel(config).eval()
    randomise(model)
    model.prompt_encoder.shared_embedding.positional_embedding = (
        model.shared_image_embedding.positional_embedding
    )
    return model


def test_hf_sam_converts_to_equal_logits_and_iou(tmp_path):
    hf = hf_tiny_model()
    hf.save_pretrained(tmp_path)  # the layout of facebook/sam-vit-base: model.safetensors
    path = tmp_path / "model.safetensors"
    net = tiny_sam()
    load_hf_weights(net, path)  # strict: every key and shape
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 32)
    points = torch.tensor([[[5.0, 7.0]], [[21.0, 12.0]]])
    labels = torch.ones(2, 1, dtype=torch.long)
    boxes = torch.tensor([[2.0, 3.0, 20.0, 25.0], [8.0, 1.0, 30.0, 17.0]])
    with torch.no_grad():
        for multimask in (True, False):
            ours, ours_iou = net(images, points=(points, labels), multimask_output=multimask)
            ref = hf(
                pixel_values=images, input_points=points[:, None], input_labels=labels[:, None],
                multimask_output=multimask,
            )  # fmt: skip
            assert (ours - ref.pred_masks[:, 0]).abs().max() <= 1e-4
            assert (ours_iou - ref.iou_scores[:, 0]).abs().max() <= 1e-4
        ours, ours_iou = net(images, boxes=boxes, multimask_output=False)
        ref = hf(pixel_values=images, input_boxes=boxes[:, None], multimask_output=False)
        assert (ours - ref.pred_masks[:, 0]).abs().max() <= 1e-4
        assert (ours_iou - ref.iou_scores[:, 0]).abs().max() <= 1e-4
    assert ours.abs().max() > 1e-2  # not trivially equal


def test_official_checkpoint_loads_strictly_and_gives_the_reference_outputs(tmp_path):
    sa = pytest.importorskip("segment_anything")
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    ref = Sam(
        image_encoder=ImageEncoderViT(
            img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=[1], window_size=3, out_chans=32,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=32, image_embedding_size=(4, 4), input_image_size=(32, 32), mask_in_chans=8
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2),
            transformer_dim=32, iou_head_depth=3, iou_head_hidden_dim=32,
        ),
    ).eval()  # fmt: skip
    assert sa is not None
    randomise(ref)
    path = tmp_path / "sam_tiny.pth"
    torch.save(ref.state_dict(), path)
    net = create_sam("sam_tiny", checkpoint=str(path), **TINY).eval()
    images = torch.randn(1, 3, 32, 32)
    coords, labels = torch.tensor([[[4.0, 9.0], [20.0, 3.0]]]), torch.tensor([[1, 0]])
    box = torch.tensor([[1.0, 2.0, 25.0, 30.0]])
    mask_in = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        expected = ref([{"image": images[0] * 50 + 120, "original_size": (32, 32), "point_coords": coords,
                         "point_labels": labels, "boxes": box, "mask_inputs": mask_in}], multimask_output=True)[0]  # fmt: skip
        pre = net.preprocess(images * 50 + 120)
        ours, iou = net(pre, points=(coords, labels), boxes=box, mask_inputs=mask_in, multimask_output=True)
    assert (ours - expected["low_res_logits"]).abs().max() <= 1e-4
    assert (iou - expected["iou_predictions"]).abs().max() <= 1e-4


def test_checkpoint_of_another_variant_names_both(tmp_path):
    other = create_sam("sam_tiny", **{**TINY, "encoder_embed_dim": 64, "encoder_num_heads": 4})
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(
        UserError, match=r"model.net.checkpoint=.*encoder width 64.*model.net.name=sam_tiny.*width 32"
    ):
        create_sam("sam_tiny", checkpoint=str(path), **TINY)
    with pytest.raises(UserError, match="no such file"):
        create_sam("sam_tiny", checkpoint=str(tmp_path / "missing.pth"))
    with pytest.raises(UserError, match="not a SAM variant"):
        create_sam("sam_vit_x")


def test_hf_conversion_renames_every_key():
    hf = hf_tiny_model()
    converted = convert_hf_state_dict(hf.state_dict())
    assert set(converted) == set(tiny_sam().state_dict())


def test_mae_init_interpolates_pos_embed_and_keeps_rel_pos_fresh(tmp_path):
    mae = create_mae("mae_vit_tiny", img_size=16, embed_dim=32, depth=2, num_heads=2, patch_size=8)
    randomise(mae)
    path = tmp_path / "mae.pth"
    torch.save(mae.state_dict(), path)
    net = create_sam("sam_tiny", init_from=str(path), **TINY)  # MAE grid 2x2 -> SAM grid 4x4
    enc = net.image_encoder
    assert torch.equal(enc.patch_embed.proj.weight, mae.patch_embed.proj.weight)
    assert torch.equal(enc.blocks[1].attn.qkv.weight, mae.blocks[1].attn.qkv.weight)
    assert torch.equal(enc.blocks[0].mlp.lin2.weight, mae.blocks[0].mlp.fc2.weight)
    assert enc.pos_embed.shape == (1, 4, 4, 32)
    corner = mae.pos_embed[0, 1:].reshape(2, 2, 32)
    assert torch.allclose(
        enc.pos_embed.mean((1, 2))[0], corner.mean((0, 1)), atol=0.1
    )  # interpolated, not fresh
    assert all((b.attn.rel_pos_h == 0).all() and (b.attn.rel_pos_w == 0).all() for b in enc.blocks)
    wide = create_mae("mae_vit_tiny", img_size=16, embed_dim=64, depth=2, num_heads=2, patch_size=8)
    torch.save(wide.state_dict(), path)
    with pytest.raises(UserError, match="64 wide"):
        create_sam("sam_tiny", init_from=str(path), **TINY)


def test_recipe_refuses_to_start_without_the_mae_encoder():
    with pytest.raises(UserError, match="model.net.init_from is required by this recipe"):
        create_sam("sam_tiny", image_size=32, require_init_from=True)
