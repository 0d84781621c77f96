"""DARTS (Liu et al. 2019) over the NASNet space: the supernet relaxed, architecture weights learnt by gradient.

Relaxation: every block input p of block k holds two softmax-weighted choices, over the states it
may read (``alpha_in``, k + 2 weights) and over the ops (``alpha_op``); its output is the weighted
mix of the states pushed through the weighted mix of the ops (:meth:`SuperNet.forward_relaxed`).
At one-hot weights this is exactly the path of a genotype, so the discretised result (argmax input
and op per block input) is a genotype of the space with B blocks of two inputs and two ops.
Combine: concat changes a block's width with the choice, which a softmax cannot mix, so the relaxed
network adds (as DARTS does) and discretised blocks use ``add``; a space without ``add`` cannot be
relaxed and is refused.

Training alternates, per minibatch, an architecture step (Adam 3e-4, betas 0.5/0.999, weight decay
1e-3) on one half of the training split and a weight step (SGD 0.025, cosine to 0.001, momentum 0.9,
weight decay 3e-4) on the other half, DARTS' settings. ``order: first`` (default) uses the current
weights for the architecture gradient; ``order: second`` DARTS' one-step unrolled approximation.

Collapse guard: relaxed search drifts towards parameter-free ops (skip connections, pools) as it goes
on (DARTS+, RobustDARTS). After each epoch past ``collapse_after_epochs`` the normal cell is
discretised; when parameter-free ops (identity and pools, read off the op table) make up more than
``collapse_share`` of its ops, the search stops early (DARTS+'s criterion) and keeps the genotype of
the last epoch below the limit.

Memory: every op of every block input runs on every step (the supernet holds every op's activations;
benchmarks/bench_oneshot.py measures it per step). The documented way down is a smaller search
network: ``search.channels`` and ``search.cells_per_stage``.

The run ends as one-shot searches do: the discretised cell and cells sampled from the architecture
weights are scored on their supernet paths and trained stand-alone (:mod:`cellsearch.search.final`).
``darts_state.pt`` (supernet, both optimisers, architecture weights, history) is saved atomically
after every epoch; a rerun resumes from it. The live view (``live.tensorboard``) gets each epoch's loss,
learning rate, parameter-free share and architecture weights in ``<run dir>/tensorboard/darts``.
"""
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from cellsearch.data import TensorLoader, as_data_config, dataclass_from_config, load_splits
from cellsearch.evaluators.child import as_child_config
from cellsearch.evaluators.oneshot import SupernetTraining, endless_batches, evaluation_device, score_path
from cellsearch.evaluators.standalone import TrainEvaluator
from cellsearch.progress import StepProgress, track
from cellsearch.search.final import Candidate, FinalReport, train_candidates
from cellsearch.search.live import CurveWriter, curve_writer
from cellsearch.search.loop import check_budget
from cellsearch.search.plots import weights_figure
from cellsearch.search.settings import check_settings, search_settings
from cellsearch.space.genotype import CELL_TYPES, Block, Cell, Genotype, SearchSpace
from cellsearch.space.spaces import Space, space_from_settings
from cellsearch.space.supernet import SuperNet, parameter_free_ops
from cellsearch.space.support import require_nasnet
from cellsearch.strategies import strategies_for
from cellsearch.validation import ConfigError

__all__ = ["ArchitectureWeights", "DartsConfig", "run_darts"]

log = logging.getLogger(__name__)

STATE_FILE = "darts_state.pt"
ORDERS = ("first", "second")


@dataclass
class DartsConfig(SupernetTraining):
    """DARTS' CIFAR-10 search settings; ``budget`` is the number of epochs."""

    #: DARTS trains its architecture weights itself, not by ask and tell: :func:`run_darts` runs it.
    drives_own_loop: ClassVar[bool] = True

    budget: int = 50
    cells_per_stage: int = 2       # 8 cells: N=2 per stage plus two Reduction cells
    channels: int = 16
    lr: float = 0.025
    lr_min: float = 0.001
    arch_lr: float = 3e-4
    arch_weight_decay: float = 1e-3
    order: str = "first"
    collapse_share: float = 0.5
    collapse_after_epochs: int = 10
    steps_per_epoch: int | None = None  # None: one pass over the weight half of the training split
    bn_batches: int = 2
    val_batches: int = 4

    def __post_init__(self) -> None:
        check_budget(self.budget)
        if self.order not in ORDERS:
            raise ConfigError(f"search.order must be one of {list(ORDERS)}, got {self.order!r}")
        if not 0 < self.collapse_share <= 1:
            raise ConfigError(f"search.collapse_share must be in (0, 1], got {self.collapse_share}")
        if self.final_top_k > self.final_candidates:
            raise ConfigError("search.final_top_k must not exceed search.final_candidates")


