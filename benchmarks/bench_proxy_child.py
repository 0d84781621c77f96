"""What one proxy child costs: the project's fast training path against a plain baseline.

NASNet trained ~20,000 proxy children (N=2, 20 epochs on CIFAR-10 with 5,000 training images held
out), about 2.3 P100-hours each. Part 1 trains the NASNet-A proxy child (``ChildConfig`` defaults:
N=2, F=16, batch 128) on CIFAR-sized uint8 images through the project's own path
(ChildModule, ``build_trainer`` and ImageDataModule, put together as ``evaluate_child`` does for a
search child) under each setting below, and extrapolates seconds per epoch and per 20-epoch child:

  baseline          torchvision DataLoader (PIL RandomCrop/Flip, ToTensor, Normalize in worker
                    processes), fp32, eager, NCHW
  tensor            data.loader=tensor: the uint8 dataset on the device, augmented there
  tensor+cl         + channels_last
  tensor+cl+bf16    + precision=bf16-mixed (autocast)
  tensor+cl+compile + torch.compile of the training forward and backward, as
                    cellsearch.evaluators.speed.compile_training_forward does it
  raw loop          the tensor+cl step in a plain PyTorch loop, no Lightning (a reference)
  by default on CUDA only: tensor+cl+bf16+compile, and tensor+cl+bf16+cudagraphs (compile mode
                    'reduce-overhead'; CUDA only). None of the CUDA paths has run yet (no GPU here);
                    a setting that fails is reported as failed and the others still run.

Each run is one fit of ``warmup + steps`` training batches and ``val_batches`` validation batches.
The clock runs from the end of the last warm-up step to the end of the last step, so it includes
fetching and augmenting batches; the device is synchronised at both ends. Settings run in turn,
``--repeats`` times; the tables give medians. Every child is a new architecture, so a compiled
child pays its compile time once: the first step's excess over the eager first step is reported
(repeat 1 compiles with an empty inductor cache; later repeats reuse compiled kernels), and the
per-child estimate adds the cold figure.

Part 2 measures what a child costs besides its steps: a tiny child (N=1, F=8, 16x16 images) goes
through :func:`cellsearch.evaluators.child.evaluate_child` (what executors call) and through a raw PyTorch loop,
with 1 and ``1 + slope_steps`` training steps; the intercept is the fixed cost per child, the slope
the cost per step. A breakdown shows where evaluate_child's fixed cost goes.

    python benchmarks/bench_proxy_child.py                      # ~11 min on 2 CPU cores, 6 compiling
    python benchmarks/bench_proxy_child.py --part 2             # fixed cost per child only
    python benchmarks/bench_proxy_child.py --steps 50 --warmup 10 --repeats 3     # on a GPU
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# A private, empty inductor cache, so that the first compile is a cold one (as for a new child).
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_proxy_child_inductor_")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

import argparse  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Callable  # noqa: E402

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch._functorch.config  # noqa: E402
import torch._inductor.config  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cellsearch.evaluators.child import ChildConfig, ChildModule, build_trainer, evaluate_child, quiet_lightning  # noqa: E402
from cellsearch.data import DataConfig, ImageDataModule, TensorLoader, describe_dataset, load_splits  # noqa: E402
from cellsearch.space.network import CellNetCifar  # noqa: E402
from cellsearch.space.profile import count_mult_adds, count_params  # noqa: E402
from cellsearch.evaluators.speed import compile_training_forward  # noqa: E402
from cellsearch.progress import INTERVAL, StepProgress, progress_to_stderr, track  # noqa: E402

# A compile after the first one redoes tracing and lowering, as for a new architecture, and reuses
# only the compiled kernels (no whole-graph cache hits: every child of a search is a new graph).
torch._inductor.config.fx_graph_cache = False
torch._functorch.config.enable_autograd_cache = False

CIFAR_TRAIN_IMAGES = 45_000  # CIFAR-10's 50,000 training images less NASNet's 5,000 held out
CIFAR_VAL_IMAGES = 5_000


@dataclass(frozen=True)
class Setting:
    """One way of training a child."""

    name: str
    loader: str = "tensor"
    channels_last: bool = False
    precision: str = "32-true"
    compile_mode: str | None = None  # None: eager; "default"; "reduce-overhead" (CUDA graphs)
    raw: bool = False  # a plain PyTorch loop instead of Lightning
    default_on_cpu: bool = True  # run without --settings on a CPU

    @property
    def training_key(self) -> tuple[str, bool, str]:
        """What the setting trains with, apart from compilation."""
        return self.loader, self.channels_last, self.precision


SETTINGS = [
    Setting("baseline", loader="dataloader"),
    Setting("tensor"),
    Setting("tensor+cl", channels_last=True),
    Setting("tensor+cl+bf16", channels_last=True, precision="bf16-mixed"),
    Setting("tensor+cl+compile", channels_last=True, compile_mode="default"),
    Setting("tensor+cl+bf16+compile", channels_last=True, precision="bf16-mixed", compile_mode="default",
            default_on_cpu=False),
    Setting("tensor+cl+bf16+cudagraphs", channels_last=True, precision="bf16-mixed",
            compile_mode="reduce-overhead", default_on_cpu=False),
    Setting("raw loop (tensor+cl)", channels_last=True, raw=True),
]


@dataclass
class Run:
    """Timings of one fit."""

    images_per_s: float
    first_step_s: float
    eval_images_per_s: float


@dataclass
class Summary:
    setting: Setting
    runs: list[Run] = field(default_factory=list)
    error: str = ""

    def median(self, name: str) -> float:
        return statistics.median(getattr(r, name) for r in self.runs)

    def spread(self, name: str) -> float:
        values = [getattr(r, name) for r in self.runs]
        return (max(values) - min(values)) / statistics.median(values)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock(pl.Callback):
    """End times of the training steps and the time spent in validation batches."""

    def __init__(self) -> None:
        self.fit_start = 0.0
        self.step_ends: list[float] = []
        self.eval_seconds = 0.0
        self.eval_images = 0
        self._eval_start = 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: object, batch: tuple,
                           batch_idx: int) -> None:
        synchronize(module.device)
        self.step_ends.append(time.perf_counter())

    def on_validation_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: tuple,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        synchronize(module.device)
        self._eval_start = time.perf_counter()

    def on_validation_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: object,
                                batch: tuple, batch_idx: int, dataloader_idx: int = 0) -> None:
        synchronize(module.device)
        self.eval_seconds += time.perf_counter() - self._eval_start
        self.eval_images += len(batch[1])


def run_from_clock(clock: StepClock, warmup: int, batch_size: int) -> Run:
    timed = clock.step_ends[warmup - 1:]
    images = batch_size * (len(timed) - 1)
    return Run(images / (timed[-1] - timed[0]), clock.step_ends[0] - clock.fit_start,
               clock.eval_images / clock.eval_seconds)


def configs(args: argparse.Namespace, setting: Setting, steps: int, val_batches: int,
            image_size: int, genotype_channels: tuple[int, int]) -> tuple[ChildConfig, DataConfig]:
    """Child and data settings for one fit of ``steps`` training batches."""
    n, f = genotype_channels
    val_images = val_batches * 2 * args.batch_size  # ImageDataModule evaluates in batches of 2 x batch_size
    train_images = steps * args.batch_size + 1  # drop_last keeps exactly ``steps`` batches
    data = DataConfig(name="synthetic", image_size=image_size, loader=setting.loader, num_workers=args.workers,
                      synthetic_train_size=train_images + val_images, synthetic_test_size=args.batch_size,
                      val_size=val_images, flip=True, crop_padding=image_size // 8)
    child = ChildConfig(cells_per_stage=n, channels=f, epochs=1, batch_size=args.batch_size, logger=None,
                        accelerator=args.device, precision=setting.precision, channels_last=setting.channels_last,
                        limit_train_batches=steps, limit_val_batches=val_batches)
    return child, data


# --- part 1: throughput of the proxy child ------------------------------------------------------------

def lightning_run(args: argparse.Namespace, setting: Setting) -> Run:
    """One fit of the proxy child built as evaluate_child builds a search child, timed by a StepClock."""
    child, data = configs(args, setting, args.warmup + args.steps, args.val_batches, 32,
                          (args.cells_per_stage, args.channels))
    clock = StepClock()
    with quiet_lightning():
        info = describe_dataset(data)
        trainer = build_trainer(child, checkpointing=False, quiet=True, callbacks=[clock])
        pl.seed_everything(0, workers=True, verbose=False)
        module = ChildModule.from_config(args.genotype, child, info)
        if setting.compile_mode:
            compile_training_forward(module.model, setting.compile_mode)
        datamodule = ImageDataModule(data, batch_size=child.batch_size, seed=0)
        synchronize(torch.device(args.device))
        clock.fit_start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
    return run_from_clock(clock, args.warmup, args.batch_size)


def raw_run(args: argparse.Namespace, setting: Setting) -> Run:
    """The same child and steps as Lightning runs them (SGD, cosine per step, clipping), in a plain loop."""
    child, data = configs(args, setting, args.warmup + args.steps, args.val_batches, 32,
                          (args.cells_per_stage, args.channels))
    device = torch.device(args.device)
    splits = load_splits(data)
    pl.seed_everything(0, verbose=False)
    memory_format = torch.channels_last if child.channels_last else torch.contiguous_format
    model = CellNetCifar(args.genotype, cells_per_stage=child.cells_per_stage, channels=child.channels,
                         num_classes=splits.num_classes).to(device, memory_format=memory_format)
    make_loader = lambda arrays, batch, train: TensorLoader(  # noqa: E731
        arrays, batch, splits.mean, splits.std, train=train, crop_padding=data.resolved_crop_padding,
        flip=data.resolved_flip, device=device)
    train_loader = make_loader(splits.train, args.batch_size, True)
    val_loader = make_loader(splits.val, 2 * args.batch_size, False)
    optimizer = torch.optim.SGD(model.parameters(), lr=child.lr, momentum=child.momentum, nesterov=child.nesterov,
                                weight_decay=child.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=len(train_loader))
    clock = StepClock()
    synchronize(device)
    clock.fit_start = time.perf_counter()
    model.train()
    for x, y in train_loader:
        logits, _ = model.forward_with_aux(x.contiguous(memory_format=memory_format))
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), child.grad_clip)
        optimizer.step()
        schedule.step()
        synchronize(device)
        clock.step_ends.append(time.perf_counter())
    model.eval()
    with torch.no_grad():
        for x, y in val_loader:
            synchronize(device)
            start = time.perf_counter()
            model(x.contiguous(memory_format=memory_format)).argmax(1).eq(y).sum().item()
            clock.eval_seconds += time.perf_counter() - start
            clock.eval_images += len(y)
    return run_from_clock(clock, args.warmup, args.batch_size)


def part1(args: argparse.Namespace, fixed_cost: dict[str, float]) -> None:
    settings = [s for s in SETTINGS if s.name in args.settings]
    summaries = [Summary(s) for s in settings]
    print(f"\n[1] proxy child {args.genotype} N={args.cells_per_stage} F={args.channels}, batch {args.batch_size}, "
          f"32x32 synthetic uint8 images, {args.steps} timed steps after {args.warmup}, {args.val_batches} "
          f"validation batch(es) of {2 * args.batch_size}, {args.repeats} repeats, DataLoader workers {args.workers}")
    progress = StepProgress("[1] throughput", args.repeats * len(summaries), units="runs", heartbeat=INTERVAL)
    for repeat in range(args.repeats):
        for summary in summaries:
            if summary.error:
                progress.update()
                continue
            try:
                run = (raw_run if summary.setting.raw else lightning_run)(args, summary.setting)
            except Exception as err:  # a setting this machine cannot run: report it, measure the others
                summary.error = f"{type(err).__name__}: {str(err).splitlines()[0][:100]}"
                print(f"  {summary.setting.name}: FAILED {summary.error}", flush=True)
                progress.update(note=f"{summary.setting.name} failed")
                continue
            progress.update(note=f"repeat {repeat + 1}, {summary.setting.name}")
            summary.runs.append(run)
            print(f"  repeat {repeat + 1} {summary.setting.name:<26} {run.images_per_s:8.1f} train images/s, "
                  f"first step {run.first_step_s:6.2f} s, eval {run.eval_images_per_s:8.1f} images/s", flush=True)
            gc.collect()

    measured = [s for s in summaries if s.runs]
    base = next((s for s in measured if s.setting.name == "baseline"), measured[0])
    eager_first = {s.setting.precision: s.median("first_step_s") for s in measured
                   if s.setting.compile_mode is None and s.setting.loader == "tensor" and not s.setting.raw}
    print(f"\nTraining throughput (median of {args.repeats}; spread = (max - min) / median):")
    print("| setting | train images/s | spread | vs baseline | first step s | compile s (cold / warm) "
          "| eval images/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    compile_cold: dict[str, float] = {}
    for s in measured:
        compile_text = "-"
        if s.setting.compile_mode:
            eager = eager_first.get(s.setting.precision, 0.0)
            cold = s.runs[0].first_step_s - eager
            warm = statistics.median(r.first_step_s for r in s.runs[1:]) - eager if len(s.runs) > 1 else math.nan
            compile_cold[s.setting.name] = cold
            compile_text = f"{cold:.1f} / {warm:.1f}"
        print(f"| {s.setting.name} | {s.median('images_per_s'):.1f} | {s.spread('images_per_s'):.0%} | "
              f"{s.median('images_per_s') / base.median('images_per_s'):.2f}x | {s.median('first_step_s'):.2f} | "
              f"{compile_text} | {s.median('eval_images_per_s'):.1f} |")
    for s in summaries:
        if s.error:
            print(f"| {s.setting.name} | failed: {s.error} | | | | | |")

    epochs = args.child_epochs
    print(f"\nExtrapolated per CIFAR-10 proxy child ({CIFAR_TRAIN_IMAGES:,} training images per epoch, {epochs} "
          f"epochs, one validation pass over {CIFAR_VAL_IMAGES:,} images, plus compile time and the fixed cost per "
          f"child from part 2):")
    print(f"| setting | s / epoch | s / child | {'GPU' if args.device == 'cuda' else 'CPU'}-hours / child "
          f"| vs baseline | children / day |")
    print("|---|---:|---:|---:|---:|---:|")
    base_child = None
    for s in measured:
        epoch_s = CIFAR_TRAIN_IMAGES / s.median("images_per_s")
        fixed = fixed_cost.get("raw" if s.setting.raw else "lightning", math.nan)
        child_s = epochs * epoch_s + CIFAR_VAL_IMAGES / s.median("eval_images_per_s") + \
            compile_cold.get(s.setting.name, 0.0) + (0.0 if math.isnan(fixed) else fixed)
        base_child = base_child or child_s
        print(f"| {s.setting.name} | {epoch_s:,.0f} | {child_s:,.0f} | {child_s / 3600:.2f} | "
              f"{base_child / child_s:.2f}x | {86400 / child_s:,.1f} |")
    if not fixed_cost:
        print("(fixed cost per child not included: run part 2 as well)")
    by_name = {s.setting.name: s for s in measured}
    for name, cold in compile_cold.items():
        compiled = by_name[name].setting
        eager_name = next((s.setting.name for s in measured if not s.setting.raw and s.setting.compile_mode is None
                           and s.setting.training_key == compiled.training_key), None)
        if eager_name is None:
            continue
        saved = args.batch_size / by_name[eager_name].median("images_per_s") - \
            args.batch_size / by_name[name].median("images_per_s")
        steps_per_epoch = CIFAR_TRAIN_IMAGES // args.batch_size
        if saved > 0:
            steps = cold / saved
            print(f"{name}: the cold compile ({cold:.0f} s) pays for itself after {steps:,.0f} steps "
                  f"({steps / steps_per_epoch:.2f} epochs of {steps_per_epoch} steps) against {eager_name}")
        else:
            print(f"{name}: compiled steps are not faster than {eager_name}: the compile never pays off")


# --- part 2: fixed cost per child ------------------------------------------------------------------------

TINY = (1, 8)  # N, F
TINY_IMAGE_SIZE = 16


def tiny_configs(args: argparse.Namespace, steps: int) -> tuple[ChildConfig, DataConfig]:
    tiny_args = replace_args(args, batch_size=32)
    child, data = configs(tiny_args, Setting("tensor"), steps, 1, TINY_IMAGE_SIZE, TINY)
    return child, data


def replace_args(args: argparse.Namespace, **changes: object) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


def evaluate_child_seconds(args: argparse.Namespace, steps: int) -> float:
    child, data = tiny_configs(args, steps)
    start = time.perf_counter()
    result = evaluate_child(args.genotype, child, data, seed=0)
    seconds = time.perf_counter() - start
    if result.status != "ok":
        raise RuntimeError(f"tiny child failed: {result.error}")
    return seconds


def raw_child_seconds(args: argparse.Namespace, steps: int) -> float:
    """A whole tiny child in a plain loop: data, model, optimizer, ``steps`` steps, one validation batch."""
    child, data = tiny_configs(args, steps)
    device = torch.device(args.device)
    start = time.perf_counter()
    splits = load_splits(data)
    torch.manual_seed(0)
    model = CellNetCifar(args.genotype, cells_per_stage=child.cells_per_stage, channels=child.channels,
                         num_classes=splits.num_classes).to(device)
    train_loader = TensorLoader(splits.train, child.batch_size, splits.mean, splits.std, train=True,
                                crop_padding=data.resolved_crop_padding, flip=True, device=device)
    val_loader = TensorLoader(splits.val, 2 * child.batch_size, splits.mean, splits.std, train=False, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=child.lr, momentum=child.momentum, nesterov=True,
                                weight_decay=child.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=len(train_loader))
    for x, y in train_loader:
        loss = F.cross_entropy(model.forward_with_aux(x)[0], y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), child.grad_clip)
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        sum(model(x).argmax(1).eq(y).sum().item() for x, y in val_loader)  # .item() synchronises
    return time.perf_counter() - start


class Phases(pl.Callback):
    """Times of fit's milestones."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}

    def _mark(self, name: str) -> None:
        self.marks.setdefault(name, time.perf_counter())

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._mark("fit_start")

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: tuple,
                             batch_idx: int) -> None:
        self._mark("first_batch")

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: object, batch: tuple,
                           batch_idx: int) -> None:
        self.marks["last_batch_end"] = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._mark("val_start")

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.marks["val_end"] = time.perf_counter()


