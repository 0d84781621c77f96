"""Loaders: the on-device :class:`TensorLoader` and the LightningDataModule that picks it or torchvision's path.

- ``tensor`` (default for in-memory datasets): the whole uint8 dataset lives as one tensor on the
  training device and each batch is augmented there (random crop with zero padding, flip, cutout),
  with no DataLoader and no worker processes. This is airbench's trick: small NASNet children are
  dominated by per-step overhead, and a DataLoader adds to it.
- ``dataloader``: the standard torchvision pipeline (PIL image -> RandomCrop -> RandomHorizontalFlip
  -> ToTensor -> Normalize, in DataLoader workers); the reference the benchmark compares against.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from cellsearch.data.arrays import ImageArrays
from cellsearch.data.augment import cutout, random_crop, random_flip, torchvision_transforms
from cellsearch.data.config import DataConfig, as_data_config
from cellsearch.data.splits import DatasetSplits, load_splits, prepare_dataset, split_indices
from cellsearch.validation import ConfigError


class TensorLoader:
    """Batches of a uint8 dataset kept as one tensor on ``device``, augmented there (no DataLoader).

    Each pass shuffles with a generator seeded from ``seed`` and the pass number. Under data-parallel
    training each rank takes an equal, disjoint share of every shuffled pass (evaluation: every
    image exactly once across ranks).
    """

    def __init__(
        self,
        data: ImageArrays,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool,
        crop_padding: int = 0,
        flip: bool = False,
        cutout_size: int = 0,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ):
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.crop_padding, self.flip, self.cutout_size = crop_padding, flip, cutout_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        shape = (1, -1, 1, 1)
        std_t = torch.tensor(std, device=self.device).view(shape)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, device=self.device).view(shape) / std_t
        self.drop_last = train and self._shard_size() > batch_size

    def _shard_size(self) -> int:
        n = len(self.labels)
        if self.train:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self, generator: torch.Generator) -> torch.Tensor:
        n = len(self.labels)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size, device=self.device)
        order = torch.randperm(n, generator=generator, device=self.device)
        share = n // self.world_size
        return order[self.rank * share:(self.rank + 1) * share]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        order = self._order(generator)
        for k in range(len(self)):
            index = order[k * self.batch_size:(k + 1) * self.batch_size]
            images, labels = self.images[index], self.labels[index]
            if self.train:
                images = random_crop(images, self.crop_padding, generator)
                if self.flip:
                    images = random_flip(images, generator)
            images = torch.addcmul(self.shift, images.float(), self.scale)  # (x / 255 - mean) / std
            if self.train:
                images = cutout(images, self.cutout_size, generator)
            yield images, labels


class ArrayImageDataset(Dataset):
    """uint8 arrays served as PIL images through torchvision transforms (as torchvision's CIFAR10 does)."""

    def __init__(self, data: ImageArrays, transform: Any):
        self.images = data.images.permute(0, 2, 3, 1).contiguous().numpy()  # N, H, W, C
        self.labels = data.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        array = self.images[index]
        image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        return self.transform(image), self.labels[index]


class MicroBatches:
    """Each batch of ``loader`` as ``micro_batches`` equal consecutive slices (for gradient accumulation:
    the micro-batches of one batch hold exactly its images, augmented as they would have been)."""

    def __init__(self, loader: Any, micro_batches: int):
        self.loader, self.micro_batches = loader, micro_batches

    def __len__(self) -> int:
        return len(self.loader) * self.micro_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            yield from zip(images.chunk(self.micro_batches), labels.chunk(self.micro_batches))


class ImageDataModule(pl.LightningDataModule):
    """Train / validation / test loaders for one DataConfig; the tensor loader or torchvision's path.
    With ``micro_batches`` > 1 each training batch comes as that many slices (see MicroBatches)."""

    def __init__(self, config: "DataConfig | Mapping[str, Any]", batch_size: int = 128, seed: int = 0,
                 eval_batch_size: int | None = None, micro_batches: int = 1):
        super().__init__()
        self.config = as_data_config(config)
        self.batch_size = batch_size
        self.micro_batches = micro_batches
        self.eval_batch_size = eval_batch_size or 2 * batch_size // micro_batches
        self.seed = seed
        self.splits: DatasetSplits | None = None
        self._folder_sets: dict[str, Dataset] = {}
        self._train_loader: Any = None  # the latest training loader, whose position state_dict reports
        self._train_state: dict[str, Any] = {}  # a checkpoint's position, for the next training loader

    def prepare_data(self) -> None:
        prepare_dataset(self.config)

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None or self._folder_sets:
            return
        if self.config.streams_from_disk:
            self._folder_sets = self._folder_datasets()
        else:
            self.splits = load_splits(self.config)

    def _folder_datasets(self) -> dict[str, Dataset]:
        cfg, root, spec = self.config, self.config.root_path, self.config.spec
        train_tf = torchvision_transforms(cfg, spec.mean, spec.std, train=True, resize=True)
        eval_tf = torchvision_transforms(cfg, spec.mean, spec.std, train=False, resize=True)
        train_set: Dataset = spec.open_folder(root / "train", train_tf)
        has_val_dir = (root / "val").is_dir()
        test_set: Dataset | None = spec.open_folder(root / "val", eval_tf) if has_val_dir else None
        val_size = cfg.resolved_val_size
        if val_size > 0:
            train_idx, val_idx = split_indices(len(train_set), val_size, cfg.split_seed)
            val_set: Dataset = Subset(spec.open_folder(root / "train", eval_tf), val_idx.tolist())
            train_set = Subset(train_set, train_idx.tolist())
        else:
            val_set = test_set
        if cfg.train_subset:
            train_set = Subset(train_set, range(min(cfg.train_subset, len(train_set))))
        if cfg.val_subset:
            val_set = Subset(val_set, range(min(cfg.val_subset, len(val_set))))
        sets = {"train": train_set, "val": val_set}
        if test_set is not None:
            sets["test"] = test_set
        return sets

    # --- loaders -------------------------------------------------------------------------------
    def _device_and_ranks(self) -> tuple[torch.device, int, int]:
        if self.trainer is None:
            return torch.device("cpu"), 0, 1
        return self.trainer.strategy.root_device, self.trainer.global_rank, self.trainer.world_size

    def _loader(self, split: str) -> Any:
        self.setup()
        train = split == "train"
        batch_size = self.batch_size if train else self.eval_batch_size
        if self.splits is None:  # folders read from disk by DataLoader workers
            if split not in self._folder_sets:
                missing = self.config.root_path / "val"
                raise ConfigError(f"{self.config.name} dataset has no {split} split ({missing} is missing)")
            return self._dataloader(self._folder_sets[split], batch_size, train)
        data = getattr(self.splits, split)
        if self.config.resolved_loader == "tensor":
            device, rank, world_size = self._device_and_ranks()
            cfg = self.config
            return TensorLoader(data, batch_size, self.splits.mean, self.splits.std, train=train,
                                crop_padding=cfg.resolved_crop_padding, flip=cfg.resolved_flip,
                                cutout_size=cfg.cutout, seed=self.seed, device=device, rank=rank,
                                world_size=world_size)
        transform = torchvision_transforms(self.config, self.splits.mean, self.splits.std, train=train)
        return self._dataloader(ArrayImageDataset(data, transform), batch_size, train)

    def _dataloader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train and len(dataset) > batch_size,
                          num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> Any:
        loader = self._train_loader = self._loader("train")
        state, self._train_state = self._train_state, {}
        if isinstance(loader, TensorLoader) and "train_epoch" in state:
            loader.epoch = state["train_epoch"]
        elif isinstance(loader, DataLoader) and "train_generator" in state:
            loader.generator.set_state(state["train_generator"])
        return MicroBatches(loader, self.micro_batches) if self.micro_batches > 1 else loader

    # --- where the training data stands (Lightning keeps it in checkpoints and restores it on resume) ----
    def state_dict(self) -> dict[str, Any]:
        """The training loader's position: the passes the tensor loader made (each pass's order and
        augmentation follow from the seed and the pass number), or the DataLoader's generator state
        (its shuffles; exact with ``num_workers=0``, whose augmentation draws on the global RNG)."""
        loader = self._train_loader
        if isinstance(loader, TensorLoader):
            return {"train_epoch": loader.epoch}
        if isinstance(loader, DataLoader) and loader.generator is not None:
            return {"train_generator": loader.generator.get_state()}
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from ``state_dict`` (:meth:`state_dict`'s): the next training loader starts there."""
        self._train_state = dict(state_dict)

    def val_dataloader(self) -> Any:
        return self._loader("val")

    def test_dataloader(self) -> Any:
        return self._loader("test")