class ArchitectureWeights(torch.nn.Module):
    """``alpha_in`` and ``alpha_op`` per cell type and block input (block k, input p at index 2k + p)."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space
        for cell_type in CELL_TYPES:
            setattr(self, f"{cell_type}_in", torch.nn.ParameterList(
                [torch.nn.Parameter(1e-3 * torch.randn(2 + k)) for k in range(space.num_blocks) for _ in range(2)]))
            setattr(self, f"{cell_type}_op", torch.nn.ParameterList(
                [torch.nn.Parameter(1e-3 * torch.randn(len(space.ops))) for _ in range(2 * space.num_blocks)]))

    def softmaxes(self) -> dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]]:
        return {c: ([F.softmax(a, dim=0) for a in getattr(self, f"{c}_in")],
                    [F.softmax(a, dim=0) for a in getattr(self, f"{c}_op")]) for c in CELL_TYPES}

    def _genotype(self, pick: Any) -> Genotype:
        cells = []
        for c in CELL_TYPES:
            w_in, w_op = (getattr(self, f"{c}_{kind}") for kind in ("in", "op"))
            blocks = [Block(inputs=(pick(w_in[2 * k]), pick(w_in[2 * k + 1])),
                            ops=(self.space.ops[pick(w_op[2 * k])], self.space.ops[pick(w_op[2 * k + 1])]),
                            combine="add") for k in range(self.space.num_blocks)]
            cells.append(Cell.from_blocks(blocks))
        return Genotype(*cells)

    @torch.no_grad()
    def op_weights(self) -> dict[str, torch.Tensor]:
        """Per cell type, the softmax over the ops of every block input: [2 x blocks, ops], on the CPU."""
        return {c: torch.stack([F.softmax(a, dim=0) for a in getattr(self, f"{c}_op")]).cpu() for c in CELL_TYPES}

    @torch.no_grad()
    def discretise(self) -> Genotype:
        """The argmax input and op of every block input; blocks add."""
        return self._genotype(lambda a: int(a.argmax()))

    @torch.no_grad()
    def sample(self, rng: random.Random) -> Genotype:
        """A genotype drawn from the softmax distributions."""
        return self._genotype(lambda a: rng.choices(range(len(a)), weights=F.softmax(a, dim=0).tolist())[0])


def check_relaxable(space: Space) -> None:
    """Raise ConfigError for a space DARTS cannot relax, saying why."""
    require_nasnet(space.name, "DARTS relaxes NASNet cells", "cells to relax",
                   f"use space=nasnet, or another search of space={space.name} "
                   f"(search={' or '.join(strategies_for(space.name))}) with evaluator=train")
    if "add" not in space.combines:
        raise ConfigError("DARTS cannot relax this space: its blocks combine by concat only, and concat makes a "
                          "block's width depend on the choice, which a softmax cannot mix; add 'add' to space.combines")


class DartsSearch:
    """One DARTS run in ``run_dir``: relaxed training epoch by epoch, then the final stand-alone step."""

    def __init__(self, config: DartsConfig, space: SearchSpace, cfg: DictConfig, run_dir: Path):
        check_relaxable(space)
        self.config, self.space, self.run_dir, self.seed = config, space, run_dir, int(cfg.seed)
        self.child, self.data = as_child_config(cfg.child), as_data_config(cfg.data)
        self.device = evaluation_device(self.child)
        splits = load_splits(self.data)
        torch.manual_seed(self.seed)
        self.supernet = SuperNet(space, config.cells_per_stage, config.channels, splits.num_classes,
                                 splits.train.images.shape[1]).to(self.device)
        self.alphas = ArchitectureWeights(space).to(self.device)
        half = len(splits.train) // 2  # DARTS: weights on one half of the training split, architecture on the other
        order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(self.seed))
        loaders = [TensorLoader(splits.train.take(idx), config.batch_size, splits.mean, splits.std, train=True,
                                crop_padding=self.data.resolved_crop_padding, flip=self.data.resolved_flip,
                                seed=self.seed + i) for i, idx in enumerate((order[:half], order[half:]))]
        self.steps = config.steps_per_epoch or max(1, len(loaders[0]))
        self.weight_batches, self.arch_batches = (endless_batches(loader, self.device) for loader in loaders)
        val = TensorLoader(splits.val, config.eval_batch_size, splits.mean, splits.std, train=False)
        self.val = [(x.to(self.device), y.to(self.device)) for x, y in list(val)[:config.val_batches]]
        self.w_opt = torch.optim.SGD(self.supernet.parameters(), lr=config.lr, momentum=config.momentum,
                                     weight_decay=config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, config.budget, eta_min=config.lr_min)
        self.a_opt = torch.optim.Adam(self.alphas.parameters(), lr=config.arch_lr, betas=(0.5, 0.999),
                                      weight_decay=config.arch_weight_decay)
        self.parameter_free = set(parameter_free_ops(space.ops))
        self.epoch, self.stopped, self.history = 0, False, []  # history: (genotype json, parameter-free share)

    # --- steps ---------------------------------------------------------------------------------
    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.supernet.forward_relaxed(x, self.alphas.softmaxes()), y)

    def _arch_step(self, x_w: torch.Tensor, y_w: torch.Tensor, x_a: torch.Tensor, y_a: torch.Tensor) -> None:
        self.a_opt.zero_grad(set_to_none=True)
        if self.config.order == "first":
            self._loss(x_a, y_a).backward(inputs=list(self.alphas.parameters()))
        else:
            self._unrolled_grad(x_w, y_w, x_a, y_a)
        self.a_opt.step()

    def _unrolled_grad(self, x_w: torch.Tensor, y_w: torch.Tensor, x_a: torch.Tensor, y_a: torch.Tensor) -> None:
        """DARTS' second-order gradient: d L_val(w - xi grad L_train(w)) / d alpha, the Hessian-vector
        product by finite differences (xi = the current weight learning rate)."""
        weights, alphas = list(self.supernet.parameters()), list(self.alphas.parameters())
        xi = self.w_opt.param_groups[0]["lr"]
        saved = [w.detach().clone() for w in weights]
        grads = torch.autograd.grad(self._loss(x_w, y_w), weights, allow_unused=True)
        with torch.no_grad():
            for w, g in zip(weights, grads):
                if g is not None:
                    w.sub_(xi * (g + self.config.weight_decay * w))
        found = torch.autograd.grad(self._loss(x_a, y_a), alphas + weights, allow_unused=True)
        d_alpha, d_w = found[:len(alphas)], found[len(alphas):]
        norm = torch.sqrt(sum((g * g).sum() for g in d_w if g is not None))
        eps = 0.01 / (float(norm) + 1e-12)
        hessian = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for w, s, g in zip(weights, saved, d_w):
                    w.copy_(s if g is None else s + sign * eps * g)
            hessian.append(torch.autograd.grad(self._loss(x_w, y_w), alphas, allow_unused=True))
        with torch.no_grad():
            for w, s in zip(weights, saved):
                w.copy_(s)
        for a, da, hp, hm in zip(alphas, d_alpha, *hessian):
            grad = torch.zeros_like(a) if da is None else da.clone()
            if hp is not None and hm is not None:
                grad -= xi * (hp - hm) / (2 * eps)
            a.grad = grad

    def _weight_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.w_opt.zero_grad(set_to_none=True)
        loss = self._loss(x, y)
        loss.backward(inputs=list(self.supernet.parameters()))
        torch.nn.utils.clip_grad_norm_(self.supernet.parameters(), self.config.grad_clip)
        self.w_opt.step()
        return float(loss.detach())

    def parameter_free_share(self, genotype: Genotype) -> float:
        ops = [op for block in genotype.normal.blocks for op in block.ops]
        return sum(op in self.parameter_free for op in ops) / len(ops)

    # --- epochs, state -------------------------------------------------------------------------
    def run_epochs(self, curves: CurveWriter | None = None) -> None:
        """Train until ``budget`` epochs are done or the collapse guard stops the search; write each
        epoch's curves to ``curves`` (the live view), if given."""
        epochs = StepProgress("darts", self.config.budget, units="epochs", interval=0, logger=log, done=self.epoch)
        while self.epoch < self.config.budget and not self.stopped:
            self.supernet.train()
            losses = []
            label = f"darts epoch {self.epoch + 1}/{self.config.budget}"
            for _ in track(range(self.steps), label, logger=log, log_last=False):
                x_w, y_w = next(self.weight_batches)
                x_a, y_a = next(self.arch_batches)
                self._arch_step(x_w, y_w, x_a, y_a)
                losses.append(self._weight_step(x_w, y_w))
            self.schedule.step()
            self.epoch += 1
            genotype = self.alphas.discretise()
            share = self.parameter_free_share(genotype)
            self.history.append((genotype.to_json(), share))
            self.stopped = self.epoch > self.config.collapse_after_epochs and share > self.config.collapse_share
            epochs.update(note=f"loss {sum(losses) / len(losses):.4f}, parameter-free share of the normal cell "
                               f"{share:.2f}{' -> collapse guard: stopping early' if self.stopped else ''}")
            self.save()
            if curves is not None:
                self._report(curves, sum(losses) / len(losses), share)

    def _report(self, curves: CurveWriter, loss: float, share: float) -> None:
        """The epoch's weight loss, learning rate and parameter-free share; the mean weight of each op per
        cell type as curves; and every block input's op weights as a heatmap per cell type."""
        values = {"darts/loss": loss, "darts/lr": self.w_opt.param_groups[0]["lr"],
                  "darts/parameter_free_share": share}
        weights = self.alphas.op_weights()
        for cell_type, table in weights.items():
            values.update({f"{cell_type}_ops/{op}": w for op, w in zip(self.space.ops, table.mean(0).tolist())})
        curves.scalars(values, self.epoch)
        rows = [f"block {k} input {p}" for k in range(self.space.num_blocks) for p in range(2)]
        for cell_type, table in weights.items():
            curves.figure(f"{cell_type}_op_weights", weights_figure(
                table.numpy(), rows, self.space.ops, f"{cell_type} cell: op weights after epoch {self.epoch}"),
                self.epoch)

    def result(self) -> Genotype:
        """The discretised genotype: the last epoch's, or under the collapse guard the last one below the limit."""
        if self.stopped:
            below = [g for g, share in self.history if share <= self.config.collapse_share]
            if below:
                return Genotype.from_json(below[-1])
        return Genotype.from_json(self.history[-1][0]) if self.history else self.alphas.discretise()

    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_FILE

    def save(self) -> None:
        state = {"supernet": self.supernet.state_dict(), "alphas": self.alphas.state_dict(),
                 "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
                 "schedule": self.schedule.state_dict(), "epoch": self.epoch, "stopped": self.stopped,
                 "history": self.history}
        tmp = self.state_path.with_name(f".{STATE_FILE}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.state_path)

    def load(self) -> None:
        if not self.state_path.exists():
            return
        state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        self.supernet.load_state_dict(state["supernet"])
        self.alphas.load_state_dict(state["alphas"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.schedule.load_state_dict(state["schedule"])
        self.schedule.T_max = self.config.budget  # a larger budget on resume stretches the schedule
        self.epoch, self.stopped = state["epoch"], state["stopped"]
        self.history = [(g, s) for g, s in state["history"]]
        log.info("resuming DARTS in %s after epoch %d", self.run_dir, self.epoch)

    def candidates(self) -> list[Candidate]:
        """The discretised genotype and distinct genotypes sampled from the architecture weights, each
        with its supernet path's validation accuracy."""
        rng = random.Random(self.seed)
        found = {}
        genotype = self.result()
        for _ in range(100 * self.config.final_candidates):
            found.setdefault(genotype.key(), genotype)
            if len(found) == self.config.final_candidates:
                break
            genotype = self.alphas.sample(rng)
        bn = [next(self.weight_batches)[0] for _ in range(self.config.bn_batches)]
        paths = track(list(found.values()), "scoring candidate paths", units="cells", logger=log)
        return [Candidate(i, g, score_path(self.supernet, g, bn, self.val)) for i, g in enumerate(paths)]


def run_darts(cfg: DictConfig) -> FinalReport:
    """Run or resume the DARTS search ``cfg`` describes in ``cfg.run_dir``, then its final stand-alone step."""
    node = {k: v for k, v in OmegaConf.to_container(cfg.search, resolve=True).items() if k != "_target_"}
    config = dataclass_from_config(DartsConfig, node, "search")
    settings = search_settings(cfg)
    space = space_from_settings(settings["space"])  # GenotypeError (one line) for bad space settings
    check_relaxable(space)
    if as_data_config(cfg.data).name == "imagefolder":
        raise ConfigError("DARTS here trains on in-memory datasets (cifar10, cifar100, digits, synthetic)")
    run_dir = Path(cfg.run_dir)
    curves = curve_writer(cfg, run_dir, "darts")  # live.*: checked before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    check_settings(run_dir, settings)
    search = DartsSearch(config, space, cfg, run_dir)
    search.load()
    if "concat" in space.combines:
        log.info("DARTS relaxes blocks by addition: the discretised cell combines every block with add")
    try:
        search.run_epochs(curves)
    finally:
        if curves is not None:
            curves.close()
    result = search.result()
    log.info("DARTS discretised cell after %d epochs%s:\n%s", search.epoch,
             " (stopped by the collapse guard)" if search.stopped else "", result.to_yaml())
    candidates = search.candidates()
    return train_candidates(candidates, TrainEvaluator(search.child, search.data), run_dir, search.seed,
                            config.final_top_k)
