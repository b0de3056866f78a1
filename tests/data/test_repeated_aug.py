"""Repeated augmentation in EpochSampler (DeiT's RASampler): exact under DDP, resumable, seeded,
and each copy of an index augmented on its own."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import torch

from vitrain.data.base import EpochBatchSampler, EpochSampler, ShardedDataModule
from vitrain.data.imagefolder import ImageFolderDataModule
from vitrain.errors import UserError


def shards(size: int, world: int, epoch: int = 0, repeats: int = 3) -> list[list[int]]:
    samplers = [EpochSampler(size, seed=5, rank=r, world=world, repeats=repeats) for r in range(world)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
    return [list(s) for s in samplers]


def test_each_index_three_times_on_three_different_ranks():
    ranks = shards(size=12, world=3)
    assert [len(r) for r in ranks] == [4, 4, 4]  # the epoch length of each rank is unchanged
    counts = Counter(i for r in ranks for i in r)
    assert set(counts.values()) == {3} and len(counts) == 4  # 12 samples = 4 images x 3 copies
    for index in counts:  # the copies of an image sit on different ranks
        assert sum(index in r for r in ranks) == 3
    # 8 ranks (DeiT's setting): every image drawn appears 3 times, never twice on one rank
    ranks = shards(size=48, world=8)
    counts = Counter(i for r in ranks for i in r)
    assert all(len(set(r)) == len(r) == 6 for r in ranks)
    assert set(counts.values()) == {3} and len(counts) == 16  # 48 samples = 16 images x 3 copies


def test_epoch_seeded_and_resumable():
    first, again, other = shards(12, 3, epoch=1), shards(12, 3, epoch=1), shards(12, 3, epoch=2)
    assert first == again and first != other
    batches = EpochBatchSampler(EpochSampler(12, seed=5, rank=1, world=3, repeats=3), batch_size=1)
    batches.load_state_dict({"epoch": 1, "batches": 2, "samples_per_step": 3})
    # a mid-epoch resume continues exactly where the run stopped
    assert [i for ((i, _, _),) in batches] == first[1][2:] and len(batches.sampler) == 4
    batches.set_epoch(2)  # the restored position applies to its own epoch only
    assert [i for ((i, _, _),) in batches] == other[1]


def test_one_process_sees_the_copies_in_a_row():
    (order,) = shards(size=9, world=1)
    assert len(order) == 9 and order[0] == order[1] == order[2] and order[3] == order[4] == order[5]


def test_datamodule_repeats_only_training_and_rejects_bad_values():
    data = ShardedDataModule(batch_size=2, seed=0, repeated_aug=3)
    data.train_set = torch.utils.data.TensorDataset(torch.arange(6))
    data.val_set = torch.utils.data.TensorDataset(torch.arange(6))
    train = [int(x) for (batch,) in data.train_dataloader() for x in batch]
    assert Counter(train).most_common(1)[0][1] == 3 and len(train) == 6
    assert sorted(int(x) for (batch,) in data.val_dataloader() for x in batch) == list(range(6))
    with pytest.raises(UserError, match="data.repeated_aug=0"):
        ShardedDataModule(batch_size=2, repeated_aug=0)


def test_imagefolder_copies_are_different_views(image_tree):
    """The real path: timm's training transform (crop, flip, erasing) through the DataModule's training loader."""
    data = ImageFolderDataModule(
        root=str(image_tree), num_classes=3, image_size=16, batch_size=6, repeated_aug=3, auto_augment=None
    )
    data.setup("fit")
    keys = [key for batch in data.train_dataloader().batch_sampler for key in batch]
    images = torch.cat([images for images, _ in data.train_dataloader()])
    by_index = defaultdict(list)
    for (index, _, _), image in zip(keys, images, strict=True):
        by_index[index].append(image)
    assert len(by_index) == 8 and all(len(views) == 3 for views in by_index.values())
    for views in by_index.values():
        assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])
        assert not torch.equal(views[0], views[2])