def fixed_cost_breakdown(args: argparse.Namespace) -> dict[str, float]:
    """evaluate_child's steps for a one-step tiny child, timed one by one (mirrors its body)."""
    child, data = tiny_configs(args, 1)
    times: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], object]) -> object:
        start = time.perf_counter()
        value = fn()
        times[name] = time.perf_counter() - start
        return value

    with quiet_lightning():
        info = timed("describe_dataset (split, mean/std)", lambda: describe_dataset(data))
        phases = Phases()
        trainer = timed("build_trainer", lambda: build_trainer(child, checkpointing=False, quiet=True,
                                                               callbacks=[phases]))
        module = timed("ChildModule (build network)", lambda: ChildModule.from_config(args.genotype, child, info))
        timed("count_params + count_mult_adds",
              lambda: (count_params(module.model), count_mult_adds(module.model, input_size=info.input_size)))
        datamodule = ImageDataModule(data, batch_size=child.batch_size, seed=0)
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        end = time.perf_counter()
    marks = phases.marks
    validation = marks["val_end"] - marks["val_start"]
    times["fit: until on_fit_start"] = marks["fit_start"] - start
    times["fit: on_fit_start until first batch (loaders, optimizer)"] = marks["first_batch"] - marks["fit_start"]
    times["fit: the training step"] = marks["last_batch_end"] - marks["first_batch"]
    times["fit: validation (1 batch)"] = validation
    times["fit: epoch end and teardown"] = end - marks["last_batch_end"] - validation
    del trainer, module, datamodule
    timed("gc.collect", gc.collect)
    return times


