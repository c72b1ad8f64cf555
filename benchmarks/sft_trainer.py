"""SFT trainers side by side: codetune's ``Trainer`` recipe vs TRL's ``SFTTrainer``.

Both train the same thing: the same 4-bit NF4 base (``load_model`` of the config: NF4 + double
quant, the config's LoRA), the same tokenized examples (``tokenize_records``: loss on the
assistant's tokens only, ``max_seq_length`` enforced the same way), the same
``TrainingArguments`` (lr, schedule, seed, data seed, batch size: the same examples in every
optimizer step — checked, see below) for the same number of steps. What differs is the trainer:

- **codetune**: transformers' ``Trainer`` + ``DataCollatorWithFlattening`` (padding-free) +
  ``loss_positions_only`` (the LM head is projected only where a label is predicted).
- **trl**: ``SFTTrainer`` with ``padding_free=True`` (its own flattening collator) and its
  fused chunked LM head (``loss_type="nll"``), fed the same pre-tokenized ``input_ids``/``labels``.
  Everything else is SFTTrainer's own behaviour (it stores the LoRA weights of a quantized
  model in bf16, computes entropy and token accuracy each step).

``--check`` (run first) makes the comparison meaningful: on one model with non-zero LoRA
weights, both trainers' ``compute_loss`` on the same first batch must equal a reference
cross-entropy over the answer tokens computed from full logits, and their gradients must
agree; it also reports whether SFTTrainer's own prompt-completion tokenization reproduces
codetune's examples.

Then each trainer runs in its own process (so peak RSS is its own), in the order given
(default A B B A), and reports answer tokens/s of ``trainer.train()``, wall per step, peak RSS,
and the validation loss of the trained adapter computed by one function for both
(:func:`validation_loss`: token-weighted mean NLL over the answer tokens, full logits).

    codetune prepare --codebase CODE --out DATA --set 'tasks=["bugfix"]' --set max_tokens=256
    MALLOC_ARENA_MAX=2 CODETUNE_TORCH_THREADS=2 .venv/bin/python benchmarks/sft_trainer.py \\
        --data DATA --steps 8 --order ABBA
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OVERRIDES = [  # the demo's training block (examples/run-input.local.json)
    "max_seq_length=256",
    "gradient_checkpointing=false",
    "save_steps=100000",
]
NAMES = {"A": "codetune", "B": "trl"}


def setup(data: Path, steps: int):
    """(config, tokenizer, model, train examples, validation examples, TrainingArguments)."""
    from codetune.train import runner
    from codetune.train.config import load_train_config

    config = load_train_config("cpu-smollm2", [*OVERRIDES, f"max_steps={steps}"])
    train_records, val_records = runner.check_inputs(config, data, None)
    base_path, _ = runner.resolve_base(config, None)
    runner._process_setup(config)
    cuda, dtype = runner._device_setup(config)
    tokenizer = runner._load_tokenizer(base_path)
    train_ds, _, val_ds, _ = runner._tokenize_splits(
        config, tokenizer, train_records, val_records, data
    )
    model = runner.load_model(config, base_path, dtype, cuda)
    args = runner._training_arguments(config, Path(tempfile.mkdtemp()), cuda, dtype)
    return config, tokenizer, model, train_ds, val_ds, train_records, args


def codetune_trainer(model, args, tokenizer, config, train_ds, counters):
    import threading

    from codetune.train import runner

    return runner._counting_trainer(
        model, args, tokenizer, config, train_ds, [], counters, threading.Event(), time.monotonic()
    )


def trl_trainer(model, args, tokenizer, train_ds, counters):
    """SFTTrainer over the same examples and arguments; counts tokens like codetune does."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    d = args.to_dict()
    d.pop("hub_token", None)
    # max_length=None: the examples are already cut to max_seq_length (SFTTrainer refuses
    # padding_free with max_length unless it packs).
    sft_args = SFTConfig(**d, padding_free=True, max_length=None, completion_only_loss=True)

    class CountingSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                counters.add(inputs)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return CountingSFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=Dataset.from_list(train_ds),
        processing_class=tokenizer,
    )


