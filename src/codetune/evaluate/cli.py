"""``codetune evaluate``: base model vs base + adapter on executed tests, and the quality gate.

Evaluate an adapter (writes report.json, report.html, *.png, samples.jsonl; prints a table)::

    codetune evaluate --adapter out/adapter --data out/dataset --out out/eval \\
        --suites humaneval,bugfix,general --humaneval-limit 20 --bugfix-limit 100

The settings are one ``EvalConfig`` (:mod:`codetune.evaluate.config`): its defaults, then a
YAML file (``--config``), then the flags, then ``--set KEY=VALUE`` overrides; unknown keys and
invalid values fail before anything loads. A SageMaker Processing job gets the run's settings
as ``--set`` container arguments (ValidateRequest's ``evaluation.arguments``, validated there
by the same loader), the run id and base model in its environment::

    codetune evaluate --adapter out/adapter --data out/dataset --out out/eval \\
        --set 'limit={"bugfix": 93}' --set suites=bugfix,general

Also evaluate the SFT-only adapter that a run with a GRPO stage keeps in ``<adapter>/sft/``
(or any other adapter): the report gets a column per extra side; the gate still compares
base and candidate::

    codetune evaluate --adapter out/adapter --data out/dataset --out out/eval --compare-sft
    codetune evaluate ... --compare-adapter older=runs/old/adapter

Score completions produced by anything else (writes results.jsonl and summary.json)::

    codetune evaluate score --suite humaneval --completions answers.jsonl --out out/score

In a SageMaker Processing job every path has a default under ``/opt/ml/processing``
(``$CODETUNE_SM_ROOT`` moves the root): the adapter (a directory or model.tar.gz) from
``input/adapter``, the dataset from ``input/dataset``, an optional base model from
``input/model``, output to ``output/eval``.

Generated code runs only inside the sandbox: rlimits, a clean environment and a throwaway
uid always; bubblewrap (namespaces), a seccomp filter and Landlock wherever they work. The
command refuses to run code before anything else starts when a layer of the minimum
(``--sandbox-require``, ``$CODETUNE_SANDBOX_REQUIRE``, default ``seccomp``) does not work
here, unless ``--allow-unsandboxed`` is given; report.json records the layers used::

    codetune evaluate ... --sandbox-require seccomp,landlock
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def _sm_default(kind: str, name: str) -> Path | None:
    from codetune.paths import SageMakerPaths

    sm = SageMakerPaths.from_env()
    p = sm.processing_input(name) if kind == "input" else sm.processing_output(name)
    return p if p.exists() else None


def _suites(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _thresholds(items: list[str] | None) -> dict:
    from codetune.errors import CodetuneError

    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise CodetuneError(f"--threshold takes NAME=NUMBER, got {item!r}")
    return out


def _compare(items: list[str] | None) -> dict:
    from codetune.errors import CodetuneError

    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise CodetuneError(f"--compare-adapter takes NAME=DIR, got {item!r}")
        out[name.strip()] = path.strip()
    return out


def eval_config(args: argparse.Namespace):
    """The command's ``EvalConfig``: its defaults <- ``--config`` YAML <- the Processing job's
    environment (run id, base model) <- the flags <- ``--set`` overrides, validated by the
    config loader. Raises ConfigError naming the offending key."""
    from codetune.config import load_config
    from codetune.evaluate.config import EvalConfig

    overrides = _env_overrides() + _flag_overrides(args) + list(args.overrides or [])
    return load_config(EvalConfig, args.config, overrides)


def _env_overrides() -> list[str]:
    """In a Processing job the run id and the base model arrive in the environment (an
    ``s3://`` base model arrives as the ``model`` input instead)."""
    from codetune import jobenv

    out = {}
    if os.environ.get(jobenv.RUN_ID):
        out["run_id"] = os.environ[jobenv.RUN_ID]
    env_base = os.environ.get(jobenv.BASE_MODEL, "")
    if env_base and not env_base.startswith("s3://"):
        out["base_model"] = env_base
    else:
        sm_model = _sm_default("input", "model")
        if sm_model is not None and (sm_model / "config.json").is_file():
            out["base_model"] = str(sm_model)
    return [f"{k}={json.dumps(v)}" for k, v in out.items()]


# flag dest -> EvalConfig key, for the flags that set one key as they are
_FLAG_KEYS = {
    "base_model": "base_model",
    "samples": "samples",
    "temperature": "temperature",
    "max_new_tokens": "max_new_tokens",
    "bugfix_max_new_tokens": "bugfix_max_new_tokens",
    "batch_size": "batch_size",
    "draft_tokens": "draft_tokens",
    "quantization": "quantization",
    "run_id": "run_id",
    "seed": "seed",
    "custom_suite": "custom_suite",
    "timeout": "timeout_s",
    "workers": "workers",
    "sandbox_require": "sandbox_require",
}


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    """The flags given, as ``key=<json>`` overrides of the config."""
    out: dict = {k: getattr(args, dest) for dest, k in _FLAG_KEYS.items()}
    out = {k: v for k, v in out.items() if v is not None}
    if args.suites:
        out["suites"] = _suites(args.suites)
    if args.humaneval_tasks:
        out["humaneval_tasks"] = _suites(args.humaneval_tasks)
    if args.humaneval_limit or args.bugfix_limit:
        out["limit"] = {
            "humaneval": args.humaneval_limit or args.limit,
            "bugfix": args.bugfix_limit or args.limit,
            "custom": args.limit,
        }
    elif args.limit is not None:
        out["limit"] = args.limit
    if args.threshold:
        out["thresholds"] = _thresholds(args.threshold)
    if args.compare_adapter:
        out["compare_adapters"] = _compare(args.compare_adapter)
    for flag in ("compare_sft", "allow_unsandboxed"):
        if getattr(args, flag):
            out[flag] = True
    return [f"{k}={json.dumps(v)}" for k, v in out.items()]


def _run(args: argparse.Namespace) -> int:
    from codetune.errors import CodetuneError
    from codetune.evaluate.runner import run_evaluation

    adapter = args.adapter or _sm_default("input", "adapter")
    if adapter is None:
        raise CodetuneError("pass --adapter DIR (or a model.tar.gz)")
    config = eval_config(args)
    data = args.data or _sm_default("input", "dataset")
    out = args.out
    if out is None:
        from codetune.paths import SageMakerPaths

        out = SageMakerPaths.from_env().processing_output("eval")
        if not out.parent.exists():
            raise CodetuneError("pass --out DIR (no SageMaker processing output here)")
    report = run_evaluation(adapter, data, out, config, print_summary=True)
    print(f"report: {Path(out) / 'report.json'}")
    # The gate's verdict is data (report.gate), not a failure of this command.
    return 0 if report else 1


def _score(args: argparse.Namespace) -> int:
    from codetune.evaluate.config import EvalConfig
    from codetune.evaluate.runner import score_completions

    defaults = EvalConfig()
    summary = score_completions(
        args.suite,
        args.completions,
        args.score_out,
        custom_suite=args.custom_suite,
        timeout_s=defaults.timeout_s if args.timeout is None else args.timeout,
        workers=defaults.workers if args.workers is None else args.workers,
        allow_unsandboxed=args.allow_unsandboxed,
        sandbox_require=_sandbox_require(args),
    )
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def _sandbox_require(args: argparse.Namespace) -> str | None:
    from codetune.errors import CodetuneError

    if args.allow_unsandboxed and args.sandbox_require:
        raise CodetuneError(
            "--allow-unsandboxed drops the sandbox minimum; it contradicts --sandbox-require "
            f"{args.sandbox_require}: pass one of them"
        )
    return args.sandbox_require


def _sandbox_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, help="seconds per program (wall clock; default 6)")
    p.add_argument("--workers", type=int, help="programs executed in parallel (default 2)")
    p.add_argument(
        "--allow-unsandboxed",
        action="store_true",
        help="execute generated code even when a required sandbox layer does not work here: "
        "the layers that do work still apply (none: only rlimits, a clean environment and, "
        "as root, a throwaway uid protect this machine)",
    )
    p.add_argument(
        "--sandbox-require",
        metavar="LAYERS",
        help="comma list of sandbox layers that must work, else nothing runs: bwrap, seccomp, "
        "landlock (default: $CODETUNE_SANDBOX_REQUIRE, else seccomp)",
    )
    p.add_argument("--custom-suite", help="JSONL of {task_id, prompt, test, entry_point?}")


