"""``codetune train``: QLoRA fine-tuning of a base model on a prepared dataset.

Locally (CPU or GPU)::

    codetune train --data runs/stdlib/dataset --out runs/stdlib/adapter
    codetune train --data DIR --out DIR --config gpu-10gb-stable-code-3b --checkpoints CKPT
    codetune train --data DIR --out DIR --set max_steps=80 --set lora.rank=32
    codetune train --data DIR --out DIR --base-model Qwen/Qwen2.5-Coder-1.5B-Instruct --merge

On SageMaker (``--remote``) the same config and overrides become a training job that
runs the image's ``train`` command (:mod:`codetune.train.sagemaker`).
"""

from __future__ import annotations

import argparse

from codetune.errors import CodetuneError


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="QLoRA fine-tuning (locally, or --remote on SageMaker)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", help="dataset directory (prepare output: train.jsonl, ...)")
    p.add_argument("--out", help="output directory for the adapter")
    p.add_argument(
        "--config",
        default=None,
        help="config name in training_image/configs (default cpu-smollm2) or a YAML path",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (repeatable), e.g. --set lora.rank=32",
    )
    p.add_argument("--base-model", default=None, help="HF id or local directory (overrides config)")
    p.add_argument(
        "--checkpoints", default=None, help="checkpoint directory (resumed from automatically)"
    )
    p.add_argument("--merge", action="store_true", help="also write a merged full model")
    remote = p.add_argument_group("SageMaker (--remote)")
    remote.add_argument("--remote", action="store_true", help="run as a SageMaker training job")
    remote.add_argument("--instance-type", default="auto", help="e.g. ml.g5.xlarge, or auto")
    remote.add_argument("--instance-count", type=int, default=1, help="instances (DDP)")
    remote.add_argument(
        "--spot", action="store_true", help="managed spot training (needs checkpoints)"
    )
    remote.add_argument(
        "--max-runtime-seconds", type=int, default=86400, help="the job's MaxRuntimeInSeconds"
    )
    remote.add_argument(
        "--max-wait-seconds",
        type=int,
        default=None,
        help="with --spot: MaxWaitTimeInSeconds (default twice the runtime)",
    )
    remote.add_argument("--role", default=None, help="SageMaker execution role ARN")
    remote.add_argument("--image", default=None, help="training image URI")
    remote.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stream logs and wait for the job (default) or return after submitting",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Dispatch to the remote submitter or train locally; returns the exit status."""
    if args.remote:
        from codetune.train.remote import run_remote

        return run_remote(args)
    return run_local(args)


def run_local(args: argparse.Namespace) -> int:
    """Train on this machine; prints the summary's headline figures."""
    if not args.data:
        raise CodetuneError("--data is required (the dataset directory from codetune prepare)")
    if not args.out:
        raise CodetuneError("--out is required (where the adapter is written)")
    from codetune.train.config import load_train_config
    from codetune.train.runner import run_training

    config = load_train_config(args.config, args.overrides)
    summary = run_training(
        config,
        args.data,
        args.out,
        base_model=args.base_model,
        checkpoints_dir=args.checkpoints,
        merge=args.merge or None,
        spot=args.spot,
    )
    print(
        f"adapter written to {args.out}: steps={summary['steps']} "
        f"validation_loss={summary['validation_loss']} "
        f"(base {summary['base_validation_loss']}) "
        f"loss-bearing tokens/s={summary['loss_bearing_tokens_per_second']:.1f}"
    )
    return 0
