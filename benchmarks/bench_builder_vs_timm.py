"""Training throughput of the generic genotype builder against timm's hand-written NASNet-A Large.

Both networks are NASNet-A "6 @ 24F" at a small width F (timm's ``NASNetALarge(num_features=24F,
stem_size=S)`` and ``cellnet_nasnet_a_large`` with ``channels=F, stem_channels=S``): the same
architecture, checked by equal parameter counts. Each step is a forward and backward pass in
training mode. timm's ``nasnetalarge`` entry point uses TF "same" padding (an extra pad op before
every stride-2 conv); its class with ``pad_type=''`` uses static padding like ours, so both are
measured. Rounds alternate between the models so that load from other processes hits all alike.

    python benchmarks/bench_builder_vs_timm.py                # CPU, and the GPU when there is one
    python benchmarks/bench_builder_vs_timm.py --device cuda --batch-size 64 --image-size 224
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import timm
import torch
from timm.models.nasnet import NASNetALarge

import cellsearch  # noqa: F401  (registers cellnet_* with timm)
from cellsearch.space.profile import count_mult_adds, count_params


def build_models(width: int, stem: int, num_classes: int) -> dict[str, torch.nn.Module]:
    """The three networks, constructed with the same seed."""
    builders: dict[str, Callable[[], torch.nn.Module]] = {
        "cellsearch cellnet_nasnet_a_large": lambda: timm.create_model(
            "cellnet_nasnet_a_large", channels=width, stem_channels=stem, num_classes=num_classes),
        "timm nasnetalarge (pad 'same')": lambda: timm.create_model(
            "nasnetalarge", num_features=24 * width, stem_size=stem, num_classes=num_classes),
        "timm NASNetALarge (pad_type='')": lambda: NASNetALarge(
            num_features=24 * width, stem_size=stem, num_classes=num_classes, pad_type=""),
    }
    models = {}
    for name, build in builders.items():
        torch.manual_seed(0)
        models[name] = build()
    return models


def seconds_per_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Mean wall time of one forward + backward + SGD step over ``steps`` steps."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync()
    return (time.perf_counter() - start) / steps


def benchmark(device: str, width: int, stem: int, batch_size: int, image_size: int, rounds: int,
              steps: int) -> list[dict]:
    """Median seconds per step of each model over ``rounds`` interleaved rounds."""
    models = build_models(width, stem, num_classes=10)
    sizes = {name: (count_params(m), count_mult_adds(m, (3, image_size, image_size))) for name, m in models.items()}
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.to(device).train()
        seconds_per_step(model, x, y, 2)  # warm-up: allocator, cuDNN autotuning, lazy init
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(seconds_per_step(model, x, y, steps))
    rows = []
    for name in models:
        median = statistics.median(times[name])
        rows.append(dict(device=device, model=name, params=sizes[name][0], mult_adds=sizes[name][1],
                         images_per_s=batch_size / median, spread=(max(times[name]) - min(times[name])) / median))
    return rows


def print_table(rows: list[dict]) -> None:
    ours = {r["device"]: r["images_per_s"] for r in rows if r["model"].startswith("cellsearch")}
    print(f"{'device':<7}{'model':<36}{'params':>11}{'mult-adds':>14}{'images/s':>10}{'spread':>8}"
          f"{'ours / this':>13}")
    for r in rows:
        print(f"{r['device']:<7}{r['model']:<36}{r['params']:>11,}{r['mult_adds']:>14,}{r['images_per_s']:>10.1f}"
              f"{r['spread']:>7.0%} {ours[r['device']] / r['images_per_s']:>12.2f}")
    for device in ours:
        if len({r["params"] for r in rows if r["device"] == device}) != 1:
            print(f"WARNING: parameter counts differ on {device}: not the same architecture")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                        help="'all': CPU, and CUDA when available")
    parser.add_argument("--width", type=int, default=16, help="F, filters of the first stage (Large: 168)")
    parser.add_argument("--stem", type=int, default=24, help="stem conv filters (Large: 96)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 8 on CPU, 64 on CUDA")
    parser.add_argument("--image-size", type=int, default=None, help="default: 96 on CPU, 224 on CUDA")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch's); use 1 on a machine that other jobs share")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="steps per round")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    if not devices:
        parser.error("CUDA was requested but is not available")
    rows = []
    for device in devices:
        batch_size = args.batch_size or (8 if device == "cpu" else 64)
        image_size = args.image_size or (96 if device == "cpu" else 224)
        where = f"{torch.get_num_threads()} threads" if device == "cpu" else torch.cuda.get_device_name()
        print(f"{device} ({where}): NASNet-A 6 @ {24 * args.width} (F={args.width}, stem {args.stem}), "
              f"batch {batch_size}, {image_size}x{image_size}, {args.rounds} rounds x {args.steps} steps")
        rows += benchmark(device, args.width, args.stem, batch_size, image_size, args.rounds, args.steps)
    print_table(rows)


if __name__ == "__main__":
    main()
