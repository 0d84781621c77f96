"""Export a cell's network to what deployments load, and check each export against the eager model.

Formats (the file name says which):

- ``torchscript``: ``<name>.torchscript.pt`` (``torch.jit.load``)
- ``torch_export``: ``<name>.pt2``, an ExportedProgram (``torch.export.load(...).module()``)
- ``onnx``: ``<name>.onnx``, opset :data:`ONNX_OPSET`, dynamic batch axis, input ``image``, output
  ``logits`` (needs the ``[deploy]`` extra: onnx and onnxruntime)
- ``python``: ``<name>.py`` + ``<name>.pth``, one module that needs only torch (see
  :mod:`cellsearch.deploy_python`; NASNet cells only)
- ``safetensors``: ``<name>.safetensors/`` holding ``model.safetensors`` and ``config.json``
  (``timm.create_model('local-dir:<folder>', pretrained=True)``)

Every format but ``python`` exports a network of any search space (``space=nasnet|nasrl|hierarchical``).
The batch axis is dynamic in every format; the image size is the one exported at (the network's
configured input size unless given). Command line::

    python train.py task=export export.format=onnx export.run=<search or retrain run dir>
    python train.py task=export export.format=[torchscript,python] cell=nasnet_a
"""
from __future__ import annotations

import importlib.util
import logging
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch

from cellsearch.progress import Heartbeat, StepProgress, format_seconds
from cellsearch.validation import ConfigError
from cellsearch.space.genotype import GenotypeError, load_genotype
from cellsearch.space.head import GenotypeNet
from cellsearch.space.networks import TIMM_NAMES, network_class, space_of
from cellsearch.space.support import require_nasnet
from cellsearch.deploy_python import module_name, write_standalone
from cellsearch.weights import CONFIG_FILE, WEIGHTS_FILE, entry_points, export_weights, model_from_checkpoint

log = logging.getLogger("cellsearch")

FORMATS = ("torchscript", "torch_export", "onnx", "python", "safetensors")
ONNX_OPSET = 17
TOLERANCE = 1e-4  # max |exported - eager| on fp32 logits
_SUFFIXES = {"torchscript": ".torchscript.pt", "torch_export": ".pt2", "onnx": ".onnx", "python": ".py",
             "safetensors": ".safetensors"}
_ONNX_HINT = "pip install 'cellsearch[deploy]' (onnx and onnxruntime)"


@dataclass(frozen=True)
class Exported:
    """One written export: its files (the first is what a loader opens) and its parity with eager."""

    format: str
    paths: tuple[Path, ...]
    max_abs_diff: float


def check_formats(formats: "str | Sequence[str]") -> list[str]:
    """Formats as a list (a name, comma-separated names or a list); ConfigError for an unknown one."""
    names = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else [str(f) for f in formats]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise ConfigError(f"unknown export format {', '.join(unknown) or '(none)'}; valid formats: {', '.join(FORMATS)}")
    return names


