"""Segmentation data: exact shapes masks, the SAM frame, COCO polygons / RLE, SA-1B pairs, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitrain.data.segmentation import (
    SAM_MEAN,
    COCOMasksDataModule,
    MaskSubset,
    SA1BDataModule,
    ShapesMasksDataModule,
    mask_boxes,
    render_masks,
    resize_longest_side,
)
from vitrain.data.shapes import render
from vitrain.errors import UserError


def test_shapes_masks_are_exact_and_the_image_is_the_detection_image():
    image, masks = render_masks(0, 0, 5, 64, (2, 3), (13, 29))
    ref_image, boxes, _ = render(0, 0, 5, 64, (2, 3), (13, 29))
    assert np.array_equal(np.asarray(image), np.asarray(ref_image))
    assert masks.shape[0] == boxes.shape[0] >= 2
    assert torch.equal(mask_boxes(masks), boxes)  # each shape fills its box edge to edge
    assert not (masks.sum(0) > 1).any()  # no overlaps
    # the mask covers exactly the pixels that differ from a background-only rendering
    pixels = np.asarray(image).astype(int)
    for mask in masks.numpy():
        inside = pixels[mask].mean(0)
        assert np.abs(inside - pixels[mask][0]).max() < 1e-6  # one flat colour inside


def test_shapes_masks_module_samples_the_sam_frame():
    dm = ShapesMasksDataModule(image_size=32, render_size=64, train_size=4, val_size=2, batch_size=2,
                               max_masks_per_image=1)  # fmt: skip
    dm.setup()
    images, targets = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 32, 32)
    for t in targets:
        assert t["masks"].shape == (1, 32, 32) and t["masks"].dtype == torch.bool
        assert t["input_size"].tolist() == [32, 32] and t["orig_size"].tolist() == [64, 64]
        assert torch.equal(t["boxes"], mask_boxes(t["masks"]))
    with pytest.raises(UserError, match="min_objects"):
        ShapesMasksDataModule(min_objects=0)


def test_shapes_masks_test_split_is_its_own_stream():
    dm = ShapesMasksDataModule(image_size=16, train_size=2, val_size=2, test_size=3, batch_size=2)
    dm.setup()
    assert dm.has_test_split and len(dm.test_set) == 3
    test_image, val_image = dm.test_set[0][0], dm.val_set[0][0]
    assert not torch.equal(test_image, val_image) and not torch.equal(test_image, dm.train_set[0][0])
    none = ShapesMasksDataModule(image_size=16, train_size=2, val_size=2, test_size=0)
    none.setup()
    assert not none.has_test_split


def test_default_shapes_images_are_unchanged_by_the_kinds_and_fill_options():
    import hashlib

    image, masks = render_masks(0, 0, 5, 32, (1, 3), (6, 14))  # pinned before the options existed
    assert hashlib.sha1(np.asarray(image).tobytes()).hexdigest() == "0ac99fcd66e78bf9339dca573cf91b9a9b999108"
    assert hashlib.sha1(masks.numpy().tobytes()).hexdigest() == "b9fa4a6b7f9e933432ed6b1c43f1697d05a88251"


def test_shifted_shapes_striped_rings_crosses_diamonds_have_exact_masks():
    kinds = ("ring", "cross", "diamond")
    seen = set()
    for index in range(6):
        image, masks = render_masks(0, 0, index, 64, (2, 3), (13, 29), kinds, "stripes")
        plain, _ = render_masks(0, 0, index, 64, (2, 3), (13, 29))
        _, boxes, labels = render(0, 0, index, 64, (2, 3), (13, 29), kinds=kinds, fill="stripes")
        seen |= {kinds[i] for i in labels.tolist()}
        assert torch.equal(mask_boxes(masks), boxes)  # every kind fills its box edge to edge
        pixels, background = np.asarray(image).astype(int), np.asarray(plain).astype(int)
        covered = masks.any(0).numpy()
        old = render_masks(0, 0, index, 64, (2, 3), (13, 29))[1].any(0).numpy()
        outside = ~covered & ~old
        assert np.array_equal(pixels[outside], background[outside])  # only the shapes are painted
        for mask, label in zip(masks.numpy(), labels.tolist(), strict=True):
            colours = np.unique(pixels[mask], axis=0)
            assert len(colours) == 2  # two colours in stripes
            x0, y0, x1, y1 = (int(v) for v in mask_boxes(torch.from_numpy(mask[None]))[0])
            centre = mask[(y0 + y1) // 2, (x0 + x1) // 2]
            assert centre == (kinds[label] != "ring")  # a ring has a hole
    assert seen == set(kinds)
    dm = ShapesMasksDataModule(
        image_size=32, train_size=2, val_size=2, test_size=0, kinds=list(kinds), fill="stripes"
    )
    dm.setup()
    assert dm.train_set[0][1]["masks"].shape[0] >= 1
    with pytest.raises(
        UserError, match=r"data.kinds=\['star'\]: unknown star; choose from circle, .*diamond"
    ):
        ShapesMasksDataModule(kinds=["star"])
    with pytest.raises(UserError, match="data.fill=dots: choose from flat, stripes"):
        ShapesMasksDataModule(fill="dots")


def test_resize_pads_bottom_right_with_the_mean():
    assert resize_longest_side((300, 600), 64) == (32, 64)


def write_coco(tmp_path, annotations, images=None):
    (tmp_path / "imgs").mkdir(exist_ok=True)
    Image.fromarray(np.full((40, 80, 3), 100, np.uint8)).save(tmp_path / "imgs" / "a.png")
    Image.fromarray(np.full((40, 80, 3), 50, np.uint8)).save(tmp_path / "imgs" / "b.png")
    content = {
        "images": images or [{"id": 1, "file_name": "a.png", "height": 40, "width": 80},
                             {"id": 2, "file_name": "b.png", "height": 40, "width": 80}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}],
    }  # fmt: skip
    (tmp_path / "ann.json").write_text(json.dumps(content))
    return COCOMasksDataModule(root=str(tmp_path), train_ann="ann.json", val_ann="ann.json", train_images="imgs",
                               val_images="imgs", image_size=32, batch_size=2)  # fmt: skip


def test_coco_masks_decodes_polygons_and_rle_skips_crowd_and_empty_images(tmp_path):
    from faster_coco_eval.core import mask as mask_utils

    square = np.zeros((40, 80), np.uint8, order="F")
    square[10:30, 40:60] = 1
    rle = mask_utils.encode(square)
    rle["counts"] = rle["counts"].decode()
    dm = write_coco(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[0, 0, 20, 0, 20, 20, 0, 20]]},
        {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": rle},
        {"id": 3, "image_id": 2, "category_id": 1, "iscrowd": 1, "segmentation": rle},
    ])  # fmt: skip
    dm.setup()
    assert len(dm.val_set) == 1  # image 2 has only a crowd region: skipped
    assert not dm.has_test_split  # no data.test_ann
    with_test = COCOMasksDataModule(root=str(tmp_path), train_ann="ann.json", val_ann="ann.json",
                                    train_images="imgs", val_images="imgs", test_ann="ann.json", image_size=32)  # fmt: skip
    with_test.setup()
    assert len(with_test.test_set) == 1  # its images from the validation folder
    image, target = dm.val_set[0]
    assert image.shape == (3, 32, 32) and target["input_size"].tolist() == [16, 32]
    masks = target["masks"]
    assert masks.shape == (2, 32, 32) and not masks[:, 16:].any()  # padding stays empty
    assert target["boxes"][1].tolist() == [16.0, 4.0, 24.0, 12.0]  # the RLE square, scaled by 0.4
    assert abs(image[0, 0, 0].item() - (100 - SAM_MEAN[0]) / 58.395) < 1e-4 and image[:, 20:].abs().max() == 0


def test_coco_annotation_without_segmentation_is_one_clear_message(tmp_path):
    dm = write_coco(tmp_path, [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}])
    with pytest.raises(UserError, match="annotation 7 .* has no 'segmentation'"):
        dm.setup()
    dm = write_coco(tmp_path, [])
    with pytest.raises(UserError, match="no image has a"):
        dm.setup()


def test_sa1b_pairs_and_mask_cap(tmp_path):
    from faster_coco_eval.core import mask as mask_utils

    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 80, np.uint8)).save(tmp_path / f"sa_{i}.jpg")
        anns = []
        for k in range(4):
            m = np.zeros((20, 20), np.uint8, order="F")
            m[k * 4 : k * 4 + 3, 2:9] = 1
            rle = mask_utils.encode(m)
            anns.append({"segmentation": {"size": [20, 20], "counts": rle["counts"].decode()}, "id": k})
        (tmp_path / f"sa_{i}.json").write_text(json.dumps({"image": {"image_id": i}, "annotations": anns}))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "lonely.jpg")  # no JSON: skipped
    dm = SA1BDataModule(root=str(tmp_path), val_images=1, image_size=20, max_masks_per_image=2, batch_size=1)
    dm.setup()
    assert len(dm.train_set) == 2 and len(dm.val_set) == 1
    _, target = MaskSubset(dm.train_set, 2, train=True)[0]
    assert target["masks"].shape == (2, 20, 20)
    _, full = dm.train_set[0]
    assert full["masks"].shape == (4, 20, 20) and full["masks"][0, :3, 2:9].all()
    _, filtered = MaskSubset(dm.train_set, None, train=True, max_area=0.05)[0]
    assert filtered["masks"].shape[0] == 0  # each 3 x 7 mask covers 5.25% of the 20 x 20 image
    with pytest.raises(UserError, match="val_images"):
        SA1BDataModule(root=str(tmp_path), val_images=10).setup()
    held_out = SA1BDataModule(root=str(tmp_path), val_images=1, test_images=1, image_size=20)
    held_out.setup()  # sorted: sa_0 trains, sa_1 tests, sa_2 validates
    assert len(held_out.train_set) == len(held_out.test_set) == len(held_out.val_set) == 1
    assert held_out.test_set.files[0].name == "sa_1.jpg" and held_out.val_set.files[0].name == "sa_2.jpg"
