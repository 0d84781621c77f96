"""CPU inference latency of a cell's network in each deployment runtime, against eager PyTorch.

Runtimes: eager, TorchScript (``torch.jit.load`` of the exported file), torch.export + inductor
(the exported program, dynamic batch axis included, compiled once ahead of time by AOTInductor into
the package a deployment ships) and ONNX Runtime (CPU provider, as many intra-op threads as torch).
Every runtime is first run on the timed batch and compared with eager: one whose logits differ by
more than the tolerance (1e-4, relative to the largest logit when that exceeds 1) is reported as
"mismatch, not timed".
Networks: NASNet-A Mobile, DARTS V2 ImageNet and a discovered cell (``--cell``, default the shipped
``quick_cpu_found``, a cell with concatenating blocks found by this project's search) built with the
NASNet-A Mobile sizes; a genotype of another search space (``--cell nasrl_baseline``) is built by its space's
ImageNet entry point at that entry's default sizes. Each latency is the median of ``--repeats`` timed forward passes after
``--warmup`` untimed ones (the comparison run counts as the first; TorchScript's profiling executor
optimises its graph during its second call, so 2 is the least that times the optimised graph), at
batch 1 and 32; runtimes take
turns within each round so that load from other processes hits all of them alike. Ratios are eager
time / runtime time in the same run.

    taskset -c 2 python benchmarks/bench_deploy.py --threads 1 --out bench_deploy.md   # the full table
    python benchmarks/bench_deploy.py --quick --inductor --out /tmp/smoke.md            # a smoke test

Inductor's ahead-of-time compile of a full-size network takes minutes on one core: ``--inductor nasnet``
limits it to one network, ``--inductor`` with no name leaves it out, and ``--pin CPU`` (instead of
taskset) times on one CPU while exports and compiles use them all.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import timm
import torch
import torch._inductor

import cellsearch  # noqa: F401  (registers cellnet_* with timm)
from cellsearch.deploy import TOLERANCE, load_export, require_onnx, write_export
from cellsearch.progress import INTERVAL, Heartbeat, StepProgress, progress_to_stderr
from cellsearch.space.genotype import load_genotype
from cellsearch.space.networks import TIMM_NAMES, space_of

Runner = Callable[[torch.Tensor], torch.Tensor]
NETWORKS = ("nasnet", "darts", "found")
RUNTIMES = (("torchscript", "TorchScript"), ("onnx", "ONNX Runtime"), ("torch_export", "export+inductor"))
QUICK_SIZES = dict(cells_per_stage=1, channels=8, stem_channels=8)  # --quick: a smoke test, not a latency


def _imagenet_entry(genotype: object) -> str:
    """NASNet-A Mobile's entry for a NASNet cell (its published sizes), else the space's ImageNet entry point."""
    space = space_of(genotype)
    return "cellnet_nasnet_a_mobile" if space == "nasnet" else TIMM_NAMES[space][1]


def networks(keys: list[str], cell: str, quick: bool) -> dict[str, tuple[str, torch.nn.Module]]:
    """key -> (row label, network with fresh weights); latency does not depend on the weights' values."""
    sizes = QUICK_SIZES if quick else {}
    genotype = load_genotype(cell)
    recipes = {
        "nasnet": ("NASNet-A Mobile", "cellnet_nasnet_a_mobile", {}),
        "darts": ("DARTS V2 ImageNet", "cellnet_darts_v2_imagenet", {}),
        "found": (f"discovered ({genotype.name})", _imagenet_entry(genotype), dict(genotype=genotype)),
    }
    built = {}
    for key in keys:
        label, entry_point, kwargs = recipes[key]
        torch.manual_seed(0)
        built[key] = (label, timm.create_model(entry_point, **kwargs, **sizes).eval())
    return built


def onnx_runner(path: Path, threads: int) -> Runner:
    """An ONNX Runtime session limited to ``threads`` intra-op threads, as torch is."""
    _, onnxruntime = require_onnx()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


def runtimes(model: torch.nn.Module, out_dir: Path, image_size: int, threads: int,
             inductor: bool) -> tuple[dict[str, Runner], dict[str, str]]:
    """Each runtime's forward function and a note per runtime (export time, or why it is missing)."""
    runners: dict[str, Runner] = {"eager": model}
    notes = {"eager": ""}
    for fmt, label in RUNTIMES:
        if fmt == "torch_export" and not inductor:
            continue
        start = time.perf_counter()
        try:
            with Heartbeat(f"exporting {label}"):
                path = write_export(model, fmt, out_dir, fmt, input_size=(3, image_size, image_size))[0]
            note = f"export {time.perf_counter() - start:.1f} s"
            if fmt == "onnx":
                runners[label] = onnx_runner(path, threads)
            elif fmt == "torch_export":
                start = time.perf_counter()
                with Heartbeat(f"compiling {label} ahead of time"):  # minutes on a CPU
                    package = torch._inductor.aoti_compile_and_package(torch.export.load(str(path)),
                                                                       package_path=str(out_dir / "inductor.pt2"))
                runners[label] = torch._inductor.aoti_load_package(package)
                note += f", compile {time.perf_counter() - start:.0f} s"
            else:
                runners[label] = load_export(path, fmt)
            notes[label] = note
        except Exception as err:  # a runtime this machine lacks leaves a row saying why, not a dead run
            notes[label] = f"unavailable: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
    return runners, notes


