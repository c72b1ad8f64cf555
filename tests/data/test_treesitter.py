"""Extraction and mutation for the tree-sitter languages, on real code (tests/data/corpora.py)."""

from __future__ import annotations

import functools
import random

import pytest

from codetune.data import treesitter as T
from codetune.data.ts_mutations import OPERATORS, SYNTAX_OPERATORS, TSMutator
from codetune.languages import LANGUAGES, language_of

from .corpora import files

LANGS = ("javascript", "typescript", "java", "go", "cpp")
# Operators whose bug does not exist in a language: JavaScript/TypeScript insert missing
# semicolons and Go has none; a removed `;` is no syntax error there.
NOT_IN = {"missing_semicolon": {"javascript", "typescript", "go"}}
CASES = [(lang, op) for lang in LANGS for op in OPERATORS if lang not in NOT_IN.get(op, ())]


@functools.cache
def _functions(language: str) -> list[T.TSFunction]:
    out = []
    for rel, data in files(language):
        got = T.extract(language, rel, data.replace(b"\r\n", b"\n"), 3, 12_000, {})
        out += got or []
    return out


@pytest.mark.parametrize("language,op", CASES)
def test_operator_on_real_code(language: str, op: str) -> None:
    # Guards each language x operator on real code: a verified mutant exists; it is the
    # original with one byte range replaced (everything else byte-identical: formatting and
    # comments untouched); a semantic mutant parses with no error node and has another tree,
    # a syntax mutant does not parse.
    found = 0
    for k, fn in enumerate(_functions(language)):
        m = TSMutator(fn, language)
        rng = random.Random(k)
        if op not in m.candidates():
            continue
        sites = m.sites(op, rng)
        mutant = m.apply(op, sites, rng) if sites else None
        if mutant is None:
            continue
        b = fn.code.encode()
        assert mutant != fn.code
        assert mutant.encode() in {b[:s] + r + b[e:] for s, e, r in sites}, "not one edit"
        assert m.parses(mutant.encode()) is (op not in SYNTAX_OPERATORS)
        if op not in SYNTAX_OPERATORS:
            assert T.canonical(language, mutant) != T.canonical(language, fn.code)
        found += 1
        if found == 5:
            break
    assert found, f"no verified {op} mutant in {len(_functions(language))} {language} functions"


@pytest.mark.parametrize("language", LANGS)
def test_segments_are_exact_and_parse_alone(language: str) -> None:
    # Guards extraction: every segment is the file's own lines (re-indented, they occur in
    # the file as they are), parses alone with no error node, and keeps a touching leading
    # comment; some have a stub that is a prefix of the code ending at the body's brace.
    by_rel = dict(files(language))
    fns = _functions(language)
    assert len(fns) > 50
    with_comment = with_stub = 0
    for rel, data in files(language)[:40]:
        text = data.decode("utf-8").replace("\r\n", "\n")
        got = T.extract(language, rel, data.replace(b"\r\n", b"\n"), 3, 12_000, {}) or []
        lines = text.split("\n")
        for fn in got:
            first = lines[fn.lineno - 1]
            indent = first[: len(first) - len(first.lstrip(" \t"))]
            back = "\n".join(indent + ln if ln else ln for ln in fn.code.rstrip("\n").split("\n"))
            assert back in text or back.replace("\n\n", "\n" + indent + "\n") in text, (
                rel,
                fn.symbol,
            )
            assert T.parses(language, fn.code)
            with_comment += fn.code.lstrip().startswith(("//", "/*"))
            if fn.stub is not None:
                with_stub += 1
                assert fn.code.startswith(fn.stub[:-1]) and fn.stub.endswith("{\n")
        assert rel in by_rel
    assert with_comment and with_stub


def test_java_method_symbol_doc_and_stub() -> None:
    # Guards the shape of a method: Class.method, Javadoc and annotations kept, the body's
    # last brace the segment's end, the stub = Javadoc + signature + "{".
    data = dict(files("java"))["java.base/java/util/ArrayList.java"]
    fns = T.extract("java", "ArrayList.java", data, 3, 12_000, {})
    grow = next(f for f in fns if f.symbol == "ArrayList.grow" and "minCapacity" in f.code)
    assert grow.code.startswith("/**\n * Increases the capacity")
    assert (
        grow.code.rstrip().endswith("}") and "private Object[] grow(int minCapacity) {" in grow.code
    )
    assert grow.stub.endswith("private Object[] grow(int minCapacity) {\n")
    assert "ArrayList.Itr.next" in {f.symbol for f in fns}  # methods of nested classes


def test_file_with_a_parse_error_is_reported() -> None:
    # Guards: a file whose parse has an error node yields None (prepare counts it).
    assert T.extract("java", "A.java", b"class A { void f() { int x = ; } }", 1, 10_000, {}) is None
    assert (
        T.extract("go", "a.go", b"package a\nfunc f() {\n\treturn 1 +\n}\n", 1, 10_000, {}) is None
    )


def test_canonical_ignores_layout_and_comments_only() -> None:
    # Guards the exact-fix rule of the tree-sitter languages: layout and comments never
    # matter, any token does; a method parses inside a class wrapper, broken code is None.
    a = "int f(int a) {\n    // add one\n    return a + 1;\n}\n"
    b = "/** doc */\nint f(int a) { return a+1; }"
    c = "int f(int a) {\n    return a - 1;\n}\n"
    assert T.canonical("java", a) == T.canonical("java", b) != T.canonical("java", c)
    assert T.canonical("java", "int f() { return 1 }") is None
    ts_method = "  get(x: number): number {\n    return x * 2;\n  }\n"
    assert T.canonical("typescript", ts_method) is not None
    assert T.canonical("go", "func f() int {\n\treturn 1\n}") == T.canonical(
        "go", "func f() int { return 1 } // one"
    )


def test_language_of_extensions() -> None:
    # Guards the extension table the discovery, the worker and prompts rely on.
    assert language_of("a/b.TS") == "typescript" and language_of("x.tsx") == "typescript"
    assert language_of("Main.java") == "java" and language_of("w.cc") == "cpp"
    assert language_of("README") is None and language_of("a.d/b") is None
    assert set(T.SYNTAX) | {"python"} == set(LANGUAGES)
