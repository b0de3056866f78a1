"""What every DataModule shares: the contract (:class:`DataModule`), per-rank epoch sampling,
loaders, resume; image-data helpers."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

from vitrain.errors import FRACTION, Range, UserError, require_in, require_int
from vitrain.seeding import default_seed, generators_restored, sample_seed, seed_generators

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def open_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Open an image file converted to ``mode`` ("RGB" or "L"); a damaged file names itself."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert(mode)
    except Exception as err:  # PIL raises many types for damaged files
        raise UserError(f"cannot read image {path} ({err}): remove or replace the file.") from err


class ImageFiles(Dataset):
    """The image files under a folder (recursive, sorted), for prediction: ``(image, index)``."""

    def __init__(self, folder: str | Path, transform, mode: str = "RGB") -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"data.predict_dir={folder}: no such folder. Point it at a folder of images.")
        self.files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise UserError(f"data.predict_dir={folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
        self.transform, self.mode = transform, mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(open_image(self.files[index], self.mode)), index


REPEATED_AUG_HINT = "1: off; DeiT: 3"


class EpochSampler(Sampler[int]):
    """This rank's share of a permutation that depends only on ``(seed, epoch)``.

    Every rank draws the same permutation and takes every ``world``-th index from position
    ``rank``, so one step of ``world`` ranks with batch ``b`` sees exactly the samples one
    process with batch ``world * b`` would. Training (``even=True``) truncates to a multiple of
    ``world`` so all ranks run the same number of steps; evaluation keeps every sample exactly
    once (ranks may differ by one sample; metrics are synchronised at epoch end).

    Lightning calls ``set_epoch`` before each epoch. Training batches and their resumable
    position come from :class:`EpochBatchSampler`, which wraps this sampler.

    ``repeats > 1`` is repeated augmentation (Hoffer et al. 2020; DeiT's ``RASampler``,
    facebookresearch/deit ``samplers.py``): each index of the permutation is repeated
    ``repeats`` times in a row before the ranks take their share, so with ``world >= repeats``
    the copies land on ``repeats`` different ranks. Each copy carries its repeat number
    (:meth:`draws`), which :class:`SeededSamples` mixes into the augmentation seed, so the copies
    are augmented independently, as in ``RASampler``, whatever the number of ranks. Each rank
    still runs ``size // world`` samples per epoch, so an epoch covers about ``size / repeats``
    distinct images. Training only (``even=True``).
    """

    def __init__(
        self,
        size: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world: int = 1,
        even: bool = True,
        repeats: int = 1,
    ) -> None:
        require_int("data.repeated_aug", repeats, hint=REPEATED_AUG_HINT)
        if repeats > 1 and not even:
            raise ValueError("EpochSampler: repeats > 1 is for training (even=True)")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world, self.even = rank, world, even
        self.repeats = repeats
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def draws(self) -> list[tuple[int, int]]:
        """This rank's ``(index, copy)`` pairs for the current epoch, in order: ``copy`` is the
        repeat number (``0 .. repeats - 1``) of the index in the epoch (always 0 without repeats)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.repeats > 1:
            repeated = [(index, copy) for index in order for copy in range(self.repeats)]
            return repeated[self.rank :: self.world][: len(self)]
        if self.even:
            order = order[: self.size - self.size % self.world]
        return [(index, 0) for index in order[self.rank :: self.world]]

    def order(self) -> list[int]:
        """This rank's index order for the current epoch."""
        return [index for index, _ in self.draws()]

    def __iter__(self):
        return iter(self.order())

    def __len__(self) -> int:
        if self.even:
            return self.size // self.world
        return len(range(self.rank, self.size, self.world))


