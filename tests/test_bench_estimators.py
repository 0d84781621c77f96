"""benchmarks/bench_estimators.py on a small table: one row per estimator (sizes, zero-cost scores, votes, the
learned predictor), intervals, the beats-the-parameter-count columns, the hook for one-shot rows, the plot."""

import pytest

from cellsearch.evaluators.table import CellTable, load_table
from benchmark_modules import load_benchmark


@pytest.mark.slow  # a minute on a loaded 2-core machine: scores 16 cells four ways and fits five predictors
def test_the_table_has_a_row_per_estimator_with_intervals_and_a_plot(tmp_path, capsys):
    shipped = load_table("testbed")
    rows = [r for r in shipped.rows if len(r.val_accuracy) >= 3][:16]
    path = CellTable("small", shipped.space, rows, shipped.child, shipped.data).save(tmp_path / "small.json.gz")
    bench = load_benchmark("bench_estimators")
    bench.main(["--table", str(path), "--resamples", "20", "--scores", "naswot", "snip", "--children", "6", "20",
                "--plot", str(tmp_path / "plot.png"), "--oneshot"])
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    names = [line.split(" | ")[0][2:] for line in table[1:]]
    assert names[:6] == ["params", "-params", "mult_adds", "-mult_adds", "naswot", "snip"]
    assert names[6].startswith("vote ") and "votes on these cells" in names[6]  # the configured vote needs synflow
    assert "predictor@6 (5-fold)" in names and "predictor@20 (5-fold)" not in names  # 20 > the other folds' 12
    assert names[-1].startswith("noise ceiling")
    assert all(line.count("[") >= 4 for line in table[1:-1])  # every statistic with its interval
    assert "beat " in out and "vote chosen out of sample" in out and (tmp_path / "plot.png").stat().st_size > 0
    assert not any(name.startswith("one-shot") for name in names)  # --oneshot with no recipe: none
