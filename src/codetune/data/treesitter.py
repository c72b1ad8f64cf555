"""Every language but Python through tree-sitter: parsing, function extraction, canonical trees.

Grammars are the tree-sitter project's own wheels (``tree-sitter-javascript``, ``-typescript``,
``-java``, ``-go``, ``-cpp``; MIT), loaded on first use and kept per process.

Extraction mirrors :mod:`codetune.data.extract`: functions and methods at the top level, in
classes (nested too), namespaces and ``export`` statements, each cut as the exact source segment
from its leading comment block (and decorators) to its closing brace, with the common
indentation of a method removed. Functions nested in functions are part of their parent. A
segment is kept only if it parses on its own with no error node — alone, or, for a method, as
the only member of an empty class (:attr:`Syntax.wrapper`) — so every answer parses in its
language.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

from codetune.languages import LANGUAGES

# grammar key -> (module, function returning the language pointer)
_GRAMMARS = {
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "java": ("tree_sitter_java", "language"),
    "go": ("tree_sitter_go", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
}


@dataclass(frozen=True)
class Syntax:
    """Where a grammar keeps functions: ``functions`` are the node types extracted;
    ``scopes`` the node types whose children are searched (type -> field holding them, None:
    the node itself); ``classes`` the scopes whose functions are methods (named
    ``Class.method``, parsed alone inside ``wrapper``); ``holders`` the statements that wrap
    one function (``export function f``, ``template <...> T f``) and are cut with it;
    ``leading`` the sibling types cut with the function when they touch it (comments,
    decorators); ``comments`` the comment node types."""

    functions: frozenset[str]
    scopes: dict[str, str | None]
    classes: frozenset[str]
    wrapper: tuple[bytes, bytes] | None
    holders: dict[str, str | None]
    leading: frozenset[str]
    comments: frozenset[str]
    # `const f = (x) => {...}`: declarations of one variable whose value is one of these
    declared: frozenset[str] = frozenset()


_JS = Syntax(
    functions=frozenset({"function_declaration", "generator_function_declaration", "method_definition"}),
    scopes={"program": None, "class_declaration": "body", "abstract_class_declaration": "body",
            "internal_module": "body", "expression_statement": None},
    classes=frozenset({"class_declaration", "abstract_class_declaration"}),
    wrapper=(b"class _ {\n", b"\n}\n"),
    holders={"export_statement": "declaration", "lexical_declaration": None,
             "variable_declaration": None},
    leading=frozenset({"comment", "decorator"}),
    comments=frozenset({"comment"}),
    declared=frozenset({"arrow_function", "function_expression", "function",
                        "generator_function"}),
)  # fmt: skip
SYNTAX: dict[str, Syntax] = {
    "javascript": _JS,
    "typescript": _JS,
    "java": Syntax(
        functions=frozenset({"method_declaration", "constructor_declaration",
                             "compact_constructor_declaration"}),
        scopes={"program": None, "class_declaration": "body", "interface_declaration": "body",
                "enum_declaration": "body", "record_declaration": "body",
                "enum_body_declarations": None},
        classes=frozenset({"class_declaration", "interface_declaration", "enum_declaration",
                           "record_declaration"}),
        wrapper=(b"class _ {\n", b"\n}\n"),
        holders={},
        leading=frozenset({"line_comment", "block_comment"}),
        comments=frozenset({"line_comment", "block_comment"}),
    ),
    "go": Syntax(
        functions=frozenset({"function_declaration", "method_declaration"}),
        scopes={"source_file": None},
        classes=frozenset(),
        wrapper=None,
        holders={},
        leading=frozenset({"comment"}),
        comments=frozenset({"comment"}),
    ),
    "cpp": Syntax(
        functions=frozenset({"function_definition"}),
        scopes={"translation_unit": None, "namespace_definition": "body",
                "class_specifier": "body", "struct_specifier": "body",
                "linkage_specification": "body"},
        classes=frozenset({"class_specifier", "struct_specifier"}),
        wrapper=(b"struct _ {\n", b"\n};\n"),
        holders={"template_declaration": None},
        leading=frozenset({"comment"}),
        comments=frozenset({"comment"}),
    ),
}  # fmt: skip


@functools.cache
def parser(grammar: str):
    """A tree-sitter ``Parser`` for grammar ``grammar`` (a language name, or ``tsx``)."""
    from tree_sitter import Language, Parser

    module, fn = _GRAMMARS[grammar]
    return Parser(Language(getattr(importlib.import_module(module), fn)()))


def grammar_of(language: str, rel: str) -> str:
    """The grammar of file ``rel`` in ``language`` (TypeScript's ``.tsx`` files have their own)."""
    return "tsx" if language == "typescript" and rel.endswith(".tsx") else language


@dataclass
class TSFunction:
    """One extracted function: ``code`` the dedented segment, ``stub`` its leading comments +
    signature up to the body's opening brace (``None`` without a leading comment or with an
    empty body), ``tree`` the parse of ``wrapper[0] + code + wrapper[1]`` and ``offset`` where
    ``code`` starts in it."""

    symbol: str
    lineno: int
    code: str
    stub: str | None
    tree: object
    offset: int
    wrapper: tuple[bytes, bytes]
    grammar: str


def _name(node) -> str:
    """The name of a function or scope node (C++: the declarator's innermost name)."""
    n = node.child_by_field_name("name")
    if n is None:
        d = node.child_by_field_name("declarator")
        while d is not None and d.child_by_field_name("declarator") is not None:
            d = d.child_by_field_name("declarator")
        n = d
    return n.text.decode("utf-8", "replace") if n is not None else "?"


def _receiver(fn) -> str:
    """``Type.`` of a Go method (its receiver's type, pointer or not), else ``""``."""
    r = fn.child_by_field_name("receiver")
    if r is None:
        return ""
    params = [c for c in r.named_children if c.type == "parameter_declaration"]
    t = params[0].child_by_field_name("type") if params else None
    while t is not None and t.type in ("pointer_type", "generic_type"):
        t = next((c for c in t.named_children), None)
    return t.text.decode("utf-8", "replace") + "." if t is not None else ""


def _inner_function(node, syn: Syntax):
    """``(function, named)`` of the function a holder statement wraps (``named``: the node
    whose name it has), or ``(None, None)``."""
    field = syn.holders[node.type]
    if field is not None:
        inner = node.child_by_field_name(field)
        if inner is not None and inner.type in syn.holders:
            return _inner_function(inner, syn)
        ok = inner is not None and inner.type in syn.functions
        return (inner, inner) if ok else (None, None)
    if syn.declared and node.type in ("lexical_declaration", "variable_declaration"):
        decls = [c for c in node.named_children if c.type == "variable_declarator"]
        value = decls[0].child_by_field_name("value") if len(decls) == 1 else None
        if value is not None and value.type in syn.declared:
            body = value.child_by_field_name("body")
            if body is not None and body.type == "statement_block":
                return value, decls[0]
        return None, None
    fn = next((c for c in node.named_children if c.type in syn.functions), None)
    return fn, fn


def iter_functions(root, syn: Syntax):
    """``(symbol, segment_node, function_node, leading_nodes, in_class)`` of the functions a
    tree holds outside other functions, in source order (classes after their siblings)."""
    stack = [(root, "", False)]
    while stack:
        scope, prefix, in_class = stack.pop(0)
        children = scope.named_children
        for i, ch in enumerate(children):
            t = ch.type
            fn = named = None
            if t in syn.functions:
                fn = named = ch
            elif t in syn.holders:
                fn, named = _inner_function(ch, syn)
                if fn is None:  # `export class A {}`, `template <...> struct S {}`
                    inner = [c for c in ch.named_children if c.type in syn.scopes]
                    for c in inner[:1]:
                        entry = _scope_entry(c, syn, prefix)
                        if entry is not None:
                            stack.append(entry)
                    continue
            elif t in syn.scopes and t != "program":
                entry = _scope_entry(ch, syn, prefix)
                if entry is not None:
                    stack.append(entry)
                continue
            if fn is None:
                continue
            lead = []
            j = i - 1
            nxt = ch
            while j >= 0 and children[j].type in syn.leading:
                if children[j].end_point[0] < nxt.start_point[0] - 1:
                    break  # a blank line between: not this function's comment
                lead.insert(0, children[j])
                nxt = children[j]
                j -= 1
            yield prefix + _receiver(fn) + _name(named), ch, fn, lead, in_class


def _scope_entry(node, syn: Syntax, prefix: str):
    field = syn.scopes.get(node.type)
    body = node.child_by_field_name(field) if field else node
    if body is None:
        return None
    named = node.type in syn.classes or node.type in ("namespace_definition", "internal_module")
    if named and (node.child_by_field_name("name") is not None):
        return body, f"{prefix}{_name(node)}.", node.type in syn.classes
    return body, prefix, node.type in syn.classes  # an anonymous namespace or struct


def line_starts(data: bytes) -> list[int]:
    """Byte offset of each line's start."""
    out = [0]
    i = data.find(b"\n")
    while i >= 0:
        out.append(i + 1)
        i = data.find(b"\n", i + 1)
    return out


def cut(data: bytes, starts: list[int], first, last) -> tuple[bytes, int] | None:
    """The lines from node ``first``'s to node ``last``'s, dedented by the first line's
    indentation, and the first line's number (1-based); ``None`` when the segment cannot
    stand alone (code before ``first`` on its line or after ``last`` on its, or a line
    indented less than the first)."""
    row = first.start_point[0]
    lo = starts[row]
    if data[lo : first.start_byte].strip():
        return None
    end = last.end_byte
    hi = data.find(b"\n", end)
    if hi < 0:
        hi = len(data)
    tail = data[end:hi].strip()
    if tail and not tail.startswith((b"//", b"/*")):
        return None
    head = data[lo:hi].split(b"\n", 1)[0]
    indent = head[: len(head) - len(head.lstrip(b" \t"))]
    out = []
    for line in data[lo:end].split(b"\n"):
        if line.startswith(indent):
            out.append(line[len(indent) :])
        elif not line.strip():
            out.append(b"")
        else:
            return None
    return b"\n".join(out).rstrip() + b"\n", row + 1


def parse_alone(grammar: str, code: bytes, wrapper: tuple[bytes, bytes] | None):
    """``(tree, offset)`` of ``code`` parsed on its own (``wrapper``: inside it), or ``None``
    when the parse has an error node."""
    pre, post = wrapper or (b"", b"")
    tree = parser(grammar).parse(pre + code + post)
    if tree.root_node.has_error:
        return None
    return tree, len(pre)


def first_function(node, types: frozenset[str]):
    """The first node of one of ``types`` in preorder under ``node`` (the outermost), or
    ``None``."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type in types:
            return n
        stack.extend(reversed(n.named_children))
    return None


def stub_of(fn, tree_offset: int, code: bytes, leading: bool, syn: Syntax) -> bytes | None:
    """Leading comments + signature up to and including the body's ``{``, or ``None`` without
    a leading comment block or with an empty body."""
    if not leading:
        return None
    body = fn.child_by_field_name("body")
    if body is None or not any(c.type not in syn.comments for c in body.named_children):
        return None
    cut_at = body.start_byte - tree_offset + 1
    if code[cut_at - 1 : cut_at] != b"{":
        return None
    return code[:cut_at] + b"\n"


def extract(language: str, rel: str, data: bytes, min_lines: int, max_bytes: int, skips: dict):
    """The functions of file ``data`` (parsed with no error), as :class:`TSFunction`;
    per-function skips counted into ``skips``. Returns ``None`` when the file does not parse."""
    syn = SYNTAX[language]
    grammar = grammar_of(language, rel)
    tree = parser(grammar).parse(data)
    if tree.root_node.has_error:
        return None
    starts = line_starts(data)
    out = []
    for symbol, seg, fn, lead, in_class in iter_functions(tree.root_node, syn):
        if fn.end_point[0] - fn.start_point[0] + 1 < min_lines:
            skips["too_short"] = skips.get("too_short", 0) + 1
            continue
        got = cut(data, starts, lead[0] if lead else seg, seg)
        if got is None:
            skips["not_standalone"] = skips.get("not_standalone", 0) + 1
            continue
        code, lineno = got
        if len(code) > max_bytes:
            skips["too_long"] = skips.get("too_long", 0) + 1
            continue
        wrapper = syn.wrapper if in_class else None
        alone = parse_alone(grammar, code, wrapper)
        if alone is None:
            skips["original_unparsable"] = skips.get("original_unparsable", 0) + 1
            continue
        t, off = alone
        node = first_function(t.root_node, syn.functions | syn.declared)
        stub = None
        if node is not None:
            has_comment = any(x.type in syn.comments for x in lead)
            stub = stub_of(node, off, code, has_comment, syn)
        out.append(
            TSFunction(
                symbol=symbol,
                lineno=lineno,
                code=code.decode("utf-8"),
                stub=stub.decode("utf-8") if stub is not None else None,
                tree=t,
                offset=off,
                wrapper=wrapper or (b"", b""),
                grammar=grammar,
            )
        )
    return out


def canonical(language: str, code: str) -> str | None:
    """The tree of ``code`` in ``language`` as text — node types, and the text of leaf
    tokens — without comments, so two snippets compare equal exactly when they differ only in
    layout and comments; ``None`` when ``code`` does not parse with no error node (alone, or
    as the member of a class for a method)."""
    syn = SYNTAX[language]
    data = code.encode("utf-8")
    alone = parse_alone(language, data, None)
    if alone is None and syn.wrapper is not None:
        alone = parse_alone(language, data, syn.wrapper)
    if alone is None:
        return None
    tree, off = alone
    end = off + len(data)
    out: list[str] = []
    cursor = tree.walk()
    comments = syn.comments
    while True:
        node = cursor.node
        descend = False
        if node.end_byte > off and node.start_byte < end and node.type not in comments:
            if node.child_count:
                out.append("(" + node.type)
                descend = True
            elif node.is_named:
                out.append(f"{node.type}:{node.text.decode('utf-8', 'replace')}")
            else:
                out.append(node.type)
        if descend and cursor.goto_first_child():
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return " ".join(out)
            if cursor.node.end_byte > off and cursor.node.start_byte < end:
                out.append(")")


def parses(language: str, code: str) -> bool:
    """Whether ``code`` parses in ``language`` with no error node (see :func:`canonical`)."""
    return canonical(language, code) is not None


def supported() -> tuple[str, ...]:
    """The languages this module reads (every language but Python)."""
    return tuple(n for n in LANGUAGES if n in SYNTAX)