class SeededSamples(Dataset):
    """A training set whose sample ``index`` in ``epoch`` always gets the same random augmentation.

    Keys are ``(index, epoch, copy)`` triples (from :class:`EpochBatchSampler`; ``copy`` numbers
    the repeats of repeated augmentation). Before reading a sample, python's, numpy's and torch's
    global (CPU) generators are seeded from :func:`vitrain.seeding.sample_seed`, so the
    augmentation of a sample does not depend on the worker that loads it, on how many workers
    there are, on the number of ranks, or on a restart: a resumed run draws exactly what the
    uninterrupted run drew; each copy of a repeated index draws its own augmentation. The loader
    reads a batch at a time (``__getitems__``), and the global generators are restored after the
    batch, so data loading in the main process (``num_workers=0``) leaves the training stream
    (dropout, masking) alone.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int, int]]) -> list:
        """The samples of a batch of keys: one save and restore of the generators per batch (in a
        worker process nothing else draws from them, so nothing is restored there). The seeds are
        derived together first: between two image transforms the seed derivation runs with cold
        caches and costs several times more."""
        seeds = [sample_seed(self.seed, epoch, index, copy) for index, epoch, copy in keys]
        samples = []
        with generators_restored(restore=get_worker_info() is None):
            for (index, _, _), seed in zip(keys, seeds, strict=True):
                seed_generators(seed, accelerators=False)
                samples.append(self.dataset[index])
        return samples


class EpochBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Training batches of ``(index, epoch, copy)`` keys from an :class:`EpochSampler`, with a resumable position.

    ``state_dict()`` is ``{"epoch", "batches", "samples_per_step"}``: the epoch and how many
    batches of it this iterator has handed out. torchdata's :class:`StatefulDataLoader` records
    it for the batch each step consumed (not the ones its workers prefetched) and Lightning
    stores it in the checkpoint; ``load_state_dict`` makes the next iteration start right after
    the last trained batch. All ranks advance in step, so rank zero's state serves every rank;
    a restart with another number of ranks keeps the position in samples (``samples_per_step`` =
    batch x ranks) when it divides evenly. A finished epoch resumes at the next one.
    """

    def __init__(self, sampler: EpochSampler, batch_size: int) -> None:
        self.sampler, self.batch_size = sampler, batch_size
        # a restored position: batches to skip in epoch ``_start_epoch`` (Lightning may call
        # ``set_epoch`` on the wrapped sampler directly, so the epoch is checked at each iteration)
        self._start, self._start_epoch = 0, -1
        self._batches = 0  # batches handed out by the current iteration (its position)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        start = self._start if self.sampler.epoch == self._start_epoch else 0
        self._batches = start
        draws, epoch, size = self.sampler.draws(), self.sampler.epoch, self.batch_size
        return self._batches_from(draws, epoch, size, start)

    def _batches_from(self, draws: list[tuple[int, int]], epoch: int, size: int, start: int):
        for first in range(start * size, len(draws) - size + 1, size):
            self._batches += 1
            yield [(index, epoch, copy) for index, copy in draws[first : first + size]]

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.sampler.epoch,
            "batches": self._batches,
            "samples_per_step": self.batch_size * self.sampler.world,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        per_step = self.batch_size * self.sampler.world
        if state.get("samples_per_step", per_step) != per_step:
            samples = batches * state["samples_per_step"]
            if samples % per_step:
                log.warning(
                    "Resuming with %d samples per step instead of %d: %d samples of the epoch were done, "
                    "the epoch continues after %d.", per_step, state["samples_per_step"], samples,
                    samples // per_step * per_step,
                )  # fmt: skip
            batches = samples // per_step
        if batches >= len(self):  # the epoch was finished: the next one starts from its beginning
            epoch, batches = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self._start = self._batches = batches
        self._start_epoch = epoch


class ResumableLoader(StatefulDataLoader):
    """torchdata's :class:`StatefulDataLoader` over an :class:`EpochBatchSampler`.

    Its state (saved by Lightning in the checkpoint) holds the batch sampler's position as of
    the last batch handed to training. Workers keep no state of their own (randomness comes from
    :class:`SeededSamples`), so a state saved with another ``num_workers`` resumes from the
    sampler position alone. Worker base seeds come from a generator of its own, so iterating
    draws nothing from the global generator.
    """

    def __init__(self, dataset: Dataset, **kwargs) -> None:
        kwargs.setdefault("generator", torch.Generator().manual_seed(0))
        super().__init__(dataset, **kwargs)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["vitrain_workers"] = self.num_workers
        return state

    def load_state_dict(self, state: dict) -> None:
        if state.get("vitrain_workers", self.num_workers) == self.num_workers:
            super().load_state_dict({k: v for k, v in state.items() if k != "vitrain_workers"})
            return
        main = state["_snapshot"]["_main_snapshot"] if "_snapshot" in state else state
        self.batch_sampler.load_state_dict(main["_index_sampler_state"])
        log.info(
            "Resuming the loader with %d workers (saved with %d).", self.num_workers, state["vitrain_workers"]
        )


