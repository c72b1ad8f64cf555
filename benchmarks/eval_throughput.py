"""Evaluation throughput on this machine: base vs candidate generation, batched.

Runs :func:`codetune.evaluate.run_evaluation` on the embedded model with a random LoRA
adapter and a bugfix split built from the standard library, once with base and candidate in
separate batches and once in PEFT mixed-adapter batches, and prints wall time, generated
tokens/s and a matmul GFLOPS probe (other processes share the CPU: the probe tells how much
of it this run got).

    MALLOC_ARENA_MAX=2 .venv/bin/python benchmarks/eval_throughput.py \\
        --humaneval 20 --bugfix 100            # the issue's target configuration
    MALLOC_ARENA_MAX=2 .venv/bin/python benchmarks/eval_throughput.py \\
        --humaneval 2 --bugfix 4 --max-new-tokens 24   # quick, under heavy contention
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def gflops() -> float:
    """Single-thread fp32 matmul GFLOPS right now (a contention probe)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    t = time.perf_counter()
    for _ in range(20):
        a @ b
    dt = time.perf_counter() - t
    torch.set_num_threads(n)
    return 20 * 2 * 512**3 / dt / 1e9


def random_adapter(out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from codetune.model import fetch_embedded

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(fetch_embedded(), dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    get_peft_model(base, cfg).save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--humaneval", type=int, default=20)
    ap.add_argument("--bugfix", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=320)
    ap.add_argument("--bugfix-max-new-tokens", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--modes", default="separate,mixed")
    args = ap.parse_args()

    from _bugfix_data import build

    from codetune.evaluate import run_evaluation

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = build(tmp / "data", args.bugfix)
        adapter = random_adapter(tmp / "adapter")
        results = {}
        for mode in args.modes.split(","):
            g0 = gflops()
            t0 = time.perf_counter()
            rep = run_evaluation(
                adapter,
                data,
                tmp / f"eval-{mode}",
                humaneval_limit=args.humaneval,
                bugfix_limit=args.bugfix,
                max_new_tokens=args.max_new_tokens,
                bugfix_max_new_tokens=args.bugfix_max_new_tokens,
                batch_size=args.batch_size,
                mixed=mode == "mixed",
                thresholds={"min_humaneval_pass1": 0, "min_bugfix_exact_fix": 0},
            )
            wall = time.perf_counter() - t0
            results[mode] = {
                "wall_s": round(wall, 1),
                "gflops_probe_before": round(g0, 1),
                "gflops_probe_after": round(gflops(), 1),
                **rep["generation"],
                "humaneval_pass@1": {
                    s: rep["suites"]["humaneval"][s]["pass@1"] for s in ("base", "candidate")
                },
                "bugfix_exact_fix": {
                    s: rep["suites"]["bugfix"][s]["exact_fix"] for s in ("base", "candidate")
                },
            }
            print(mode, json.dumps(results[mode]), flush=True)
        if len(results) == 2:
            s, m = results["separate"], results["mixed"]
            print(f"mixed/separate tokens/s ratio: {m['tokens_per_s'] / s['tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
