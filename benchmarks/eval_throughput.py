"""Evaluation throughput on this machine.

Two measurements, both on the embedded SmolLM2-135M-Instruct (fp32) with a random LoRA adapter:

1. ``engine``: the same rows (HumanEval + bugfix prompts, base model, greedy, stop at the
   closing fence, bugfix rows capped at 1.25 x reference + 24 tokens) through plain batched
   ``generation.generate`` (batches of 16 sorted by prompt length — the evaluation's engine
   before continuous batching) and through ``generation.generate_continuous``
   (``--batch-size`` slots, refilled as rows finish), back to back; prints tokens/s and the
   ratio.
2. ``drafts``: the same bugfix rows (base model, greedy, stop at the closing fence, the
   evaluation's caps and admission order) through ``generate_continuous`` without and with
   prompt-lookup drafts (``--draft-tokens``), ``--rounds`` rounds in the order
   plain, drafts, drafts, plain (a load trend cancels out of each round's ratio); checks
   that every answer is token-identical and prints each run's wall time, tokens/s, forwards
   and the per-round wall-time ratios.
3. ``target``: ``run_evaluation`` on ``--humaneval`` HumanEval problems + ``--bugfix`` bugfix
   problems, base and candidate, including model load, sandboxed execution and the report —
   the issue's target is 20 + 100 in <= 10 minutes on 2 cores.

A single-thread matmul GFLOPS probe before/after each part tells how much of the CPU the run
got (other processes share it).

    MALLOC_ARENA_MAX=2 .venv/bin/python benchmarks/eval_throughput.py --data DATASET_DIR
    MALLOC_ARENA_MAX=2 .venv/bin/python benchmarks/eval_throughput.py --parts engine \
        --engine-humaneval 8 --engine-bugfix 32          # ratio only, ~3 min
    MALLOC_ARENA_MAX=2 .venv/bin/python benchmarks/eval_throughput.py --parts drafts \
        --drafts-bugfix 16 --rounds 2                    # drafts vs none, bugfix rows

``--data`` is a prepared dataset (``codetune prepare``); without it a small mechanical bugfix
set is built from the standard library (benchmarks/_bugfix_data.py).
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


def engine(adapter: Path, data: Path, n_he: int, n_bug: int, batch_size: int) -> dict:
    """Plain batched generate vs continuous batching on the same base-model rows."""
    import math

    from codetune.evaluate import suites as S
    from codetune.evaluate.runner import BUGFIX_MARGIN
    from codetune.generation import generate, generate_continuous, load_model
    from codetune.prompts import render_chat

    lm = load_model(None)
    tok = lm.tokenizer

    def chat(msgs):
        return render_chat(tok, msgs) + S.ANSWER_PREFIX

    rows = [(chat(S.humaneval_messages(p)), 320) for p in S.load_humaneval(n_he, None)]
    for item in S.load_bugfix(data, n_bug):
        ref = len(tok(item.reference, add_special_tokens=False)["input_ids"])
        rows.append(
            (chat(S.bugfix_messages(item)), min(512, math.ceil(ref * 1.25) + BUGFIX_MARGIN))
        )
    out = {}
    # plain: sorted by prompt length, batches of 16, each batch runs to its longest cap
    plain = sorted(rows, key=lambda r: len(r[0]))
    g0, t0 = gflops(), time.perf_counter()
    toks = 0
    for i in range(0, len(plain), 16):
        batch = plain[i : i + 16]
        gens = generate(
            lm, [p for p, _ in batch], max_new_tokens=max(c for _, c in batch), stop=S.STOP
        )
        toks += sum(min(g.completion_tokens, c) for g, (_, c) in zip(gens, batch, strict=True))
    dt = time.perf_counter() - t0
    out["plain"] = {"s": round(dt, 1), "tokens": toks, "tok_s": round(toks / dt, 2)}
    out["plain"] |= {"probe": [round(g0, 1), round(gflops(), 1)]}
    order = sorted(rows, key=lambda r: -r[1])
    g0, t0 = gflops(), time.perf_counter()
    gens = generate_continuous(
        lm,
        [p for p, _ in order],
        max_new_tokens=[c for _, c in order],
        stop=S.STOP,
        max_batch=batch_size,
    )
    dt = time.perf_counter() - t0
    toks = sum(g.completion_tokens for g in gens)
    out["continuous"] = {"s": round(dt, 1), "tokens": toks, "tok_s": round(toks / dt, 2)}
    out["continuous"] |= {"probe": [round(g0, 1), round(gflops(), 1)]}
    out["rows"] = len(rows)
    out["ratio_tok_s"] = round(out["continuous"]["tok_s"] / out["plain"]["tok_s"], 2)
    return out


def drafts(data: Path, n_bug: int, batch_size: int, k: int, rounds: int) -> dict:
    """Bugfix rows without and with prompt-lookup drafts, ABBA-ordered rounds."""
    import math
    import statistics

    from codetune.evaluate import suites as S
    from codetune.evaluate.runner import BUGFIX_MARGIN
    from codetune.generation import generate_continuous, load_model
    from codetune.prompts import answer_prefix, render_chat

    lm = load_model(None)
    tok = lm.tokenizer
    rows = []
    for item in S.load_bugfix(data, n_bug, 0):
        ref = len(tok(item.reference, add_special_tokens=False)["input_ids"])
        prompt = render_chat(tok, S.bugfix_messages(item)) + answer_prefix(item.language)
        rows.append((prompt, min(512, math.ceil(ref * 1.25) + BUGFIX_MARGIN)))
    rows.sort(key=lambda r: -r[1])  # the evaluation's admission order

    def run(draft_tokens: int) -> tuple[dict, list]:
        stats: dict = {}
        g0, t0 = gflops(), time.perf_counter()
        gens = generate_continuous(
            lm,
            [p for p, _ in rows],
            max_new_tokens=[c for _, c in rows],
            stop=S.STOP,
            max_batch=batch_size,
            draft_tokens=draft_tokens,
            stats=stats,
        )
        dt = time.perf_counter() - t0
        toks = sum(g.completion_tokens for g in gens)
        res = {"s": round(dt, 1), "tokens": toks, "tok_s": round(toks / dt, 2), **stats}
        res["probe"] = [round(g0, 1), round(gflops(), 1)]
        print("  run", draft_tokens, json.dumps(res), flush=True)
        return res, [(g.text, g.completion_tokens, g.finish_reason) for g in gens]

    out: dict = {"rows": len(rows), "draft_tokens": k, "batch_size": batch_size, "rounds": []}
    want = None
    for _ in range(rounds):
        runs = {}
        for name in ("plain", "drafts", "drafts", "plain"):
            res, answers = run(k if name == "drafts" else 0)
            want = want or answers
            if answers != want:
                raise SystemExit(f"{name}: answers differ from the first plain run")
            runs.setdefault(name, []).append(res)
        wall = {n: sum(r["s"] for r in v) for n, v in runs.items()}
        out["rounds"].append({**runs, "ratio_wall": round(wall["plain"] / wall["drafts"], 2)})
    out["identical"] = True
    out["median_ratio_wall"] = statistics.median(r["ratio_wall"] for r in out["rounds"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, help="prepared dataset dir (default: a small built one)")
    ap.add_argument("--adapter", type=Path, help="LoRA adapter (default: a random r=8 one)")
    ap.add_argument("--parts", default="engine,target")
    ap.add_argument("--humaneval", type=int, default=20)
    ap.add_argument("--bugfix", type=int, default=100)
    ap.add_argument("--engine-humaneval", type=int, default=8)
    ap.add_argument("--engine-bugfix", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--drafts-bugfix", type=int, default=16)
    ap.add_argument("--draft-tokens", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    from _bugfix_data import build

    from codetune.evaluate import run_evaluation
    from codetune.evaluate.config import EvalConfig

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data or build(
            tmp / "data", max(args.bugfix, args.engine_bugfix, args.drafts_bugfix)
        )
        adapter = args.adapter or random_adapter(tmp / "adapter")
        parts = args.parts.split(",")
        if "engine" in parts:
            res = engine(adapter, data, args.engine_humaneval, args.engine_bugfix, args.batch_size)
            print("engine", json.dumps(res), flush=True)
        if "drafts" in parts:
            res = drafts(data, args.drafts_bugfix, args.batch_size, args.draft_tokens, args.rounds)
            print("drafts", json.dumps(res), flush=True)
        if "target" in parts:
            g0, t0 = gflops(), time.perf_counter()
            config = EvalConfig(
                limit={"humaneval": args.humaneval, "bugfix": args.bugfix},
                batch_size=args.batch_size,
                thresholds={"min_humaneval_pass1": 0, "min_bugfix_exact_fix": 0},
            )
            rep = run_evaluation(adapter, data, tmp / "eval", config)
            res = {
                "wall_s": round(time.perf_counter() - t0, 1),
                "probe": [round(g0, 1), round(gflops(), 1)],
                **rep["generation"],
                "humaneval_pass@1": {
                    s: rep["suites"]["humaneval"][s]["pass@1"] for s in ("base", "candidate")
                },
                "bugfix_exact_fix": {
                    s: rep["suites"]["bugfix"][s]["exact_fix"] for s in ("base", "candidate")
                },
            }
            print("target", json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
