"""Export trained networks as timm checkpoints, and convert this project's Lightning checkpoints.

An export is a folder in timm's ``local-dir`` format: ``model.safetensors`` (a plain state dict) and
``config.json`` (architecture name, ``model_args`` with the genotype as plain data, and the
pretrained config: input size, mean/std, number of classes). Load it with
``timm.create_model('local-dir:<folder>', pretrained=True)`` (without ``pretrained=True`` timm builds the
architecture from ``config.json`` but leaves the weights fresh) or, for a known architecture,
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file='<folder>/model.safetensors'))``.
Nothing here unpickles arbitrary objects: weights are safetensors and Lightning checkpoints are read
with ``torch.load(..., weights_only=True)``.

Command line::

    python -m cellsearch.weights convert CKPT OUT_DIR [--model-name NAME]   # Lightning ckpt -> export
    python -m cellsearch.weights run SCRIPT [ARGS ...]  # a timm script (train.py, ...) that sees cellnet_*
"""
from __future__ import annotations

import argparse
import inspect
import json
import pickle
import runpy
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file
from timm.models import get_pretrained_cfg

from cellsearch.space.genotype import GenotypeError, load_genotype
from cellsearch.space.head import GenotypeNet
from cellsearch.space.networks import TIMM_NAMES, network_class, space_of
from cellsearch.space.spaces import genotype_from_dict, genotype_from_json

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# pretrained-cfg fields that locate weights: an export is its own source, set by timm on loading.
_SOURCE_FIELDS = ("url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source", "architecture", "tag")


def entry_points(space: str) -> list[str]:
    """The timm entry points that build networks of ``space``: its CIFAR and ImageNet entries
    (:data:`~cellsearch.space.networks.TIMM_NAMES`) and the others of the same prefix (NASNet's published
    cells, ``cellnet_nasnet_a_mobile``, ...)."""
    prefix = TIMM_NAMES[space][0].split("_")[0]
    return sorted(set(TIMM_NAMES[space]) | set(timm.list_models(f"{prefix}_*")))


def generic_name(model: GenotypeNet) -> str:
    """The entry point that builds ``model``'s class from any genotype of its space (``cellnet_cifar``,
    ``nasrl_imagenet``, ...)."""
    space = space_of(model.genotype)
    for imagenet in (False, True):
        if type(model) is network_class(space, imagenet):
            return TIMM_NAMES[space][imagenet]
    raise TypeError(f"{type(model).__name__} is not a network class of space={space} "
                    f"(cellsearch.space.networks.NETWORK_CLASSES)")


