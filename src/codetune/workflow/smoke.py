"""SmokeTest: one fixed prompt through the base model and through the adapter.

The check rests on the OpenAI chat payload: the server answers a ``chat.completion`` whose
``model`` field names the model that actually generated (the serving area's contract: the
adapter's name when the adapter answered, the base model's id otherwise). A request for the
adapter answered by anything else is a silent base-model fallback and fails the run.
A Text Generation Inference style request with ``parameters.adapter_id`` checks the second
payload shape (``[{"generated_text": ...}]``).
"""

from __future__ import annotations

import json

from codetune.prompts import user_prompt
from codetune.workflow.aws import call
from codetune.workflow.errors import SmokeTestFailed

# The serving contract (codetune.serve): the model name "base" always means the base model
# with no adapter. A request naming no model is answered by the endpoint's default, which on
# a one-adapter endpoint is that adapter — so the base is asked for by name.
BASE_MODEL_NAME = "base"
SMOKE_CODE = 'def add(a, b):\n    """Return the sum of a and b."""\n'
MAX_TOKENS = 48


def chat_payload(model: str | None) -> dict:
    """The OpenAI chat request for the fixed prompt (``model`` None = the base model)."""
    body = {
        "messages": [{"role": "user", "content": user_prompt("complete", SMOKE_CODE, "smoke.py")}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "stream": False,
    }
    if model is not None:
        body["model"] = model
    return body


def tgi_payload(adapter: str) -> dict:
    """The TGI-style request for the fixed prompt through ``adapter``."""
    return {
        "inputs": user_prompt("complete", SMOKE_CODE, "smoke.py"),
        "parameters": {"max_new_tokens": MAX_TOKENS, "temperature": 0.0, "adapter_id": adapter},
    }


def _invoke(runtime, endpoint: str, body: dict, what: str):
    resp = call(
        "sagemaker-runtime:InvokeEndpoint",
        runtime.invoke_endpoint,
        EndpointName=endpoint,
        ContentType="application/json",
        Accept="application/json",
        Body=json.dumps(body).encode("utf-8"),
    )
    raw = resp["Body"].read()
    try:
        return json.loads(raw)
    except ValueError as e:
        raise SmokeTestFailed(
            f"{what}: endpoint {endpoint} answered non-JSON: {raw[:200]!r}"
        ) from e


def check_chat(answer, what: str) -> tuple[str, str]:
    """(model, content) of a chat.completion; raises SmokeTestFailed naming what is wrong."""
    if not isinstance(answer, dict) or answer.get("object") != "chat.completion":
        raise SmokeTestFailed(f"{what}: expected a chat.completion object, got {str(answer)[:200]}")
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        raise SmokeTestFailed(f"{what}: chat.completion has no choices")
    content = (
        (choices[0].get("message") or {}).get("content") if isinstance(choices[0], dict) else None
    )
    if not isinstance(content, str) or not content.strip():
        raise SmokeTestFailed(f"{what}: choices[0].message.content is empty")
    model = answer.get("model")
    if not isinstance(model, str) or not model:
        raise SmokeTestFailed(f"{what}: chat.completion has no 'model' field naming who answered")
    return model, content


def smoke_test(request, runtime) -> dict:
    """Invoke the endpoint through base and adapter; return what answered.

    Returns ``{"endpointName", "adapterName", "baseModel", "adapterModel", "adapterSample"}``.
    Raises ``SmokeTestFailed`` on a wrong shape or a base-model fallback.
    """
    endpoint = request.deployment.endpoint_name
    adapter = request.deployment.adapter_name
    base_model, _ = check_chat(
        _invoke(runtime, endpoint, chat_payload(BASE_MODEL_NAME), "base"), "base"
    )
    if base_model == adapter:
        raise SmokeTestFailed(
            f"base: a request without an adapter was answered by adapter {adapter!r}; "
            "the server must serve the base model when no adapter is named"
        )
    adapter_model, sample = check_chat(
        _invoke(runtime, endpoint, chat_payload(adapter), "adapter"), "adapter"
    )
    if adapter_model != adapter:
        raise SmokeTestFailed(
            f"adapter: asked for adapter {adapter!r} but {adapter_model!r} answered — a silent "
            f"fallback to the base model; check that the endpoint's model data holds the adapter "
            f"and that the server registered it under {adapter!r}"
        )
    tgi = _invoke(runtime, endpoint, tgi_payload(adapter), "adapter (TGI)")
    if not (
        isinstance(tgi, list)
        and tgi
        and isinstance(tgi[0], dict)
        and isinstance(tgi[0].get("generated_text"), str)
    ):
        raise SmokeTestFailed(
            f'adapter (TGI): expected [{{"generated_text": ...}}], got {str(tgi)[:200]}'
        )
    return {
        "endpointName": endpoint,
        "adapterName": adapter,
        "baseModel": base_model,
        "adapterModel": adapter_model,
        "adapterSample": sample[:200],
    }