def validation_loss(model, val_ds) -> float:
    """Token-weighted mean NLL of the answer tokens of ``val_ds`` (full logits, one example at
    a time, dropout off): the same function for every trainer's adapter."""
    import torch

    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for ex in val_ds:
            ids = torch.tensor([ex["input_ids"]])
            labels = torch.tensor(ex["labels"][1:])
            logits = model(input_ids=ids).logits[0, :-1].float()
            mask = labels != -100
            total += float(
                torch.nn.functional.cross_entropy(logits[mask], labels[mask], reduction="sum")
            )
            n += int(mask.sum())
    model.train()
    return total / n


# ---------------------------------------------------------------------------- check


def _reference_loss(model, batch) -> float:
    """Mean cross-entropy over the labelled (shifted) positions from the full logits."""
    import torch

    ids = torch.tensor([sum((ex["input_ids"] for ex in batch), [])])
    pos = torch.tensor([sum((list(range(len(ex["input_ids"]))) for ex in batch), [])])
    labels = torch.tensor(sum((ex["labels"][1:] + [-100] for ex in batch), []))
    logits = model(input_ids=ids, position_ids=pos).logits[0].float()
    mask = labels != -100
    return float(torch.nn.functional.cross_entropy(logits[mask], labels[mask]))


def _loss_and_grad(trainer, model, batch):
    import torch

    inputs = trainer._prepare_inputs(trainer.data_collator(batch))
    n_items = int((inputs["labels"][..., 1:] != -100).sum())
    model.zero_grad()
    loss = trainer.compute_loss(model, inputs, num_items_in_batch=torch.tensor(n_items))
    loss.backward()
    grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.requires_grad])
    return float(loss), grads


def check(data: Path) -> dict:
    """Same loss and gradient at step 0 on the same batch; raises AssertionError if not."""
    import torch
    from datasets import Dataset

    from codetune.train.runner import _Counters

    config, tok, model, train_ds, val_ds, train_records, args = setup(data, 1)
    counters = _Counters()
    # SFTTrainer first: it casts the LoRA weights to bf16 and patches forward; both trainers
    # then see the same weights, so any difference is in how they compute the loss.
    trl_t = trl_trainer(model, args, tok, train_ds, counters)
    ct_t = codetune_trainer(model, args, tok, config, train_ds, counters)
    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # zero at init: make the adapter contribute to the loss
            p.data = (torch.randn(p.shape, generator=g) * 0.02).to(p.dtype)
    model.eval()  # dropout off: the same function for all three
    batch = train_ds[: config.per_device_batch_size]
    with torch.no_grad():
        ref = _reference_loss(model, batch)
    l_ct, g_ct = _loss_and_grad(ct_t, model, batch)
    l_trl, g_trl = _loss_and_grad(trl_t, model, batch)
    rel_grad = float((g_ct - g_trl).norm() / g_ct.norm())
    # SFTTrainer's own tokenization of the same records as prompt-completion pairs
    pc = Dataset.from_list(
        [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in train_records]
    )
    prepared = trl_t._prepare_dataset(pc, tok, trl_t.args, False, None, "check")
    ours = {tuple(ex["input_ids"]): ex["labels"] for ex in train_ds}
    same = sum(1 for ex in prepared if ours.get(tuple(ex["input_ids"])) == ex["labels"])
    res = {
        "batch_examples": len(batch),
        "batch_answer_tokens": sum(sum(x != -100 for x in ex["labels"]) for ex in batch),
        "reference_loss": ref,
        "codetune_loss": l_ct,
        "trl_loss": l_trl,
        "grad_rel_diff": rel_grad,
        "trl_tokenization_identical": f"{same}/{len(train_ds)}",
    }
    assert abs(l_ct - ref) < 1e-4 * ref and abs(l_trl - ref) < 1e-4 * ref, res
    # The adapter's weights and gradients are bf16 (SFTTrainer's cast): agreement to bf16's
    # precision (2**-8 = 0.0039) is agreement.
    assert rel_grad < 4e-3, res
    return res


# ---------------------------------------------------------------------------- runs


