"""``codetune model``: manage base models.

codetune model fetch            # download + convert the embedded SmolLM2-135M-Instruct
codetune model fetch --force    # rebuild the cache
codetune model fetch --remember # ... and make this cache the venv's default (make setup does)
codetune model path             # print the embedded checkpoint's directory
codetune model generate "def add(a, b):"   # one greedy completion (smoke check)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _other_caches(home: Path) -> list[Path]:
    """Valid embedded-model caches this command could have used instead of ``home``."""
    from codetune.model import EMBEDDED_NAME, cache_is_valid
    from codetune.paths import default_home, home_record

    candidates = [default_home()]
    try:
        recorded = home_record().read_text().strip()
        if recorded:
            candidates.insert(0, Path(recorded))
    except OSError:
        pass
    out = []
    for c in candidates:
        if c.resolve() != home.resolve() and c not in out:
            if cache_is_valid(c / "models" / EMBEDDED_NAME):
                out.append(c)
    return out


def _fetch(args: argparse.Namespace) -> int:
    from codetune.errors import CodetuneError
    from codetune.model import cache_is_valid, embedded_dir, fetch_embedded
    from codetune.paths import codetune_home_source, remember_home

    home, source = codetune_home_source()
    if args.remember and sys.prefix == sys.base_prefix:
        raise CodetuneError(
            "--remember records the cache in a virtual environment, and this Python is not one; "
            "set CODETUNE_HOME instead"
        )
    if args.force or not cache_is_valid(embedded_dir()):
        note = f"creating a new cache at {home} (chosen by {source})"
        others = _other_caches(home)
        if others:
            note += "; existing cache(s) not used: " + ", ".join(map(str, others))
        print(note, file=sys.stderr)
    path = fetch_embedded(force=args.force)
    print(path)
    print(f"cache: {home} (chosen by {source})", file=sys.stderr)
    if args.remember:
        record = remember_home(home)
        print(f"recorded {home} as this environment's cache in {record}", file=sys.stderr)
    return 0


def _path(args: argparse.Namespace) -> int:
    from codetune.model import cache_is_valid, embedded_dir

    d = embedded_dir()
    print(d)
    if not cache_is_valid(d):
        print("(not fetched yet: run 'codetune model fetch')", file=sys.stderr)
        return 1
    return 0


def _generate(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codetune.model import resolve_base_model
    from codetune.prompts import render_chat

    path = resolve_base_model(args.base_model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.eval()
    text = (
        render_chat(tok, [{"role": "user", "content": args.prompt}]) if args.chat else args.prompt
    )
    enc = tok(text, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False)
    print(tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    return 0


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "model",
        help="manage base models (fetch the embedded model)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True
    f = msub.add_parser("fetch", help="download and convert the embedded model into the cache")
    f.add_argument("--force", action="store_true", help="rebuild even if the cache is valid")
    f.add_argument(
        "--remember",
        action="store_true",
        help="record the cache used as this virtual environment's default, so codetune finds "
        "it without CODETUNE_HOME (make setup does this for the checkout's .cache/codetune)",
    )
    f.set_defaults(func=_fetch)
    pa = msub.add_parser("path", help="print the embedded model's cache directory")
    pa.set_defaults(func=_path)
    g = msub.add_parser("generate", help="greedy-generate one completion (smoke check)")
    g.add_argument("prompt", help="the prompt text")
    g.add_argument("--base-model", default=None, help="path or Hugging Face id (default: embedded)")
    g.add_argument("--max-new-tokens", type=int, default=64, help="token cap (default 64)")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    g.set_defaults(func=_generate)
    return p