def require_onnx() -> tuple[Any, Any]:
    """The onnx and onnxruntime modules, or ConfigError naming the extra that installs them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise ConfigError(f"ONNX export needs the {err.name} package: {_ONNX_HINT}") from None
    return onnx, onnxruntime


# --- the network to export ---------------------------------------------------------------------------

def load_network(genotype: "str | Path | None" = None, weights: "str | Path | None" = None,
                 model_name: str | None = None, model_args: dict[str, Any] | None = None) -> GenotypeNet:
    """The network to export, in eval mode.

    Args:
        genotype: a cell name or YAML path (of any search space); with ``weights`` too, the weights must be
            of this genotype.
        weights: trained weights: a timm export folder, its model.safetensors, or a Lightning .ckpt.
        model_name: without weights, the entry point to build ``genotype`` with: one of its space's
            (``cellnet_*`` for NASNet cells, ``nasrl_cifar``, ...); by default its space's CIFAR entry.
        model_args: without weights, that entry point's arguments (fresh weights).

    Returns:
        The network, in eval mode.

    Raises:
        ConfigError: nothing to export, an entry point that is not of the genotype's space, or a folder that
            holds no weights.
        GenotypeError: weights that belong to another cell.
    """
    wanted = load_genotype(genotype) if genotype is not None else None
    if weights is not None:
        model = _trained_network(Path(weights))
        if wanted is not None and model.genotype != wanted:
            raise GenotypeError(f"the weights in {weights} belong to cell {model.genotype.name or '?'}, not to "
                                f"{wanted.name or genotype}: drop one of the two")
    elif wanted is None:
        raise ConfigError("nothing to export: give a genotype (cell=<name or path>), a run (export.run=<dir>) "
                          "or trained weights (export.weights=<path>)")
    else:
        space = space_of(wanted)
        model_name = model_name or TIMM_NAMES[space][0]
        if model_name not in entry_points(space):
            raise ConfigError(f"export.model must be an entry point of space={space} (the genotype's), one of "
                              f"{entry_points(space)}; got {model_name!r}")
        model = timm.create_model(model_name, genotype=wanted, **(model_args or {}))
    return model.eval()


def _trained_network(path: Path) -> GenotypeNet:
    if path.suffix == ".ckpt" and path.is_file():
        return model_from_checkpoint(path)
    folder = path.parent if path.name == WEIGHTS_FILE else path
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise ConfigError(f"{path}: not trained weights; give a folder with {WEIGHTS_FILE} and {CONFIG_FILE} "
                          f"(what task=retrain writes), its {WEIGHTS_FILE}, or a Lightning .ckpt")
    return timm.create_model(f"local-dir:{folder}", pretrained=True)


def input_spec(model: GenotypeNet,
               input_size: Sequence[int] | None = None) -> tuple[tuple[int, int, int], tuple, tuple]:
    """(input size, mean, std) the network expects: its pretrained config's, else the skeleton's default."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    cifar = isinstance(model, network_class(space_of(model.genotype), imagenet=False))
    default = (3, 32, 32) if cifar else (3, 224, 224)
    size = tuple(input_size or cfg.get("input_size") or default)
    if len(size) != 3 or any(not isinstance(v, int) or v < 1 for v in size):
        raise ConfigError(f"export.input_size must be [channels, height, width], got {list(size)}")
    if size[0] != model.in_chans:
        raise ConfigError(f"export.input_size has {size[0]} channels but the network reads {model.in_chans}")
    return size, tuple(cfg.get("mean") or (0.5,) * size[0]), tuple(cfg.get("std") or (0.5,) * size[0])


# --- writing and loading each format -----------------------------------------------------------------

def export_path(out_dir: "str | Path", name: str, fmt: str) -> Path:
    """Where format ``fmt`` of ``name`` is written (the python module's name is made importable)."""
    stem = module_name(name) if fmt == "python" else name
    return Path(out_dir) / f"{stem}{_SUFFIXES[fmt]}"


def check_space(model: GenotypeNet, formats: Sequence[str]) -> None:
    """ConfigError if a format cannot export ``model``'s search space (``python`` writes NASNet cells only)."""
    if "python" in formats:
        require_nasnet(space_of(model.genotype), "export.format=python writes NASNet cells as plain torch code",
                       "python writer", "use torchscript, torch_export, onnx or safetensors")


