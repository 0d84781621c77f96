"""benchmarks/bench_deploy.py's smoke mode measures every runtime it is given and writes its table."""
import os

import pytest
import torch

from benchmark_modules import load_benchmark


@pytest.mark.slow
def test_quick_run_writes_a_row_per_runtime_and_batch_with_ratios_against_eager(tmp_path):
    out = tmp_path / "bench.md"
    # inductor left out: its ahead-of-time C++ compile takes minutes even for a tiny network
    cpus = os.sched_getaffinity(0)
    load_benchmark("bench_deploy").main(["--quick", "--networks", "found", "--inductor", "--threads", "1", "--pin", str(min(cpus)),
                   "--out", str(out)])
    assert os.sched_getaffinity(0) == cpus  # pinned for the timings only
    table = out.read_text()
    assert f"timed on CPU {min(cpus)}" in table
    for batch in (1, 4):
        assert f"| discovered (quick_cpu_found) | {batch} | eager | " in table and "| 1.00x |" in table
        for runtime in ("TorchScript", "ONNX Runtime"):
            prefix = f"| discovered (quick_cpu_found) | {batch} | {runtime} |"
            row = next(r for r in table.splitlines() if r.startswith(prefix))
            median, ratio = row.split(" | ")[3:5]
            assert float(median) > 0 and ratio.endswith("x"), row  # timed, hence matched eager
    assert "export+inductor" not in table
    assert "whole run:" in table


def test_a_runtime_that_disagrees_with_eager_is_not_timed():
    bench = load_benchmark("bench_deploy")
    x = torch.ones(2, 3)
    kept, notes = bench.check({"eager": lambda t: t * 2, "TorchScript": lambda t: t * 2 + 1e-3}, x)
    assert list(kept) == ["eager"] and notes["TorchScript"] == "max diff 1e-03 > 2e-04"  # 1e-4 x the largest logit
    rows = bench.rows("net", 2, ["eager", "TorchScript"], bench.measure(kept, x, 0, 1), notes)
    assert "| net | 2 | TorchScript | mismatch, not timed | - |" in rows[1]


def test_a_runtime_that_fails_on_a_batch_says_so_and_the_rest_are_timed():
    bench = load_benchmark("bench_deploy")
    x = torch.ones(2, 3)

    def broken(t):
        raise RuntimeError("batch size 2 outside the compiled range\nsecond line")

    kept, notes = bench.check({"eager": lambda t: t, "export+inductor": broken}, x)
    assert list(kept) == ["eager"]
    assert notes["export+inductor"] == "failed: RuntimeError: batch size 2 outside the compiled range"
    rows = bench.rows("net", 2, ["eager", "export+inductor"], bench.measure(kept, x, 0, 1), notes)
    assert rows[0].startswith("| net | 2 | eager | ") and "| net | 2 | export+inductor | not run | - |" in rows[1]