def export_weights(
    model: GenotypeNet,
    out_dir: "str | Path",
    model_name: str | None = None,
    input_size: tuple[int, int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (timm local-dir format) into ``out_dir``.

    Args:
        model: a network of any search space (``CellNetCifar``, ``NasRLNetImageNet``, ...).
        out_dir: the folder to write; ``timm.create_model('local-dir:<out_dir>', pretrained=True)``
            loads it back.
        model_name: the registered entry point recorded as the architecture; by default the one the
            model was created from, else its class's generic one (``cellnet_cifar``, ``nasrl_imagenet``, ...).
        input_size: how the training data looked, for timm's data config; by default the entry point's.
        mean: the per-channel mean the training data was normalised with; by default the entry point's.
        std: the per-channel standard deviation; by default the entry point's.

    Returns:
        ``out_dir``, as a Path.
    """
    if not isinstance(model, GenotypeNet):
        raise TypeError(f"export_weights takes a network built from a genotype (CellNetCifar, ...), got "
                        f"{type(model).__name__} (a features_only wrapper cannot be exported: export the "
                        f"classification model)")
    pretrained_cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    name = model_name or pretrained_cfg.get("architecture") or generic_name(model)
    space = space_of(model.genotype)
    if name not in entry_points(space):
        raise ValueError(f"model_name must be a registered cellsearch entry point of space={space}, one of "
                         f"{entry_points(space)}; got {name!r}")
    model_args = model.architecture_args()
    _check_rebuilds(name, model_args, model)
    if not pretrained_cfg or pretrained_cfg.get("architecture") != name:
        pretrained_cfg = get_pretrained_cfg(name).to_dict()
    pretrained_cfg = {k: v for k, v in pretrained_cfg.items() if k not in _SOURCE_FIELDS and v is not None}
    pretrained_cfg["num_classes"] = model.num_classes
    pretrained_cfg["input_size"] = tuple(input_size) if input_size else (model.in_chans, *pretrained_cfg["input_size"][1:])
    pretrained_cfg.update({k: tuple(v) for k, v in (("mean", mean), ("std", std)) if v is not None})
    if getattr(model, "aux_head", None) is not None:  # timm drops these when the loader asks for another num_classes
        pretrained_cfg["classifier"] = ("classifier", "aux_head.classifier")
    config = {
        "architecture": name,
        "num_classes": model.num_classes,
        "num_features": model.num_features,
        "global_pool": model.global_pool.pool_type,
        "model_args": model_args,
        "pretrained_cfg": pretrained_cfg,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def _check_rebuilds(name: str, model_args: dict[str, Any], model: GenotypeNet) -> None:
    """Fail now, not at loading time, if ``name`` with ``model_args`` builds a different network."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        rebuilt = timm.create_model(name, device="meta", **model_args)
        problem = sorted(set(expected.items()) ^ {(k, tuple(v.shape)) for k, v in rebuilt.state_dict().items()})[:5]
    except (TypeError, ValueError) as err:
        problem = str(err)
    if problem:
        raise ValueError(f"{name} with this model's arguments does not rebuild this network ({problem}); "
                         f"pass the matching model_name ({' or '.join(TIMM_NAMES[space_of(model.genotype)])})")


# --- Lightning checkpoints -------------------------------------------------------------------------

def load_lightning_checkpoint(ckpt_path: "str | Path") -> dict[str, Any]:
    """Read a Lightning checkpoint without unpickling arbitrary objects (``weights_only=True``)."""
    try:
        return torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError) as err:  # a truncated or foreign file: torch's reader reports it this way
        raise ValueError(f"{ckpt_path}: not a readable checkpoint (truncated or not a torch file: "
                         f"{str(err).strip().splitlines()[0]})") from None
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{ckpt_path}: the checkpoint holds objects other than tensors and plain data, which are not "
            f"unpickled for safety. Save hyperparameters as plain types (numbers, strings, lists, dicts). "
            f"Details: {err}") from None


