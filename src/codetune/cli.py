"""The ``codetune`` command.

Each subcommand lives in its own module that exposes ``register(subparsers)``; that function
adds a parser and sets ``func`` (``func(args) -> int``). Modules must import heavy libraries
(torch, transformers) inside ``func``, so ``codetune --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from codetune import __version__
from codetune.errors import CodetuneError

# (name, module exposing register())
SUBCOMMANDS: list[tuple[str, str]] = [
    ("model", "codetune.model_cli"),
    ("prepare", "codetune.data.cli"),
    ("train", "codetune.train.cli"),
    ("evaluate", "codetune.evaluate.cli"),
    ("serve", "codetune.serve.cli"),
    ("invoke", "codetune.serve.invoke_cli"),
    ("batch", "codetune.serve.batch_cli"),
    ("plan", "codetune.plan.cli"),
    ("run", "codetune.run_cli"),
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every subcommand registered)."""
    parser = argparse.ArgumentParser(
        prog="codetune",
        description="Fine-tune a code LLM on your codebase with QLoRA, evaluate it with executed "
        "tests, and serve it.",
    )
    parser.add_argument("--version", action="version", version=f"codetune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for _name, module in SUBCOMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except CodetuneError as e:
        print(f"codetune {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"codetune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
