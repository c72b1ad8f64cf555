"""``codetune run``: the whole workflow, on the deployed stack or (``--local``) on this machine.

    codetune run --input examples/run-input.json                 # AWS ($CODETUNE_STACK)
    codetune run --input examples/run-input.json --no-wait
    codetune run --local --input examples/run-input.local.json
    codetune run --local --input examples/run-input.local.json --validate-only
    codetune run --local --input my-run.json --out runs/ --force TrainAdapter --no-serve

The input is the very JSON that Step Functions accepts; on AWS it is validated here first by
the code of the stack's ValidateRequest (codetune.aws_run), then the execution is started and
followed until it ends (Ctrl-C stops following, not the execution). Exit status: 0 success,
2 invalid input (every violation printed), 1 a step failed (the step is named).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from codetune.errors import CodetuneError
    from codetune.local import (
        STEP_FUNCS,
        LocalRun,
        StepFailed,
        execute,
        print_summary,
        stop_server,
        validate,
    )

    if not args.local:
        from codetune.aws_run import run_on_aws

        for flag, given in (("--force", args.force), ("--no-serve", not args.serve)):
            if given:
                raise CodetuneError(f"{flag} applies to --local runs only")
        return run_on_aws(
            Path(args.input),
            run_name=args.run_name,
            wait=args.wait,
            validate_only=args.validate_only,
            poll_s=args.poll_seconds,
        )
    out = Path(args.out).resolve()
    if args.validate_only:
        request = validate(Path(args.input), out, args.run_name)
        print(json.dumps(request.to_dict(), indent=2, sort_keys=True))
        return 0
    if args.force and args.force not in STEP_FUNCS:
        raise CodetuneError(f"--force {args.force}: not a step; steps: {', '.join(STEP_FUNCS)}")
    lr = LocalRun(
        input_path=Path(args.input),
        out=out,
        run_name=args.run_name,
        serve=args.serve,
        port=args.port,
        force_from=args.force,
    )
    try:
        summary = execute(lr)
        print_summary(lr, summary)
        keep = args.keep_serving if args.keep_serving is not None else sys.stdin.isatty()
        if lr.server is not None and keep:
            print("\nServing until Ctrl-C ...", flush=True)
            while lr.server.poll() is None:
                time.sleep(1)
        return 0
    except StepFailed as e:
        print(f"codetune run: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        stop_server(lr)


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run",
        help="run the whole workflow on the deployed stack, or --local",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--local", action="store_true", help="run every step on this machine")
    p.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on AWS: follow the execution to its end (default), or only start it",
    )
    p.add_argument(
        "--poll-seconds",
        type=float,
        default=5.0,
        help="on AWS: seconds between reads of the execution history (default 5)",
    )
    p.add_argument("--input", required=True, help="run input JSON (schemas/run-input.schema.json)")
    p.add_argument(
        "--out", default="runs", help="artifact root, the local 'bucket' (default: ./runs)"
    )
    p.add_argument(
        "--run-name",
        default=None,
        help="execution name (default: --local derives it from the input file's content, so "
        "a re-run of the same input reuses completed steps; on AWS <input>-<UTC time>)",
    )
    p.add_argument(
        "--serve",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="deploy the adapter on a local server and smoke-test it (default: on)",
    )
    p.add_argument(
        "--keep-serving",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the server up after the run until Ctrl-C (default: when run from a terminal)",
    )
    p.add_argument("--port", type=int, default=8080, help="local server port (default 8080)")
    p.add_argument(
        "--validate-only",
        action="store_true",
        help="print the resolved request and exit 0, or every violation and exit 2",
    )
    p.add_argument(
        "--force",
        metavar="STEP",
        default=None,
        help="re-run from STEP on (e.g. TrainAdapter), ignoring cached results",
    )
    p.set_defaults(func=run)
    return p
