"""benchmarks/bench_gpu.py's smoke mode runs on a CPU and writes its markdown table."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_gpu_quick_on_the_cpu_writes_its_table(tmp_path):
    out = tmp_path / "bench.md"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--device", "cpu", "--quick",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    table = out.read_text()
    for row in ("| alone (in-process) | 1 |", "| K = 1 per GPU | 1 |", "| K = 2 per GPU | 2 |",
                "| cellsearch cellnet_nasnet_a_large |", "| timm nasnetalarge (pad 'same') |"):
        assert row in table, table
