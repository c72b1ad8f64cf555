"""``codetune model``: manage base models.

codetune model fetch            # download + convert the embedded SmolLM2-135M-Instruct
codetune model fetch --force    # rebuild the cache
codetune model path             # print the embedded checkpoint's directory
codetune model generate "def add(a, b):"   # one greedy completion (smoke check)
"""

from __future__ import annotations

import argparse
import sys


def _fetch(args: argparse.Namespace) -> int:
    from codetune.model import fetch_embedded

    path = fetch_embedded(force=args.force)
    print(path)
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
