"""Build a verified bugfix/completion dataset from a codebase (the PrepareDataset step).

Locally::

    codetune prepare --codebase ~/src/myproject --out data/myproject
    codetune prepare --codebase /usr/lib/python3.11 --out /tmp/ds \\
        --config training_image/prepare.yaml --set max_examples_per_task=200

As the SageMaker Processing job runs it (no paths: the Processing contract's defaults)::

    codetune prepare                # reads /opt/ml/processing/input/code
                                    # writes /opt/ml/processing/output/dataset

Scale-out: with N processing instances and ``ShardedByS3Key`` each instance gets a part of
the files and prepares it into ``<output>/<host>/`` (its host name from the job's resource
config; ``--shard-index/--num-shards`` splits one big local tree the same way); then merge,
which removes duplicates across shards (a directory of shard directories works too)::

    codetune prepare --merge shards/0 shards/1 --out dataset
    codetune prepare --merge /opt/ml/processing/input/shards     # the MergeDataset job

Outputs (``train.jsonl``, ``validation.jsonl``, ``test.jsonl``, ``manifest.json``) appear only
when complete. Exit status 2 with a message on bad input (missing or empty codebase, no
matching file, nothing parsable); nothing is published then.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``prepare`` subcommand."""
    p = subparsers.add_parser(
        "prepare",
        help="build a verified bugfix/completion dataset from a codebase",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--codebase", type=Path, help="source tree (default: SageMaker input 'code')")
    p.add_argument("--out", type=Path, help="dataset directory (default: SageMaker output)")
    p.add_argument("--config", type=Path, help="YAML config (see training_image/prepare.yaml)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set max_files=100 (repeatable)",
    )  # fmt: skip
    p.add_argument("--shard-index", type=int, default=0, help="this shard (0-based)")
    p.add_argument("--num-shards", type=int, default=1, help="number of shards")
    p.add_argument(
        "--merge", nargs="+", type=Path, metavar="SHARD_DIR",
        help="merge prepared shard directories into --out instead of preparing",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run prepare (or merge) and print a summary table."""
    from codetune.config import load_config
    from codetune.data.config import PrepareConfig
    from codetune.data.pipeline import NothingToPrepare, merge, prepare
    from codetune.jobenv import PREPARE_CONFIG, overrides_env
    from codetune.paths import SageMakerPaths

    # In a Processing job the run's prepare config arrives in the environment; flags win.
    cfg = load_config(
        PrepareConfig, args.config, overrides_env(PREPARE_CONFIG) + list(args.overrides or [])
    )
    sm = SageMakerPaths.from_env()
    out = args.out or sm.processing_output("dataset")
    if args.merge:
        shards = shard_dirs(args.merge)
        manifest = merge(shards, out, cfg)
        print(f"merged {len(shards)} shards into {out}")
        for k, v in manifest["counts"]["task_split"].items():
            print(f"  {k:<22} {v:>8}")
        return 0
    codebase = args.codebase or sm.processing_input("code")
    hosts = sm.processing_hosts()
    sharded = args.out is None and hosts is not None and len(hosts[1]) > 1
    if sharded:
        # A multi-instance job: every instance uploads to the same S3 prefix, so each
        # writes its shard under its own host name, for MergeDataset to find.
        out = out / hosts[0]
    try:
        manifest = prepare(
            cfg,
            codebase,
            out,
            shard_index=args.shard_index,
            num_shards=args.num_shards,
            progress=not args.no_progress,
        )
    except NothingToPrepare as e:
        if not sharded:
            raise
        # ShardedByS3Key gives each object to one instance: with few files (or files of
        # other languages) an instance's part can hold nothing to prepare. Its shard is
        # then absent; MergeDataset merges the others and fails if no instance wrote one.
        print(f"{hosts[0]}: no shard written; this instance's part of the codebase: {e}")
        return 0
    print(summary_table(manifest, out))
    sys.stdout.flush()
    return 0


def shard_dirs(paths: list[Path]) -> list[Path]:
    """Shard directories to merge: each of ``paths`` that holds a ``manifest.json``, and the
    subdirectories (sorted by name) that hold one of each path that does not."""
    from codetune.errors import CodetuneError

    out = []
    for p in paths:
        if (p / "manifest.json").is_file():
            out.append(p)
            continue
        subs = (
            sorted(d for d in p.iterdir() if (d / "manifest.json").is_file()) if p.is_dir() else []
        )
        if not subs:
            raise CodetuneError(
                f"--merge {p}: neither a prepared dataset nor a directory of them "
                "(no manifest.json in it or in its subdirectories)"
            )
        out += subs
    return out


def summary_table(manifest: dict, out: Path) -> str:
    """A short human-readable summary of a prepare manifest."""
    f = manifest["files"]
    c = manifest["counts"]
    secs = manifest["durations"].get("total_s") or manifest["durations"]["process_s"]
    rows = [
        f"dataset: {out}",
        f"files: {f['processed']} processed, {f['used']} used, {f['bytes'] / 1e6:.1f} MB "
        f"in {secs:.1f} s ({f['bytes'] / 1e6 / max(secs, 1e-9):.2f} MB/s)",
        f"{'task':<10} {'train':>8} {'validation':>11} {'test':>8}",
    ]
    for task in ("bugfix", "complete"):
        vals = [c["task_split"].get(f"{task}/{s}", 0) for s in ("train", "validation", "test")]
        rows.append(f"{task:<10} {vals[0]:>8} {vals[1]:>11} {vals[2]:>8}")
    if c.get("language_task"):
        rows.append("languages: " + ", ".join(f"{k}={v}" for k, v in c["language_task"].items()))
    if c["mutation"]:
        rows.append("mutations: " + ", ".join(f"{k}={v}" for k, v in c["mutation"].items()))
    if f["skipped"]:
        rows.append("skipped files: " + ", ".join(f"{k}={v}" for k, v in f["skipped"].items()))
    fs = manifest["functions"]["skipped"]
    if fs:
        rows.append("skipped functions: " + ", ".join(f"{k}={v}" for k, v in fs.items()))
    return "\n".join(rows)
