"""Measure the peak memory of a tiny real QLoRA training run on the CPU, to check the formula.

Run (prints one JSON object)::

    MALLOC_ARENA_MAX=2 python -m codetune.plan.calibrate --seq-len 128 --micro-batch 2 \
        --lora-rank 8 [--no-grad-checkpointing] [--model DIR]

It loads the embedded model in NF4 (bitsandbytes, double quantization, fp32 compute), adds
LoRA adapters with PEFT, and runs a few AdamW steps on random tokens. The measured figure is
the peak anonymous RSS during the training steps minus the anonymous RSS after the
libraries were imported (so it includes the loaded weights) — the
same quantity the planner predicts for ``device="cpu"`` (no CUDA context). A sampling thread
reads ``RssAnon`` every 2 ms (``ru_maxrss`` cannot be reset after imports and
counts the memory-mapped checkpoint file).

Use it in a fresh process: the baseline assumes nothing model-sized was allocated before.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import threading
import time


def anon_rss() -> int:
    """Anonymous resident memory of this process in bytes (Linux ``RssAnon``).

    File-backed pages are left out on purpose: the loader keeps the fp32 safetensors file
    memory-mapped, and those pages are reclaimable page cache, not training memory."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def _malloc_trim() -> None:
    """Give glibc's freed heap back to the OS, so RSS shows live memory (not free lists)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: nothing to trim
        pass


class _PeakSampler(threading.Thread):
    def __init__(self, interval: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = anon_rss()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, anon_rss())
            time.sleep(self.interval)


def measure(
    model_dir: str,
    seq_len: int,
    micro_batch: int,
    lora_rank: int,
    grad_checkpointing: bool,
    steps: int = 2,
) -> dict:
    """Run the tiny training; returns baseline/peak RSS (bytes) and the peak increase (GB)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    torch.manual_seed(0)
    torch.set_num_threads(1)  # 2 cores shared with other work: no spinning
    t0 = time.perf_counter()
    _malloc_trim()
    baseline = anon_rss()
    sampler = _PeakSampler()
    try:
        bnb = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, quantization_config=bnb, dtype=torch.float32
        )
        model.config.use_cache = False
        if grad_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            model.enable_input_require_grads()
        lora = LoraConfig(
            r=lora_rank,
            lora_alpha=2 * lora_rank,
            lora_dropout=0.05,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
        model.train()
        # Loading dequantizes fp32 tensors one by one; drop those freed temporaries, then
        # watch the training steps (the planner predicts the training peak, not the load).
        gc.collect()
        _malloc_trim()
        after_load = anon_rss()
        t_load = time.perf_counter() - t0
        sampler.start()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        vocab = model.config.vocab_size
        losses = []
        for _ in range(steps):
            ids = torch.randint(0, vocab, (micro_batch, seq_len))
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(out.loss))
    finally:
        sampler.stop.set()
        if sampler.is_alive():
            sampler.join()
    return {
        "baseline_anon_rss": baseline,
        "after_load_anon_rss": after_load,
        "peak_anon_rss": sampler.peak,
        "measured_gb": (sampler.peak - baseline) / 1e9,
        "losses": losses,
        "load_s": round(t_load, 2),
        "train_s": round(time.perf_counter() - t0 - t_load, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: print the measurement as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model dir (default: the embedded model)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    model_dir = args.model
    if model_dir is None:
        from codetune.model import resolve_base_model

        model_dir = str(resolve_base_model(None))
    res = measure(
        model_dir,
        args.seq_len,
        args.micro_batch,
        args.lora_rank,
        args.grad_checkpointing,
        args.steps,
    )
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
