"""Throughput (MB/s of source) and peak RSS of `codetune prepare`, against a baseline.

    .venv/bin/python benchmarks/prepare_throughput.py --codebase .venv/lib/python3.11/site-packages \
        --max-files 1500 [--before-src /tmp/before/src] [--rounds 3]
    # a seeded 1-in-12 sample of the whole tree (the first files in walk order are not
    # representative: site-packages starts with aws_cdk/boto*, 29% duplicate functions)
    .venv/bin/python benchmarks/prepare_throughput.py --codebase .venv/lib/python3.11/site-packages \
        --sample-one-in 12 [--before-src /tmp/before/src] [--rounds 3]

    # the "before" package: mkdir -p /tmp/before && git archive <commit> src | tar -x -C /tmp/before
    # under another build of the same Python (e.g. an optimized one, like the images ship):
    ... --python /usr/bin/python3.11

    # another language: a tree of it, and prepare reading that language only
    .venv/bin/python benchmarks/prepare_throughput.py --codebase /tmp/jdk --set 'languages=[java]'

Runs `codetune prepare` as a subprocess, samples the RSS of its whole process tree (main +
workers) every 0.2 s, and reads the bytes processed from the manifest. The baseline, run side
by side on the same files, is the floor any parsing preparation pays: a parse of every file in
one process (`ast.parse` for Python, the language's tree-sitter grammar for the others). Prints one JSON object; CPU seconds are reported too, because on a shared
machine wall-clock throughput mostly measures the other tenants (load average included).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil


def run_prepare(codebase: Path, out: Path, sets: list[str], src: Path | None = None) -> dict:
    """One `codetune prepare` run; ``src``: run the codetune package found there instead
    (a checkout's ``src`` of an older commit, for a before/after comparison)."""
    cmd = [sys.executable, "-m", "codetune.cli", "prepare", "--codebase", str(codebase)]
    cmd += ["--out", str(out), "--no-progress"] + [a for s in sets for a in ("--set", s)]
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(
                c.memory_info().rss for c in ps.children(recursive=True)
            )
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed with status {proc.returncode}")
    manifest = json.loads((out / "manifest.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    mb = manifest["files"]["bytes"] / 1e6
    return {
        "files": manifest["files"]["processed"],
        "mb": round(mb, 1),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "mb_per_s": round(mb / wall, 2),
        "mb_per_cpu_s": round(mb / cpu, 2),
        "peak_rss_mb": round(peak / 2**20),
        "examples": manifest["counts"]["task"],
        "by_language": manifest["files"].get("by_language"),
    }


def baseline(codebase: Path, sets: list[str]) -> dict:
    """A parse of each of the same files (same discovery), one process: `ast.parse` for
    Python, tree-sitter for the other languages."""
    from codetune.config import load_config
    from codetune.data import treesitter
    from codetune.data.config import PrepareConfig
    from codetune.data.discover import iter_files
    from codetune.languages import language_of

    cfg = load_config(PrepareConfig, None, sets)
    t0, c0 = time.time(), time.process_time()
    nbytes = 0
    for n, (rel, path) in enumerate(iter_files(codebase, cfg, Counter())):
        if cfg.max_files and n >= cfg.max_files:
            break
        raw = Path(path).read_bytes()
        nbytes += len(raw)
        lang = language_of(rel)
        if lang != "python":
            treesitter.parser(treesitter.grammar_of(lang, rel)).parse(raw)
            continue
        try:
            ast.parse(raw)
        except (SyntaxError, ValueError):
            pass
    wall, cpu = time.time() - t0, time.process_time() - c0
    mb = nbytes / 1e6
    return {"mb": round(mb, 1), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "mb_per_s": round(mb / wall, 2), "mb_per_cpu_s": round(mb / cpu, 2)}  # fmt: skip


def sample_tree(codebase: Path, one_in: int, dest: Path, sets: list[str]) -> int:
    """Copy the files prepare would consider whose path hashes to 0 mod ``one_in`` (blake2b of
    the relative path: the same sample on every machine and every run) into ``dest``, at the
    same relative paths. Returns the number of files copied."""
    from codetune.config import load_config
    from codetune.data.config import PrepareConfig
    from codetune.data.discover import iter_files

    cfg = load_config(PrepareConfig, None, sets)
    n = 0
    for rel, path in iter_files(codebase, cfg, Counter()):
        if int.from_bytes(hashlib.blake2b(rel.encode()).digest()[:8], "little") % one_in:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        n += 1
    if not n:
        raise SystemExit(f"--sample-one-in {one_in}: no file of {codebase} was picked")
    return n


def reexec_under(python: str) -> None:
    """Run this script again under interpreter ``python`` (a different build of the same
    Python version), with this environment's packages: the installed site-packages and the
    checkout's ``src`` go on PYTHONPATH (an editable install's .pth is not read from there).
    Interpreter builds differ a lot in speed for pure-Python work (PGO/LTO, a static or shared
    libpython), and the images do not run on the interpreter of .venv."""
    import sysconfig

    exe = shutil.which(python)
    if exe is None:
        raise SystemExit(f"--python {python}: no such interpreter")
    probe = "import sys; print('{}.{}'.format(*sys.version_info))"
    version = subprocess.run([exe, "-c", probe], capture_output=True, text=True).stdout.strip()
    ours = "{}.{}".format(*sys.version_info)
    if version != ours:
        raise SystemExit(
            f"--python {python}: Python {version or '?'}, but this environment's packages are "
            f"built for {ours}; give a {ours} interpreter"
        )
    src = Path(__file__).resolve().parent.parent / "src"
    paths = [str(src), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)))
    argv, rest = [], iter(sys.argv[1:])
    for a in rest:
        if a == "--python":
            next(rest, None)  # and its value
        elif not a.startswith("--python="):
            argv.append(a)
    os.execve(exe, [exe, str(Path(__file__).resolve()), *argv], env)


def _maps_libpython() -> bool | None:
    try:
        return "/libpython" in Path("/proc/self/maps").read_text()
    except OSError:
        return None  # not Linux


def interpreter() -> dict:
    """Which Python build ran the measurement (builds differ in speed: see --python)."""
    import platform
    import sysconfig

    return {
        "executable": sys.executable,
        "version": platform.python_version(),
        # the interpreter loaded from a shared libpython (slower calls inside the interpreter
        # unless built with -fno-semantic-interposition), or linked into the executable
        "libpython_shared": _maps_libpython(),
        "config_args": sysconfig.get_config_var("CONFIG_ARGS") or "",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--codebase", type=Path, required=True)
    ap.add_argument("--max-files", type=int, default=0, help="0: every file")
    ap.add_argument(
        "--sample-one-in",
        type=int,
        default=0,
        help="measure on a seeded sample of the tree: every file whose path hashes to 0 mod N "
        "(copied to a temporary directory first; 0: the tree itself)",
    )
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument(
        "--before-src",
        type=Path,
        help="also run the codetune package in this directory (e.g. `git archive` of an "
        "older commit's src/), right after, for a before/after ratio",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the runs, alternating which goes first, and report the median of each "
        "(this VM's speed drifts by 10-20%% between runs: one pair can mislead)",
    )
    ap.add_argument(
        "--python",
        help="run everything (prepare and the baseline) under this interpreter instead, e.g. "
        "an optimized build of the same Python version",
    )
    args = ap.parse_args()
    if args.python:
        reexec_under(args.python)
    sets = args.sets + ([f"max_files={args.max_files}"] if args.max_files else [])
    if args.sample_one_in < 0:
        raise SystemExit("--sample-one-in must be >= 0 (0: no sampling)")
    with tempfile.TemporaryDirectory() as tmp:
        result: dict = {
            "interpreter": interpreter(),
            "load_avg_1m_before": round(os.getloadavg()[0], 1),
        }
        if args.sample_one_in > 1:
            sample = Path(tmp) / "sample"
            result["sampled_files"] = sample_tree(args.codebase, args.sample_one_in, sample, sets)
            args.codebase = sample
        runs: dict[str, list[dict]] = {"prepare": [], "prepare_before": []}
        for r in range(args.rounds):
            order = [("prepare", None), ("prepare_before", args.before_src)]
            if not args.before_src:
                order = order[:1]
            for name, src in order if r % 2 == 0 else order[::-1]:
                runs[name].append(run_prepare(args.codebase, Path(tmp) / name, sets, src))
                shutil.rmtree(Path(tmp) / name)
        for name, got in runs.items():
            if got:  # the median run by wall time; every run listed when there are several
                result[name] = sorted(got, key=lambda x: x["wall_s"])[len(got) // 2]
                if len(got) > 1:
                    result[f"{name}_rounds"] = [(x["wall_s"], x["cpu_s"]) for x in got]
        result["baseline_parse"] = baseline(args.codebase, sets)
        result["load_avg_1m_after"] = round(os.getloadavg()[0], 1)
    p, b = result["prepare"], result["baseline_parse"]
    result["ratio_cpu_vs_baseline"] = round(p["mb_per_cpu_s"] / b["mb_per_cpu_s"], 2)
    if args.before_src:
        q = result["prepare_before"]
        result["speedup_cpu_vs_before"] = round(p["mb_per_cpu_s"] / q["mb_per_cpu_s"], 2)
        result["speedup_wall_vs_before"] = round(p["mb_per_s"] / q["mb_per_s"], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
