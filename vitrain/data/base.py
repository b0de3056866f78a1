"""What every DataModule shares: per-rank epoch sampling, loaders, resume; image-data helpers."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from vitrain.errors import UserError

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


class EpochSampler(Sampler[int]):
    """This rank's share of a permutation that depends only on ``(seed, epoch)``.

    Every rank draws the same permutation and takes every ``world``-th index from position
    ``rank``, so one step of ``world`` ranks with batch ``b`` sees exactly the samples one
    process with batch ``world * b`` would. Training (``even=True``) truncates to a multiple of
    ``world`` so all ranks run the same number of steps; evaluation keeps every sample exactly
    once (ranks may differ by one sample; metrics are synchronised at epoch end).

    Lightning calls ``set_epoch`` before each epoch. ``skip(n)`` makes the next iteration start
    after the first ``n`` of this rank's indices (a mid-epoch resume); the length stays the full
    epoch so Lightning's batch count is unchanged.
    """

    def __init__(
        self, size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1, even: bool = True
    ) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world, self.even = rank, world, even
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, count: int) -> None:
        self._skip = count

    def order(self) -> list[int]:
        """This rank's index order for the current epoch."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.even:
            order = order[: self.size - self.size % self.world]
        return order[self.rank :: self.world]

    def __iter__(self):
        start, self._skip = self._skip, 0
        return iter(self.order()[start:])

    def __len__(self) -> int:
        if self.even:
            return self.size // self.world
        return len(range(self.rank, self.size, self.world))


class ShardedDataModule(L.LightningDataModule):
    """Loaders shared by every vitrain DataModule; subclasses set ``train_set`` and ``val_set``.

    Each rank gets its share of an epoch-seeded permutation (:class:`EpochSampler`): training
    shards are equal in size and drop the last incomplete batch (mixup/cutmix need even
    batches), validation gives every sample to exactly one rank. ``collate_fn`` (None: torch's
    default) batches the samples; ``skip_train_batches`` serves a mid-epoch resume.
    """

    collate_fn = None

    def __init__(
        self,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"data.batch_size={batch_size}: must be a positive integer.")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.seed = torch.initial_seed() % 2**31 if seed is None else seed
        self._skip_batches = 0
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def check_num_classes(self, found: int, where: str) -> None:
        """Fail when the data's class count differs from ``data.num_classes``."""
        if found != self.num_classes:
            raise UserError(
                f"{where} has {found} classes but data.num_classes={self.num_classes}: set "
                f"data.num_classes={found}."
            )

    def skip_train_batches(self, count: int) -> None:
        """Make the next training epoch start after its first ``count`` batches (resume)."""
        self._skip_batches = count

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("setup() must run before the dataloaders are requested")
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = EpochSampler(
            len(dataset), seed=self.seed, shuffle=train, rank=rank, world=world, even=train
        )
        if train:
            sampler.skip(self._skip_batches * self.batch_size)
            self._skip_batches = 0
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=train,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            # worker seeds come from this generator, not from the global RNG
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)


class ImageClassificationDataModule(ShardedDataModule):
    """Base class: subclasses set ``train_set``, ``val_set`` and ``classes`` in ``setup``.

    Batches are ``(images (B, in_chans, image_size, image_size) float, labels (B,) int64)``.
    """

    kind = "image_classification"
    wants_net_data_config = True  # the orchestration passes timm's data config of the network

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        in_chans: int,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        net_data_config: dict | None = None,
        seed: int | None = 0,
        predict_dir: str | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, persistent_workers, seed)
        if image_size < 1:
            raise UserError(f"data.image_size={image_size}: must be a positive integer.")
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
