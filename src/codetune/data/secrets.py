"""Credential detection with detect-secrets: a file with a hit is dropped entirely.

Scanning every line of a large codebase with detect-secrets' per-line plugin loop is slow
(about 0.7 MB/s here), and even one pass of the plugins' regexes is slow in Python's ``re``
when a pattern starts with a character class. So the first pass is derived from the plugins'
own patterns: for each pattern, the literal strings one of which every match must contain
(read from the parsed pattern), checked with ``str.__contains__`` at memory speed; a pattern
without such literals is searched as it is. A pattern whose literal occurs is searched only
in the lines holding it (detect-secrets reports findings per line, so a finding lies within
one line, and that line holds the literal). Only when a pattern could match is the file
scanned line by line by detect-secrets proper (plugins + its false-positive filters), which
has the final word. The first pass cannot miss what the second finds: every chosen plugin is
regex-based and reports only what its regexes match.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache

from codetune.errors import ConfigError


@lru_cache(maxsize=8)
def _plugins(names: tuple[str, ...]) -> tuple[list[type], list[tuple[re.Pattern, list, bool]]]:
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.base import RegexBasedDetector

    by_name = {c.__name__: c for c in get_mapping_from_secret_type_to_class().values()}
    classes = []
    for n in names:
        cls = by_name.get(n)
        if cls is None:
            raise ConfigError(
                f"secret_plugins: unknown detect-secrets plugin {n!r}; "
                f"known: {', '.join(sorted(by_name))}"
            )
        if not issubclass(cls, RegexBasedDetector):
            raise ConfigError(
                f"secret_plugins: {n} is not regex-based; only regex-based plugins are supported"
            )
        classes.append(cls)
    checks = []
    for cls in classes:
        for p in cls.denylist:
            nocase = bool(p.flags & re.IGNORECASE)
            lits = _required_literals(p) or []
            checks.append((p, [x.lower() for x in lits] if nocase else lits, nocase))
    return classes, checks


def _required_literals(pattern: re.Pattern) -> list[str] | None:
    """Literals one of which every match of ``pattern`` contains, or ``None`` if unknown."""
    import re._parser as sre_parse  # the stdlib's own regex parser (3.11+)

    lit, sub, branch = sre_parse.LITERAL, sre_parse.SUBPATTERN, sre_parse.BRANCH

    def seq(items) -> list[str] | None:
        best: list[str] | None = None
        run = ""
        options: list[list[str]] = []
        for op, av in list(items) + [(None, None)]:
            if op is lit:
                run += chr(av)
                continue
            if run:
                options.append([run])
                run = ""
            if op is sub:
                r = seq(av[3])
                if r:
                    options.append(r)
            elif op is branch:
                alts = [seq(b) for b in av[1]]
                if all(alts):
                    options.append([x for a in alts for x in a])
        for o in options:
            if best is None or min(map(len, o)) > min(map(len, best)):
                best = o
        return best

    found = seq(sre_parse.parse(pattern.pattern, pattern.flags & ~re.UNICODE))
    # A one-character literal would not filter anything; search such a pattern directly.
    return found if found and min(map(len, found)) >= 2 else None


def check_plugins(names: list[str]) -> None:
    """Raise ``ConfigError`` for an unknown or unsupported plugin name."""
    _plugins(tuple(names))


def _lines_with(text: str, hay: str, lits: list[str]) -> Iterator[str]:
    """The lines of ``text`` in which ``hay`` (``text`` or its same-length lower-case form)
    holds one of ``lits``; each line once."""
    seen = set()
    for lit in lits:
        i = hay.find(lit)
        while i >= 0:
            lo = text.rfind("\n", 0, i) + 1
            hi = text.find("\n", i)
            if hi < 0:
                hi = len(text)
            if lo not in seen:
                seen.add(lo)
                yield text[lo:hi]
            i = hay.find(lit, hi)


def has_secret(path: str, text: str, plugin_names: list[str]) -> bool:
    """True when detect-secrets finds a credential in ``text`` (the content of ``path``)."""
    if not plugin_names:
        return False
    classes, checks = _plugins(tuple(plugin_names))
    lower = None
    hit = []
    for pat, lits, nocase in checks:
        if lits:
            if nocase and lower is None:
                lower = text.lower()
            hay = lower if nocase else text
            if not any(x in hay for x in lits):
                continue
            if len(hay) == len(text):
                # detect-secrets scans line by line, so only the lines holding a literal can
                # hold a finding: search those, not the whole file (a pattern that starts
                # with a character class is slow over a large text)
                if any(map(pat.search, _lines_with(text, hay, lits))):
                    hit.append(pat)
                continue
        if pat.search(text):
            hit.append(pat)
    if not hit:
        return False
    from detect_secrets.core.scan import scan_line
    from detect_secrets.settings import transient_settings

    settings = {"plugins_used": [{"name": c.__name__} for c in classes]}
    with transient_settings(settings):
        for line in text.splitlines():
            if any(p.search(line) for p in hit) and any(True for _ in scan_line(line)):
                return True
    return False