def register(sub) -> argparse.ArgumentParser:
    """Add ``evaluate`` (and its ``score`` action) to the ``codetune`` parser."""
    p = sub.add_parser(
        "evaluate",
        help="base vs fine-tuned on executed tests",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--adapter", help="adapter dir or model.tar.gz (SageMaker: input/adapter)")
    p.add_argument("--config", type=Path, help="YAML config (see training_image/evaluate.yaml)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set limit.bugfix=93 (repeatable; wins over the "
        "flags below, which are shorthands for keys)",
    )  # fmt: skip
    p.add_argument("--data", help="prepared dataset dir with test.jsonl (SageMaker: input/dataset)")
    p.add_argument("--out", help="output dir (SageMaker: output/eval)")
    p.add_argument("--base-model", help="override the base model the adapter names")
    p.add_argument(
        "--suites",
        default=None,
        help="comma list: humaneval,bugfix,custom,general (default: humaneval,bugfix,general; "
        "general = the forgetting guard, per-token loss on held-out standard-library code)",
    )
    p.add_argument("--limit", type=int, help="at most N problems per suite (config: limit)")
    p.add_argument("--humaneval-limit", type=int, help="override --limit for HumanEval")
    p.add_argument("--bugfix-limit", type=int, help="override --limit for bugfix")
    p.add_argument("--samples", type=int, help="samples per problem (pass@k; default 1)")
    p.add_argument("--temperature", type=float, help="0 = greedy (the default)")
    p.add_argument("--max-new-tokens", type=int, help="HumanEval answer cap (default 320)")
    p.add_argument(
        "--bugfix-max-new-tokens",
        type=int,
        help="ceiling of the bugfix cap (reference length * 1.25 + 24; default 512)",
    )
    p.add_argument("--humaneval-tasks", help="comma list of HumanEval task ids to run")
    p.add_argument(
        "--batch-size",
        type=int,
        help="rows decoded together (continuous batching: a finished row's slot is refilled "
        "at once; default 32)",
    )
    p.add_argument(
        "--draft-tokens",
        type=int,
        help="prompt-lookup drafts verified per step for greedy bugfix answers (the same "
        "answers in fewer forwards, e.g. 16; 0 = off, the default: on 2 CPU cores no faster "
        "at the default batch, see benchmarks/RESULTS.md)",
    )
    p.add_argument("--quantization", choices=("none", "4bit"), help="default none")
    p.add_argument("--run-id", help="report runId (default: $CODETUNE_RUN_ID, else random)")
    p.add_argument("--seed", type=int, help="sampling and stratified-draw seed (default 0)")
    p.add_argument(
        "--threshold",
        action="append",
        metavar="NAME=VALUE",
        help="quality gate threshold override (repeatable), e.g. min_bugfix_gain=0.05",
    )
    p.add_argument(
        "--compare-sft",
        action="store_true",
        help="also evaluate the SFT-only adapter in the adapter's sft/ subdirectory (kept by "
        "training with rl.enabled); reported as side 'sft', not used by the gate",
    )
    p.add_argument(
        "--compare-adapter",
        action="append",
        metavar="NAME=DIR",
        help="also evaluate this adapter (dir or model.tar.gz) as side NAME (repeatable)",
    )
    _sandbox_args(p)
    p.set_defaults(func=_run)

    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = False
    s = actions.add_parser(
        "score",
        help="score completions produced elsewhere",
        description="Execute completions (JSONL lines {task_id, completion}; several per task "
        "allowed) against a suite; write results.jsonl and summary.json (pass@k).",
    )
    s.add_argument("--suite", default="humaneval", choices=("humaneval", "custom"))
    s.add_argument("--completions", required=True, help="JSONL of {task_id, completion}")
    s.add_argument("--out", dest="score_out", required=True, help="output directory")
    _sandbox_args(s)
    s.set_defaults(func=_score)
    return p
