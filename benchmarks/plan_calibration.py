"""Planner calibration: predicted vs measured peak memory of tiny real QLoRA runs on the CPU.

    MALLOC_ARENA_MAX=2 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/plan_calibration.py

Each run is a fresh process (``python -m codetune.plan.calibrate``); prints a Markdown table
for benchmarks/RESULTS.md (planner section).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from codetune.model import resolve_base_model
from codetune.plan import Setup, make_plan
from codetune.plan.arch import resolve_architecture

RUNS = [(64, 2, True), (64, 2, False), (128, 2, False)]


def main() -> int:
    model = str(resolve_base_model(None))
    arch = resolve_architecture(model)
    env = dict(os.environ, MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1")
    print("| seq x batch | checkpointing | measured GB | predicted GB | error |")
    print("|---|---|---|---|---|")
    for seq, mb, gc in RUNS:
        cmd = [sys.executable, "-m", "codetune.plan.calibrate", "--model", model,
               "--seq-len", str(seq), "--micro-batch", str(mb), "--lora-rank", "8",
               "--grad-checkpointing" if gc else "--no-grad-checkpointing"]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        measured = json.loads(out.stdout.strip().splitlines()[-1])["measured_gb"]
        setup = Setup(seq_len=seq, micro_batch=mb, lora_rank=8, device="cpu",
                      grad_checkpointing=gc)  # fmt: skip
        predicted = make_plan(arch, setup).memory.total
        err = (predicted - measured) / measured
        print(f"| {seq} x {mb} | {gc} | {measured:.3f} | {predicted:.3f} | {err:+.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
