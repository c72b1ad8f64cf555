"""SmokeTest: base and adapter both answer, and a base-model fallback fails the run."""

from __future__ import annotations

import json

import pytest
import requests
from lambda_harness import load_handler, with_request

from codetune.workflow import InvalidEvent, SmokeTestFailed

handler = load_handler("smoke_test")


def _chat(model: str, content: str = "    return a + b\n") -> dict:
    return {
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
    }


def _queue(*bodies) -> None:
    """moto's documented results queue for sagemaker-runtime InvokeEndpoint (in call order)."""
    results = [
        {
            "Body": json.dumps(b),
            "ContentType": "application/json",
            "InvokedProductionVariant": "AllTraffic",
            "CustomAttributes": "",
        }
        for b in bodies
    ]
    resp = requests.post(
        "http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results",
        json={"results": results},
    )
    assert resp.status_code == 201


def test_adapter_and_base_answer(aws, request_doc, context):
    # guards: the success path: base answers as base, adapter answers under its own name
    adapter = request_doc["deployment"]["adapterName"]
    _queue(_chat("Qwen/Qwen2.5-Coder-1.5B-Instruct"), _chat(adapter), [{"generated_text": "x"}])
    out = handler.lambda_handler(with_request("smoke_test", request_doc), context)
    assert out["adapterModel"] == adapter and out["baseModel"].startswith("Qwen/")


def test_base_model_fallback_fails(aws, request_doc, context):
    # guards: an adapter request answered by the base model is caught, with a clear cause
    base = "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    _queue(_chat(base), _chat(base), [{"generated_text": "x"}])
    with pytest.raises(SmokeTestFailed, match="silent fallback to the base model"):
        handler.lambda_handler(with_request("smoke_test", request_doc), context)


def test_wrong_shape_fails(aws, request_doc, context):
    # guards: a non-chat answer (e.g. an error body) is reported with what was expected
    _queue({"error": "model not loaded"})
    with pytest.raises(SmokeTestFailed, match="expected a chat.completion"):
        handler.lambda_handler(with_request("smoke_test", request_doc), context)


def test_tgi_shape_is_checked(aws, request_doc, context):
    # guards: the TGI payload through parameters.adapter_id must return [{"generated_text"}]
    adapter = request_doc["deployment"]["adapterName"]
    _queue(_chat("base"), _chat(adapter), {"generated_text": "not a list"})
    with pytest.raises(SmokeTestFailed, match="TGI"):
        handler.lambda_handler(with_request("smoke_test", request_doc), context)


def test_event_without_request_is_invalid_event(aws, context):
    # guards: malformed event names the field
    with pytest.raises(InvalidEvent, match=r"event\.request is missing"):
        handler.lambda_handler({}, context)
