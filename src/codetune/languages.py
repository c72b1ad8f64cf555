"""The source languages codetune reads: names, file extensions, how prompts name them.

Pure data, no parser imports: prompts, config validation and discovery use it. Python is read
with :mod:`ast`; every other language with its tree-sitter grammar (:mod:`codetune.data.treesitter`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    """One language: ``name`` is its key (config, ``meta.language``, the report), ``display``
    how prompts name it, ``fence`` the code-block tag, ``noun`` what its extracted units are
    called in prompts, ``extensions`` the file suffixes that select it."""

    name: str
    display: str
    fence: str
    noun: str
    extensions: tuple[str, ...]


LANGUAGES: dict[str, Language] = {
    lang.name: lang
    for lang in (
        Language("python", "Python", "python", "function", (".py",)),
        Language("javascript", "JavaScript", "javascript", "function", (".js", ".mjs", ".cjs", ".jsx")),
        Language("typescript", "TypeScript", "typescript", "function", (".ts", ".mts", ".cts", ".tsx")),
        Language("java", "Java", "java", "method", (".java",)),
        Language("go", "Go", "go", "function", (".go",)),
        Language("cpp", "C++", "cpp", "function", (".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx")),
    )
}  # fmt: skip
SUPPORTED = tuple(LANGUAGES)
DEFAULT = "python"  # the language of records written before prepare read other languages

_BY_EXT = {ext: lang.name for lang in LANGUAGES.values() for ext in lang.extensions}


def language_of(path: str) -> str | None:
    """The language whose extension ``path`` ends with, or ``None``."""
    dot = path.rfind(".")
    if dot < 0 or "/" in path[dot:]:
        return None
    return _BY_EXT.get(path[dot:].lower())


def get(name: str | None) -> Language:
    """The :class:`Language` called ``name`` (``None``: Python); ``ValueError`` for an
    unknown one."""
    lang = LANGUAGES.get(name or DEFAULT)
    if lang is None:
        raise ValueError(f"unknown language {name!r}; supported: {', '.join(SUPPORTED)}")
    return lang
