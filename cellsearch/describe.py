"""Print a genotype's cells and the size of a network built from it.

    python -m cellsearch.describe nasnet_a --skeleton imagenet -N 4 -F 44 --image-size 224
"""
from __future__ import annotations

import argparse
import sys

import torch

from cellsearch.space.genotype import NUM_CELL_INPUTS, Cell, Genotype, GenotypeError, load_genotype
from cellsearch.space.network import CellNetCifar, CellNetImageNet
from cellsearch.space.profile import count_mult_adds, count_params, format_count


def state_name(index: int) -> str:
    """Readable name of hidden state ``index`` inside a cell."""
    return ("h[i-2]", "h[i-1]")[index] if index < NUM_CELL_INPUTS else f"block{index - NUM_CELL_INPUTS}"


def describe_cell(cell: Cell) -> list[str]:
    """One line per block, then the output list."""
    lines = []
    for k, block in enumerate(cell.blocks):
        (ia, oa), (ib, ob) = block.pairs()
        joiner = " + " if block.combine == "add" else " ++ "
        lines.append(f"  block{k} = {oa}({state_name(ia)}){joiner}{ob}({state_name(ib)})"
                     + ("   [concat: 2F channels]" if block.combine == "concat" else ""))
    lines.append(f"  output = concat({', '.join(state_name(s) for s in cell.concat)})")
    return lines


def describe_genotype(genotype: Genotype) -> str:
    lines = [f"{genotype.name or 'genotype'}" + (f": {genotype.source}" if genotype.source else "")]
    for title, cell in (("Normal cell", genotype.normal), ("Reduction cell", genotype.reduce)):
        lines.append(f"{title} ({len(cell.blocks)} blocks; '+' adds, '++' concatenates)")
        lines += describe_cell(cell)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cellsearch.describe", description=__doc__.splitlines()[0])
    parser.add_argument("genotype", help="shipped cell name (e.g. nasnet_a) or path to a genotype YAML file")
    parser.add_argument("--skeleton", choices=("cifar", "imagenet"), default="cifar")
    parser.add_argument("-N", "--cells-per-stage", type=int, default=None, help="default: 6 (cifar), 4 (imagenet)")
    parser.add_argument("-F", "--channels", type=int, default=None, help="default: 32 (cifar), 44 (imagenet)")
    parser.add_argument("--num-classes", type=int, default=None, help="default: 10 (cifar), 1000 (imagenet)")
    parser.add_argument("--image-size", type=int, default=None, help="default: 32 (cifar), 224 (imagenet)")
    parser.add_argument("--stem-channels", type=int, default=32, help="ImageNet stem width (96 for Large models)")
    parser.add_argument("--reduction-in-stage", action="store_true", help="PNASNet's layout: 3N cells in all")
    args = parser.parse_args(argv)

    cifar = args.skeleton == "cifar"
    n = args.cells_per_stage or (6 if cifar else 4)
    f = args.channels or (32 if cifar else 44)
    classes = args.num_classes or (10 if cifar else 1000)
    size = args.image_size or (32 if cifar else 224)
    try:
        genotype = load_genotype(args.genotype)
        common = dict(genotype=genotype, cells_per_stage=n, channels=f, num_classes=classes,
                      reduction_in_stage=args.reduction_in_stage)
        model = CellNetCifar(**common) if cifar else CellNetImageNet(stem_channels=args.stem_channels, **common)
    except (GenotypeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with torch.no_grad():
        params = count_params(model)
        mult_adds = count_mult_adds(model, (3, size, size))
    print(describe_genotype(genotype))
    print(f"Network: {args.skeleton} skeleton, N={n}, F={f}, {classes} classes, input 3x{size}x{size}, "
          f"{len(model.cells)} cells, {model.num_features} features")
    print(f"  parameters: {params:,} ({format_count(params)}, auxiliary head excluded)")
    print(f"  mult-adds:  {mult_adds:,} ({format_count(mult_adds)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
