"""Streaming discovery of source files: bounded memory whatever the size of the tree.

``os.scandir`` one directory at a time, entries sorted by name, so the walk order (and so
every downstream choice) is deterministic. Excluded directories are pruned without being
entered; every skipped file is counted by reason in a :class:`collections.Counter`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from codetune.data.config import PrepareConfig
from codetune.languages import language_of


def _matches(rel: str, patterns: list[str]) -> bool:
    """Glob match on the relative path or on the file name (``*.py`` matches any depth)."""
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def iter_files(
    root: Path,
    cfg: PrepareConfig,
    skipped: Counter,
    shard_index: int = 0,
    num_shards: int = 1,
) -> Iterator[tuple[str, str]]:
    """Yield ``(relative_posix_path, absolute_path)`` of files to process, in sorted order: a
    file of one of ``cfg``'s languages (by extension) that matches ``cfg.include`` when given.

    Files outside this shard (``hash(path) % num_shards != shard_index``) are not yielded and
    not counted. Skips counted in ``skipped``: ``excluded_dir`` (directories pruned),
    ``not_included`` (no language read, or no include glob matched), ``excluded``,
    ``symlink``, ``too_large``.
    """
    stack = [str(root)]
    root_s = str(root)
    wanted = frozenset(cfg.language_names())
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            skipped["unreadable_dir"] += 1
            continue
        subdirs = []
        for e in entries:
            rel = os.path.relpath(e.path, root_s).replace(os.sep, "/")
            if e.is_symlink():
                # Symlinks can loop or escape the codebase; never followed.
                skipped["symlink"] += 1
                continue
            if e.is_dir():
                if any(fnmatch.fnmatchcase(e.name, p) for p in cfg.exclude_dirs):
                    skipped["excluded_dir"] += 1
                else:
                    subdirs.append(e.path)
                continue
            if not e.is_file():
                continue
            if language_of(e.name) not in wanted or (
                cfg.include and not _matches(rel, cfg.include)
            ):
                skipped["not_included"] += 1
                continue
            if num_shards > 1 and shard_of(rel, num_shards) != shard_index:
                continue
            if _matches(rel, cfg.exclude):
                skipped["excluded"] += 1
                continue
            try:
                size = e.stat().st_size
            except OSError:
                skipped["unreadable"] += 1
                continue
            if size > cfg.max_file_bytes:
                skipped["too_large"] += 1
                continue
            yield rel, e.path
        # Reverse so the stack pops subdirectories in sorted order (depth-first, deterministic).
        stack.extend(reversed(subdirs))


def shard_of(rel: str, num_shards: int) -> int:
    """The shard that owns relative path ``rel`` (stable across machines and runs)."""
    h = hashlib.blake2b(rel.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") % num_shards
