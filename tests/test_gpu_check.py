"""benchmarks/gpu_check.sh, the script for when a GPU is lent, run for real on the CPU.

Its GPU branch cannot run here, but every line of it except the device is the CPU
branch's: ``DEVICE=cpu`` runs the same three stages (the grader's checks on both
reference submissions, the full-VOC preset's training throughput, a retrain-gate
smoke run through ``python -m grader grade --retrain``), so a renamed import or a
changed report field breaks this test instead of the first GPU session.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _run(**env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=1200)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run, not skip")
def test_without_cuda_it_skips_with_the_reason_and_exits_0():
    done = _run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("gpu_check: skipped: no CUDA device here"), done.stdout


@pytest.mark.slow
def test_the_cpu_path_runs_every_stage_and_prints_one_line_per_figure():
    done = _run(DEVICE="cpu", RETRAIN_ITERS="2")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "Traceback" not in out + done.stderr, done.stderr[-3000:]
    for assignment in ("one_stage", "two_stage"):
        line = re.search(rf"^cuda_checks\[{assignment}\]: skipped \((\d+) CUDA checks, no CUDA device\); (\d+) other "
                         r"checks passed", out, re.MULTILINE)
        assert line and int(line.group(1)) > 0 and int(line.group(2)) > 10, out
    throughput = re.search(r"^fcos_voc_preset_train_it_per_s\[cpu\]: ([\d.]+) it/s \(batch 16, 224 px, fp32", out,
                           re.MULTILINE)
    assert throughput and float(throughput.group(1)) > 0, out
    assert re.search(r"^retrain_gate_smoke\[cpu\]: \w+ .* after 2 iterations in \d+ s \(shortened", out,
                     re.MULTILINE), out
