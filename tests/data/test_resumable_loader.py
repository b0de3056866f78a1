"""The training loader: epoch order, per-sample seeded augmentation, resumable position."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import Dataset

from vitrain.data.base import EpochBatchSampler, EpochSampler, ResumableLoader, SeededSamples


class NoisySamples(Dataset):
    """Sample ``i`` is ``i`` plus noise from all three global generators (an augmentation)."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([index, torch.rand(()).item(), random.random()], dtype=torch.float64)


def loader(workers: int, world: int = 1, rank: int = 0, batch: int = 4, repeats: int = 1) -> ResumableLoader:
    sampler = EpochSampler(40, seed=5, rank=rank, world=world, repeats=repeats)
    return ResumableLoader(
        SeededSamples(NoisySamples(), seed=5),
        batch_sampler=EpochBatchSampler(sampler, batch),
        num_workers=workers,
    )


def epoch(dl: ResumableLoader, number: int) -> list[torch.Tensor]:
    dl.batch_sampler.set_epoch(number)
    return list(dl)


@pytest.mark.parametrize(
    ("saved_with", "resumed_with", "repeats"), [(0, 0, 1), (2, 2, 1), (2, 0, 1), (0, 0, 3), (2, 0, 3)]
)
def test_mid_epoch_state_resumes_the_same_batches(saved_with, resumed_with, repeats):
    reference = epoch(loader(0, repeats=repeats), 1)
    first = loader(saved_with, repeats=repeats)
    first.batch_sampler.set_epoch(1)
    batches = iter(first)
    seen = [next(batches) for _ in range(4)]
    state = first.state_dict()
    del batches
    resumed = loader(resumed_with, repeats=repeats)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(seen) + len(rest) == len(reference) == 10
    for got, want in zip(seen + rest, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_augmentation_depends_on_sample_and_epoch_only():
    one, two = epoch(loader(0), 0), epoch(loader(2), 0)
    torch.testing.assert_close(torch.cat(one), torch.cat(two), rtol=0, atol=0)  # any worker count
    by_index = {int(row[0]): row for row in torch.cat(one)}
    other_epoch = {int(row[0]): row for row in torch.cat(epoch(loader(0), 1))}
    assert all(not torch.equal(by_index[i][1:], other_epoch[i][1:]) for i in by_index)
    # two ranks of batch 2 draw the very samples (and noise) of one process with batch 4
    ranks = [epoch(loader(0, world=2, rank=r, batch=2), 0) for r in range(2)]
    merged = {int(row[0]): row for part in ranks for batch in part for row in batch}
    for i, row in by_index.items():
        torch.testing.assert_close(merged[i], row, rtol=0, atol=0)


def test_copies_of_a_repeated_index_are_augmented_independently():
    # issue 21: the 3 copies of repeated augmentation were seeded by (seed, epoch, index) alone
    single = [row for batch in epoch(loader(0, repeats=3), 0) for row in batch]
    copies: dict[int, list[tuple[float, ...]]] = {}
    for row in single:
        copies.setdefault(int(row[0]), []).append(tuple(row[1:].tolist()))
    assert sorted(len(noise) for noise in copies.values()) == [1] + [3] * 13  # 40 draws
    assert all(len(set(noise)) == len(noise) for noise in copies.values())
    # four ranks (the copies on different ranks) draw the very copies one process draws
    ranks = [row for r in range(4) for batch in epoch(loader(0, 4, r, 1, repeats=3), 0) for row in batch]
    assert sorted(row.tolist() for row in ranks) == sorted(row.tolist() for row in single)


def test_loading_in_the_main_process_leaves_the_global_generators_alone():
    torch.manual_seed(0)
    random.seed(0)
    expected = torch.rand(3), random.random()
    torch.manual_seed(0)
    random.seed(0)
    epoch(loader(0), 0)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_finished_epoch_resumes_at_the_next_one():
    dl = loader(0)
    dl.batch_sampler.set_epoch(2)
    list(dl)
    state = dl.state_dict()
    resumed = loader(0)
    resumed.load_state_dict(state)
    got = list(resumed)
    assert resumed.batch_sampler.epoch == 3
    for a, b in zip(got, epoch(loader(0), 3), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_state_keeps_the_position_in_samples_when_the_rank_count_changes():
    single = EpochBatchSampler(EpochSampler(40, seed=5), 4)
    single.load_state_dict({"epoch": 1, "batches": 3, "samples_per_step": 8})  # 2 ranks x batch 4
    assert single.state_dict() == {"epoch": 1, "batches": 6, "samples_per_step": 4}
    assert len(list(single)) == 4  # 10 batches in the epoch, 6 done


def test_restored_position_applies_to_its_epoch_only():
    dl = loader(0)
    dl.batch_sampler.set_epoch(1)
    batches = iter(dl)
    [next(batches) for _ in range(3)]
    resumed = loader(0)
    resumed.load_state_dict(dl.state_dict())
    rest = iter(resumed)
    [next(rest) for _ in range(2)]  # the epoch ends early (limit_train_batches)
    del rest
    resumed.batch_sampler.sampler.set_epoch(2)  # as Lightning does: on the wrapped sampler
    for a, b in zip(list(resumed), epoch(loader(0), 2), strict=True):  # all of epoch 2
        torch.testing.assert_close(a, b, rtol=0, atol=0)
