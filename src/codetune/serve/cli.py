"""Serve a base model with LoRA adapters over HTTP (SageMaker hosting contract).

Locally::

    codetune serve --adapter runs/adapter                     # one adapter, answers by default
    codetune serve --adapter sql=out/a1 --adapter py=out/a2   # several, chosen per request
    codetune serve --adapter DIR --port 8080 --set max_batch_size=8
    curl -s localhost:8080/invocations -H 'Content-Type: application/json' \\
         -d '{"inputs": "def add(a, b):", "parameters": {"max_new_tokens": 32}}'

In the inference image SageMaker runs ``docker run IMAGE serve``: the ``serve`` command
(:func:`serve_main`) binds 0.0.0.0 on ``$SAGEMAKER_BIND_TO_PORT`` (default 8080) and loads
adapters from ``/opt/ml/model`` (``adapters/<name>/``, the directory itself, or model.tar.gz).
On a GPU or Neuron instance type (``CODETUNE_INSTANCE_TYPE``, set by the deployment) without a
usable accelerator it exits 2 before loading anything (:mod:`codetune.serve.accelerator`).
"""

from __future__ import annotations

import argparse
import sys

HELP = "serve base model + adapters over HTTP"


def _adapter_arg(value: str) -> tuple[str | None, str]:
    if "=" in value and not value.startswith(("/", ".")):
        name, _, path = value.partition("=")
        return name, path
    return None, value


def _add_arguments(p: argparse.ArgumentParser, default_host: str) -> None:
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="DIR|NAME=DIR",
        help="LoRA adapter directory (repeatable; NAME defaults to the directory name)",
    )
    p.add_argument("--base-model", help="base model: directory, s3:// prefix or HF id")
    p.add_argument("--model-dir", help="model directory to scan when no --adapter is given")
    p.add_argument("--port", type=int, help="port (default $SAGEMAKER_BIND_TO_PORT or 8080)")
    p.add_argument("--host", default=default_host, help=f"bind address (default {default_host})")
    p.add_argument("--config", help="YAML file with ServeConfig fields")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field"
    )


def build_config(args: argparse.Namespace):
    """ServeConfig from environment ← YAML ← --set ← explicit flags."""
    from pathlib import Path

    from codetune.config import deep_merge, parse_overrides, read_yaml
    from codetune.errors import CodetuneError
    from codetune.serve.config import ServeConfig

    data = read_yaml(args.config) if args.config else {}
    data = deep_merge(data, parse_overrides(args.set))
    adapters: dict[str, str] = dict(data.pop("adapters", {}) or {})
    for spec in args.adapter:
        name, path = _adapter_arg(spec)
        name = name or Path(path).resolve().name
        if name in adapters:
            raise CodetuneError(f"--adapter: two adapters are named {name!r}; use NAME=DIR")
        adapters[name] = path
    for name, path in adapters.items():
        if not Path(path).exists() and not str(path).startswith("s3://"):
            raise CodetuneError(f"--adapter {name}={path}: no such directory or archive")
    if args.base_model:
        data["base_model"] = args.base_model
    if args.model_dir:
        data["model_dir"] = args.model_dir
    return ServeConfig.from_env(adapters=adapters or None, **data)


def run(args: argparse.Namespace) -> int:
    from codetune.serve.accelerator import require_accelerator
    from codetune.serve.config import bind_port
    from codetune.serve.runner import run_foreground

    config = build_config(args)
    # Before anything loads: an accelerator instance must not come up serving on its CPU.
    require_accelerator(config.instance_type)
    run_foreground(config, args.host, bind_port(args.port))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve",
        help=HELP,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(p, default_host="127.0.0.1")
    p.set_defaults(func=run)
    return p


def serve_main(argv: list[str] | None = None) -> int:
    """The image's ``serve`` executable: same flags, but listens on all interfaces."""
    from codetune.errors import CodetuneError

    p = argparse.ArgumentParser(prog="serve", description=__doc__)
    _add_arguments(p, default_host="0.0.0.0")
    args = p.parse_args(argv)
    try:
        return run(args)
    except CodetuneError as e:
        print(f"serve: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(serve_main())
