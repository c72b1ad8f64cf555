"""Functions and methods of a parsed file, with their exact source segment.

A segment runs from the first decorator to the end of the body, docstring and comments
included, with the common indentation of a method removed so it parses on its own.
Functions nested in functions are not extracted separately: their parent contains them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(frozen=True)
class FunctionSource:
    """One extracted function: ``code`` is the dedented segment, ``stub`` its decorators +
    signature + docstring (``None`` without a docstring or without a body after it)."""

    symbol: str
    code: str
    stub: str | None
    lineno: int


def iter_function_nodes(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    """``(qualified_name, node)`` of module-level functions and methods (nested classes too)."""
    stack: list[tuple[str, list[ast.stmt]]] = [("", tree.body)]
    while stack:
        prefix, body = stack.pop(0)
        for node in body:
            if isinstance(node, _FUNCS):
                yield prefix + node.name, node
            elif isinstance(node, ast.ClassDef):
                stack.append((f"{prefix}{node.name}.", node.body))


def segment(lines: list[str], node: ast.AST) -> tuple[str, int] | None:
    """Dedented source of ``node`` and its first line number, or ``None`` when the segment
    cannot stand alone (code before it on its first line, code after it on its last line,
    or a continuation line indented less than the ``def``)."""
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    head = lines[first - 1]
    indent = head[: len(head) - len(head.lstrip())]
    if node.decorator_list:
        # A decorator's col_offset points after the "@": check the line starts with it.
        if node.decorator_list[0].lineno != first or not head.lstrip().startswith("@"):
            return None
    elif len(indent) != node.col_offset:  # `class A: def f(): ...` on one line
        return None
    last = lines[node.end_lineno - 1]
    tail = last.encode("utf-8")[node.end_col_offset :].decode("utf-8", "replace").strip()
    if tail and not tail.startswith("#"):
        return None
    out = []
    for line in lines[first - 1 : node.end_lineno]:
        if line.startswith(indent):
            out.append(line[len(indent) :])
        elif not line.strip():
            out.append("")
        else:
            return None
    return "\n".join(out).rstrip() + "\n", first


def stub_of(code: str, fn: ast.AST, first_line: int = 1) -> str | None:
    """Decorators + signature + docstring of the parsed ``fn``, or ``None`` when it has no
    docstring or nothing after the docstring. ``first_line``: the line of ``fn``'s tree
    where ``code`` starts (1 when ``fn`` was parsed from ``code`` itself)."""
    body = fn.body
    if (
        len(body) < 2
        or not isinstance(body[0], ast.Expr)
        or not isinstance(body[0].value, ast.Constant)
        or not isinstance(body[0].value.value, str)
    ):
        return None
    doc = body[0]
    if body[1].lineno == doc.end_lineno:  # `"""doc"""; x = 1` — no clean cut
        return None
    lines = code.split("\n")
    return "\n".join(lines[: doc.end_lineno - first_line + 1]).rstrip() + "\n"
