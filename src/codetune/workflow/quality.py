"""QualityGate: read report.json, apply ``codetune.evaluate.gate.decide``, return the decision."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from codetune.workflow.errors import InvalidReport
from codetune.workflow.schemas import REPORT, has_schema, load_schema
from codetune.workflow.storage import read_json


def _decide(report: dict, thresholds: dict) -> tuple[bool, list[str]]:
    # Lazy: the gate is owned by the evaluation area and must stay importable without torch.
    from codetune.evaluate.gate import decide

    result = decide(report, thresholds)
    if isinstance(result, dict):
        return bool(result["passed"]), [str(r) for r in result.get("reasons", [])]
    if isinstance(result, tuple):
        passed, reasons = result
        return bool(passed), [str(r) for r in reasons]
    return bool(result.passed), [str(r) for r in result.reasons]


def check_report(report: Any, uri: str) -> dict:
    """Return ``report`` if it is a report (schema-valid when the schema exists); else raise."""
    if not isinstance(report, dict) or not isinstance(report.get("suites"), dict):
        raise InvalidReport(f"{uri}: not an evaluation report (expected an object with 'suites')")
    if has_schema(REPORT):
        errors = list(Draft202012Validator(load_schema(REPORT)).iter_errors(report))
        if errors:
            where = "; ".join(
                f"$.{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
            )
            raise InvalidReport(f"{uri} does not follow schemas/{REPORT}: {where}")
    return report


def summarize(report: dict) -> dict:
    """Base vs candidate metrics per suite, for the execution output and notifications."""
    return {
        name: {"n": s.get("n"), "base": s.get("base", {}), "candidate": s.get("candidate", {})}
        for name, s in report["suites"].items()
        if isinstance(s, dict)
    }


def run_quality_gate(request, report_uri: str, s3=None) -> dict:
    """The gate decision for the run's report.

    Returns ``{"passed", "reasons", "reportUri", "metrics"}`` (the Choice state branches on
    ``passed``). Raises ``InputNotFound`` (no report), ``InvalidReport`` (not JSON / wrong
    schema), ``RetryableError`` / ``AwsRequestFailed`` for S3 failures.
    """
    try:
        report = read_json(report_uri, s3)
    except ValueError as e:
        raise InvalidReport(f"{report_uri} is not JSON: {e}") from e
    check_report(report, report_uri)
    passed, reasons = _decide(report, dict(request.evaluation.thresholds))
    return {
        "passed": passed,
        "reasons": reasons,
        "reportUri": report_uri,
        "metrics": summarize(report),
    }
