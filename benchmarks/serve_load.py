"""Closed-loop load against the inference server on localhost, against a sequential baseline.

For each concurrency level C, C client threads send TGI requests back to back (each waits for
its answer before sending the next) to a real uvicorn server on 127.0.0.1 with the embedded
model; the baseline is a plain loop of ``generation.generate()`` calls, one prompt at a time, on
the same loaded model. Every configuration runs with the base model and with a LoRA adapter,
interleaved, so contention from other processes hits both sides of each ratio alike.

Run::

    MALLOC_ARENA_MAX=2 .venv/bin/python benchmarks/serve_load.py            # ~5 min on 2 cores
    .venv/bin/python benchmarks/serve_load.py --levels 1 4 16 --max-new-tokens 16 --out r.json

Reports requests/s, generated tokens/s, p50/p99 latency and the mean batch size per run, and
the ratios the issue targets (generated tokens/s, median over the rounds of paired runs):
C=16 over the sequential loop (target >= 4x) and adapter over base (target >= 0.85).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("MALLOC_ARENA_MAX", "2")

PROMPTS = [
    "def add(a, b):\n",
    "def is_even(n):\n",
    "import os\n\ndef list_python_files(path):\n",
    "def fibonacci(n):\n",
    "class Stack:\n    def __init__(self):\n",
    "def reverse_words(sentence):\n",
    "def read_json(path):\n",
    "def clamp(x, lo, hi):\n",
]


def make_adapter(base_dir: str, out: Path) -> Path:
    """A random-weight LoRA adapter (r=16 on q/k/v/o: a typical code fine-tune's shape)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=16,
        lora_alpha=32,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,
    )
    get_peft_model(model, cfg).save_pretrained(out)
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(q * (len(values) - 1))))
    return values[k]


def summarize(latencies: list[float], tokens: int, wall: float) -> dict:
    return {
        "requests": len(latencies),
        "wall_s": round(wall, 2),
        "req_per_s": round(len(latencies) / wall, 3),
        "tok_per_s": round(tokens / wall, 2),
        "p50_s": round(statistics.median(latencies), 2),
        "p99_s": round(pct(latencies, 0.99), 2),
    }


def closed_loop(url: str, concurrency: int, total: int, adapter: str, max_new: int) -> dict:
    import httpx

    lock = threading.Lock()
    issued = [0]
    latencies: list[float] = []
    tokens = [0]
    errors: list[str] = []

    # Clients are created before the clock starts and released together: creating an httpx
    # client costs tens of milliseconds on a loaded CPU and would stagger the first round.
    clients = [httpx.Client(base_url=url, timeout=600, trust_env=False) for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1)

    def client(idx: int) -> None:
        c = clients[idx]
        start.wait()
        with c:
            while True:
                with lock:
                    if issued[0] >= total:
                        return
                    n = issued[0]
                    issued[0] += 1
                body = {
                    "inputs": PROMPTS[n % len(PROMPTS)],
                    "parameters": {
                        "max_new_tokens": max_new,
                        "adapter_id": adapter,
                        "details": True,
                    },
                }
                t0 = time.perf_counter()
                r = c.post("/invocations", json=body)
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                        continue
                    latencies.append(dt)
                    tokens[0] += r.json()[0]["details"]["generated_tokens"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed: {errors[:3]}")
    return summarize(latencies, tokens[0], wall)


def sequential(lm, total: int, adapter: str | None, max_new: int) -> dict:
    from codetune import generation

    latencies, tokens = [], 0
    t0 = time.perf_counter()
    for n in range(total):
        s = time.perf_counter()
        g = generation.generate(
            lm, [PROMPTS[n % len(PROMPTS)]], adapters=adapter, max_new_tokens=max_new
        )[0]
        latencies.append(time.perf_counter() - s)
        tokens += g.completion_tokens
    return summarize(latencies, tokens, time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--sequential-requests", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2, help="alternating base/adapter rounds")
    ap.add_argument("--max-wait-ms", type=float, default=100.0)
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--adapter", help="adapter dir (default: a random r=16 adapter)")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()

    import torch

    from codetune.model import resolve_base_model
    from codetune.serve import ServeConfig, ServerThread

    torch.set_num_threads(args.torch_threads)
    base_dir = resolve_base_model(None)
    tmp = tempfile.mkdtemp(prefix="serve-load-")
    adapter_dir = args.adapter or str(make_adapter(base_dir, Path(tmp) / "adapter"))
    cfg = ServeConfig.from_env(
        adapters={"tuned": adapter_dir},
        max_batch_size=16,
        max_wait_ms=args.max_wait_ms,
        queue_size=64,
        max_new_tokens_cap=args.max_new_tokens,
        torch_threads=args.torch_threads,
    )
    results: dict = {
        "machine": os.environ.get("BENCH_MACHINE", "2-core CPU, 24 GB, no GPU (shared)"),
        "max_new_tokens": args.max_new_tokens,
        "torch_threads": args.torch_threads,
        "load_avg_start": os.getloadavg()[0],
    }
    runs: dict[str, list[dict]] = {}

    def record(key: str, r: dict) -> None:
        runs.setdefault(key, []).append(r)
        print(f"{key:22s} {r}", flush=True)

    with ServerThread(cfg) as srv:
        srv.wait_ready()
        lm = srv.state.lm
        batcher = srv.state.batcher
        # Base and adapter alternate (ABBA order over the rounds) so drift in the load from
        # other processes falls on both sides of each ratio alike.
        for rnd in range(args.rounds):
            order = [("base", None), ("adapter", "tuned")]
            order = order if rnd % 2 == 0 else order[::-1]
            for name, adapter in order:
                # The server is idle here; its worker thread does not touch the model.
                r = sequential(lm, args.sequential_requests, adapter, args.max_new_tokens)
                record(f"sequential/{name}", r)
            for c in args.levels:
                total = max(2 * c, 6)
                for name, adapter in order:
                    b0, r0 = batcher.batches, batcher.rows
                    r = closed_loop(srv.url, c, total, adapter or "base", args.max_new_tokens)
                    r["mean_batch"] = round((batcher.rows - r0) / max(1, batcher.batches - b0), 1)
                    record(f"c{c}/{name}", r)
    results["runs"] = runs

    def tok(key: str, i: int) -> float:
        return runs[key][i]["tok_per_s"]

    def median_ratio(num: str, den: str) -> float:
        return round(statistics.median(tok(num, i) / tok(den, i) for i in range(args.rounds)), 3)

    ratios = {}
    for name in ("base", "adapter"):
        for c in args.levels:
            ratios[f"c{c}_vs_sequential/{name}"] = median_ratio(
                f"c{c}/{name}", f"sequential/{name}"
            )
    for key in ["sequential", *(f"c{c}" for c in args.levels)]:
        ratios[f"adapter_vs_base/{key}"] = median_ratio(f"{key}/adapter", f"{key}/base")
    results["ratios"] = ratios
    results["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(ratios, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
