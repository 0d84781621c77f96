"""Child training throughput: the on-device tensor loader against torchvision's DataLoader pipeline.

Trains the same child (NASNet-A proxy by default: N=2, F=16) with the real Lightning training path
(:func:`cellsearch.evaluators.child.build_training`) once per loader, and times ``--steps`` training steps after
``--warmup`` steps (the clock stops after the last step, with the device synchronised), ``--repeats``
times in turn, keeping each loader's best run (other load on the machine only ever slows a run down).
Uses the GPU when there is one. Defaults run in about a minute on a 2-core CPU; on a GPU, for example:

    python benchmarks/bench_child_training.py --data cifar10 --root data --batch-size 256 --steps 50 \
        --warmup 10 --num-workers 0 4 8 --precision bf16-mixed --channels-last
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import pytorch_lightning as pl
import torch

from cellsearch.evaluators.child import ChildConfig, build_training, quiet_lightning
from cellsearch.data import DataConfig
from cellsearch.space.profile import count_params


class StepTimer(pl.Callback):
    """Wall time and images of the training steps after the first ``warmup`` ones."""

    def __init__(self, warmup: int, last: int):
        self.warmup, self.last = warmup, last
        self.start = self.end = 0.0
        self.images = 0

    def _sync(self, module: pl.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: tuple,
                             batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self._sync(module)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: object, batch: tuple,
                           batch_idx: int) -> None:
        if batch_idx >= self.warmup:
            self.images += len(batch[1])
        if batch_idx == self.last:
            self._sync(module)
            self.end = time.perf_counter()

    @property
    def images_per_second(self) -> float:
        return self.images / (self.end - self.start)


@dataclass
class Row:
    loader: str
    workers: int | None
    images_per_second: float


def measure(args: argparse.Namespace, loader: str, workers: int) -> tuple[float, str, int]:
    """Images/s of one loader; also the device and the child's parameter count."""
    num_batches = args.warmup + args.steps
    data = DataConfig(name=args.data, root=args.root, download=False, loader=loader, num_workers=workers,
                      image_size=args.image_size, cutout=args.cutout,
                      synthetic_train_size=max(2 * args.batch_size, int(1.25 * args.batch_size * num_batches)) + 1,
                      synthetic_test_size=args.batch_size)
    child = ChildConfig(cells_per_stage=args.cells_per_stage, channels=args.channels, epochs=1,
                        batch_size=args.batch_size, limit_train_batches=num_batches, limit_val_batches=1,
                        precision=args.precision, channels_last=args.channels_last, accelerator=args.accelerator,
                        logger=None)
    timer = StepTimer(args.warmup, num_batches - 1)
    with quiet_lightning():
        trainer, module, datamodule = build_training(args.genotype, child, data, seed=0, checkpointing=False,
                                                     callbacks=[timer])
        trainer.fit(module, datamodule=datamodule)
    return timer.images_per_second, str(trainer.strategy.root_device), count_params(module.model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="synthetic", choices=["synthetic", "digits", "cifar10", "cifar100"])
    parser.add_argument("--root", default="data", help="dataset folder (CIFAR: holds cifar-10-batches-py)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize to this size (default: the dataset's; synthetic: 32, CIFAR-sized)")
    parser.add_argument("--genotype", default="nasnet_a")
    parser.add_argument("--cells-per-stage", type=int, default=2)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=2, help="runs per loader, taken in turn; the best counts")
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 2],
                        help="DataLoader worker counts to compare against the tensor loader")
    parser.add_argument("--cutout", type=int, default=0)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 1 by default: oversubscribed cores (DataLoader workers, other "
                             "jobs) make multi-threaded CPU timings erratic")
    args = parser.parse_args()
    if args.data == "synthetic" and args.image_size is None:
        args.image_size = 32
    torch.set_num_threads(args.threads)

    rows = [Row("tensor (on device)", None, 0.0)] + [Row("torchvision DataLoader", w, 0.0) for w in args.num_workers]
    for _ in range(args.repeats):
        for row in rows:
            speed, device, params = measure(args, "tensor" if row.workers is None else "dataloader", row.workers or 0)
            row.images_per_second = max(row.images_per_second, speed)
            print(f"{row.loader} (workers {row.workers}): {speed:.1f} images/s", flush=True)
    tensor_speed = rows[0].images_per_second

    print(f"\nchild: {args.genotype} N={args.cells_per_stage} F={args.channels} ({params:,} params), data: {args.data} "
          f"{args.image_size or 'native '}px, batch {args.batch_size}, {args.steps} timed steps after {args.warmup}, "
          f"best of {args.repeats}, "
          f"device {device}, precision {args.precision}, torch threads {torch.get_num_threads()}")
    print(f"| {'loader':<24} | {'workers':>7} | {'images/s':>9} | {'tensor loader speed-up':>22} |")
    print(f"|{'-' * 26}|{'-' * 9}|{'-' * 11}|{'-' * 24}|")
    for row in rows:
        workers = "-" if row.workers is None else str(row.workers)
        print(f"| {row.loader:<24} | {workers:>7} | {row.images_per_second:>9.1f} | "
              f"{tensor_speed / row.images_per_second:>21.2f}x |")


if __name__ == "__main__":
    main()