def check_loader_settings(batch_size: Any = None, num_workers: Any = None) -> None:
    """``data.batch_size`` (a positive integer) and ``data.num_workers`` (0: load in the main
    process, or more); None: not given. Every :class:`DataModule` checks its own; the
    orchestration checks the config's before anything is built."""
    if batch_size is not None:
        require_int("data.batch_size", batch_size)
    if num_workers is not None and (
        isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0
    ):
        raise UserError(
            f"data.num_workers={num_workers}: the number of loader processes must be 0 (load in the main "
            "process) or a positive integer; set data.num_workers=0 or e.g. data.num_workers=4."
        )


def check_held_out_fractions(val_fraction: float, test_fraction: float) -> None:
    """``data.val_fraction`` in (0, 1) and ``data.test_fraction`` in [0, 1) (0: no test split),
    leaving data to train on."""
    require_in("data.val_fraction", val_fraction, FRACTION, "the share held out for validation")
    require_in("data.test_fraction", test_fraction, Range(0, 1), "the share held out for testing (0: none)")
    if val_fraction + test_fraction >= 1:
        raise UserError(
            f"data.val_fraction={val_fraction} + data.test_fraction={test_fraction} = "
            f"{val_fraction + test_fraction:g} leaves nothing to train on: the two must add up to less than 1."
        )


