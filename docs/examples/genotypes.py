"""Genotypes are plain data: load, encode to the controller's decisions, decode, sample, save."""
import random
import tempfile
from pathlib import Path

from cellsearch import SearchSpace, load_genotype, save_genotype

g = load_genotype("nasnet_a")                       # a shipped name or a YAML path
space = SearchSpace()                               # 13 NASNet ops, B=5, add/concat
print(f"{space.size():.2e}", space.num_decisions)   # how many cells, how many decisions per genotype
actions = space.encode(g)                           # the controller's decisions
assert space.decode(actions).normal.blocks == g.normal.blocks
child = space.sample(random.Random(0))              # a uniform draw from the space
path = Path(tempfile.mkdtemp()) / "random_0.yaml"
save_genotype(child, path)
print(load_genotype(path).to_yaml())
