"""``scripts/gpu_check.sh``: on a machine without CUDA it says so in one line and exits 0."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "scripts" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the script runs the whole check")
def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to check"
    ]
    assert not (tmp_path / "out").exists()
