"""Named single-point mutation operators that model real bugs.

Each operator finds *sites* in a function's AST and turns one site into one byte-range edit
of the function's exact source, so the buggy function differs from the original in one
place and keeps its formatting, comments and docstring. :func:`mutate` applies an operator
and verifies the result: the mutant differs from the original; a *semantic* mutant parses and
its AST differs from the original's; a *syntax* mutant does not parse.

Operators (``meta.mutation``):

================== ======== ==========================================================
name               kind     what it does
================== ======== ==========================================================
compare_flip       semantic ``<``↔``<=``, ``>``↔``>=``, ``==``↔``!=``, ``is``↔``is not``,
                            ``in``↔``not in``
off_by_one         semantic ±1 on a ``range`` bound, a slice bound or a constant index
bool_op_swap       semantic ``and``↔``or``
negate_condition   semantic ``if c``/``while c``/``x if c else y`` → ``not c`` (or back)
arith_op           semantic ``+``↔``-``, ``*``↔``/``, ``//``→``/``, ``%``→``//``, ``+=``↔``-=``
swap_args          semantic the first two distinct positional arguments of a call swapped
wrong_variable     semantic a read of a local/parameter replaced by another one in scope
wrong_return       semantic ``return True``↔``return False``, else the value removed
missing_colon      syntax   the ``:`` of an ``if``/``for``/``while``/``with``/``def`` removed
unbalanced_bracket syntax   the closing ``)`` or ``]`` of a call, subscript or list removed
================== ======== ==========================================================
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

Edit = tuple[int, int, bytes]  # replace code[start:end] (bytes) by the replacement

SYNTAX_OPERATORS = frozenset({"missing_colon", "unbalanced_bracket"})


class _Text:
    """The function's source as UTF-8 bytes with line starts (AST columns are byte offsets).

    The AST may come from the whole file (no re-parse of the function): ``first_line`` is the
    file line of the code's first line and ``indent`` the bytes of indentation the segment
    lost, so file positions map to code offsets by a shift."""

    def __init__(self, code: str, first_line: int = 1, indent: int = 0) -> None:
        self.b = code.encode("utf-8")
        self.first = first_line
        self.starts = [-indent] + [m.end() - indent for m in re.finditer(b"\n", self.b)]

    def start(self, node: ast.AST) -> int:
        return self.starts[node.lineno - self.first] + node.col_offset

    def end(self, node: ast.AST) -> int:
        return self.starts[node.end_lineno - self.first] + node.end_col_offset

    def text(self, node: ast.AST) -> bytes:
        return self.b[self.start(node) : self.end(node)]


def _gap_edit(t: _Text, lo: int, hi: int, pattern: bytes, repl: bytes) -> Edit | None:
    """Replace the one operator token matching ``pattern`` between two operands.

    The gap holds only the operator, whitespace and brackets; a comment there could contain
    the token too, so such gaps are not used."""
    gap = t.b[lo:hi]
    if b"#" in gap:
        return None
    m = re.search(pattern, gap)
    if not m:
        return None
    return (lo + m.start(), lo + m.end(), repl)


_COMPARE = {
    ast.Lt: (rb"<(?!=)", b"<="),
    ast.LtE: (rb"<=", b"<"),
    ast.Gt: (rb">(?!=)", b">="),
    ast.GtE: (rb">=", b">"),
    ast.Eq: (rb"==", b"!="),
    ast.NotEq: (rb"!=", b"=="),
    ast.Is: (rb"\bis\b(?!\s+not\b)", b"is not"),
    ast.IsNot: (rb"\bis\s+not\b", b"is"),
    ast.In: (rb"(?<!not )\bin\b", b"not in"),
    ast.NotIn: (rb"\bnot\s+in\b", b"in"),
}

_ARITH = {
    ast.Add: (rb"\+", b"-"),
    ast.Sub: (rb"-", b"+"),
    ast.Mult: (rb"\*(?!\*)", b"/"),
    ast.Div: (rb"(?<!/)/(?!/)", b"*"),
    ast.FloorDiv: (rb"//", b"/"),
    ast.Mod: (rb"%", b"//"),
}
_AUG = {ast.Add: (rb"\+=", b"-="), ast.Sub: (rb"-=", b"+=")}

# Operands whose precedence is tight enough to take `+ 1` or a `not ` prefix unparenthesized.
_ATOMIC = (ast.Name, ast.Call, ast.Attribute, ast.Subscript, ast.Constant)


def _is_int(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int)
        and not isinstance(node.value, bool)
    )


def _is_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant | ast.JoinedStr) and (
        isinstance(node, ast.JoinedStr) or isinstance(node.value, str | bytes)
    )


def _sites_compare(fn, nodes, t, rng):
    for node in nodes:
        if isinstance(node, ast.Compare):
            left = node.left
            for op, right in zip(node.ops, node.comparators, strict=True):
                pat, repl = _COMPARE[type(op)]
                e = _gap_edit(t, t.end(left), t.start(right), pat, repl)
                if e:
                    yield e
                left = right


def _bump(t: _Text, node: ast.AST, rng: random.Random) -> Edit | None:
    delta = rng.choice((1, -1))
    if _is_int(node):
        v = node.value
        return (t.start(node), t.end(node), str(v + (delta if v else 1)).encode())
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and _is_int(node.operand)
        and node.operand.value > 0
    ):
        return (t.start(node), t.end(node), str(-node.operand.value + delta).encode())
    if isinstance(node, _ATOMIC):
        e = t.end(node)
        return (e, e, b" + 1" if delta > 0 else b" - 1")
    return None


def _sites_off_by_one(fn, nodes, t, rng):
    for node in nodes:
        target = None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "range"
            and 1 <= len(node.args) <= 3
            and not node.keywords
        ):
            target = node.args[0] if len(node.args) == 1 else node.args[1]
        elif isinstance(node, ast.Slice):
            target = node.upper or node.lower
        elif isinstance(node, ast.Subscript) and (
            _is_int(node.slice)
            or (isinstance(node.slice, ast.UnaryOp) and _is_int(node.slice.operand))
        ):
            target = node.slice
        if target is not None:
            e = _bump(t, target, rng)
            if e:
                yield e


def _sites_bool_op(fn, nodes, t, rng):
    for node in nodes:
        if isinstance(node, ast.BoolOp):
            pat, repl = (
                (rb"\band\b", b"or") if isinstance(node.op, ast.And) else (rb"\bor\b", b"and")
            )
            e = _gap_edit(t, t.end(node.values[0]), t.start(node.values[1]), pat, repl)
            if e:
                yield e


def _sites_negate(fn, nodes, t, rng):
    for node in nodes:
        if isinstance(node, ast.If | ast.While | ast.IfExp):
            test = node.test
            if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
                if isinstance(test.operand, (*_ATOMIC, ast.Compare)):
                    yield (t.start(test), t.end(test), t.text(test.operand))
            elif isinstance(test, _ATOMIC):
                yield (t.start(test), t.end(test), b"not " + t.text(test))
            else:
                yield (t.start(test), t.end(test), b"not (" + t.text(test) + b")")


def _sites_arith(fn, nodes, t, rng):
    for node in nodes:
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            # `"..." % x` and string concatenation are formatting, not arithmetic.
            if isinstance(node.op, ast.Add | ast.Mod) and (
                _is_str(node.left) or _is_str(node.right)
            ):
                continue
            pat, repl = _ARITH[type(node.op)]
            e = _gap_edit(t, t.end(node.left), t.start(node.right), pat, repl)
            if e:
                yield e
        elif isinstance(node, ast.AugAssign) and type(node.op) in _AUG:
            if _is_str(node.value):
                continue
            pat, repl = _AUG[type(node.op)]
            e = _gap_edit(t, t.end(node.target), t.start(node.value), pat, repl)
            if e:
                yield e


def _sites_swap_args(fn, nodes, t, rng):
    for node in nodes:
        if isinstance(node, ast.Call) and len(node.args) >= 2:
            a, b = node.args[0], node.args[1]
            if isinstance(a, ast.Starred) or isinstance(b, ast.Starred):
                continue
            ta, tb = t.text(a), t.text(b)
            gap = t.b[t.end(a) : t.start(b)]
            if ta != tb and b"#" not in gap:
                yield (t.start(a), t.end(b), tb + gap + ta)


def _local_names(fn, nodes) -> list[str]:
    a = fn.args
    names = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs}
    names |= {x.arg for x in (a.vararg, a.kwarg) if x is not None}
    for node in nodes:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    names -= {"self", "cls", "_"}
    return sorted(names)


def _sites_wrong_variable(fn, nodes, t, rng):
    names = _local_names(fn, nodes)
    if len(names) < 2:
        return
    index = {n: i for i, n in enumerate(names)}
    for node in nodes:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in index:
            # uniform over the other names, without building a list per site
            j = rng.randrange(len(names) - 1)
            other = names[j + (j >= index[node.id])]
            yield (t.start(node), t.end(node), other.encode())


def _sites_wrong_return(fn, nodes, t, rng):
    for node in nodes:
        if isinstance(node, ast.Return) and node.value is not None:
            v = node.value
            if isinstance(v, ast.Constant) and isinstance(v.value, bool):
                yield (t.start(v), t.end(v), b"False" if v.value else b"True")
            elif not (isinstance(v, ast.Constant) and v.value is None):
                # `return None` → `return` would not change behaviour: not a bug.
                yield (t.start(node), t.end(node), b"return")


_COLON_AFTER = re.compile(rb"[ \t)\]]*(?:\\\r?\n[ \t)\]]*)*:")


def _colon_after(t: _Text, pos: int) -> Edit | None:
    m = _COLON_AFTER.match(t.b, pos)
    if not m:
        return None
    return (m.end() - 1, m.end(), b"")


def _sites_missing_colon(fn, nodes, t, rng):
    for node in nodes:
        anchor = None
        if isinstance(node, ast.If | ast.While):
            anchor = node.test
        elif isinstance(node, ast.For | ast.AsyncFor):
            anchor = node.iter
        elif isinstance(node, ast.With | ast.AsyncWith):
            last = node.items[-1]
            anchor = last.optional_vars or last.context_expr
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            anchor = node.returns
        if anchor is not None:
            e = _colon_after(t, t.end(anchor))
            if e:
                yield e


def _sites_unbalanced(fn, nodes, t, rng):
    for node in nodes:
        if isinstance(node, ast.Call | ast.Subscript | ast.List):
            end = t.end(node)
            if t.b[end - 1 : end] in (b")", b"]"):
                yield (end - 1, end, b"")


@dataclass(frozen=True)
class Operator:
    """A named mutation operator: ``sites(fn, nodes, text, rng)`` yields candidate edits
    found among ``nodes`` (the function's nodes of the ``node_types`` it looks at)."""

    name: str
    syntax: bool
    sites: Callable
    node_types: tuple[type, ...]


_LOOPS = (ast.If, ast.While, ast.For, ast.AsyncFor, ast.With, ast.AsyncWith)
CATALOGUE: dict[str, Operator] = {
    op.name: op
    for op in (
        Operator("compare_flip", False, _sites_compare, (ast.Compare,)),
        Operator("off_by_one", False, _sites_off_by_one, (ast.Call, ast.Slice, ast.Subscript)),
        Operator("bool_op_swap", False, _sites_bool_op, (ast.BoolOp,)),
        Operator("negate_condition", False, _sites_negate, (ast.If, ast.While, ast.IfExp)),
        Operator("arith_op", False, _sites_arith, (ast.BinOp, ast.AugAssign)),
        Operator("swap_args", False, _sites_swap_args, (ast.Call,)),
        Operator("wrong_variable", False, _sites_wrong_variable, (ast.Name,)),
        Operator("wrong_return", False, _sites_wrong_return, (ast.Return,)),
        Operator(
            "missing_colon",
            True,
            _sites_missing_colon,
            (*_LOOPS, ast.FunctionDef, ast.AsyncFunctionDef),
        ),
        Operator(
            "unbalanced_bracket", True, _sites_unbalanced, (ast.Call, ast.Subscript, ast.List)
        ),
    )
}
# node type → operators that look at it (one pass over a function's nodes fills every bucket)
_OPS_OF_TYPE: dict[type, tuple[str, ...]] = {}
for _op in CATALOGUE.values():
    for _ty in _op.node_types:
        _OPS_OF_TYPE[_ty] = (*_OPS_OF_TYPE.get(_ty, ()), _op.name)


# Node types whose fields are worth visiting (the others are leaves: identifiers, constants,
# contexts and operators).
_NODE_KINDS = frozenset(
    "mod stmt expr arguments arg keyword alias withitem comprehension excepthandler "
    "match_case pattern type_ignore".split()
)
# List fields that may hold ``None`` (``{**d}``'s key, a keyword-only argument's default).
_HOLES = {(ast.Dict, "keys"), (ast.arguments, "kw_defaults")}


def _child_fields(ty: type) -> tuple[tuple[str, int], ...]:
    """The node-holding fields of ``ty`` as ``(name, kind)`` — kind 0: one node or None, 1: a
    list of nodes, 2: a list with holes — read from its ASDL signature (the class docstring,
    e.g. ``Call(expr func, expr* args, keyword* keywords)``)."""
    sig = re.match(r"\w+\((.*)\)$", (ty.__doc__ or "").strip())
    out = []
    for part in sig.group(1).split(", ") if sig and sig.group(1) else ():
        kind, name = part.split(" ")
        if kind.rstrip("*?") in _NODE_KINDS:
            many = kind.endswith("*")
            out.append((name, (2 if (ty, name) in _HOLES else 1) if many else 0))
    return tuple(out)


_OP_INDEX = {name: k for k, name in enumerate(CATALOGUE)}
# node type → (indexes of the operators that look at it, its node-holding fields)
_TYPE_INFO: dict[type, tuple[tuple[int, ...], tuple[tuple[str, int], ...]]] = {}


def _type_info(ty: type) -> tuple[tuple[int, ...], tuple[tuple[str, int], ...]]:
    return tuple(_OP_INDEX[n] for n in _OPS_OF_TYPE.get(ty, ())), _child_fields(ty)


def parse_function(code: str) -> ast.AST:
    """Parse a standalone function; returns its def node. Raises ``SyntaxError``."""
    tree = ast.parse(code)
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef | ast.AsyncFunctionDef):
        raise SyntaxError("not a single function")
    return tree.body[0]


