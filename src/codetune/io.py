"""Atomic outputs: nothing partial is ever published.

Directories are written under a sibling temporary name and renamed into place only when
complete; files are written to a temporary file in the same directory and ``os.replace``d.
What is published gets the permissions a plain ``mkdir``/``open`` would give it (0777/0666
less the umask): ``mkdtemp``/``mkstemp`` create 0700/0600, which would leave a dataset, an
adapter or a report unreadable to a colleague or to a service running as another user.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only be read by
    setting it, which would briefly affect files other threads create)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)  # no /proc (not Linux): the only other way
    os.umask(old)
    return old


def temp_file(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """``mkstemp`` beside ``path`` (same file system, for the final ``os.replace``), with the
    permissions ``open`` would give a new file instead of mkstemp's 0600."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~umask())
    return fd, tmp


def share_like_open(root: Path, pattern: str = "*.safetensors") -> None:
    """Give the files matching ``pattern`` under ``root`` the permissions ``open`` would have
    (0666 less the umask). safetensors >= 0.8 writes through a temporary file that is always
    0600 (safetensors/safetensors#782), so ``save_pretrained`` leaves weights that only their
    writer can read beside a 0644 config: another user, or a server running as one, then
    fails to load the adapter or model."""
    mode = 0o666 & ~umask()
    for p in Path(root).rglob(pattern):
        if p.is_file() and not p.is_symlink():
            os.chmod(p, mode)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same dir + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_jsonl(path: Path) -> Iterator[dict]:
    """Yield one object per non-empty line; raises ``ValueError`` naming file and line."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines (keys sorted, so output is byte-stable); returns the count."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
            n += 1
    return n


@contextlib.contextmanager
def atomic_dir(final: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary directory next to ``final``; on success rename it to ``final``.

    On any exception the temporary directory is removed and ``final`` is untouched.
    With ``replace`` an existing ``final`` is swapped out (old copy removed after the rename).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's 0700 would be published as it is
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        if not replace:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(f"{final} already exists")
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
