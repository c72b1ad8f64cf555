"""The ``codetune`` command.

Each subcommand lives in its own module that exposes ``register(subparsers)``; that function
adds a parser and sets ``func`` (``func(args) -> int``). Modules must import heavy libraries
(torch, transformers) inside ``func``, so ``codetune --help`` stays fast.

A subcommand whose module has not landed yet is still listed; running it exits with status 3
and says which issue builds it — it never pretends to succeed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from codetune import __version__
from codetune.errors import CodetuneError, NotBuiltError

# (name, module exposing register(), issue that builds it, one-line help)
SUBCOMMANDS: list[tuple[str, str, int, str]] = [
    ("model", "codetune.model_cli", 2, "manage base models (fetch the embedded model)"),
    (
        "prepare",
        "codetune.data.cli",
        3,
        "build a verified bugfix/completion dataset from a codebase",
    ),
    ("train", "codetune.train.cli", 4, "QLoRA fine-tuning (locally, or --remote on SageMaker)"),
    ("evaluate", "codetune.evaluate.cli", 5, "base vs fine-tuned on executed tests"),
    ("serve", "codetune.serve.cli", 6, "serve base model + adapters over HTTP"),
    ("invoke", "codetune.serve.invoke_cli", 6, "call a SageMaker endpoint or a local server"),
    ("plan", "codetune.plan.cli", 8, "memory, instance and cost planner"),
    ("run", "codetune.run_cli", 10, "run the whole workflow (--local)"),
]


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _register_stub(sub, name: str, issue: int, help_text: str) -> None:
    p = sub.add_parser(
        name,
        help=f"{help_text} (not built yet)",
        description=f"{help_text}. Not built yet: see issue #{issue}.",
    )
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def not_built(args: argparse.Namespace) -> int:
        raise NotBuiltError(
            f"'codetune {name}' is not built yet (issue #{issue}); nothing was done"
        )

    p.set_defaults(func=not_built)


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
    for name, module, issue, help_text in SUBCOMMANDS:
        if _module_exists(module):
            importlib.import_module(module).register(sub)
        else:
            _register_stub(sub, name, issue, help_text)
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