def check(runners: dict[str, Runner], batch: torch.Tensor) -> tuple[dict[str, Runner], dict[str, str]]:
    """Run each runtime once on ``batch``; keep those whose logits match eager's, with a note each."""
    kept, notes = {}, {}
    with torch.inference_mode():
        reference = runners["eager"](batch)
        allowed = TOLERANCE * max(1.0, reference.abs().max().item())
        for label, run in runners.items():
            try:
                diff = (run(batch).float() - reference).abs().max().item()
            except Exception as err:  # e.g. a compiled program that rejects this batch size
                notes[label] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
                continue
            notes[label] = f"max diff {diff:.0e}"
            if diff <= allowed:
                kept[label] = run
            else:
                notes[label] += f" > {allowed:.0e}"
    return kept, notes


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


def rows(label: str, batch_size: int, all_labels: list[str], medians: dict[str, float],
         notes: dict[str, str]) -> list[str]:
    """Markdown rows of one network at one batch size, eager first."""
    lines = []
    for runtime in all_labels:
        ms = medians.get(runtime)
        if ms is not None:
            timing, ratio = f"{ms * 1e3:.1f}", f"{medians['eager'] / ms:.2f}x"
        elif "max diff" in notes.get(runtime, ""):  # it ran, and check() found its logits off
            timing, ratio = "mismatch, not timed", "-"
        else:  # unavailable here, or failed on this batch
            timing, ratio = "not run", "-"
        lines.append(f"| {label} | {batch_size} | {runtime} | {timing} | {ratio} | {notes.get(runtime, '')} |")
    return lines


def cpu_name() -> str:
    """The CPU's model name where Linux tells it, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def emit(text: str, out: TextIO | None) -> None:
    """Print ``text`` and append it to ``out`` at once, so a run cut short keeps the rows it finished."""
    print(text, flush=True)
    if out is not None:
        out.write(text + "\n")
        out.flush()


def _onnxruntime_version() -> str:
    try:
        return f"onnxruntime {require_onnx()[1].__version__}"
    except Exception as err:  # reported in the header; the ONNX rows then say why they did not run
        return f"no onnxruntime ({type(err).__name__})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", default="quick_cpu_found", help="the discovered cell: a genotype name or file")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    parser.add_argument("--inductor", nargs="*", choices=NETWORKS, default=None,
                        help="networks that get torch.export + inductor (default: all measured; none if empty)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, nargs="+", default=[20, 5],
                        help="timed runs per batch size, in the order of --batches (the last one repeats)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs, the comparison run included")
    parser.add_argument("--threads", type=int, default=1, help="torch threads and ONNX Runtime intra-op threads")
    parser.add_argument("--pin", type=int, default=None, metavar="CPU",
                        help="time on this CPU only (with --threads 1); exports and compiles still use every CPU")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: N=1, F=8 networks at 64 px, batches 1 and 4, 2 repeats after 2 warm-up runs")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.batches, args.repeats, args.warmup = 64, [1, 4], [2], 2
    args.inductor = args.networks if args.inductor is None else args.inductor
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # TorchScript's deprecation notice, per load
    torch.set_num_threads(args.threads)
    repeats = dict(zip(args.batches, args.repeats + args.repeats[-1:] * len(args.batches)))
    began = time.perf_counter()
    free_cpus = os.sched_getaffinity(0)
    out = open(args.out, "w") if args.out else None
    try:
        emit(f"torch {torch.__version__}, {_onnxruntime_version()}, {cpu_name()}, {args.threads} thread(s)"
             f" ({'timed on CPU %d' % args.pin if args.pin is not None else 'CPUs allowed: %d' % len(free_cpus)})"
             f", {args.image_size} px"
             f"{', QUICK (N=1, F=8: not real latencies)' if args.quick else ''}, warm-up {args.warmup}, "
             f"repeats {repeats}, fresh weights\n", out)
        emit("| network | batch | runtime | median ms | speed-up vs eager | notes |\n|---|---|---|---|---|---|", out)
        progress = StepProgress("bench_deploy", len(args.networks) * len(args.batches), units="table parts",
                                heartbeat=INTERVAL)
        with tempfile.TemporaryDirectory() as tmp, progress:
            for key, (label, model) in networks(args.networks, args.cell, args.quick).items():
                all_runners, export_notes = runtimes(model, Path(tmp) / key, args.image_size, args.threads,
                                                     key in args.inductor)
                all_labels = list(export_notes)
                for batch_size in args.batches:
                    batch = torch.randn(batch_size, 3, args.image_size, args.image_size)
                    if args.pin is not None:  # this thread runs every timed forward pass at 1 thread
                        os.sched_setaffinity(0, {args.pin})
                    kept, notes = check(all_runners, batch)
                    medians = measure(kept, batch, max(args.warmup - 1, 0), repeats[batch_size])
                    os.sched_setaffinity(0, free_cpus)
                    first = batch_size == args.batches[0]  # export times once per network
                    notes = {k: ", ".join(filter(None, (export_notes[k] if first or k not in notes else "",
                                                        notes.get(k)))) for k in all_labels}
                    for line in rows(label, batch_size, all_labels, medians, notes):
                        emit(line, out)
                    progress.update(note=f"{label}, batch {batch_size}")
        emit(f"\nwhole run: {time.perf_counter() - began:.0f} s", out)
    finally:
        if out is not None:
            out.close()


if __name__ == "__main__":
    progress_to_stderr()  # progress lines on stderr: the table on stdout stays clean
    main()
