"""Real non-Python source that `make setup` installs (never downloaded by a test).

- JavaScript: the `yaml` npm package's dist/ (an npm tool's dependency, .cache/node)
- TypeScript: the `ajv` npm package's lib/ sources (.cache/node)
- Java: the JDK's java.util, from Debian's openjdk-17-source (lib/src.zip)
- Go: go-cmp's sources from Debian's golang-github-google-go-cmp-dev
- C++: GoogleTest's sources from Debian's googletest
"""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE = REPO / ".cache" / "node" / "node_modules"
JDK_SRC = Path("/usr/lib/jvm/openjdk-17/lib/src.zip")
GO_CMP = Path("/usr/share/gocode/src/github.com/google/go-cmp")
GTEST = Path("/usr/src/googletest")

_TREES = {
    "javascript": (NODE / "yaml" / "dist", "*.js"),
    "typescript": (NODE / "ajv" / "lib", "*.ts"),
    "go": (GO_CMP, "*.go"),
    "cpp": (GTEST, "*.cc"),
}


@functools.cache
def files(language: str) -> tuple[tuple[str, bytes], ...]:
    """``(relative path, bytes)`` of the language's real files, sorted; skips the test when
    the package is not installed (run `make setup`)."""
    if language == "java":
        if not JDK_SRC.is_file():
            pytest.skip(f"{JDK_SRC} missing: `make setup` installs openjdk-17-source")
        with zipfile.ZipFile(JDK_SRC) as zf:
            names = sorted(
                n
                for n in zf.namelist()
                if n.startswith("java.base/java/util/") and n.endswith(".java")
            )
            return tuple((n, zf.read(n)) for n in names)
    root, pattern = _TREES[language]
    if not root.is_dir():
        pytest.skip(f"{root} missing: run `make setup`")
    paths = sorted(p for p in root.rglob(pattern) if not p.name.endswith(".d.ts"))
    return tuple((str(p.relative_to(root)), p.read_bytes()) for p in paths)


def write_tree(dest: Path, language: str, limit: int, prefix: str | None = None) -> int:
    """Copy the first ``limit`` files of ``language`` under ``dest/<prefix or language>``."""
    n = 0
    for rel, data in files(language)[:limit]:
        target = dest / (prefix or language) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        n += 1
    return n
