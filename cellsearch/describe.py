"""Print a genotype (of any search space) and the size of a network built from it.

    python -m cellsearch.describe nasnet_a --skeleton imagenet -N 4 -F 44 --image-size 224

What N and F mean is the genotype's space's choice (NASNet: cells per stage and the first cells' filters).
"""
from __future__ import annotations

import argparse
import inspect
import sys
from typing import Any

import torch

from cellsearch.space.genotype import GenotypeError, load_genotype
from cellsearch.space.networks import build_network, network_class, space_of
from cellsearch.space.profile import count_mult_adds, count_params, format_count
from cellsearch.space.support import diagram_module
from cellsearch.validation import ConfigError


def describe_genotype(genotype: Any) -> str:
    """A genotype of any search space as readable lines, by its space's diagram module."""
    return diagram_module(space_of(genotype)).describe(genotype)


def _network(genotype: Any, args: argparse.Namespace, cifar: bool, common: dict[str, Any]) -> Any:
    """The network to size. NASNet's skeleton takes PNASNet's layout and, for ImageNet, the stem width; another
    space's network takes what its constructor accepts, and a flag it does not is refused in one line."""
    space = space_of(genotype)
    if space == "nasnet":
        skeleton = dict(reduction_in_stage=args.reduction_in_stage)
        if not cifar:
            skeleton["stem_channels"] = args.stem_channels or 32
        return build_network(genotype, imagenet=not cifar, **common, **skeleton)
    accepted = inspect.signature(network_class(space, imagenet=not cifar).__init__).parameters
    given = {"reduction_in_stage": args.reduction_in_stage or None, "stem_channels": args.stem_channels}
    options = {k: v for k, v in given.items() if v is not None}
    for key in options:
        if key not in accepted:
            raise ConfigError(f"--{key.replace('_', '-')} is not an option of space={space}'s {args.skeleton} "
                              f"network: drop it")
    return build_network(genotype, imagenet=not cifar, **common, **options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cellsearch.describe", description=__doc__.splitlines()[0])
    parser.add_argument("genotype", help="shipped cell name (e.g. nasnet_a) or path to a genotype YAML file "
                                         "of any search space")
    parser.add_argument("--skeleton", choices=("cifar", "imagenet"), default="cifar")
    parser.add_argument("-N", "--cells-per-stage", type=int, default=None, help="default: 6 (cifar), 4 (imagenet)")
    parser.add_argument("-F", "--channels", type=int, default=None, help="default: 32 (cifar), 44 (imagenet)")
    parser.add_argument("--num-classes", type=int, default=None, help="default: 10 (cifar), 1000 (imagenet)")
    parser.add_argument("--image-size", type=int, default=None, help="default: 32 (cifar), 224 (imagenet)")
    parser.add_argument("--stem-channels", type=int, default=None,
                        help="the stem's width (NASNet: ImageNet only, default 32, 96 for Large models)")
    parser.add_argument("--reduction-in-stage", action="store_true", help="NASNet's skeleton in PNASNet's layout: "
                                                                          "3N cells in all")
    args = parser.parse_args(argv)

    cifar = args.skeleton == "cifar"
    n = args.cells_per_stage or (6 if cifar else 4)
    f = args.channels or (32 if cifar else 44)
    classes = args.num_classes or (10 if cifar else 1000)
    size = args.image_size or (32 if cifar else 224)
    try:
        genotype = load_genotype(args.genotype)
        model = _network(genotype, args, cifar, dict(cells_per_stage=n, channels=f, num_classes=classes))
        text = describe_genotype(genotype)
    except (GenotypeError, ValueError) as err:  # ConfigError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    with torch.no_grad():
        params = count_params(model)
        mult_adds = count_mult_adds(model, (3, size, size))
    print(text)
    cells = f"{len(model.cells)} cells, " if space_of(genotype) == "nasnet" else ""
    print(f"Network: {args.skeleton} skeleton, N={n}, F={f}, {classes} classes, input 3x{size}x{size}, "
          f"{cells}{model.num_features} features")
    print(f"  parameters: {params:,} ({format_count(params)}, auxiliary head excluded)")
    print(f"  mult-adds:  {mult_adds:,} ({format_count(mult_adds)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