def part2(args: argparse.Namespace) -> dict[str, float]:
    """Fixed seconds per child of evaluate_child and of a raw loop (intercepts of time vs steps)."""
    long_steps = 1 + args.slope_steps
    print(f"\n[2] fixed cost per child: tiny child {args.genotype} N={TINY[0]} F={TINY[1]}, {TINY_IMAGE_SIZE}x"
          f"{TINY_IMAGE_SIZE} images, batch 32, 1 or {long_steps} training steps + 1 validation batch, "
          f"{args.fixed_repeats} repeats")
    evaluate_child_seconds(args, 1)  # warm: imports, dataset cache, allocator
    raw_child_seconds(args, 1)
    samples: dict[tuple[str, int], list[float]] = {}
    breakdowns = []
    for _ in track(range(args.fixed_repeats), "[2] fixed cost", units="repeats", heartbeat=INTERVAL):
        for steps in (1, long_steps):
            samples.setdefault(("lightning", steps), []).append(evaluate_child_seconds(args, steps))
            samples.setdefault(("raw", steps), []).append(raw_child_seconds(args, steps))
        breakdowns.append(fixed_cost_breakdown(args))
    fixed = {}
    print("| path | s / child, 1 step | s / child, "
          f"{long_steps} steps | ms / step (slope) | fixed s / child (intercept) |")
    print("|---|---:|---:|---:|---:|")
    for path, label in (("lightning", "evaluate_child (Lightning)"), ("raw", "raw PyTorch loop")):
        short, long = (statistics.median(samples[(path, s)]) for s in (1, long_steps))
        slope = (long - short) / args.slope_steps
        fixed[path] = short - slope
        print(f"| {label} | {short:.3f} | {long:.3f} | {1000 * slope:.1f} | {fixed[path]:.3f} |")
    print(f"Lightning's extra fixed cost per child: {fixed['lightning'] - fixed['raw']:.3f} s")
    print("\nevaluate_child's fixed cost, step by step (1 training step; median):")
    print("| step | ms |")
    print("|---|---:|")
    for name in breakdowns[0]:
        print(f"| {name} | {1000 * statistics.median(b[name] for b in breakdowns):.1f} |")
    gc.freeze()  # what a worker process could do once after its imports: collections skip those objects
    start = time.perf_counter()
    gc.collect()
    print(f"| gc.collect after gc.freeze() | {1000 * (time.perf_counter() - start):.1f} |")
    gc.unfreeze()
    return fixed