def run(trainer_name: str, data: Path, steps: int) -> dict:
    """Train ``steps`` steps with one trainer; the figures of that run."""
    from transformers import TrainerCallback

    from codetune.train.runner import _Counters

    config, tok, model, train_ds, val_ds, _, args = setup(data, steps)
    counters = _Counters()
    per_step: list[int] = []
    step_times: list[float] = []

    class Steps(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.monotonic()
            self.n = counters.loss_tokens

        def on_step_end(self, args, state, control, **kw):
            step_times.append(time.monotonic() - self.t)
            per_step.append(counters.loss_tokens - self.n)

    if trainer_name == "codetune":
        trainer = codetune_trainer(model, args, tok, config, train_ds, counters)
    else:
        trainer = trl_trainer(model, args, tok, train_ds, counters)
    trainer.add_callback(Steps())
    t0 = time.monotonic()
    trainer.train()
    secs = time.monotonic() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t1 = time.monotonic()
    val = validation_loss(trainer.model, val_ds)
    import torch
    import transformers
    import trl

    return {
        "trainer": trainer_name,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "threads": torch.get_num_threads(),
        },
        "steps": trainer.state.global_step,
        "train_seconds": secs,
        "answer_tokens": counters.loss_tokens,
        "answer_tokens_per_second": counters.loss_tokens / secs,
        "tokens_processed": counters.tokens_seen,
        "seconds_per_step": step_times,
        "answer_tokens_per_step": per_step,
        "train_losses": losses,
        "peak_rss_bytes": rss,
        "validation_loss": val,
        "validation_examples": len(val_ds),
        "validation_seconds": time.monotonic() - t1,
    }


def _child(args: list[str]) -> dict:
    env = dict(os.environ, MALLOC_ARENA_MAX="2")
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if out.returncode or line is None:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-5000:])
        raise SystemExit(f"child {args} failed (exit {out.returncode})")
    return json.loads(line[len("RESULT ") :])


def _summary(results: list[dict]) -> dict:
    import statistics

    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["trainer"], []).append(r)
    s = {}
    for name, rs in by.items():
        s[name] = {
            "answer_tokens_per_second": [round(r["answer_tokens_per_second"], 2) for r in rs],
            "median_seconds_per_step": [
                round(statistics.median(r["seconds_per_step"]), 2) for r in rs
            ],
            "peak_rss_gib": [round(r["peak_rss_bytes"] / 2**30, 3) for r in rs],
            "validation_loss": [round(r["validation_loss"], 4) for r in rs],
            "final_train_loss": [round(r["train_losses"][-1], 4) for r in rs],
        }
    if {"codetune", "trl"} <= by.keys():
        mean = lambda name, k: statistics.mean(r[k] for r in by[name])  # noqa: E731
        s["ratio_trl_over_codetune"] = {
            k: round(mean("trl", k) / mean("codetune", k), 3)
            for k in ("answer_tokens_per_second", "peak_rss_bytes", "validation_loss")
        }
        same = all(
            r["answer_tokens_per_step"] == results[0]["answer_tokens_per_step"] for r in results
        )
        s["same_answer_tokens_every_step"] = same
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a `codetune prepare` output")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--order", default="ABBA", help="A = codetune, B = trl (default ABBA)")
    ap.add_argument("--no-check", action="store_true", help="skip the step-0 loss check")
    ap.add_argument(
        "--results",
        type=Path,
        help="append each run to this JSON-lines file and summarize all runs in it (an ABBA "
        "sequence split over several invocations)",
    )
    ap.add_argument("--child", choices=["check", *NAMES.values()], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if not (a.data / "train.jsonl").is_file() or not (a.data / "validation.jsonl").is_file():
        ap.error(f"--data {a.data}: needs train.jsonl and validation.jsonl")
    if set(a.order) - set(NAMES):
        ap.error(f"--order {a.order!r}: letters A (codetune) and B (trl) only")
    if a.child:
        res = check(a.data) if a.child == "check" else run(a.child, a.data, a.steps)
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    if not a.no_check:
        print("check " + json.dumps(_child(["--child", "check", "--data", str(a.data)])))
    results = []
    if a.results and a.results.is_file():
        results = [json.loads(x) for x in a.results.read_text().splitlines() if x.strip()]
    for letter in a.order:
        r = _child(["--child", NAMES[letter], "--data", str(a.data), "--steps", str(a.steps)])
        print(json.dumps(r), flush=True)
        results.append(r)
        if a.results:
            with open(a.results, "a") as fh:
                fh.write(json.dumps(r) + "\n")
    print(json.dumps(_summary(results), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