def write_export(model: GenotypeNet, fmt: str, out_dir: "str | Path", name: str,
                 input_size: Sequence[int] | None = None) -> tuple[Path, ...]:
    """Write ``model`` in format ``fmt`` to ``out_dir``; returns the files written, loadable one first."""
    fmt = check_formats([fmt])[0]
    check_space(model, [fmt])
    size, mean, std = input_spec(model, input_size)
    model = model.eval()
    path = export_path(out_dir, name, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(2, *size)
    if fmt == "torchscript":
        torch.jit.save(_quietly(torch.jit.script, model), str(path))
    elif fmt == "torch_export":
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
    elif fmt == "onnx":
        require_onnx()
        # The TorchScript-based exporter: the dynamo-based one needs onnxscript besides onnx.
        _quietly(torch.onnx.export, model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                 input_names=["image"], output_names=["logits"],
                 dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    elif fmt == "python":
        return tuple(write_standalone(model, path.parent, name, size, mean, std))
    else:
        export_weights(model, path, input_size=size, mean=mean, std=std)
        return (path, path / WEIGHTS_FILE, path / CONFIG_FILE)
    return (path,)


def _quietly(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with torch's deprecation notices for TorchScript and its ONNX exporter muted."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning)  # the ONNX exporter's constant-folding notes
        return fn(*args, **kwargs)


def load_export(path: "str | Path", fmt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function image batch -> logits running the export at ``path`` the way a deployment would."""
    path = Path(path)
    if fmt == "torchscript":
        return torch.jit.load(str(path))
    if fmt == "torch_export":
        return torch.export.load(str(path)).module()
    if fmt == "onnx":
        _, onnxruntime = require_onnx()
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    if fmt == "python":
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module  # dataclasses in the module look themselves up here
        spec.loader.exec_module(module)
        return module.load_model()
    if fmt == "safetensors":
        return timm.create_model(f"local-dir:{path}", pretrained=True).eval()
    raise ConfigError(f"unknown export format {fmt}; valid formats: {', '.join(FORMATS)}")


def parity(model: GenotypeNet, path: "str | Path", fmt: str, batch: torch.Tensor) -> float:
    """Max |exported(batch) - model(batch)| over the logits."""
    exported = load_export(path, fmt)
    with torch.inference_mode():
        return (exported(batch).float() - model.eval()(batch)).abs().max().item()


def export_network(model: GenotypeNet, formats: "str | Sequence[str]", out_dir: "str | Path", name: str,
                   input_size: Sequence[int] | None = None, seed: int = 0) -> list[Exported]:
    """Write every format and check each against the eager model on a random batch of 3. Logs a line as
    each format starts and ends (with the ETA over the list) and, while one runs, every 10 seconds.

    Args:
        model: the network (in eval mode, as ``load_network`` returns it).
        formats: one of torchscript, torch_export, onnx, python (NASNet cells only), safetensors, or a list of
            them.
        out_dir: the folder the files go to.
        name: the files' stem (``<name>.onnx``, ...).
        input_size: ``(C, H, W)`` to export at; default: the network's configured input size.
        seed: seeds the random batch of the parity check.

    Returns:
        One ``Exported`` per format: its files and the largest difference from eager.
    """
    results = []
    formats = check_formats(formats)
    check_space(model, formats)  # before any format is written
    with StepProgress(f"export {name}", len(formats), units="formats", interval=0, logger=log) as progress:
        for fmt in formats:
            log.info("export %s: writing %s (%d/%d)", name, fmt, progress.done + 1, len(formats))
            start = time.perf_counter()
            with Heartbeat(f"writing and checking {fmt}", logger=log, status=progress.line):
                paths = write_export(model, fmt, out_dir, name, input_size)
                size, _, _ = input_spec(model, input_size)
                batch = torch.randn(3, *size, generator=torch.Generator().manual_seed(seed))
                results.append(Exported(fmt, paths, parity(model, paths[0], fmt, batch)))
            progress.update(note=f"{fmt} in {format_seconds(time.perf_counter() - start)}")
    return results


# --- task=export ------------------------------------------------------------------------------------

def _sources(cfg: Any) -> tuple[Any, Any]:
    """(genotype, weights) from ``cell``, ``export.weights`` and ``export.run`` (a retrain run's weights
    folder, else a search run's best cell)."""
    settings = cfg.export
    genotype, weights = cfg.get("cell"), settings.get("weights")
    if settings.get("run") is not None:
        run = Path(settings.run)
        if (run / "weights" / CONFIG_FILE).is_file():
            weights = weights or run / "weights"
        elif (run / "best_cell.yaml").is_file():
            genotype = genotype or run / "best_cell.yaml"
        else:
            raise ConfigError(f"{run} has neither weights/ (a retrain run) nor best_cell.yaml (a search run)")
    return genotype, weights


def run_export(cfg: Any) -> list[Exported]:
    """``task=export export.format=...``: export a cell's network in each format and check it."""
    settings = cfg.export
    formats = check_formats(settings.format if isinstance(settings.format, str) else list(settings.format))
    genotype, weights = _sources(cfg)
    model_args = dict(settings.get("model_args") or {})
    model = load_network(genotype, weights, settings.get("model"), model_args)
    name = settings.name or model.genotype.name or "cell"
    size = list(settings.input_size) if settings.get("input_size") else None
    trained = "trained weights from " + str(weights) if weights is not None else "fresh (untrained) weights"
    log.info("export %s (%s, %s) as %s", name, type(model).__name__, trained, ", ".join(formats))
    results = export_network(model, formats, settings.out, name, size, seed=cfg.get("seed", 0))
    for result in results:
        verdict = "ok" if result.max_abs_diff <= TOLERANCE else f"ABOVE the tolerance {TOLERANCE}"
        log.info("%-12s %s  max |exported - eager| = %.2e (%s)", result.format,
                 ", ".join(str(p) for p in result.paths), result.max_abs_diff, verdict)
    return results
