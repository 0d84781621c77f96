"""A NAS-RL genotype in words and as a picture (matplotlib alone, no graphviz).

``describe`` gives one line per layer; ``figure`` draws the layers left to right, with the image (the stem's
output) first and the classifier's input last: an edge from the image feeds each layer without input,
arcs above the row are the anchor skip connections, and arcs below it gather the loose ends.
"""
from __future__ import annotations

from typing import Any

from cellsearch.space.nasrl import NasRLGenotype, layer_reductions

_COLORS = {"image": "#b7e1a1", "layer": "#a9c8f0", "output": "#d9b8f0"}


def _layer_text(genotype: NasRLGenotype, i: int, reductions: list[tuple[int, int]]) -> str:
    layer = genotype.layers[i]
    stride = f", stride {layer.stride_height}x{layer.stride_width}" \
        if (layer.stride_height, layer.stride_width) != (1, 1) else ""
    sources = ", ".join(f"layer{j}" for j in layer.inputs) if layer.inputs else "image"
    reads = f"concat({sources})" if len(layer.inputs) > 1 else sources
    if len({reductions[j] for j in layer.inputs}) > 1:
        reads += ", smaller inputs zero-padded"
    return f"  layer{i} = conv {layer.filter_height}x{layer.filter_width}{stride}, {layer.filters} filters ({reads})"


def describe(genotype: NasRLGenotype) -> str:
    """One line per layer (its conv and what it reads), then the classifier's input."""
    title = f"NAS-RL network {genotype.name!r}" if genotype.name else "NAS-RL network"
    lines = [f"{title}: {len(genotype.layers)} layers of conv + BN + ReLU"]
    reductions = layer_reductions(genotype)
    lines += [_layer_text(genotype, i, reductions) for i in range(len(genotype.layers))]
    ends = genotype.loose_ends()
    reads = f"concat({', '.join(f'layer{i}' for i in ends)})" if len(ends) > 1 else f"layer{ends[0]}"
    padded = ", smaller inputs zero-padded" if len({reductions[i] for i in ends}) > 1 else ""
    lines.append(f"  classifier reads {reads}{padded}")
    return "\n".join(lines)


def figure(genotype: NasRLGenotype, title: str = "") -> Any:
    """The diagram as a matplotlib Figure (the caller saves and closes it)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    n = len(genotype.layers)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * (n + 2)), 3.5), layout="constrained")
    box = dict(boxstyle="round,pad=0.3", ec="#444444", lw=0.8)

    def node(x: float, text: str, color: str) -> Any:
        return ax.text(x, 0.0, text, ha="center", va="center", fontsize=7, bbox={**box, "fc": color}, zorder=3)

    def edge(src: Any, dst: Any, rad: float, above: bool) -> None:
        # Anchor edges leave and enter the boxes' tops, the image's and loose ends' edges their bottoms.
        y = 1.0 if above else 0.0
        ax.annotate("", xy=(0.5, y), xycoords=dst, xytext=(0.5, y), textcoords=src, zorder=2,
                    arrowprops=dict(arrowstyle="-|>", color="#555555", lw=0.8, shrinkA=1, shrinkB=1,
                                    connectionstyle=f"arc3,rad={rad}"))

    def adjacent(src: Any, dst: Any) -> None:
        ax.annotate("", xy=(0.0, 0.5), xycoords=dst, xytext=(1.0, 0.5), textcoords=src, zorder=2,
                    arrowprops=dict(arrowstyle="-|>", color="#555555", lw=0.8, shrinkA=1, shrinkB=1))

    image = node(-1.0, "image", _COLORS["image"])
    artists = []
    for i, layer in enumerate(genotype.layers):
        stride = f"\n/{layer.stride_height}x{layer.stride_width}" \
            if (layer.stride_height, layer.stride_width) != (1, 1) else ""
        artists.append(node(float(i), f"layer {i}\n{layer.filter_height}x{layer.filter_width}\n{layer.filters}{stride}",
                            _COLORS["layer"]))
    output = node(float(n), "classifier\nconcat", _COLORS["output"])
    spans = [i - j for i, layer in enumerate(genotype.layers) for j in layer.inputs]
    spans += [n - i for i in genotype.loose_ends()]
    reach = 0.6 + 0.13 * max(spans + [i + 1 for i, layer in enumerate(genotype.layers) if not layer.inputs])
    ax.set_xlim(-1.7, n + 0.7)
    ax.set_ylim(-reach, reach)  # an arc3 arc rises rad / 2 of its span
    ax.set_axis_off()
    fig.canvas.draw()  # the boxes' extents exist only once drawn; the edges attach to them
    for i, layer in enumerate(genotype.layers):
        if not layer.inputs:
            if i == 0:
                adjacent(image, artists[0])
            else:
                edge(image, artists[i], 0.25, above=False)
        for j in layer.inputs:
            if j == i - 1:
                adjacent(artists[j], artists[i])
            else:
                edge(artists[j], artists[i], -0.25, above=True)
    for i in genotype.loose_ends():
        if i == n - 1:
            adjacent(artists[i], output)
        else:
            edge(artists[i], output, 0.25, above=False)
    if title or genotype.name:
        ax.set_title(title or genotype.name, fontsize=10)
    return fig