def machine_line(args: argparse.Namespace) -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"device {args.device} ({device}); CPU {model}, {os.cpu_count()} cores, torch threads "
            f"{torch.get_num_threads()}; torch {torch.__version__}, lightning {pl.__version__}; load average {load}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["1", "2", "all"], default="all")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--genotype", default="nasnet_a")
    parser.add_argument("--cells-per-stage", type=int, default=ChildConfig.cells_per_stage)
    parser.add_argument("--channels", type=int, default=ChildConfig.channels)
    parser.add_argument("--batch-size", type=int, default=ChildConfig.batch_size)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default: CPU 3, CUDA 50)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: CPU 1, CUDA 10)")
    parser.add_argument("--val-batches", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None, help="runs per setting (default: CPU 2, CUDA 3)")
    parser.add_argument("--child-epochs", type=int, default=20, help="epochs of the extrapolated child (NASNet: 20)")
    parser.add_argument("--workers", type=int, default=DataConfig.num_workers, help="baseline DataLoader workers")
    parser.add_argument("--settings", nargs="+", default=None,
                        help="settings of part 1 to run (default: all on CUDA; on a CPU all but the last two "
                             "compiled ones, which take many minutes to compile there)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: what each of 2 pool workers gets on 2 cores; steadier on a "
                             "shared machine)")
    parser.add_argument("--slope-steps", type=int, default=20, help="part 2: extra steps of the long tiny child")
    parser.add_argument("--fixed-repeats", type=int, default=3)
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    on_gpu = args.device == "cuda"
    args.steps = args.steps or (50 if on_gpu else 3)
    args.warmup = args.warmup or (10 if on_gpu else 1)
    args.repeats = args.repeats or (3 if on_gpu else 2)
    if args.settings is None:
        args.settings = [s.name for s in SETTINGS if on_gpu or s.default_on_cpu]
    unknown = sorted(set(args.settings) - {s.name for s in SETTINGS})
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {[s.name for s in SETTINGS]}")
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be at least 1")
    if not on_gpu and "tensor+cl+bf16+cudagraphs" in args.settings:
        parser.error("tensor+cl+bf16+cudagraphs needs CUDA")
    torch.set_num_threads(args.threads)
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    print(machine_line(args), flush=True)
    fixed = part2(args) if args.part in ("2", "all") else {}
    if args.part in ("1", "all"):
        part1(args, fixed)
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    progress_to_stderr()  # progress lines on stderr: the tables on stdout stay clean
    main()
