"""Atomic outputs: nothing partial is ever published.

Directories are written under a sibling temporary name and renamed into place only when
complete; files are written to a temporary file in the same directory and ``os.replace``d.
A directory that is a mount point (SageMaker mounts ``/opt/ml/processing/output/<name>``,
``/opt/ml/model``, ...) cannot be renamed (EBUSY) nor renamed into (EXDEV): the result is
assembled in a hidden directory inside it and its entries are renamed into place when complete.
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


def _unescape_mountinfo(field: str) -> str:
    """/proc/self/mountinfo writes space, tab, newline and backslash as octal escapes."""
    for esc, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(esc, ch)
    return field


def is_mount_point(path: Path) -> bool:
    """True when ``path`` is a mount point, bind mounts of a directory on the same file
    system included (``os.path.ismount`` misses those: same device, no root inode)."""
    path = Path(path)
    if os.path.ismount(path):
        return True
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            points = {_unescape_mountinfo(line.split()[4]) for line in fh if line.strip()}
    except OSError:
        return False
    return os.path.realpath(path) in points


@contextlib.contextmanager
def atomic_dir(final: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary directory next to ``final``; on success rename it to ``final``.

    On any exception the temporary directory is removed and ``final`` is untouched.
    With ``replace`` an existing ``final`` is swapped out (old copy removed after the rename).
    When ``final`` is a mount point the temporary directory is inside it and its entries
    replace ``final``'s (see the module docstring); ``replace=False`` then refuses a
    non-empty ``final``.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_dir() and is_mount_point(final):
        with _atomic_into_mount(final, replace=replace) as tmp:
            yield tmp
        return
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


@contextlib.contextmanager
def _atomic_into_mount(final: Path, *, replace: bool) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=final))
    try:
        os.chmod(tmp, 0o777 & ~umask())
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old_entries = [p for p in final.iterdir() if p != tmp]
    if old_entries and not replace:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FileExistsError(f"{final} is not empty")
    trash = Path(tempfile.mkdtemp(prefix=".old-", dir=final)) if old_entries else None
    for p in old_entries:
        os.replace(p, trash / p.name)
    for p in sorted(tmp.iterdir()):
        os.replace(p, final / p.name)
    tmp.rmdir()
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def safe_extract_tar(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest``, refusing what could land outside it or is not plain
    data. Python >= 3.11.4 does this with ``filter="data"``. Older interpreters (Debian
    bookworm's 3.11.2, the CPU test images) get a stricter check here: only regular files and
    directories whose names stay inside ``dest``, no links at all (adapters and SageMaker's
    model.tar.gz hold none), no setuid/setgid bits, owned by the extracting user.
    Raises ``tarfile.TarError`` naming the member refused."""
    import tarfile

    dest = Path(dest)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        root = os.path.realpath(dest)
        members = tar.getmembers()
        for m in members:
            target = os.path.realpath(os.path.join(root, m.name))
            if os.path.isabs(m.name) or os.path.commonpath([root, target]) != root:
                raise tarfile.TarError(f"{m.name!r} would be extracted outside {dest}")
            if not (m.isreg() or m.isdir()):
                raise tarfile.TarError(f"{m.name!r} is a link, device or FIFO; refused")
            m.mode = (m.mode & 0o755) | (0o600 if m.isreg() else 0o700)
            m.uid, m.gid, m.uname, m.gname = os.getuid(), os.getgid(), "", ""
        tar.extractall(dest, members=members)