class DataModule(L.LightningDataModule):
    """The base class of every vitrain DataModule (``conf/data/*.yaml`` ``_target_``): what the
    orchestration (``vitrain.run``) and the tasks rely on.

    **A subclass defines**

    - ``kind`` (class attribute): the kind of data it provides (``image_classification``,
      ``detection``, ``segmentation``, ``text``, ``text_classification``,
      ``token_classification``, ``instructions``). A task trains on the data whose ``kind`` is
      its ``data_kind``; a model paired with data of another kind is refused before anything is
      built. ``None`` (the default) marks a base class, not a data option.
    - ``setup(stage)`` and the loaders of its splits: ``train_dataloader``, ``val_dataloader``
      and, when it has a held-out test split, ``test_dataloader``. :class:`ShardedDataModule`
      provides loaders for map-style datasets (``train_set``, ``val_set``, ``test_set``).

    **A subclass may define**

    - ``model_size_keys`` and :meth:`model_sizes`: network sizes the data decides (the class
      folders' count, a trained tokenizer's vocabulary). A ``model.net`` entry of these names that
      the config leaves null takes the data's value, before the network is built.
    - ``wants_net_data_config = True``: the constructor receives ``net_data_config``, timm's
      data config of the network (mean, std, interpolation, crop).
    - ``early_setup = False``: do not run ``setup("fit")`` before the loggers start (by default
      the data is read first, so that a missing root fails before a W&B run exists); streaming
      datasets take the rank when created, so they wait for the process group.
    - ``keeps_workers = False``: its loaders cannot keep their worker processes between epochs
      (``data.persistent_workers=true`` is then refused).
    - ``test_set`` (None: no held-out test split; :attr:`has_test_split` reads it after setup),
      :meth:`predict_dataloader` (``mode=predict``; default: not supported) and
      :meth:`write_predictions` (default: ``predictions.csv``).

    ``kind``, ``model_size_keys`` (with :meth:`model_sizes`) and the flags are checked when the
    class is defined.

    Args:
        batch_size: samples per batch and process.
        num_workers: loader processes (0: load in the main process).
        pin_memory: page-locked batches, for faster copies to a GPU.
        persistent_workers: keep the loader processes between epochs (with ``num_workers`` > 0).
        seed: the seed of the sampling order and of each sample's augmentation (None: from
            torch's initial seed, see ``vitrain.seeding.default_seed``).
    """

    kind: ClassVar[str | None] = None
    model_size_keys: ClassVar[tuple[str, ...]] = ()
    wants_net_data_config: ClassVar[bool] = False
    early_setup: ClassVar[bool] = True
    keeps_workers: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        where = f"{cls.__name__} (see vitrain.data.base.DataModule)"
        if cls.kind is not None and (not isinstance(cls.kind, str) or not cls.kind):
            raise TypeError(f"{where}: kind must be a non-empty string, or None for a base class")
        keys = cls.model_size_keys
        if not isinstance(keys, tuple) or not all(isinstance(k, str) for k in keys):
            raise TypeError(f"{where}: model_size_keys must be a tuple of names")
        if keys and cls.model_sizes is DataModule.model_sizes:
            raise TypeError(f"{where}: model_size_keys {keys} needs a model_sizes() that returns them")
        for flag in ("wants_net_data_config", "early_setup", "keeps_workers"):
            if not isinstance(getattr(cls, flag), bool):
                raise TypeError(f"{where}: {flag} must be True or False")

    def __init__(
        self,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        check_loader_settings(batch_size, num_workers)
        if persistent_workers and num_workers > 0 and not self.keeps_workers:
            raise UserError(
                f"data.persistent_workers=true: {type(self).__name__}'s loader workers cannot be kept between "
                "epochs (they learn the epoch, which orders and seeds the samples, when they start); set "
                "data.persistent_workers=false."
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.seed = default_seed(seed)
        self.train_set: Any = None
        self.val_set: Any = None
        # a held-out split, never used for checkpoint or hyperparameter selection
        self.test_set: Any = None
        self.predict_set: Any = None

    def model_sizes(self) -> dict[str, int]:
        """``{key: value}`` for each of ``model_size_keys``: network sizes the data decides."""
        return {}

    def hold_out(self, val_fraction: float, test_fraction: float, split_seed: int) -> None:
        """Keep the shares of the data held out for validation and testing (``data.val_fraction``,
        ``data.test_fraction``: 0 for no test split) and the seed that picks them, checked
        (:func:`check_held_out_fractions`)."""
        check_held_out_fractions(val_fraction, test_fraction)
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed

    @property
    def has_test_split(self) -> bool:
        """Whether ``setup`` found a held-out test split (``test_set``)."""
        return self.test_set is not None

    def predict_dataloader(self) -> DataLoader:
        """The batches of ``mode=predict`` (default: this data has none)."""
        raise UserError(f"mode=predict: {type(self).__name__} has no data to predict.")

    def write_predictions(self, header: list[str], rows: list[list], out_dir: Path) -> list[Path]:
        """Write the predictions of ``mode=predict`` (the task's ``predict_rows``) into ``out_dir``;
        returns the files written. Default: ``predictions.csv``."""
        path = Path(out_dir) / "predictions.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        return [path]


class ShardedDataModule(DataModule):
    """Loaders for map-style datasets, shared by most vitrain DataModules; subclasses set
    ``train_set`` and ``val_set``, and ``test_set`` when the data has a held-out test split
    (None: it has none).

    Each rank gets its share of an epoch-seeded permutation (:class:`EpochSampler`): training
    shards are equal in size and drop the last incomplete batch (mixup/cutmix need even
    batches), validation gives every sample to exactly one rank. ``collate_fn`` (None: torch's
    default) batches the samples. The training loader is a :class:`ResumableLoader`: Lightning
    saves its position in each checkpoint, and each sample's augmentation is seeded by
    ``(seed, epoch, index)`` and its repeat number (:class:`SeededSamples`), so a mid-epoch
    resume is exact with any ``num_workers``.

    Args:
        repeated_aug: repeat each training sample that many times across ranks (DeiT's repeated
            augmentation; see :class:`EpochSampler`); 1: off.
    """

    collate_fn = None

    def __init__(
        self,
        batch_size: int,
        repeated_aug: int = 1,
        **loader_kwargs,
    ) -> None:
        super().__init__(batch_size, **loader_kwargs)
        require_int("data.repeated_aug", repeated_aug, hint=REPEATED_AUG_HINT)
        self.repeated_aug = repeated_aug

    def check_num_classes(self, found: int, where: str) -> None:
        """Take the class count from the data when ``data.num_classes`` is null; fail when an
        explicit value differs from what the data holds."""
        if self.num_classes is None:
            self.num_classes = found
        elif found != self.num_classes:
            raise UserError(
                f"{where} has {found} classes but data.num_classes={self.num_classes}: set "
                f"data.num_classes={found}, or null to take it from the data."
            )

    def check_one_batch(self, samples: int, per_rank: int, world: int) -> None:
        """Refuse a training set that gives no full batch: the loader drops the last partial
        batch, so training would "complete" after 0 steps."""
        if per_rank >= self.batch_size:
            return
        processes = f" over {world} processes ({per_rank} each)" if world > 1 else ""
        raise UserError(
            f"data: the training split has {samples} samples{processes}, fewer than one batch of "
            f"data.batch_size={self.batch_size}, so no training step would run (the last partial batch "
            f"is dropped). Set data.batch_size={max(per_rank, 1)} or smaller, or add training data."
        )

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("setup() must run before the dataloaders are requested")
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = EpochSampler(
            len(dataset),
            seed=self.seed,
            shuffle=train,
            rank=rank,
            world=world,
            even=train,
            repeats=self.repeated_aug if train else 1,
        )
        if train:
            self.check_one_batch(len(dataset), len(sampler), world)
        workers = dict(
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )
        if train:
            batches = EpochBatchSampler(sampler, self.batch_size)
            return ResumableLoader(SeededSamples(dataset, self.seed), batch_sampler=batches, **workers)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, **workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        """The held-out test split, every sample exactly once (like validation)."""
        if self.test_set is None:
            raise UserError(
                f"{type(self).__name__} has no test split: see the data config's test options "
                "(data.test_split, data.test_fraction, data.test_ann, data.test_size)."
            )
        return self._loader(self.test_set, train=False)


class ImageClassificationDataModule(ShardedDataModule):
    """Base class: subclasses set ``train_set``, ``val_set`` and ``classes`` in ``setup``.

    Batches are ``(images (B, in_chans, image_size, image_size) float, labels (B,) int64)``.

    Args:
        num_classes: number of classes of the labels (None: counted from the data, where the
            subclass can).
        image_size: side of the square images the network gets, pixels.
        in_chans: channels of those images.
        net_data_config: timm's data config of the network (mean, std, interpolation, crop),
            passed in by the orchestration layer.
        predict_dir: the folder of images that ``mode=predict`` classifies (see :class:`ImageFiles`).
    """

    kind = "image_classification"
    wants_net_data_config = True  # the orchestration passes timm's data config of the network

    def __init__(
        self,
        num_classes: int | None,
        image_size: int,
        in_chans: int,
        batch_size: int = 64,
        net_data_config: dict | None = None,
        predict_dir: str | None = None,
        **loader_kwargs,
    ) -> None:
        super().__init__(batch_size, **loader_kwargs)
        require_int("data.image_size", image_size)
        self.num_classes = num_classes
        self.image_size = image_size
        self.in_chans = in_chans
        self.net_data_config = net_data_config or {}
        self.predict_dir = predict_dir
        self.classes: list[str] = []

    image_mode = "RGB"  # how prediction images are opened ("L" for grey data)

    def eval_transform(self):
        """The evaluation transform of a PIL image -> ``(in_chans, image_size, image_size)``."""
        raise NotImplementedError

    def predict_dataloader(self) -> DataLoader:
        """Batches ``(images, indices)`` of the files under ``predict_dir`` (see :class:`ImageFiles`)."""
        if not self.predict_dir:
            raise UserError("mode=predict needs data.predict_dir=<folder of images>.")
        self.predict_set = ImageFiles(self.predict_dir, self.eval_transform(), self.image_mode)
        return self._loader(self.predict_set, train=False)