def _parses(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


def verify(original: str, mutant: str, syntax: bool) -> bool:
    """The invariants every example meets: the original parses, the mutant differs from it;
    a semantic mutant parses, a syntax mutant does not.

    (Edits never touch comments or whitespace only, so a differing text is a differing
    program; comparing ASTs would cost more than the parse itself.)"""
    if mutant == original or _parses(original) is None:
        return False
    tree = _parses(mutant)
    if syntax:
        return tree is None
    return tree is not None and len(tree.body) == 1


class Mutator:
    """Mutations of one parsed function: its AST is walked once, into one bucket of nodes
    per operator (in ``ast.walk`` order), so each operator looks only at its node types.

    ``fn`` may be the def node of the parsed *file* (no re-parse of the function): then
    ``first_line`` is the file line where ``code`` starts and ``indent`` the number of bytes
    of indentation removed from each of its lines."""

    def __init__(self, code: str, fn: ast.AST, first_line: int = 1, indent: int = 0) -> None:
        self.code = code
        self.fn = fn
        self.t = _Text(code, first_line, indent)
        lists: list[list[ast.AST]] = [[] for _ in CATALOGUE]
        nodes = [fn]
        append, extend = nodes.append, nodes.extend
        info = _TYPE_INFO
        for node in nodes:  # breadth-first (the list grows as it is read): ast.walk's order
            ty = type(node)
            got = info.get(ty)
            if got is None:
                got = info[ty] = _type_info(ty)
            ops, fields = got
            for k in ops:
                lists[k].append(node)
            for name, kind in fields:
                v = getattr(node, name)
                if kind == 1:
                    extend(v)
                elif kind == 0:
                    if v is not None:
                        append(v)
                else:
                    extend(x for x in v if x is not None)
        self.buckets: dict[str, list[ast.AST]] = dict(zip(CATALOGUE, lists, strict=True))

    def sites(self, op_name: str, rng: random.Random) -> list[Edit]:
        """Candidate edits of operator ``op_name``."""
        return list(CATALOGUE[op_name].sites(self.fn, self.buckets[op_name], self.t, rng))

    def candidates(self) -> list[str]:
        """Operators that look at some node of the function (those with a site are among
        them; :meth:`sites` tells), in catalogue order."""
        return [name for name in CATALOGUE if self.buckets[name]]

    def apply(
        self,
        op_name: str,
        edits: list[Edit],
        rng: random.Random,
        max_tries: int = 3,
        accept: Callable[[str, Edit], bool] | None = None,
    ):
        """A verified mutant from one of ``edits`` (chosen with ``rng``), or ``None``.
        ``accept(mutant, edit)``: a cheap test a candidate must pass before it is parsed
        (e.g. length).

        The original's parse is the caller's business (that is how ``fn`` exists), so only
        the mutant is parsed here, by its smallest enclosing statement
        (:meth:`_statement_parses`): a semantic mutant must parse, a syntax mutant not."""
        syntax = CATALOGUE[op_name].syntax
        edits = rng.sample(edits, min(max_tries, len(edits)))
        b = self.t.b
        for edit in edits:
            start, end, repl = edit
            mutant = (b[:start] + repl + b[end:]).decode("utf-8")
            if mutant == self.code or (accept is not None and not accept(mutant, edit)):
                continue
            if self._statement_parses(edit, mutant) is not syntax:
                return mutant
        return None

    def _statement_parses(self, edit: Edit, mutant: str) -> bool:
        """Whether the function with ``edit`` applied parses, checked by parsing only the
        smallest statement of the function that contains the edit.

        Sound because a statement's tokens do not depend on what surrounds it: the edited
        statement is parsed with its own first-line indentation (inside ``if 1:`` when that
        is not zero) and every other line as it is, so its tokens, brackets and relative
        indentation are those it has in the function; if it is one valid statement there,
        the function — the original with one statement replaced by another — parses too
        (what only the compiler rejects, like ``return`` outside a function, the parser
        accepts). An edit in no statement of the body (the signature, a decorator) or near a
        form feed is checked by parsing the whole function.

        The converse holds for the two syntax operators, so a syntax mutant is checked the
        same way: a statement left with an unclosed bracket leaves the function with one (the
        rest of it is balanced), and a compound statement's header without its colon is
        followed by a line break or its body, never by what could complete it. ``tests/data``
        checks both directions against whole-function parses of every site of real code."""
        start, end, repl = edit
        t = self.t
        stmt = None
        lists = [self.fn.body]
        while lists:
            for lst in lists:
                hit = next((x for x in lst if t.start(x) <= start and end <= t.end(x)), None)
                if hit is not None:
                    break
            else:
                break
            stmt = hit
            lists = _statement_lists(hit)
        if stmt is None:
            tree = _parses(mutant)
            return tree is not None and len(tree.body) == 1
        b = t.b
        s0, s1 = t.start(stmt), t.end(stmt)
        line0 = b.rfind(b"\n", 0, s0) + 1
        prefix = b[line0:s0]
        body = getattr(stmt, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.stmt)
            and not getattr(body[0], "decorator_list", None)
            and end <= t.start(body[0])
        ):
            # an edit in a compound statement's header: its body is unchanged, so the
            # header is checked with `pass` for a body (all that follows the header's
            # colon is untouched — a missing colon still fails here)
            text = b[s0:start] + repl + b[end : t.start(body[0])] + b"pass"
        else:
            text = b[s0:start] + repl + b[end:s1]
        if b"\f" in text or b"\f" in prefix:
            tree = _parses(mutant)
            return tree is not None and len(tree.body) == 1
        if prefix.strip(b" \t"):
            prefix = b""  # code before it on its line: a simple statement, indentation-free
        if text.startswith(b"elif") and isinstance(stmt, ast.If):
            text = text[2:]  # the `if` an `elif` stands for (same tokens after it)
        src = (b"if 1:\n" + prefix + text) if prefix else text
        tree = _parses(src.decode("utf-8"))
        if tree is None or len(tree.body) != 1:
            return False
        return not prefix or len(tree.body[0].body) == 1


def _statement_lists(st: ast.stmt) -> list[list[ast.stmt]]:
    """The statement lists directly inside compound statement ``st``."""
    out = [
        v for f in ("body", "orelse", "finalbody") if isinstance(v := getattr(st, f, None), list)
    ]
    out += [h.body for h in getattr(st, "handlers", ())]  # try / try*
    out += [c.body for c in getattr(st, "cases", ())]  # match
    return out


def mutate(
    code: str, fn: ast.AST, op_name: str, rng: random.Random, max_tries: int = 3
) -> str | None:
    """A verified mutant of ``code`` (whose parsed def node is ``fn``) by operator
    ``op_name``, or ``None`` when the operator has no site that yields a verified mutant.
    The site is chosen with ``rng`` (deterministic for a seeded ``rng``)."""
    m = Mutator(code, fn)
    edits = m.sites(op_name, rng)
    return m.apply(op_name, edits, rng, max_tries) if edits else None