def _find_model_args(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments of the network from a Lightning module's hyperparameters: the mapping
    that holds ``genotype`` (at any depth), merged with the levels above it; a ``model_args``
    mapping, if present, is taken as is."""
    found: dict[str, Any] = {}

    def visit(node: Mapping[str, Any], inherited: dict[str, Any]) -> bool:
        scalars = {**inherited, **{k: v for k, v in node.items() if not isinstance(v, Mapping) or k == "genotype"}}
        if "genotype" in node:
            found.update(scalars)
            return True
        return any(visit(v, scalars) for v in node.values() if isinstance(v, Mapping))

    if isinstance(hparams.get("model_args"), Mapping):
        found = dict(hparams["model_args"])
    elif not visit(hparams, {}):
        raise ValueError("the checkpoint's hyper_parameters hold no 'genotype': save the child's genotype "
                         "(Genotype.to_dict()) and network sizes with save_hyperparameters")
    # A genotype object: its space picks the network classes to try.
    genotype = found.get("genotype")
    if isinstance(genotype, str) and genotype.lstrip().startswith("{"):
        found["genotype"] = genotype_from_json(genotype)  # the trial store's one-line form
    elif isinstance(genotype, Mapping):
        found["genotype"] = genotype_from_dict(genotype)
    else:
        found["genotype"] = load_genotype(genotype)  # a cell's name or YAML path
    return found


def _network_from_checkpoint(state_dict: dict[str, torch.Tensor], hparams: Mapping[str, Any]) -> GenotypeNet:
    """Rebuild the network whose weights are ``state_dict``, trying each skeleton of the genotype's space that the
    arguments fit."""
    found = _find_model_args(hparams)
    classifier, stem = state_dict.get("classifier.weight"), state_dict.get("stem.0.weight")
    found.setdefault("num_classes", classifier.shape[0] if classifier is not None else 0)
    if stem is not None and stem.ndim == 4:
        found.setdefault("in_chans", stem.shape[1])
    found.setdefault("auxiliary", any(k.startswith("aux_head.") for k in state_dict))
    expected = {k: tuple(v.shape) for k, v in state_dict.items()}
    errors = []
    space = space_of(found["genotype"])
    for skeleton in (network_class(space, imagenet=False), network_class(space, imagenet=True)):
        names = set(inspect.signature(skeleton.__init__).parameters) - {"self"}
        args = {k: v for k, v in found.items() if k in names}
        try:
            with torch.device("meta"):
                candidate = skeleton(**args)
        except (GenotypeError, ValueError, TypeError) as err:
            errors.append(f"{skeleton.__name__}: {err}")
            continue
        if {k: tuple(v.shape) for k, v in candidate.state_dict().items()} == expected:
            model = skeleton(**args)
            model.load_state_dict(state_dict, strict=True)
            return model
        errors.append(f"{skeleton.__name__}({args}) has different weights")
    raise ValueError("could not rebuild the network from the checkpoint's hyperparameters: " + "; ".join(errors))


def model_from_checkpoint(ckpt_path: "str | Path") -> GenotypeNet:
    """The trained network of a Lightning checkpoint of a child or retrain run.

    The Lightning module keeps its network as ``self.model`` and saves the genotype (as a dict) and
    the network's sizes with ``save_hyperparameters``.
    """
    checkpoint = load_lightning_checkpoint(ckpt_path)
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise ValueError(f"{ckpt_path}: not a Lightning checkpoint (no 'state_dict')")
    weights = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    if not weights:
        raise ValueError(f"{ckpt_path}: no weights under 'model.': the Lightning module must keep its network "
                         f"as self.model")
    return _network_from_checkpoint(weights, checkpoint.get("hyper_parameters") or {})


def convert_checkpoint(ckpt_path: "str | Path", out_dir: "str | Path", model_name: str | None = None) -> Path:
    """Convert a Lightning checkpoint of a child or retrain run into a timm export folder.

    Args:
        ckpt_path: the ``.ckpt`` file (read with ``weights_only=True``).
        out_dir: the folder to write, as ``export_weights`` does.
        model_name: the entry point to record; by default as ``export_weights`` chooses it.

    Returns:
        ``out_dir``, as a Path.
    """
    return export_weights(model_from_checkpoint(ckpt_path), out_dir, model_name)


# --- command line ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    """``convert CKPT OUT_DIR`` or ``run SCRIPT [ARGS ...]`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m cellsearch.weights", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="Lightning checkpoint -> model.safetensors + config.json")
    convert.add_argument("checkpoint", type=Path)
    convert.add_argument("out_dir", type=Path)
    convert.add_argument("--model-name", default=None, help="entry point recorded as the architecture")
    run = commands.add_parser("run", help="run a timm script (train.py, validate.py, ...) with cellnet_* registered")
    run.add_argument("script", type=Path)
    run.add_argument("script_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "convert":
        if not args.checkpoint.is_file():
            parser.error(f"no checkpoint file at {args.checkpoint}")
        try:
            out = convert_checkpoint(args.checkpoint, args.out_dir, args.model_name)
        except ValueError as err:
            parser.exit(2, f"error: {err}\n")
        print(f"wrote {out / WEIGHTS_FILE} and {out / CONFIG_FILE}; load with timm.create_model('local-dir:{out}', pretrained=True)")
    else:  # importing cellsearch registered the cellnet_* entry points in this interpreter
        sys.argv = [str(args.script), *args.script_args]
        runpy.run_path(str(args.script), run_name="__main__")


if __name__ == "__main__":
    main()
