"""bench_search_quality over every search space: each space's landscapes, its strategies, a tiny run's table."""
import random
import sys

import pytest

from benchmark_modules import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_search_quality")


@pytest.mark.parametrize("space_name", ["nasnet", "nasrl", "hierarchical"])
def test_a_tiny_run_over_each_space_prints_its_table(bench, space_name, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_search_quality.py", "--space", space_name, "--strategies", "random",
                                      "--budgets", "8", "--seeds", "2", "--families", "additive", "structure",
                                      "--plot", ""])
    bench.main()
    out = capsys.readouterr().out
    assert f"'name': '{space_name}'" in out
    for family in ("additive", "structure"):
        assert f"| {family} | strategy | best |" in out
    assert "| | random, 80 children |" in out


def test_families_and_strategies_follow_the_space(bench, monkeypatch):
    space = bench.space_settings("nasrl")
    assert space.name == "nasrl" and space.num_layers == 15  # conf/space/nasrl.yaml
    assert bench.searches("random", space)
    landscape = bench.make_landscape("rugged", space, seed=1, noise=0.2)
    assert 0 < landscape(space.sample(random.Random(0)), noise_seed=(1, 0)) < 1
    monkeypatch.setattr(sys, "argv", ["bench_search_quality.py", "--space", "nasrl", "--families", "cells"])
    with pytest.raises(SystemExit):
        bench.main()
