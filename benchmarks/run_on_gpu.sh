#!/usr/bin/env bash
# Everything that needs a GPU, in one call on a GPU machine (well inside 10 minutes on one H200):
# the smoke suite tests/gpu, then benchmarks/bench_gpu.py. Logs and the table go to $OUT (default
# /tmp/cellsearch_gpu).
#
# The GPU machine has torch, Lightning, timm, pytest and the rest, but not Hydra. Where pip reaches
# PyPI, put Hydra's three pure-Python wheels into .whl/ (git-ignored: echo /.whl/ >> .git/info/exclude):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl hydra-core==1.3.8 omegaconf==2.3.1
#   python3 -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3   # published as source only
#
# then carry .whl along and run, from the repository root on the GPU machine:
#
#   bash benchmarks/run_on_gpu.sh
# timeout -k: Lightning catches SIGTERM (for SLURM) and may train on, so a KILL follows 10 s later.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cellsearch_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"  # after the project, after nothing the machine already has
fi
python3 -c "import hydra, omegaconf" || { echo "Hydra is missing: see the top of $0 for the wheels to carry"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
timeout -k 10 330 python3 -m pytest tests/gpu -v -rs -p no:cacheprovider 2>&1 | tee "$OUT/tests_gpu.log"
tests=${PIPESTATUS[0]}
timeout -k 10 240 python3 benchmarks/bench_gpu.py --out "$OUT/bench_gpu.md" 2>&1 | tee "$OUT/bench_gpu.log"
bench=${PIPESTATUS[0]}
echo "tests/gpu exit code $tests, bench_gpu.py exit code $bench"
exit $((tests || bench))
