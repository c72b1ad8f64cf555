"""QualityGate handler: reads report.json from S3 and returns decide()'s verdict."""

from __future__ import annotations

import pytest
from lambda_harness import event, load_handler, put_json, with_request

from codetune.workflow import InputNotFound, InvalidEvent, InvalidReport

handler = load_handler("quality_gate")


def test_report_passes_and_fails_by_thresholds(aws, request_doc, context):
    # guards: the decision is decide(report, input thresholds): same report, stricter input fails
    put_json(request_doc["paths"]["report"], event("report"))
    out = handler.lambda_handler(with_request("quality_gate", request_doc), context)
    assert out["passed"] is True and out["reportUri"] == request_doc["paths"]["report"]
    assert out["metrics"]["bugfix"]["candidate"]["exact_fix"] == 0.30
    request_doc["evaluation"]["thresholds"] = {"min_bugfix_gain": 0.5}
    out = handler.lambda_handler(with_request("quality_gate", request_doc), context)
    assert out["passed"] is False and any("0.5" in r for r in out["reasons"])


def test_missing_report_is_input_not_found(aws, request_doc, context):
    # guards: no report -> typed terminal error naming the URI
    with pytest.raises(InputNotFound, match="report.json does not exist"):
        handler.lambda_handler(with_request("quality_gate", request_doc), context)


def test_report_with_wrong_shape_is_invalid_report(aws, request_doc, context):
    # guards: a report not following schemas/report.schema.json is refused, not half-read
    bad = event("report")
    bad["suites"]["bugfix"]["candidate"]["exact_fix"] = 3.0
    put_json(request_doc["paths"]["report"], bad)
    with pytest.raises(InvalidReport, match="exact_fix"):
        handler.lambda_handler(with_request("quality_gate", request_doc), context)


def test_event_with_broken_request_is_invalid_event(aws, request_doc, context):
    # guards: the request in the event is checked against run-request.schema.json
    del request_doc["paths"]
    with pytest.raises(InvalidEvent, match="'paths' is a required property"):
        handler.lambda_handler(with_request("quality_gate", request_doc), context)
