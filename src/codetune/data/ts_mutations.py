"""The mutation operators of :mod:`codetune.data.mutations` for the tree-sitter languages.

The same names where the bug exists in the language, found on the function's tree-sitter tree
and applied as one byte-range edit of its exact source (formatting, comments untouched):

================== ======== ==========================================================
name               kind     what it does
================== ======== ==========================================================
compare_flip       semantic ``<``↔``<=``, ``>``↔``>=``, ``==``↔``!=``, ``===``↔``!==``
off_by_one         semantic ±1 on a ``for`` loop's comparison bound, a constant index or
                            (Go) a slice bound
bool_op_swap       semantic ``&&``↔``||``
negate_condition   semantic ``if``/``while``/``do`` condition or ternary test → ``!c``
                            (``!(c)``, or back from ``!c``)
arith_op           semantic ``+``↔``-``, ``*``↔``/``, ``%``→``/``, ``+=``↔``-=`` (not on
                            string literals)
swap_args          semantic the first two distinct arguments of a call swapped
wrong_variable     semantic a read of a parameter or declared local replaced by another
wrong_return       semantic ``return true``↔``return false``; JavaScript/TypeScript: the
                            returned value removed
missing_semicolon  syntax   a statement's ``;`` removed (Java, C++: JavaScript and TypeScript
                            insert them, Go has none)
missing_brace      syntax   the ``}`` of a block inside the body removed
unbalanced_bracket syntax   the ``)`` of an argument list or the ``]`` of an index removed
================== ======== ==========================================================

Verification as for Python: the mutant differs; a semantic mutant parses with no error node
(alone, or inside the method's class wrapper, as the original does), a syntax mutant does not.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from codetune.data.treesitter import SYNTAX, TSFunction, parser

Edit = tuple[int, int, bytes]

SYNTAX_OPERATORS = frozenset({"missing_semicolon", "missing_brace", "unbalanced_bracket"})

_COMPARE = {b"<": b"<=", b"<=": b"<", b">": b">=", b">=": b">", b"==": b"!=", b"!=": b"==",
            b"===": b"!==", b"!==": b"==="}  # fmt: skip
_ORDER = frozenset({b"<", b"<=", b">", b">="})
_ARITH = {b"+": b"-", b"-": b"+", b"*": b"/", b"/": b"*", b"%": b"/"}
_AUG = {b"+=": b"-=", b"-=": b"+="}
_BOOL = {b"&&": b"||", b"||": b"&&"}


@dataclass(frozen=True)
class Grammar:
    """The node types the operators look for in one grammar."""

    binary: frozenset[str]
    compound: frozenset[str]  # assignments with an `operator` field (`x += 1`)
    unary_operand: str  # field of the operand of `!x`
    conditions: dict[str, str]  # node type -> field holding its condition
    # condition wrappers `( c )` -> field of the expression (None: the only named child)
    cond_inner: dict[str, str | None]
    atomic: frozenset[str]  # expressions that take `!` or ` + 1` unparenthesized
    ints: frozenset[str]
    strings: frozenset[str]
    loops: dict[str, str]  # loop node -> field of its condition
    indexes: dict[str, str]  # subscript node -> field of its index
    slices: dict[str, str]  # slice node -> field of its upper bound
    args: frozenset[str]
    spreads: frozenset[str]
    returns: str = "return_statement"
    bools: frozenset[str] = frozenset({"true", "false"})
    drop_return_value: bool = False
    semicolons: frozenset[str] = frozenset()  # statements whose `;` may be removed
    blocks: frozenset[str] = frozenset()
    # wrong_variable: identifiers declared at (parent type, field) — `*` for any field —
    # seen through `through` node types; `reads_not` are positions that are not reads
    identifier: str = "identifier"
    decl: frozenset[tuple[str, str]] = frozenset()
    through: frozenset[tuple[str, str]] = frozenset()
    reads_not: frozenset[tuple[str, str]] = frozenset()


_JS_DECL = frozenset({
    ("variable_declarator", "name"), ("formal_parameters", "*"), ("assignment_pattern", "left"),
    ("rest_pattern", "*"), ("required_parameter", "pattern"), ("optional_parameter", "pattern"),
    ("catch_clause", "parameter"), ("for_in_statement", "left"), ("arrow_function", "parameter"),
})  # fmt: skip
_JS = Grammar(
    binary=frozenset({"binary_expression"}),
    compound=frozenset({"augmented_assignment_expression"}),
    unary_operand="argument",
    conditions={"if_statement": "condition", "while_statement": "condition",
                "do_statement": "condition", "ternary_expression": "condition"},
    cond_inner={"parenthesized_expression": None},
    atomic=frozenset({"identifier", "this", "call_expression", "member_expression",
                      "subscript_expression", "parenthesized_expression", "number"}),
    ints=frozenset({"number"}),
    strings=frozenset({"string", "template_string"}),
    loops={"for_statement": "condition"},
    indexes={"subscript_expression": "index"},
    slices={},
    args=frozenset({"arguments"}),
    spreads=frozenset({"spread_element"}),
    drop_return_value=True,
    blocks=frozenset({"statement_block"}),
    decl=_JS_DECL,
    reads_not=frozenset({("assignment_expression", "left"),
                         ("augmented_assignment_expression", "left"),
                         ("update_expression", "argument"), ("pair", "key")}),
)  # fmt: skip
GRAMMARS: dict[str, Grammar] = {
    "javascript": _JS,
    "typescript": _JS,
    "java": Grammar(
        binary=frozenset({"binary_expression"}),
        compound=frozenset({"assignment_expression"}),
        unary_operand="operand",
        conditions={"if_statement": "condition", "while_statement": "condition",
                    "do_statement": "condition", "ternary_expression": "condition"},
        cond_inner={"parenthesized_expression": None},
        atomic=frozenset({"identifier", "this", "method_invocation", "field_access",
                          "array_access", "parenthesized_expression", "decimal_integer_literal"}),
        ints=frozenset({"decimal_integer_literal"}),
        strings=frozenset({"string_literal", "character_literal", "text_block"}),
        loops={"for_statement": "condition"},
        indexes={"array_access": "index"},
        slices={},
        args=frozenset({"argument_list"}),
        spreads=frozenset(),
        semicolons=frozenset({"expression_statement", "local_variable_declaration",
                              "return_statement", "break_statement", "continue_statement",
                              "throw_statement"}),
        blocks=frozenset({"block"}),
        decl=frozenset({("formal_parameter", "name"), ("variable_declarator", "name"),
                        ("enhanced_for_statement", "name"), ("catch_formal_parameter", "name"),
                        ("spread_parameter", "*")}),
        reads_not=frozenset({("assignment_expression", "left"), ("update_expression", "*"),
                             ("field_access", "field"), ("method_invocation", "name")}),
    ),
    "go": Grammar(
        binary=frozenset({"binary_expression"}),
        compound=frozenset({"assignment_statement"}),
        unary_operand="operand",
        conditions={"if_statement": "condition"},
        cond_inner={"parenthesized_expression": None},
        atomic=frozenset({"identifier", "call_expression", "selector_expression",
                          "index_expression", "parenthesized_expression", "int_literal"}),
        ints=frozenset({"int_literal"}),
        strings=frozenset({"interpreted_string_literal", "raw_string_literal", "rune_literal"}),
        loops={"for_clause": "condition"},
        indexes={"index_expression": "index"},
        slices={"slice_expression": "end"},
        args=frozenset({"argument_list"}),
        spreads=frozenset({"variadic_argument"}),
        blocks=frozenset({"block"}),
        decl=frozenset({("parameter_declaration", "name"),
                        ("variadic_parameter_declaration", "name"),
                        ("short_var_declaration", "left"), ("var_spec", "name"),
                        ("range_clause", "left")}),
        through=frozenset({("expression_list", "")}),
        reads_not=frozenset({("assignment_statement", "left"), ("inc_statement", "*"),
                             ("dec_statement", "*"), ("keyed_element", "key")}),
    ),
    "cpp": Grammar(
        binary=frozenset({"binary_expression"}),
        compound=frozenset({"assignment_expression"}),
        unary_operand="argument",
        conditions={"if_statement": "condition", "while_statement": "condition",
                    "do_statement": "condition", "conditional_expression": "condition"},
        cond_inner={"condition_clause": "value", "parenthesized_expression": None},
        atomic=frozenset({"identifier", "this", "call_expression", "field_expression",
                          "subscript_expression", "parenthesized_expression", "number_literal"}),
        ints=frozenset({"number_literal"}),
        strings=frozenset({"string_literal", "raw_string_literal", "char_literal",
                           "concatenated_string"}),
        loops={"for_statement": "condition"},
        indexes={"subscript_expression": "indices"},
        slices={},
        args=frozenset({"argument_list"}),
        spreads=frozenset(),
        semicolons=frozenset({"expression_statement", "declaration", "return_statement",
                              "break_statement", "continue_statement"}),
        blocks=frozenset({"compound_statement"}),
        decl=frozenset({("parameter_declaration", "declarator"), ("init_declarator", "declarator"),
                        ("declaration", "declarator"), ("for_range_loop", "declarator"),
                        ("optional_parameter_declaration", "declarator")}),
        through=frozenset({("pointer_declarator", "declarator"), ("reference_declarator", ""),
                           ("init_declarator", "declarator"), ("array_declarator", "declarator")}),
        reads_not=frozenset({("assignment_expression", "left"), ("update_expression", "*"),
                             ("qualified_identifier", "name")}),
    ),
}  # fmt: skip


def _op_types(g: Grammar) -> set[str]:
    """The node types some operator looks at."""
    return {
        *g.binary, *g.compound, *g.conditions, *g.loops, *g.indexes, *g.slices, *g.args,
        g.returns, *g.semicolons, *g.blocks,
    }  # fmt: skip


@functools.cache
def _query(language: str, grammar: str):
    """One tree-sitter query (run in C) capturing what the operators need: ``@n`` every node
    of an operator's types, ``@id`` every identifier, ``@decl`` those at a declaration
    position (:attr:`Grammar.decl`, seen through :attr:`Grammar.through`), ``@skip`` those at a
    position that is not a read (:attr:`Grammar.reads_not`)."""
    from tree_sitter import Query, QueryError

    g = GRAMMARS[language]
    lang = parser(grammar).language
    kind = lambda t: lang.id_for_node_kind(t, True) is not None  # noqa: E731
    has_field = lambda f: f == "*" or f == "" or lang.field_id_for_name(f) is not None  # noqa: E731

    def slot(parent: str, f: str, inner: str) -> str:
        return f"({parent} {f}: {inner})" if f not in ("*", "") else f"({parent} {inner})"

    def positions(pairs, capture: str) -> list[str]:
        out = []
        for p, f in sorted(pairs):
            if not (kind(p) and has_field(f)):
                continue
            out.append(slot(p, f, f"({g.identifier}) @{capture}"))
            for t, tf in sorted(g.through):
                if kind(t) and has_field(tf):
                    out.append(slot(p, f, slot(t, tf, f"({g.identifier}) @{capture}")))
        return out

    def possible(pattern: str) -> bool:  # the grammar can produce it (else QueryError)
        try:
            Query(lang, pattern)
        except QueryError:
            return False
        return True

    types = sorted(t for t in _op_types(g) if kind(t))
    src = ["[" + " ".join(f"({t})" for t in types) + "] @n", f"({g.identifier}) @id"]
    src += [p for p in positions(g.decl, "decl") + positions(g.reads_not, "skip") if possible(p)]
    return Query(lang, "\n".join(src))


class _Tree:
    """The nodes of the function's tree the operators look at, by type, and each identifier
    with whether it is declared there and whether it is read (one query over the code's
    byte range)."""

    def __init__(self, fn: TSFunction, language: str) -> None:
        from tree_sitter import QueryCursor

        lo = fn.offset
        hi = lo + len(fn.code.encode("utf-8"))
        cursor = QueryCursor(_query(language, fn.grammar))
        cursor.set_byte_range(lo, hi)
        caps = cursor.captures(fn.tree.root_node)
        self.by_type: dict[str, list] = {}
        for n in caps.get("n", ()):
            if n.start_byte < hi and n.end_byte > lo:
                self.by_type.setdefault(n.type, []).append(n)
        decl = {(n.start_byte, n.end_byte) for n in caps.get("decl", ())}
        skip = {(n.start_byte, n.end_byte) for n in caps.get("skip", ())}
        self.idents: list[tuple[object, bool, bool]] = []  # (node, declared, read)
        for n in sorted(caps.get("id", ()), key=lambda n: n.start_byte):  # source order
            if lo <= n.start_byte and n.end_byte <= hi:
                key = (n.start_byte, n.end_byte)
                d = key in decl
                self.idents.append((n, d, not d and key not in skip))

    def nodes(self, types) -> list:
        out = []
        for t in types:
            out += self.by_type.get(t, ())
        out.sort(key=lambda n: (n.start_byte, -n.end_byte))  # preorder: outer nodes first
        return out


@dataclass
class TSMutator:
    """Mutations of one extracted function (same interface as :class:`mutations.Mutator`)."""

    fn: TSFunction
    language: str
    g: Grammar = field(init=False)

    def __post_init__(self) -> None:
        self.g = GRAMMARS[self.language]
        self.b = self.fn.code.encode("utf-8")
        self.t = self  # ``t.b``: the code's bytes, as the Python Mutator exposes them
        self.off = self.fn.offset
        self.src = self.fn.tree.root_node.text if self.fn.tree.root_node.text else b""
        self.tree = _Tree(self.fn, self.language)
        syn = SYNTAX[self.language]
        self.body_types = syn.functions | syn.declared

    # ------------------------------------------------------------ helpers (tree offsets)

    def _text(self, n) -> bytes:
        return self.src[n.start_byte : n.end_byte]

    def _edit(self, start: int, end: int, repl: bytes) -> Edit | None:
        s, e = start - self.off, end - self.off
        if s < 0 or e > len(self.b):
            return None
        return (s, e, repl)

    def _op(self, n) -> tuple[object, bytes] | None:
        o = n.child_by_field_name("operator")
        return (o, self._text(o)) if o is not None else None

    def _bump(self, n, rng: random.Random) -> Edit | None:
        delta = rng.choice((1, -1))
        text = self._text(n)
        if n.type in self.g.ints and text.isdigit():
            v = int(text)
            return self._edit(n.start_byte, n.end_byte, str(v + (delta if v else 1)).encode())
        if n.type in self.g.atomic:
            return self._edit(n.end_byte, n.end_byte, b" + 1" if delta > 0 else b" - 1")
        return None

    def _named(self, n) -> list:
        comments = SYNTAX[self.language].comments
        return [c for c in n.named_children if c.type not in comments]

    # ------------------------------------------------------------ operators

    def _compare(self, rng):
        for n in self.tree.nodes(self.g.binary):
            got = self._op(n)
            if got and got[1] in _COMPARE:
                yield self._edit(got[0].start_byte, got[0].end_byte, _COMPARE[got[1]])

    def _off_by_one(self, rng):
        g = self.g
        for n in self.tree.nodes([*g.loops, *g.indexes, *g.slices]):
            target = None
            if n.type in g.loops:
                cond = n.child_by_field_name(g.loops[n.type])
                if cond is not None and cond.type == "expression_statement":
                    cond = cond.named_children[0] if cond.named_children else None
                got = self._op(cond) if cond is not None and cond.type in g.binary else None
                if got and got[1] in _ORDER:
                    target = cond.child_by_field_name("right")
            elif n.type in g.indexes:
                target = n.child_by_field_name(g.indexes[n.type])
                if target is not None and target.type == "subscript_argument_list":
                    kids = self._named(target)
                    target = kids[0] if len(kids) == 1 else None
                if target is not None and target.type not in g.ints:
                    target = None
            else:
                target = n.child_by_field_name(g.slices[n.type])
            if target is not None:
                yield self._bump(target, rng)

    def _bool_op(self, rng):
        for n in self.tree.nodes(self.g.binary):
            got = self._op(n)
            if got and got[1] in _BOOL:
                yield self._edit(got[0].start_byte, got[0].end_byte, _BOOL[got[1]])

    def _negate(self, rng):
        g = self.g
        for n in self.tree.nodes(g.conditions):
            c = n.child_by_field_name(g.conditions[n.type])
            if c is None:
                continue
            if c.type in g.cond_inner:
                f = g.cond_inner[c.type]
                kids = [c.child_by_field_name(f)] if f else self._named(c)
                if len(kids) != 1 or kids[0] is None:
                    continue
                c = kids[0]
            got = self._op(c) if c.type == "unary_expression" else None
            if got and got[1] == b"!":
                inner = c.child_by_field_name(g.unary_operand)
                if inner is not None and (inner.type in g.atomic or inner.type in g.binary):
                    yield self._edit(c.start_byte, c.end_byte, self._text(inner))
            elif c.type in g.atomic:
                yield self._edit(c.start_byte, c.end_byte, b"!" + self._text(c))
            else:
                yield self._edit(c.start_byte, c.end_byte, b"!(" + self._text(c) + b")")

    def _arith(self, rng):
        g = self.g
        for n in self.tree.nodes([*g.binary, *g.compound]):
            got = self._op(n)
            if not got:
                continue
            o, text = got
            table = _AUG if n.type in g.compound else _ARITH
            if text not in table:
                continue
            sides = [n.child_by_field_name("left"), n.child_by_field_name("right")]
            if text in (b"+", b"+=") and any(self._stringy(s) for s in sides):
                continue  # string concatenation, not arithmetic
            yield self._edit(o.start_byte, o.end_byte, table[text])

    def _stringy(self, n) -> bool:
        """A string literal, or a sum or parenthesis with one in it (`a + ": " + b`)."""
        while n is not None and n.type == "parenthesized_expression":
            kids = self._named(n)
            n = kids[0] if len(kids) == 1 else None
        if n is None:
            return False
        if n.type in self.g.strings:
            return True
        got = self._op(n) if n.type in self.g.binary else None
        return (
            bool(got)
            and got[1] == b"+"
            and any(self._stringy(n.child_by_field_name(f)) for f in ("left", "right"))
        )

    def _swap_args(self, rng):
        for n in self.tree.nodes(self.g.args):
            kids = self._named(n)
            if len(kids) < 2 or any(k.type in self.g.spreads for k in kids[:2]):
                continue
            a, b = kids[0], kids[1]
            ta, tb = self._text(a), self._text(b)
            gap = self.src[a.end_byte : b.start_byte]
            if ta != tb and b"//" not in gap and b"/*" not in gap:
                yield self._edit(a.start_byte, b.end_byte, tb + gap + ta)

    def _names(self) -> list[bytes]:
        names = {self._text(n) for n, decl, _ in self.tree.idents if decl}
        names -= {b"this", b"self", b"_"}
        return sorted(names)

    def _wrong_variable(self, rng):
        names = self._names()
        if len(names) < 2:
            return
        index = {n: i for i, n in enumerate(names)}
        for n, _, read in self.tree.idents:
            text = self._text(n)
            if read and text in index:
                j = rng.randrange(len(names) - 1)
                yield self._edit(n.start_byte, n.end_byte, names[j + (j >= index[text])])

    def _wrong_return(self, rng):
        g = self.g
        for n in self.tree.nodes([g.returns]):
            kids = self._named(n)
            if len(kids) != 1:
                continue
            v = kids[0]
            if v.type == "expression_list":  # Go
                vs = self._named(v)
                if len(vs) != 1:
                    continue
                v = vs[0]
            if v.type in g.bools:
                flip = b"false" if self._text(v) == b"true" else b"true"
                yield self._edit(v.start_byte, v.end_byte, flip)
            elif g.drop_return_value and v.type not in ("null", "undefined"):
                yield self._edit(n.start_byte, v.end_byte, b"return")

    def _missing_semicolon(self, rng):
        for n in self.tree.nodes(self.g.semicolons):
            last = n.child(n.child_count - 1) if n.child_count else None
            if last is not None and last.type == ";" and not last.is_missing:
                yield self._edit(last.start_byte, last.end_byte, b"")

    def _missing_brace(self, rng):
        for n in self.tree.nodes(self.g.blocks):
            if n.parent is None or n.parent.type in self.body_types:
                continue  # the function's own body: its brace closes the segment
            last = n.child(n.child_count - 1) if n.child_count else None
            if last is not None and last.type == "}":
                s, e = last.start_byte, last.end_byte
                lo = self.src.rfind(b"\n", 0, s) + 1
                hi = self.src.find(b"\n", e)
                if hi >= 0 and not self.src[lo:s].strip() and not self.src[e:hi].strip():
                    s, e = lo, hi + 1  # a brace alone on its line: the line goes with it
                yield self._edit(s, e, b"")

    def _unbalanced(self, rng):
        g = self.g
        for n in self.tree.nodes([*g.args, *g.indexes]):
            last = n.child(n.child_count - 1) if n.child_count else None
            if last is not None and last.type in (")", "]"):
                yield self._edit(last.start_byte, last.end_byte, b"")

    # ------------------------------------------------------------ the Mutator interface

    def candidates(self) -> list[str]:
        """Operators of this language that may have a site in the function."""
        g, by = self.g, self.tree.by_type
        has = lambda types: any(t in by for t in types)  # noqa: E731
        out = {
            "compare_flip": has(g.binary),
            "off_by_one": has([*g.loops, *g.indexes, *g.slices]),
            "bool_op_swap": has(g.binary),
            "negate_condition": has(g.conditions),
            "arith_op": has([*g.binary, *g.compound]),
            "swap_args": has(g.args),
            "wrong_variable": bool(self.tree.idents),
            "wrong_return": has([g.returns]),
            "missing_semicolon": has(g.semicolons),
            "missing_brace": has(g.blocks),
            "unbalanced_bracket": has([*g.args, *g.indexes]),
        }
        return [op for op, ok in out.items() if ok]

    def sites(self, op_name: str, rng: random.Random) -> list[Edit]:
        """Candidate edits of operator ``op_name`` (code offsets)."""
        fn = getattr(self, _METHOD[op_name])
        return [e for e in fn(rng) if e is not None]

    def parses(self, mutant: bytes) -> bool:
        """Whether ``mutant`` parses with no error node where the original did."""
        pre, post = self.fn.wrapper
        return not parser(self.fn.grammar).parse(pre + mutant + post).root_node.has_error

    def apply(
        self,
        op_name: str,
        edits: list[Edit],
        rng: random.Random,
        max_tries: int = 3,
        accept: Callable[[str, Edit], bool] | None = None,
    ) -> str | None:
        """A verified mutant from one of ``edits`` (chosen with ``rng``), or ``None``."""
        syntax = op_name in SYNTAX_OPERATORS
        b = self.b
        for edit in rng.sample(edits, min(max_tries, len(edits))):
            start, end, repl = edit
            mb = b[:start] + repl + b[end:]
            if mb == b:
                continue
            mutant = mb.decode("utf-8")
            if accept is not None and not accept(mutant, edit):
                continue
            if self.parses(mb) is not syntax:
                return mutant
        return None


_METHOD = {
    "compare_flip": "_compare",
    "off_by_one": "_off_by_one",
    "bool_op_swap": "_bool_op",
    "negate_condition": "_negate",
    "arith_op": "_arith",
    "swap_args": "_swap_args",
    "wrong_variable": "_wrong_variable",
    "wrong_return": "_wrong_return",
    "missing_semicolon": "_missing_semicolon",
    "missing_brace": "_missing_brace",
    "unbalanced_bracket": "_unbalanced",
}
OPERATORS = tuple(_METHOD)
