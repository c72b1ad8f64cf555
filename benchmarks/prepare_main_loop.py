"""CPU seconds of prepare()'s main-process work alone (dedup index, mutation choice, quotas,
records, manifest): the per-file results are computed once, pickled, and replayed into
prepare() of the code on sys.path (``pipeline._results`` patched), so the workers' parsing,
which dominates a real run, does not drown a change to the main loop.

    PYTHONPATH=src .venv/bin/python benchmarks/prepare_main_loop.py collect CORPUS /tmp/r.pkl
    PYTHONPATH=/tmp/before/src .venv/bin/python benchmarks/prepare_main_loop.py before CORPUS /tmp/r.pkl 7
    PYTHONPATH=src .venv/bin/python benchmarks/prepare_main_loop.py after CORPUS /tmp/r.pkl 7

The first round of each process includes one-off imports; compare the others.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

from codetune.config import load_config
from codetune.data import pipeline
from codetune.data.config import PrepareConfig
from codetune.data.discover import iter_files


def main(mode: str, corpus: Path, pkl: Path, rounds: int) -> None:
    # One process: a pool would re-run this script in its spawned workers.
    cfg = load_config(PrepareConfig, None, ["workers=1"])
    if mode == "collect":
        tok = pipeline.tokenizer_file(cfg.tokenizer)
        overheads = pipeline._Overheads.of(cfg.tokenizer, tok)
        ovh = {
            lang: {t: overheads.get(t, lang) for t in cfg.tasks} for lang in cfg.language_names()
        }
        files = iter_files(corpus, cfg, pipeline._Stats().skipped, 0, 1)
        results = list(pipeline._results(files, cfg, tok, ovh))
        pkl.write_bytes(pickle.dumps(results))
        print(len(results), "results")
        return
    results = pickle.loads(pkl.read_bytes())
    pipeline._results = lambda files, cfg, tok_file, ovh: (r for r in results)
    times = []
    for _ in range(rounds):
        out = Path(tempfile.mkdtemp()) / "ds"
        t = time.process_time()
        manifest = pipeline.prepare(cfg, corpus, out, progress=False)
        times.append(round(time.process_time() - t, 3))
        shutil.rmtree(out.parent)
    print(json.dumps({"mode": mode, "cpu_s": times, "examples": manifest["counts"]["task"]}))


if __name__ == "__main__":
    main(
        sys.argv[1],
        Path(sys.argv[2]),
        Path(sys.argv[3]),
        int(sys.argv[4]) if len(sys.argv) > 4 else 7,
    )
