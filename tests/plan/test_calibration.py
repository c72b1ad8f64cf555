"""CPU calibration: the planner's predicted peak for a real tiny QLoRA run of the embedded
model is within +-20% of the measured peak (anonymous) RSS increase."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from codetune.plan import Setup, make_plan
from codetune.plan.arch import resolve_architecture

SEQ_LEN, MICRO_BATCH, RANK = 64, 2, 8


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_cpu_prediction_within_20_percent_of_measured_peak(embedded_model_dir):
    # Guards the formula against reality: real NF4 (bitsandbytes) + PEFT LoRA + AdamW, two
    # steps, in a fresh process so nothing else is on its heap; no gradient checkpointing so
    # activations (not only weights) carry the comparison.
    env = dict(os.environ, MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "codetune.plan.calibrate", "--model", str(embedded_model_dir),
        "--seq-len", str(SEQ_LEN), "--micro-batch", str(MICRO_BATCH),
        "--lora-rank", str(RANK), "--steps", "2", "--no-grad-checkpointing",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=230)
    assert res.returncode == 0, res.stderr[-3000:]
    measured = json.loads(res.stdout.strip().splitlines()[-1])
    setup = Setup(
        seq_len=SEQ_LEN,
        micro_batch=MICRO_BATCH,
        lora_rank=RANK,
        device="cpu",
        grad_checkpointing=False,
    )
    predicted = make_plan(resolve_architecture(str(embedded_model_dir)), setup).memory.total
    error = (predicted - measured["measured_gb"]) / measured["measured_gb"]
    assert abs(error) <= 0.20, f"predicted {predicted:.3f} GB, measured {measured}"
