"""Plan a training job: memory breakdown, which instance types fit, the cheapest, time and cost.

Examples::

    codetune plan --model meta-llama/Llama-3.1-8B --seq-len 2048 --tokens 20e6
    codetune plan --model stabilityai/stable-code-3b --json
    codetune plan --model ./my-model-dir            # reads ./my-model-dir/config.json only
    codetune plan --params 70e9 --layers 80 --hidden 8192 --heads 64 --kv-heads 8 \\
        --vocab 128256 --lora-rank 0 --quantization none      # full fine-tune: nothing fits
    codetune plan --model embedded --device cpu --seq-len 128 --micro-batch 2

The formula is explained in docs/planner.md; prices and GPUs live in
src/codetune/plan/instances.yaml (edit it for your region).
"""

from __future__ import annotations

import argparse
import json
import sys

from codetune.plan.arch import PlanError


def _positive_number(text: str) -> int:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 7e9)") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return int(v)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``plan`` subcommand."""
    p = subparsers.add_parser(
        "plan",
        help="memory, instance and cost planner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m = p.add_argument_group("model (either --model or the sizes)")
    m.add_argument("--model", help="HF id from the planner's table, 'embedded', or a local dir")
    m.add_argument("--params", type=_positive_number, help="total parameters (e.g. 7e9)")
    m.add_argument("--layers", type=int)
    m.add_argument("--hidden", type=int)
    m.add_argument("--heads", type=int)
    m.add_argument("--kv-heads", type=int, help="key/value heads (default: --heads)")
    m.add_argument("--vocab", type=int)
    m.add_argument("--intermediate", type=int, help="MLP width (default: derived from --params)")
    t = p.add_argument_group("training")
    t.add_argument("--seq-len", type=int, default=1024)
    t.add_argument("--micro-batch", type=int, default=1)
    t.add_argument(
        "--max-tokens-per-batch",
        type=int,
        default=0,
        help="cap on tokens per packed micro-batch (default: seq-len x micro-batch)",
    )
    t.add_argument("--lora-rank", type=int, default=16, help="0 = full fine-tuning")
    t.add_argument("--lora-targets", default="all-linear", help="all-linear | attn | a,b,c")
    t.add_argument("--quantization", choices=("4bit", "8bit", "none"), default="4bit")
    t.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    t.add_argument("--device", choices=("gpu", "cpu"), default="gpu", help="cpu: fp32, no CUDA")
    p.add_argument("--tokens", type=_positive_number, help="training tokens for time and cost")
    p.add_argument("--instances", help="instance table YAML (default: the shipped one)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
    return p


def _architecture(args):
    from codetune.plan.arch import from_numbers, resolve_architecture

    sizes = (args.params, args.layers, args.hidden, args.heads, args.vocab)
    if args.model and any(v is not None for v in sizes):
        raise PlanError("give either --model or the sizes (--params --layers ...), not both")
    if args.model:
        return resolve_architecture(args.model)
    if all(v is None for v in sizes):
        raise PlanError(
            "say which model: --model HF_ID_OR_DIR, or --params --layers --hidden --heads "
            "--kv-heads --vocab"
        )
    missing = [
        f"--{n}"
        for n, v in (("layers", args.layers), ("hidden", args.hidden), ("heads", args.heads))
        + (("vocab", args.vocab),)
        if v is None
    ]
    if missing:
        raise PlanError(f"missing architecture fields: {', '.join(missing)}")
    return from_numbers(
        params=args.params,
        layers=args.layers,
        hidden=args.hidden,
        heads=args.heads,
        kv_heads=args.kv_heads or args.heads,
        vocab=args.vocab,
        intermediate=args.intermediate,
    )


def _text(plan, arch) -> str:
    from codetune.plan import nearest_option

    mem = plan.memory
    lines = [
        f"model {arch.name}: {arch.params / 1e9:.2f}B parameters, {arch.layers} layers, "
        f"hidden {arch.hidden}, vocab {arch.vocab}",
        f"setup: seq {plan.setup.seq_len} x micro batch {plan.setup.micro_batch}, "
        + (
            "full fine-tuning"
            if plan.setup.lora_rank == 0
            else f"LoRA r={plan.setup.lora_rank} on {','.join(plan.setup.lora_targets)}"
        )
        + f", {plan.setup.quantization}, gradient checkpointing "
        + ("on" if plan.setup.grad_checkpointing else "off")
        + f", {plan.setup.device}",
        f"trainable parameters: {mem.trainable_params / 1e6:.1f}M",
        "",
        "peak memory per GPU (GB):",
    ]
    for k, v in mem.as_dict().items():
        lines.append(f"  {k:<12}{v:>10.2f}")
    lines.append("")
    if plan.setup.device == "cpu":
        lines.append("device cpu: predicted peak RAM increase of the training process")
        return "\n".join(lines)
    lines.append(f"{'instance':<20}{'GPU':<12}{'usable GB':>10}{'use':>7}{'$/h':>9}  fits")
    table = plan.table
    for name, inst in sorted(
        table.instances.items(), key=lambda kv: (kv[1].price_usd_per_hour, kv[0])
    ):
        usable = table.usable_gb(inst)
        lines.append(
            f"{name:<20}{inst.gpus}x{inst.gpu:<10}{usable:>10.1f}{mem.total / usable:>7.0%}"
            f"{inst.price_usd_per_hour:>9.3f}  {'yes' if plan.fits[name] else 'no'}"
        )
    lines.append(
        f"(prices: {table.prices.get('kind')}, {table.prices.get('region')}, recorded "
        f"{table.prices.get('recorded')})"
    )
    lines.append("")
    if plan.cheapest:
        lines.append(f"cheapest that fits: {plan.cheapest}")
        if plan.estimate:
            lines.append(
                f"estimate: {plan.estimate['hours']:.2f} h, ${plan.estimate['usd']:.2f} "
                f"(MFU {table.mfu:.0%} of {table.instances[plan.cheapest].tflops:g} TFLOPS/GPU)"
            )
    else:
        lines.append("nothing fits. Nearest option: " + nearest_option(arch, plan.setup, table))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the plan (text or ``--json``)."""
    from codetune.plan import make_plan
    from codetune.plan.instances import load_table
    from codetune.plan.memory import Setup, parse_targets

    arch = _architecture(args)
    setup = Setup(
        seq_len=args.seq_len,
        micro_batch=args.micro_batch,
        lora_rank=args.lora_rank,
        lora_targets=parse_targets(args.lora_targets),
        quantization="none" if args.lora_rank == 0 else args.quantization,
        grad_checkpointing=args.grad_checkpointing,
        device=args.device,
        max_tokens=args.max_tokens_per_batch,
    )
    plan = make_plan(arch, setup, tokens=args.tokens, table=load_table(args.instances))
    if args.json:
        json.dump(plan.as_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(_text(plan, arch))
    return 0
