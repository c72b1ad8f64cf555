"""A small bugfix dataset in the prepare contract, built from standard-library functions.

Used by tests/evaluate and benchmarks/eval_throughput.py so they do not depend on
``codetune prepare``: each record is one function with one mechanical mutation.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
from pathlib import Path

from codetune.prompts import messages

# (operator name, source token, replacement)
MUTATIONS = [
    ("compare_flip", " == ", " != "),
    ("compare_flip", " < ", " >= "),
    ("bool_flip", " and ", " or "),
    ("off_by_one", " + 1", " + 2"),
    ("off_by_one", " - 1", " - 2"),
    ("none_check", " is None", " is not None"),
]
MODULES = [
    "textwrap",
    "shlex",
    "fnmatch",
    "posixpath",
    "json.decoder",
    "string",
    "glob",
    "calendar",
    "colorsys",
    "base64",
    "csv",
    "difflib",
    "heapq",
    "bisect",
    "statistics",
    "urllib.parse",
    "email.utils",
    "gettext",
    "tokenize",
    "inspect",
    "dataclasses",
    "functools",
    "os",
    "ntpath",
    "locale",
    "mimetypes",
    "pprint",
    "quopri",
]


def build(out_dir: Path, n: int, max_lines: int = 25) -> Path:
    """Write ``test.jsonl`` (bugfix records) + empty train/validation; returns ``out_dir``."""
    import importlib

    rows = []
    seen = set()
    for modname in MODULES:
        mod = importlib.import_module(modname)
        for _, fn in inspect.getmembers(mod, inspect.isfunction):
            if fn.__module__ != mod.__name__:
                continue
            try:
                src = inspect.getsource(fn)
            except (OSError, TypeError):
                continue
            if src.startswith((" ", "\t", "@")) or len(src.splitlines()) > max_lines:
                continue
            for op, a, b in MUTATIONS:
                if a in src:
                    buggy = src.replace(a, b, 1)
                    if ast.dump(ast.parse(buggy)) == ast.dump(ast.parse(src)):
                        continue
                    key = hashlib.sha256(buggy.encode()).hexdigest()
                    if key in seen:
                        continue
                    seen.add(key)
                    path = mod.__file__.split("/lib/")[-1]
                    rows.append(
                        {
                            "id": key,
                            "task": "bugfix",
                            "messages": messages("bugfix", buggy, answer=src, path=path),
                            "meta": {
                                "path": path,
                                "symbol": fn.__name__,
                                "mutation": op,
                                "split": "test",
                            },
                        }
                    )
            if len(rows) >= n:
                break
        if len(rows) >= n:
            break
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "test.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    for name in ("train.jsonl", "validation.jsonl"):
        (out_dir / name).write_text("")
    (out_dir / "manifest.json").write_text(json.dumps({"records": {"test": len(rows)}}))
    return out_dir


if __name__ == "__main__":
    import sys

    d = build(Path(sys.argv[1]), int(sys.argv[2]))
    print(sum(1 for _ in open(d / "test.jsonl")), "records in", d)
