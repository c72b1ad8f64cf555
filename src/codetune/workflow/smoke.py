"""SmokeTest: one fixed prompt through the base model and through the adapter.

The check rests on the OpenAI chat payload: the server answers a ``chat.completion`` whose
``model`` field names the model that actually generated (the serving area's contract: the
adapter's name when the adapter answered, the base model's id otherwise). A request for the
adapter answered by anything else is a silent base-model fallback and fails the run.
A Text Generation Inference style request with ``parameters.adapter_id`` checks the second
payload shape (``[{"generated_text": ...}]``).

With inference components (``deployment.mode`` ``components``) each request addresses a
component (``InferenceComponentName``): the base component with the model named ``base``,
the adapter component with no model named at all — SageMaker tells the container which
adapter in the ``X-Amzn-SageMaker-Adapter-Identifier`` header, under the identifier it
registered the adapter with (``POST /adapters``), which need not be the adapter's name. The
answer must then name an adapter, not the base model.
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


def tgi_component_payload() -> dict:
    """The TGI-style request for an adapter component (the header names the adapter)."""
    return {
        "inputs": user_prompt("complete", SMOKE_CODE, "smoke.py"),
        "parameters": {"max_new_tokens": MAX_TOKENS, "temperature": 0.0},
    }


def _invoke(runtime, endpoint: str, body: dict, what: str, component: str | None = None):
    kw = {"InferenceComponentName": component} if component else {}
    resp = call(
        "sagemaker-runtime:InvokeEndpoint",
        runtime.invoke_endpoint,
        EndpointName=endpoint,
        ContentType="application/json",
        Accept="application/json",
        Body=json.dumps(body).encode("utf-8"),
        **kw,
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
    if request.deployment.mode == "components":
        return smoke_test_components(request, runtime)
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


def smoke_test_components(request, runtime) -> dict:
    """Invoke the base component and the run's adapter component; return what answered.

    Returns ``{"endpointName", "adapterName", "baseComponent", "adapterComponent",
    "baseModel", "adapterModel", "adapterSample"}``. Raises ``SmokeTestFailed`` on a wrong
    shape, or when the adapter component was answered by the base model.
    """
    dep = request.deployment
    endpoint, base_ic, adapter_ic = dep.endpoint_name, dep.base_component, dep.adapter_component
    base_model, _ = check_chat(
        _invoke(runtime, endpoint, chat_payload(BASE_MODEL_NAME), "base", base_ic), "base"
    )
    adapter_model, sample = check_chat(
        _invoke(runtime, endpoint, chat_payload(None), "adapter", adapter_ic), "adapter"
    )
    if adapter_model in (BASE_MODEL_NAME, base_model):
        raise SmokeTestFailed(
            f"adapter: component {adapter_ic} was answered by {adapter_model!r} — a silent "
            "fallback to the base model; check that SageMaker registered the adapter with the "
            "container (POST /adapters in the base component's log) and sends its identifier "
            "in X-Amzn-SageMaker-Adapter-Identifier"
        )
    tgi = _invoke(runtime, endpoint, tgi_component_payload(), "adapter (TGI)", adapter_ic)
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
        "adapterName": dep.adapter_name,
        "baseComponent": base_ic,
        "adapterComponent": adapter_ic,
        "baseModel": base_model,
        "adapterModel": adapter_model,
        "adapterSample": sample[:200],
    }
