"""What a NASNet proxy child costs on one GPU: alone, and amortised with K children sharing the GPU.

Part 1 trains ``child=nasnet_proxy`` children (N=2, F=16, batch 128, the project's default training
path: tensor loader on the device, eager) on synthetic uint8 images of CIFAR's shape:

  alone     one child trained in this process by ``evaluate_child`` (what the local executor does)
  K = 1..8  a PoolExecutor with ``workers_per_gpu`` = max K (started once, warmed up by one round),
            kept at K children in flight: ``--rounds`` x K children, timed from the first submit
            to the last result

Each child trains ``--train-images`` images for ``--epochs`` epochs and validates on 5,000 held-out
images (once, at the end, as a search child does). Per row: seconds per child (measured, amortised
over the children of the row), training images/s of the GPU (all children together), peak memory
per child (``torch.cuda.max_memory_allocated`` in the child), the GPU's mean utilisation while the
row ran (NVML through ``torch.cuda.utilization``, else ``nvidia-smi``), and the seconds of a full
20-epoch proxy child (45,000 images per epoch) at that throughput, the fixed cost per child added
once: ``900,000 / images_per_s + fixed``, where ``fixed`` is the measured child's time less its
training images at the same rate.

Part 2 is ``bench_builder_vs_timm.py`` at training batch size: the genotype builder's NASNet-A
Large against timm's hand-written one, images/s and ratio.

    python benchmarks/bench_gpu.py                       # on a GPU: the full tables (sized for < 4 min)
    python benchmarks/bench_gpu.py --device cpu --quick  # smoke test on a CPU (tiny children, K = 1, 2)
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench_builder_vs_timm import benchmark as builder_vs_timm
from cellsearch.data import DataConfig
from cellsearch.evaluators import TrainEvaluator
from cellsearch.evaluators.child import ChildConfig, evaluate_child
from cellsearch.search.executors import PoolExecutor
from cellsearch.space.genotype import load_genotype

PROXY_IMAGES = 20 * 45_000  # NASNet's proxy child: 20 epochs of CIFAR-10 less 5,000 held-out images
VAL_IMAGES = 5_000


@dataclass
class Row:
    """One way of running children, measured."""

    name: str
    children: int
    seconds: float  # wall time of the row
    train_images: int  # training images of all its children together
    peak_mb: list[float]
    utilisation: float | None

    @property
    def seconds_per_child(self) -> float:
        return self.seconds / self.children

    @property
    def images_per_s(self) -> float:
        return self.train_images / self.seconds


class UtilisationSampler:
    """Mean GPU utilisation (%) over a block, sampled every 0.2 s in a thread (None without a GPU)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> float | None:
        try:
            return float(torch.cuda.utilization(0))  # NVML; needs nvidia-ml-py
        except Exception:  # no NVML binding: ask nvidia-smi
            if not shutil.which("nvidia-smi"):
                return None
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True)
            return float(out.stdout.split()[0]) if out.returncode == 0 and out.stdout.strip() else None

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            value = self.read()
            if value is not None:
                self.samples.append(value)

    def __enter__(self) -> "UtilisationSampler":
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


def run_alone(child: ChildConfig, data: DataConfig, per_child_images: int, gpu: bool) -> Row:
    evaluate_child("nasnet_a", child, data, seed=0)  # warm-up: allocator, cuDNN autotuning, lazy imports
    with UtilisationSampler(gpu) as sampler:
        start = time.perf_counter()
        result = evaluate_child("nasnet_a", child, data, seed=1)
        seconds = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f"the child failed: {result.error}")
    return Row("alone (in-process)", 1, seconds, per_child_images, [result.metrics.get("peak_memory_mb", 0.0)],
               sampler.mean)


def run_shared(executor: PoolExecutor, k: int, rounds: int, per_child_images: int, gpu: bool) -> Row:
    """``rounds * k`` children, ``k`` in flight at a time."""
    genotype = load_genotype("nasnet_a")
    total, submitted, peaks = rounds * k, 0, []
    with UtilisationSampler(gpu) as sampler:
        start = time.perf_counter()
        while submitted < min(k, total):
            executor.submit(submitted, genotype)
            submitted += 1
        while executor.num_running():
            for _, result in executor.wait():
                if not result.ok:
                    raise RuntimeError(f"a child failed: {result.error}")
                peaks.append(result.metrics.get("peak_memory_mb", 0.0))
                if submitted < total:
                    executor.submit(submitted, genotype)
                    submitted += 1
        seconds = time.perf_counter() - start
    return Row(f"K = {k} per GPU", total, seconds, total * per_child_images, peaks, sampler.mean)


