"""The describe command prints a cell's blocks, parameters and mult-adds."""
import subprocess
import sys

import pytest

from cellsearch.describe import main


def test_describe_prints_blocks_and_sizes(capsys):
    assert main(["darts_v2", "-N", "6", "-F", "36"]) == 0
    out = capsys.readouterr().out
    assert "block3 = identity(h[i-2]) + dil_sep_conv_3x3(block0)" in out
    assert "parameters: 3,349,342" in out
    assert "mult-adds:" in out


def test_describe_bad_input_exits_2_with_one_line(capsys):
    assert main(["no_such_cell"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no genotype named 'no_such_cell'") and "Traceback" not in err
    assert main(["nasnet_a", "-F", "-3"]) == 2


@pytest.mark.slow  # a subprocess (5 s); main() is tested in-process above
def test_describe_runs_as_a_module(capsys):
    args = ["nasnet_a", "--skeleton", "imagenet", "-N", "1", "-F", "8"]  # tiny: the published sizes are checked above
    result = subprocess.run([sys.executable, "-m", "cellsearch.describe", *args], capture_output=True, text=True,
                            check=True)
    assert main(args) == 0
    assert result.stdout == capsys.readouterr().out and "parameters: " in result.stdout
