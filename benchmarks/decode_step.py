"""Cost of one decoding step of the embedded model on this CPU, by batch rows and cached
length, with transformers' ``DynamicLayer`` (``torch.cat`` of the whole cache every step) and
with codetune's in-place grown cache (``codetune.generation._slab_cache``).

    MALLOC_ARENA_MAX=2 .venv/bin/python benchmarks/decode_step.py --rows 1,16,32,64 --cached 300,600
    MALLOC_ARENA_MAX=2 .venv/bin/python benchmarks/decode_step.py --rows 16 --cached 40 --prefill 1x12,16x12
    ... --threads 1 --dtype bfloat16      # the serving engine's CPU setting where bf16 is native

Prints milliseconds per step and rows x steps per second (generated tokens/s at full slots);
``--prefill RxT,...`` also times the prefill forward of R prompts of T tokens (what the serving
engine runs, instead of a decoding step, when requests join its batch).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", default="16,32")
    ap.add_argument("--cached", default="300,600")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--prefill", default="", help="RxT shapes, e.g. 1x12,16x12")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from codetune.generation import _slab_cache
    from codetune.model import fetch_embedded

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(fetch_embedded(), dtype=dtype).eval()
    print(f"dtype={args.dtype} threads={torch.get_num_threads()}", flush=True)
    layers = model.config.num_hidden_layers
    for t in map(int, args.cached.split(",")):
        for b in map(int, args.rows.split(",")):
            for kind in ("dynamic", "in-place"):
                cache = DynamicCache() if kind == "dynamic" else _slab_cache(layers)
                ids = torch.randint(100, 40000, (b, t))
                with torch.inference_mode():
                    out = model(input_ids=ids, past_key_values=cache, logits_to_keep=1)
                    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        out = model(input_ids=nxt, past_key_values=cache)
                        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                    step = (time.perf_counter() - t0) / args.steps
                print(
                    f"cached={t} rows={b} cache={kind}: {step * 1000:.0f} ms/step, "
                    f"{b / step:.1f} tokens/s",
                    flush=True,
                )
    for shape in filter(None, args.prefill.split(",")):
        b, t = map(int, shape.split("x"))
        times = []
        for _ in range(args.steps):
            ids = torch.randint(100, 40000, (b, t))
            with torch.inference_mode():
                t0 = time.perf_counter()
                model(input_ids=ids, past_key_values=_slab_cache(layers), logits_to_keep=1)
                times.append(time.perf_counter() - t0)
        print(
            f"prefill rows={b} tokens={t}: {sorted(times)[len(times) // 2] * 1000:.0f} ms (median)"
        )


if __name__ == "__main__":
    main()
