"""The forgetting guard's data and measurement: per-token loss on held-out general Python code.

HumanEval says nothing about a base model that cannot solve it (the embedded 135M model
scores 0 there), so the gate also watches what the adapter does to the model off its training
distribution: the mean per-token cross-entropy of base and candidate on files of Python's
standard library that the training codebase does not contain. Every model, however small,
has a loss there, and an adapter that damages general code modelling raises it.

The files come from packages of the interpreter's standard library (:data:`PACKAGES`; the
same interpreter the evaluation runs in, locally and in the Processing job), minus any file
whose path matches a source file of the dataset's records (a codebase built from the
standard library, as the demo's is, never lends its own files). Each file contributes its
first ``max_tokens`` tokens from the first top-level ``def`` / ``class`` on (code, not the
licence header). No model imports at module level.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path

from codetune.errors import CodetuneError
from codetune.io import read_jsonl

# Standard-library packages with plain, idiomatic Python and no generated code: a spread of
# styles (parsers, protocols, async, testing, logging) disjoint from the demo's codebase.
PACKAGES = (
    "asyncio",
    "concurrent",
    "email",
    "http",
    "importlib",
    "logging",
    "multiprocessing",
    "unittest",
    "urllib",
    "wsgiref",
    "xml",
)
MIN_BYTES = 3000  # smaller modules are mostly imports and re-exports


@dataclass
class HeldOutFile:
    path: str  # relative to the standard library
    text: str


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def training_paths(data_dir: str | Path | None) -> set[str]:
    """Source paths (``meta.path``) of every record in the dataset (all splits: the test
    split's files are the same codebase's)."""
    out: set[str] = set()
    if not data_dir:
        return out
    for split in ("train", "validation", "test"):
        p = Path(data_dir) / f"{split}.jsonl"
        if p.is_file():
            for r in read_jsonl(p):
                path = (r.get("meta") or {}).get("path")
                if path:
                    out.add(str(path).replace("\\", "/").lstrip("./"))
    return out


def held_out_files(
    n_files: int, data_dir: str | Path | None = None, root: Path | None = None
) -> list[HeldOutFile]:
    """``n_files`` standard-library files spread evenly over :data:`PACKAGES` (sorted paths,
    a fixed stride: the same interpreter gives the same files), none of them a source file of
    the dataset. Raises CodetuneError when fewer files are available."""
    root = root or stdlib_root()
    seen = training_paths(data_dir)
    candidates = []
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            rel = f.relative_to(root).as_posix()
            if "/test" in f"/{rel}" or "__pycache__" in rel or f.stat().st_size < MIN_BYTES:
                continue
            if rel in seen or any(s.endswith("/" + rel) or rel.endswith("/" + s) for s in seen):
                continue
            candidates.append(rel)
    if len(candidates) < n_files:
        raise CodetuneError(
            f"the general-code suite needs {n_files} held-out files; only {len(candidates)} "
            f"standard-library files under {root} are outside the training codebase"
        )
    stride = len(candidates) / n_files
    picked = [candidates[int(i * stride)] for i in range(n_files)]
    out = []
    for rel in picked:
        text = (root / rel).read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines(keepends=True)
        start = next(
            (i for i, ln in enumerate(lines) if ln.startswith(("def ", "class ", "async def "))),
            0,
        )
        out.append(HeldOutFile(rel, "".join(lines[start:])))
    return out


def encode(tokenizer, files: list[HeldOutFile], max_tokens: int) -> list[list[int]]:
    """Each file's first ``max_tokens`` token ids (no special tokens)."""
    return [tokenizer(f.text, add_special_tokens=False)["input_ids"][:max_tokens] for f in files]


def per_file_loss(model, token_ids: list[list[int]], pad_id: int, batch_size: int = 8):
    """Mean per-token cross-entropy (nats) of ``model`` on each file's tokens (next-token
    prediction; every token but the first is predicted). Returns one float per file."""
    import torch

    dev = next(model.parameters()).device
    order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
    losses: dict[int, float] = {}
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            width = max(len(token_ids[i]) for i in idx)
            inp = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                inp[r, : len(token_ids[i])] = torch.tensor(token_ids[i])
                mask[r, : len(token_ids[i])] = 1
            logits = model(input_ids=inp.to(dev), attention_mask=mask.to(dev)).logits.float()
            ce = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), inp[:, 1:].to(dev), reduction="none"
            )
            valid = mask[:, 1:].to(dev).float()
            per_row = (ce * valid).sum(-1) / valid.sum(-1)
            for r, i in enumerate(idx):
                losses[i] = float(per_row[r])
    return [losses[i] for i in range(len(token_ids))]
