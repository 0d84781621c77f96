"""Shipped cells load by name after a regular (non-editable) install of the package."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_shipped_cells_load_after_non_editable_install(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO)], check=True, capture_output=True)
    assert (target / "cellsearch" / "cells" / "nasnet_a.yaml").is_file()
    code = ("import cellsearch; from cellsearch import load_genotype; "
            "print(cellsearch.__file__); print(load_genotype('pnasnet_5').name)")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    assert out[0].startswith(str(target)) and out[1] == "pnasnet_5"