def markdown(rows: list[Row], alone: Row, fixed: float, timm_rows: list[dict], header: str) -> str:
    lines = [header, "", "| children | children run | s per child (measured) | training images/s | "
             "vs alone | peak memory per child (MB) | GPU utilisation | s per 20-epoch proxy child |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        util = f"{row.utilisation:.0f}%" if row.utilisation is not None else "-"
        peak = f"{statistics.mean(row.peak_mb):.0f}" if any(row.peak_mb) else "-"
        lines.append(f"| {row.name} | {row.children} | {row.seconds_per_child:.2f} | {row.images_per_s:,.0f} | "
                     f"{row.images_per_s / alone.images_per_s:.2f}x | {peak} | {util} | "
                     f"{PROXY_IMAGES / row.images_per_s + fixed:,.1f} |")
    lines += ["", f"Fixed cost per child (alone, besides its training images): {fixed:.2f} s.", "",
              "| model | params | images/s | builder / this |", "|---|---|---|---|"]
    ours = next(r["images_per_s"] for r in timm_rows if r["model"].startswith("cellsearch"))
    for r in timm_rows:
        lines.append(f"| {r['model']} | {r['params']:,} | {r['images_per_s']:,.1f} | {ours / r['images_per_s']:.2f} |")
    return "\n".join(lines) + "\n"


def fixed_cost(alone: Row, child: ChildConfig, data: DataConfig, per_child_images: int) -> float:
    """Seconds of a child besides its training images: the alone child against one with half the epochs'
    images (two points of time against training images)."""
    short = ChildConfig(**{**child.__dict__, "limit_train_batches": max(1, per_child_images // child.batch_size
                                                                        // child.epochs // 2)})
    start = time.perf_counter()
    result = evaluate_child("nasnet_a", short, data, seed=2)
    seconds = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f"the child failed: {result.error}")
    short_images = short.limit_train_batches * child.batch_size * child.epochs
    per_image = (alone.seconds - seconds) / max(1, per_child_images - short_images)
    return max(0.0, alone.seconds - per_image * per_child_images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny children, K = 1, 2, small timm models")
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="children per GPU (default 1 2 4 8)")
    parser.add_argument("--rounds", type=int, default=None, help="children per row: rounds x K (default 2; quick: 1)")
    parser.add_argument("--train-images", type=int, default=None, help="training images per epoch (default 12,800)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench_gpu.md"), help="where the markdown table goes")
    args = parser.parse_args()
    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA GPU is visible; use --device cpu --quick for a smoke test")
    ks = args.ks or ([1, 2] if args.quick else [1, 2, 4, 8])
    if args.quick:
        child = ChildConfig(cells_per_stage=1, channels=4, epochs=args.epochs, batch_size=32, logger=None,
                            accelerator=args.device)
        train_images, val_images, image_size = args.train_images or 128, 32, 8
        timm_args = dict(width=4, stem=8, batch_size=2, image_size=64, rounds=1, steps=1)
    else:
        child = ChildConfig(cells_per_stage=2, channels=16, epochs=args.epochs, batch_size=128, logger=None,
                            accelerator=args.device)
        train_images, val_images, image_size = args.train_images or 12_800, VAL_IMAGES, 32
        # NASNet-A Large at its published width and ImageNet size, at a training batch of 32
        timm_args = dict(width=168, stem=96, batch_size=32, image_size=331, rounds=3, steps=3)
        if not gpu:
            timm_args.update(batch_size=2, rounds=1, steps=1)
    data = DataConfig(name="synthetic", image_size=image_size, synthetic_train_size=train_images + val_images,
                      synthetic_test_size=32, val_size=val_images)
    per_child_images = (train_images // child.batch_size) * child.batch_size * child.epochs
    where = torch.cuda.get_device_name(0) if gpu else f"{platform.processor() or 'CPU'}, {os.cpu_count()} cores"
    header = (f"bench_gpu.py on {where} (torch {torch.__version__}): child N={child.cells_per_stage}, "
              f"F={child.channels}, batch {child.batch_size}, {train_images:,} training images x {child.epochs} "
              f"epoch(s) + {val_images:,} validation images per child, {image_size}x{image_size} synthetic uint8")
    print(header, flush=True)

    alone = run_alone(child, data, per_child_images, gpu)
    fixed = fixed_cost(alone, child, data, per_child_images)
    rows = [alone]
    print(f"alone: {alone.seconds:.2f} s per child", flush=True)
    executor = PoolExecutor(TrainEvaluator(child, data), seed=0, workers_per_gpu=max(ks),
                            threads_per_worker=max(1, len(os.sched_getaffinity(0)) // max(ks)))
    try:
        run_shared(executor, max(ks), 1, per_child_images, gpu=False)  # warm-up: every worker trains once
        for k in ks:
            rows.append(run_shared(executor, k, args.rounds or (1 if args.quick else 2), per_child_images, gpu))
            print(f"K = {k}: {rows[-1].seconds_per_child:.2f} s per child", flush=True)
    finally:
        executor.close()
    timm_rows = builder_vs_timm(args.device, **timm_args)
    table = markdown(rows, alone, fixed, timm_rows, header)
    print(table)
    args.out.write_text(table)
    print(f"written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
