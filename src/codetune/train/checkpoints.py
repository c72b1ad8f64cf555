"""Checkpoints that are either complete or ignored.

The HF Trainer writes ``checkpoint-<step>/`` in place. A checkpoint becomes *valid* only when
codetune writes ``codetune-checkpoint.json`` into it afterwards (atomically, last), listing
every file with its size. A directory without that marker, or whose files no longer match it
(killed mid-write, a partial S3 sync on SageMaker), is torn: it is never loaded, and the next
run deletes it before training so the Trainer cannot write into it.

The marker (rather than a directory rename) suits ``/opt/ml/checkpoints``, which SageMaker
syncs to S3 file by file.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from codetune.io import write_json_atomic

log = logging.getLogger(__name__)
MARKER = "codetune-checkpoint.json"
COUNTERS = "codetune-counters.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: Path) -> int | None:
    """The step number in ``checkpoint-<step>``, or None for other names."""
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def mark_complete(ckpt: Path) -> None:
    """Write the marker listing every file (relative path -> size); call after the save."""
    files = {
        str(p.relative_to(ckpt)): p.stat().st_size
        for p in sorted(ckpt.rglob("*"))
        if p.is_file() and p.name != MARKER and not p.name.startswith(".")
    }
    write_json_atomic(ckpt / MARKER, {"step": checkpoint_step(ckpt), "files": files})


def is_valid(ckpt: Path) -> bool:
    """True when the marker exists and every file it lists exists with the listed size."""
    marker = Path(ckpt) / MARKER
    try:
        meta = json.loads(marker.read_text())
        files = meta["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if "trainer_state.json" not in files:
        return False
    for rel, size in files.items():
        p = Path(ckpt) / rel
        if not p.is_file() or p.stat().st_size != size:
            return False
    return True


def scan(root: Path) -> tuple[list[Path], list[Path]]:
    """``(valid, torn)`` checkpoint directories under ``root``, each sorted by step."""
    valid, torn = [], []
    if not Path(root).is_dir():
        return valid, torn
    for d in sorted(Path(root).iterdir(), key=lambda p: checkpoint_step(p) or -1):
        if d.is_dir() and checkpoint_step(d) is not None:
            (valid if is_valid(d) else torn).append(d)
    return valid, torn


def newest_valid(root: Path) -> Path | None:
    """The valid checkpoint with the highest step, or None."""
    valid, _ = scan(root)
    return valid[-1] if valid else None


def remove_torn(root: Path) -> list[Path]:
    """Delete torn checkpoints (logged); returns what was removed."""
    _, torn = scan(root)
    for d in torn:
        log.warning("ignoring and removing torn checkpoint %s (no valid %s)", d, MARKER)
        shutil.rmtree(d, ignore_errors=True)
    return torn
