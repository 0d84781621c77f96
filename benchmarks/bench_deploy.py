"""CPU inference latency of a cell's network in each deployment runtime, against eager PyTorch.

Runtimes: eager, TorchScript (``torch.jit.load`` of the exported file), torch.export + inductor
(``torch.compile`` of the exported program's module; timed only where its outputs match eager
within the tolerance on this machine, else reported as mismatched) and ONNX Runtime (CPU provider).
Networks: NASNet-A Mobile, DARTS V2 ImageNet and a discovered cell (``--cell``, a genotype file,
built with the NASNet-A Mobile sizes). Each latency is the median of ``--repeats`` timed forward
passes after ``--warmup`` untimed ones, at batch 1 and 32; runtimes take turns within each round
so that load from other processes hits all of them alike. Ratios are eager time / runtime time.

    OMP_NUM_THREADS=1 python benchmarks/bench_deploy.py --cell outputs/search/<time>/best_cell.yaml
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import timm
import torch

import cellsearch  # noqa: F401  (registers cellnet_* with timm)
from cellsearch.deploy import TOLERANCE, load_export, require_onnx, write_export
from cellsearch.space.genotype import load_genotype

Runner = Callable[[torch.Tensor], torch.Tensor]


def networks(cell: str | None) -> dict[str, torch.nn.Module]:
    """The networks to measure, with fresh weights (latency does not depend on their values)."""
    torch.manual_seed(0)
    built = {
        "NASNet-A Mobile": timm.create_model("cellnet_nasnet_a_mobile"),
        "DARTS V2 ImageNet": timm.create_model("cellnet_darts_v2_imagenet"),
    }
    if cell is not None:
        genotype = load_genotype(cell)
        built[f"discovered ({genotype.name})"] = timm.create_model("cellnet_nasnet_a_mobile", genotype=genotype)
    return {name: model.eval() for name, model in built.items()}


def onnx_runner(path: Path, threads: int) -> Runner:
    """An ONNX Runtime session limited to ``threads`` threads, as eager is."""
    _, onnxruntime = require_onnx()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


def runtimes(model: torch.nn.Module, out_dir: Path, image_size: int, threads: int,
             inductor: bool) -> tuple[dict[str, Runner], dict[str, str]]:
    """Each runtime's forward function, and notes (export or compile time, mismatches)."""
    size = (3, image_size, image_size)
    runners: dict[str, Runner] = {"eager": model}
    notes = {}
    for fmt, label in (("torchscript", "TorchScript"), ("onnx", "ONNX Runtime"), ("torch_export", "export+inductor")):
        if fmt == "torch_export" and not inductor:
            continue
        start = time.perf_counter()
        path = write_export(model, fmt, out_dir, fmt, input_size=size)[0]
        if fmt == "onnx":
            runners[label] = onnx_runner(path, threads)
        elif fmt == "torch_export":
            runners[label] = torch.compile(load_export(path, fmt), backend="inductor")
        else:
            runners[label] = load_export(path, fmt)
        notes[label] = f"export {time.perf_counter() - start:.0f} s"
    return runners, notes


def check(runners: dict[str, Runner], batch: torch.Tensor, notes: dict[str, str]) -> dict[str, Runner]:
    """Keep the runtimes whose outputs match eager on ``batch``; note the others as mismatched."""
    with torch.inference_mode():
        reference = runners["eager"](batch)
        kept = {}
        for label, run in runners.items():
            start = time.perf_counter()
            diff = (run(batch).float() - reference).abs().max().item()
            if label == "export+inductor":
                notes[label] += f", compile {time.perf_counter() - start:.0f} s"
            if diff <= TOLERANCE * max(1.0, reference.abs().max().item()):
                kept[label] = run
            else:
                notes[label] = notes.get(label, "") + f", MISMATCHED (max diff {diff:.1e}), not timed"
    return kept


def measure(runners: dict[str, Runner], batch: torch.Tensor, warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per forward pass of each runtime, runtimes taking turns within each round."""
    times: dict[str, list[float]] = {label: [] for label in runners}
    with torch.inference_mode():
        for round_index in range(warmup + repeats):
            for label, run in runners.items():
                start = time.perf_counter()
                run(batch)
                if round_index >= warmup:
                    times[label].append(time.perf_counter() - start)
    return {label: statistics.median(t) for label, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", default=None, help="a discovered genotype file (e.g. a run's best_cell.yaml)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, nargs="+", default=[20, 5], help="timed runs per batch size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-inductor", action="store_true", help="leave out torch.export + inductor")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = dict(zip(args.batches, args.repeats + args.repeats[-1:] * len(args.batches)))
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s), "
          f"{args.image_size}px, warm-up {args.warmup}, repeats {repeats}\n")
    print("| network | batch | runtime | median ms | speed-up vs eager | notes |\n|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in networks(args.cell).items():
            out_dir = Path(tmp) / name.split()[0]
            all_runners, notes = runtimes(model, out_dir, args.image_size, args.threads, not args.no_inductor)
            for batch_size in args.batches:
                batch = torch.randn(batch_size, 3, args.image_size, args.image_size)
                runners = check(all_runners, batch, notes)
                medians = measure(runners, batch, args.warmup, repeats[batch_size])
                for label in all_runners:  # each row as soon as it is measured
                    ms = medians.get(label)
                    row = (name, batch_size, label, f"{ms * 1e3:.1f}" if ms else "mismatched",
                           f"{medians['eager'] / ms:.2f}x" if ms else "-",
                           notes.get(label, "") if batch_size == args.batches[0] else "")
                    print("| " + " | ".join(str(v) for v in row) + " |", flush=True)


if __name__ == "__main__":
    main()
