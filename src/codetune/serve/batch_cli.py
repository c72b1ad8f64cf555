"""Batch inference: a JSONL of requests in, a JSONL of answers out, line for line.

Examples::

    codetune batch requests.jsonl -o answers.jsonl --adapter runs/adapter
    codetune batch requests.jsonl -o answers.jsonl --adapter sql=a1 --adapter py=a2 --model py
    codetune batch requests.jsonl -o answers.jsonl --url http://127.0.0.1:8080
    codetune batch --from-dataset out/datasets/KEY -o fixes.jsonl --adapter runs/adapter
    codetune batch --from-dataset out/datasets/KEY --write-requests bugfix-requests.jsonl

Each input line is one request body, as ``/invocations`` takes it: TGI style
``{"inputs": "...", "parameters": {"max_new_tokens": 64, "adapter_id": "py"}}`` or chat style
``{"messages": [...], "max_tokens": 64, "model": "py"}``. Output line n is the answer to input
line n (``[{"generated_text": ...}]`` or a ``chat.completion``), or ``{"error": {...}}`` when
the line cannot be answered; an adapter the server does not know is such an error line, listing
the known ones, never a base-model answer. ``--model NAME`` chooses the adapter for lines that
name none (the job's adapter; an unknown NAME stops before any line runs).

Without ``--url`` the inference server's app runs in this process (same flags as ``codetune
serve``: ``--adapter``, ``--base-model``, ``--model-dir``, ``--config``, ``--set``) in Batch
Transform mode; with ``--url`` a running ``codetune serve`` answers. ``--from-dataset DIR``
turns a prepared dataset's bugfix prompts (``DIR/test.jsonl`` by default) into requests, in
file order; ``--write-requests FILE`` writes them for a Batch Transform job's S3 input instead
of running them. On AWS the same lines run as a SageMaker Batch Transform job (docs/architecture.md,
"Batch inference").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

HELP = "answer a JSONL of requests (locally, or against a running server)"


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "batch",
        help=HELP,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", nargs="?", help="JSONL of request bodies, one a line")
    p.add_argument("-o", "--output", help="JSONL of answers (written atomically)")
    p.add_argument("--model", help="adapter (or base) for lines that name none")
    p.add_argument("--url", help="a running codetune server instead of an in-process one")
    p.add_argument(
        "--concurrency",
        type=int,
        help="requests in flight (default: the server's MaxConcurrentTransforms, "
        "GET /execution-parameters)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="--url: seconds per request")
    p.add_argument("--from-dataset", metavar="DIR", help="a prepared dataset directory")
    p.add_argument("--split", default="test", help="--from-dataset: split (default test)")
    p.add_argument("--task", default="bugfix", help="--from-dataset: task (default bugfix)")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=256,
        help="--from-dataset: max_tokens of each request (default 256)",
    )
    p.add_argument(
        "--write-requests", metavar="FILE", help="--from-dataset: write the requests, run nothing"
    )
    # the in-process server's model, as `codetune serve` takes it (codetune.serve.cli.build_config)
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="DIR|NAME=DIR",
        help="LoRA adapter directory (repeatable; NAME defaults to the directory name)",
    )
    p.add_argument("--base-model", help="base model: directory, s3:// prefix or HF id")
    p.add_argument("--model-dir", help="model directory to scan when no --adapter is given")
    p.add_argument("--config", help="YAML file with ServeConfig fields")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field"
    )
    p.set_defaults(func=run)
    return p


def _check_args(args: argparse.Namespace) -> None:
    from codetune.errors import CodetuneError

    if (args.input is None) == (args.from_dataset is None):
        raise CodetuneError("give exactly one of INPUT (a JSONL file) or --from-dataset DIR")
    if args.write_requests:
        if not args.from_dataset:
            raise CodetuneError("--write-requests needs --from-dataset")
        if args.output:
            raise CodetuneError("--write-requests runs nothing: drop -o/--output")
        return
    if not args.output:
        raise CodetuneError("-o/--output is required (where the answers go)")
    if args.url and (args.adapter or args.base_model or args.model_dir or args.config or args.set):
        raise CodetuneError(
            "--url uses the running server's model: drop --adapter, --base-model, "
            "--model-dir, --config and --set"
        )


def run(args: argparse.Namespace) -> int:
    from codetune.serve import batch
    from codetune.serve.cli import build_config

    _check_args(args)
    if args.from_dataset:
        lines = batch.requests_from_dataset(
            Path(args.from_dataset),
            split=args.split,
            task=args.task,
            max_new_tokens=args.max_new_tokens,
        )
        if args.write_requests:
            batch.write_lines(Path(args.write_requests), lines)
            print(f"{len(lines)} requests -> {args.write_requests}", file=sys.stderr)
            return 0
    else:
        lines = batch.read_lines(Path(args.input))

    async def go():
        if args.url:
            server = batch.remote_server(args.url, args.timeout)
        else:
            server = batch.in_process_server(build_config(args))
        async with server as client:
            concurrency = args.concurrency
            if concurrency is None:
                params = await batch.execution_parameters(client)
                concurrency = int(params["MaxConcurrentTransforms"])
            return await batch.run_batch(client, lines, concurrency=concurrency, model=args.model)

    out, summary = asyncio.run(go())
    batch.write_lines(Path(args.output), out)
    print(
        json.dumps(
            {
                "output": args.output,
                "lines": summary.lines,
                "answers": summary.answers,
                "errors": summary.errors,
                "seconds": summary.seconds,
                "concurrency": summary.concurrency,
            }
        ),
        file=sys.stderr,
    )
    return 0
