"""Final retraining with Lightning DDP on every visible GPU, through the command line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU (pytest tests/gpu on a GPU machine)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]


def test_ddp_retrain_on_all_visible_gpus(tmp_path):
    # 32x32 images: the retrain preset's cutout of 16 pixels would blank synthetic's default 16x16 ones
    command = [sys.executable, str(ROOT / "train.py"), "task=retrain", "cell=nasnet_a", "data=synthetic",
               "data.image_size=32",
               "child.cells_per_stage=1", "child.channels=8", "child.epochs=2", "child.batch_size=64",
               "child.accelerator=gpu", "child.devices=-1", "child.strategy=ddp", "child.enable_progress_bar=false",
               f"run_dir={tmp_path}", f"hydra.run.dir={tmp_path}"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert list(tmp_path.rglob("model.safetensors")), "the retrained network was not exported"
    assert list(tmp_path.rglob("last.ckpt"))
