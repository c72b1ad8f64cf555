"""The serving contract over real HTTP, once per engine (transformers in-process, vLLM's CPU
build as a subprocess): payload styles, adapter choice and strict routing, streaming,
adapter registration, bad requests, logs. One server per engine for the whole module."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from conftest import InProcessServer, vllm_server

from codetune.serve import ServeConfig

pytestmark = pytest.mark.slow

HEADER = "X-Amzn-SageMaker-Adapter-Identifier"
PROMPT = "def add(a, b):\n    return"
MAX_BODY = 64 * 1024
SETTINGS = {  # the same server settings for both engines
    "max_new_tokens_cap": 64,
    "default_max_new_tokens": 4,
    "max_batch_size": 8,
    "max_body_bytes": MAX_BODY,
}


@pytest.fixture(scope="module", params=["transformers", "vllm"])
def server(request, random_adapter, embedded_model_dir, repo_root, tmp_path_factory):
    if request.param == "transformers":
        # fp32 as vLLM's CPU build runs, so one reference holds for both engines on any CPU
        cfg = ServeConfig.from_env(
            adapters={"rand": str(random_adapter)}, torch_threads=1, dtype="float32", **SETTINGS
        )
        with InProcessServer(cfg) as srv:
            yield srv
        return
    argv = ["--adapter", f"rand={random_adapter}", "--base-model", str(embedded_model_dir)]
    for k, v in {**SETTINGS, "engine": "vllm", "vllm_kv_cache_bytes": 256 * 2**20}.items():
        argv += ["--set", f"{k}={v}"]
    with vllm_server(repo_root, tmp_path_factory.mktemp("vllm"), argv) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120, trust_env=False) as c:
        yield c


def tgi(client, params=None, headers=None, inputs=PROMPT):
    body = {"inputs": inputs, "parameters": {"max_new_tokens": 4, **(params or {})}}
    return client.post("/invocations", json=body, headers=headers or {})


def chat(client, **kw):
    body = {"messages": [{"role": "user", "content": "Write add(a, b)."}], "max_tokens": 4, **kw}
    return client.post("/invocations", json=body)


@pytest.fixture(scope="module")
def answers(client):
    """Greedy answers of base and adapter for PROMPT (reference for the choice tests)."""
    base = tgi(client, {"adapter_id": "base"})
    rand = tgi(client, {"adapter_id": "rand"})
    assert base.status_code == rand.status_code == 200
    return {"base": base.json()[0]["generated_text"], "rand": rand.json()[0]["generated_text"]}


AGREE_PROMPTS = [
    PROMPT,
    "import os\n\ndef list_python_files(path):\n",
    "class Stack:\n    def __init__(self):\n",
    "def fibonacci(n):\n",
]


@pytest.fixture(scope="module")
def reference(random_adapter, embedded_model_dir):
    """Greedy answers of plain ``generation.generate`` (one prompt at a time, this process)."""
    from codetune import generation

    lm = generation.load_model(str(embedded_model_dir), {"rand": str(random_adapter)})
    return {
        (name, prompt): generation.generate(
            lm, [prompt], adapters=None if name == "base" else name, max_new_tokens=16
        )[0].text
        for name in ("base", "rand")
        for prompt in AGREE_PROMPTS
    }


def test_greedy_answers_agree_with_the_reference_implementation(client, reference):
    # Guards: both engines answer what codetune's reference generation answers, token for
    # token, for the base and for the adapter (LoRA maths in vLLM and PEFT can diverge, e.g.
    # vllm#10798; an engine that silently answered with the base would fail the adapter rows).
    diffs = []
    for (name, prompt), want in reference.items():
        got = tgi(client, {"adapter_id": name, "max_new_tokens": 16}, inputs=prompt)
        text = got.json()[0]["generated_text"]
        if text != want:
            diffs.append((name, prompt, want, text))
    assert not diffs, diffs
    assert reference[("rand", PROMPT)] != reference[("base", PROMPT)]


def test_ping_healthy_and_lists_adapters(client):
    # Guards: /ping is 200 once loaded and warmed up, and says which adapters are served.
    r = client.get("/ping")
    assert r.status_code == 200
    assert r.json()["adapters"] == ["rand"]


def test_tgi_payload_defaults_to_the_single_adapter(client, answers):
    # Guards: the TGI response shape, and that a one-adapter server answers with the adapter
    # (not the base) when the request names no model — the response says which answered.
    r = tgi(client)
    assert r.status_code == 200
    assert r.headers["X-Codetune-Model"] == "rand"
    body = r.json()
    assert isinstance(body, list) and set(body[0]) == {"generated_text"}
    assert body[0]["generated_text"] == answers["rand"]
    assert answers["rand"] != answers["base"]  # the adapter really changes answers


def test_chat_payload_returns_chat_completion(client):
    # Guards: the OpenAI chat.completion shape, with model naming the adapter that answered.
    r = chat(client, model="rand")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "rand" == r.headers["X-Codetune-Model"]
    msg = body["choices"][0]["message"]
    assert msg["role"] == "assistant" and isinstance(msg["content"], str)
    assert 0 < body["usage"]["completion_tokens"] <= 4
    assert body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


def test_chat_model_in_body_on_invocations_is_answered_by_that_adapter(client):
    # Guards: an adapter named in the chat body's "model" on /invocations really answers
    # (vLLM's own /invocations overwrites "model" with the absent adapter header and answers
    # with the base): the text is the adapter's — the same as with the header — not the base's.
    rand = chat(client, model="rand").json()["choices"][0]["message"]["content"]
    base = chat(client, model="base").json()["choices"][0]["message"]["content"]
    body = {"messages": [{"role": "user", "content": "Write add(a, b)."}], "max_tokens": 4}
    via_header = client.post("/invocations", json=body, headers={HEADER: "rand"})
    assert via_header.json()["choices"][0]["message"]["content"] == rand != base


@pytest.mark.parametrize(
    "how,expected",
    [
        ({"headers": {HEADER: "base"}}, "base"),
        ({"headers": {HEADER: "rand"}}, "rand"),
        ({"params": {"adapter_id": "base"}}, "base"),
        ({"params": {"adapter_id": "rand"}}, "rand"),
        ({"params": {"adapter_id": "__base__"}}, "base"),
        ({"params": {"adapter_id": "smollm2-135m-instruct"}}, "base"),  # the base model's id
    ],
)
def test_each_way_of_choosing_a_model_answers_from_it(client, answers, how, expected):
    # Guards: header and parameters.adapter_id select the model, and the text is really that
    # model's (greedy answers equal the reference), not just a relabelled default.
    r = tgi(client, how.get("params"), how.get("headers"))
    assert r.status_code == 200, r.text
    assert r.headers["X-Codetune-Model"] == expected
    assert r.json()[0]["generated_text"] == answers[expected]


def test_chat_model_field_selects_base(client):
    # Guards: OpenAI "model" selects the base by name; the response names it.
    r = chat(client, model="base")
    assert r.status_code == 200
    assert r.json()["model"] == "base" == r.headers["X-Codetune-Model"]


def test_unknown_adapter_is_400_listing_known_never_fallback(client):
    # Guards: a typo in the adapter name is an error listing what exists, not a base answer.
    for r in (
        tgi(client, {"adapter_id": "rnad"}),
        tgi(client, headers={HEADER: "rnad"}),
        chat(client, model="rnad"),
    ):
        assert r.status_code == 400
        msg = r.json()["error"]["message"]
        assert "rnad" in msg and "base" in msg and "rand" in msg
        assert "X-Codetune-Model" not in r.headers


def _sse_events(client, body, path="/invocations"):
    events = []
    with client.stream("POST", path, json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        model = r.headers["X-Codetune-Model"]
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[len("data: ") :])
    return model, events


def test_chat_streaming_sends_chunks_then_done(client):
    # Guards: "stream": true gives chat.completion.chunk events (several content chunks for a
    # longer answer), a final finish_reason, and the [DONE] sentinel.
    body = {
        "messages": [{"role": "user", "content": "Count from one to ten in words."}],
        "max_tokens": 9,
        "model": "base",
        "stream": True,
    }
    model, events = _sse_events(client, body)
    assert model == "base"
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "base" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert len([c for c in content if c]) >= 2, "expected the answer in more than one chunk"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_tgi_streaming_via_response_stream_route(client):
    # Guards: the SageMaker response-stream alias streams TGI-style token events whose final
    # event carries the whole generated_text.
    model, events = _sse_events(
        client,
        {"inputs": PROMPT, "parameters": {"max_new_tokens": 6}},
        "/invocations-response-stream",
    )
    assert model == "rand"
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    pieces = "".join(p["token"]["text"] for p in parsed[:-1])
    assert parsed[-1]["generated_text"] == pieces and pieces


def test_stream_sends_each_token_as_it_is_produced_and_equals_the_answer(client):
    # Guards: real streaming — one event per generated token (not chunks of several, which is
    # what re-running prompt + text so far per chunk gives), and the streamed text is exactly
    # the non-streamed answer of the same request.
    params = {"max_new_tokens": 12, "adapter_id": "base"}
    whole = tgi(client, {**params, "details": True}).json()[0]
    _, events = _sse_events(client, {"inputs": PROMPT, "parameters": params, "stream": True})
    parsed = [json.loads(e) for e in events[:-1]]
    tokens = [p["token"]["text"] for p in parsed[:-1]]
    assert "".join(tokens) == whole["generated_text"] == parsed[-1]["generated_text"]
    n = whole["details"]["generated_tokens"]
    assert parsed[-1]["details"]["generated_tokens"] == n
    assert len(tokens) == n, f"{n} tokens arrived in {len(tokens)} events: {tokens}"


def test_stop_sequence_ends_the_answer_before_it_streamed_or_not(client):
    # Guards: a stop sequence ends generation (finish "stop") and never reaches the client,
    # neither in a whole answer nor in a stream (text is held back until it cannot be the
    # start of a stop sequence).
    params = {"max_new_tokens": 20, "adapter_id": "base", "details": True}
    free = tgi(client, params).json()[0]["generated_text"]
    stop = free.strip()[2:5]  # three characters from inside the free answer
    assert len(stop) == 3 and stop in free
    cut = free[: free.find(stop)]
    r = tgi(client, {**params, "stop": [stop]}).json()[0]
    assert r["generated_text"] == cut and r["details"]["finish_reason"] == "stop"
    body = {"inputs": PROMPT, "parameters": {**params, "stop": [stop]}, "stream": True}
    _, events = _sse_events(client, body)
    parsed = [json.loads(e) for e in events[:-1]]
    streamed = "".join(p["token"]["text"] for p in parsed[:-1])
    assert streamed == cut == parsed[-1]["generated_text"]
    assert parsed[-1]["details"]["finish_reason"] == "stop"


def test_seeded_sampling_is_reproducible(client):
    # Guards: temperature > 0 samples (answers vary with the seed) and a seed reproduces the
    # same answer.
    def sample(seed):
        p = {"max_new_tokens": 12, "adapter_id": "base", "temperature": 1.5, "seed": seed}
        return tgi(client, p).json()[0]["generated_text"]

    first = sample(7)
    assert sample(7) == first
    assert {sample(s) for s in (1, 2, 3)} != {first}


def test_concurrent_mixed_requests_each_get_their_own_answer(client, answers):
    # Guards: concurrent requests for different adapters, streamed or not, share the engine
    # without mixing rows up: each answer is exactly what that model answers alone.
    results: dict[int, tuple[str, str]] = {}

    def one(i):
        name = "rand" if i % 2 else "base"
        if i % 3 == 0:
            model, events = _sse_events(
                client,
                {"inputs": PROMPT, "parameters": {"max_new_tokens": 4, "adapter_id": name}},
                "/invocations-response-stream",
            )
            results[i] = (name, json.loads(events[-2])["generated_text"])
        else:
            results[i] = (name, tgi(client, {"adapter_id": name}).json()[0]["generated_text"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    for name, text in results.values():
        assert text == answers[name]


def test_register_and_unregister_adapter(client, random_adapter, answers):
    # Guards: POST /adapters attaches an adapter that then answers (same weights as "rand", so
    # the same text); DELETE removes it and later requests for it are 400, not a fallback.
    r = client.post("/adapters", json={"name": "two", "src": str(random_adapter)})
    assert r.status_code == 200 and "two" in r.text
    assert (
        client.post("/adapters", json={"name": "two", "src": str(random_adapter)}).status_code
        == 409
    )
    r = tgi(client, headers={HEADER: "two"})
    assert r.status_code == 200 and r.headers["X-Codetune-Model"] == "two"
    assert r.json()[0]["generated_text"] == answers["rand"]
    assert "two" in [a["name"] for a in client.get("/adapters").json()["adapters"]]
    assert client.delete("/adapters/two").status_code == 200
    assert tgi(client, headers={HEADER: "two"}).status_code == 400
    assert client.delete("/adapters/two").status_code == 404


def test_register_adapter_from_a_packed_artifact_directory(client, random_adapter, tmp_path):
    # Guards: an adapter component's artifact handed over as a directory that holds the
    # training job's model.tar.gz (not extracted) registers the adapter inside it.
    import tarfile

    artifact = tmp_path / "artifact"
    artifact.mkdir()
    with tarfile.open(artifact / "model.tar.gz", "w:gz") as tar:
        for f in random_adapter.iterdir():
            tar.add(f, arcname=f.name)
    r = client.post("/adapters", json={"name": "packed", "src": str(artifact)})
    assert r.status_code == 200, r.text
    r = tgi(client, headers={HEADER: "packed"})
    assert r.status_code == 200 and r.headers["X-Codetune-Model"] == "packed"
    assert client.delete("/adapters/packed").status_code == 200
    empty = tmp_path / "empty"
    empty.mkdir()
    r = client.post("/adapters", json={"name": "none", "src": str(empty)})
    assert r.status_code == 400 and "holds no adapter" in r.text


def test_smoke_test_through_components_against_the_server(server, client, random_adapter):
    # Guards: the deployment's smoke test in components mode, against the real server, the way
    # SageMaker drives an adapter component: the adapter registered by POST /adapters under
    # SageMaker's identifier, then requests with no model named and that identifier in
    # X-Amzn-SageMaker-Adapter-Identifier (emulated by codetune.local.LocalRuntime) are
    # answered by it, not by the server's default adapter; "base" by the base.
    from codetune.local import LocalRuntime
    from codetune.workflow import validate_run_input
    from codetune.workflow.smoke import smoke_test

    request = validate_run_input(
        {
            "baseModel": "embedded",
            "data": {"codebase": "s3://artifacts-bkt/codebases/svc/"},
            "training": {"config": "cpu-smollm2", "instanceType": "ml.g5.xlarge"},
            "deployment": {"adapterName": "rand"},
        },
        execution_name="smoke",
        artifact_bucket="artifacts-bkt",
    )
    dep = request.deployment
    identifier = "ic-0a1b2c"  # whatever SageMaker names it; not the adapter's own name
    r = client.post("/adapters", json={"name": identifier, "src": str(random_adapter)})
    assert r.status_code == 200, r.text
    try:
        out = smoke_test(request, LocalRuntime(server.url, {dep.adapter_component: identifier}))
    finally:
        client.delete(f"/adapters/{identifier}")
    assert out["adapterModel"] == identifier and out["baseModel"] == "base"
    assert out["adapterComponent"] == dep.adapter_component


def test_access_log_has_one_json_line_per_request(server, client):
    # Guards: one structured log line per request with id, adapter, token counts and timings.
    r = tgi(client, headers={"X-Request-Id": "req-123"})
    client.post("/invocations", json={"inputs": ""}, headers={"X-Request-Id": "bad-1"})
    # the server writes a request's line after its response is sent: wait for both
    deadline = time.time() + 10
    while time.time() < deadline:
        lines = server.access_lines()
        if {"req-123", "bad-1"} <= {line["request_id"] for line in lines}:
            break
        time.sleep(0.05)
    ok = [line for line in lines if line["request_id"] == "req-123"]
    assert len(ok) == 1 and r.headers["x-request-id"] == "req-123"
    line = ok[0]
    assert line["status"] == 200 and line["adapter"] == "rand"
    assert line["tokens_in"] > 0 and 0 < line["tokens_out"] <= 4
    assert line["queue_s"] >= 0 and line["generate_s"] > 0 and line["batch_size"] >= 1
    bad = [line for line in lines if line["request_id"] == "bad-1"]
    assert len(bad) == 1 and bad[0]["status"] == 400 and "inputs" in bad[0]["error"]


LONG = "a " * 9000  # ~9000 tokens: over the 8192-token context window, under MAX_BODY
MSG = [{"role": "user", "content": "hi"}]
J = {"content-type": "application/json"}


def _b(obj) -> bytes:
    return json.dumps(obj).encode()


BAD_REQUESTS = [
    # (id, method, path, headers, raw body, expected status)
    ("get-invocations", "GET", "/invocations", {}, None, 405),
    ("unknown-route", "POST", "/generate", J, _b({"inputs": "x"}), 404),
    ("text-plain", "POST", "/invocations", {"content-type": "text/plain"}, b"hello", 415),
    ("no-content-type", "POST", "/invocations", {}, _b({"inputs": "x"}), 415),
    ("malformed-json", "POST", "/invocations", J, b'{"inputs": ', 400),
    ("not-utf8", "POST", "/invocations", J, b'{"inputs": "\xff\xfe"}', 400),
    ("json-list", "POST", "/invocations", J, _b([{"inputs": "x"}]), 400),
    ("json-string", "POST", "/invocations", J, _b("inputs"), 400),
    ("empty-body", "POST", "/invocations", J, b"", 400),
    ("oversized", "POST", "/invocations", J, _b({"inputs": "x" * (MAX_BODY + 10)}), 413),
    ("empty-object", "POST", "/invocations", J, _b({}), 400),
    ("both-styles", "POST", "/invocations", J, _b({"inputs": "x", "messages": MSG}), 400),
    ("empty-inputs", "POST", "/invocations", J, _b({"inputs": ""}), 400),
    ("inputs-not-string", "POST", "/invocations", J, _b({"inputs": 42}), 400),
    (
        "max-new-tokens-0",
        "POST",
        "/invocations",
        J,
        _b({"inputs": "x", "parameters": {"max_new_tokens": 0}}),
        400,
    ),
    (
        "max-new-tokens-over-cap",
        "POST",
        "/invocations",
        J,
        _b({"inputs": "x", "parameters": {"max_new_tokens": 65}}),
        400,
    ),
    (
        "max-new-tokens-string",
        "POST",
        "/invocations",
        J,
        _b({"inputs": "x", "parameters": {"max_new_tokens": "5"}}),
        400,
    ),
    (
        "temperature-negative",
        "POST",
        "/invocations",
        J,
        _b({"inputs": "x", "parameters": {"temperature": -0.1}}),
        400,
    ),
    (
        "temperature-high",
        "POST",
        "/invocations",
        J,
        _b({"inputs": "x", "parameters": {"temperature": 3}}),
        400,
    ),
    ("top-p-zero", "POST", "/invocations", J, _b({"inputs": "x", "parameters": {"top_p": 0}}), 400),
    (
        "top-p-high",
        "POST",
        "/invocations",
        J,
        _b({"inputs": "x", "parameters": {"top_p": 1.5}}),
        400,
    ),
    (
        "stop-empty",
        "POST",
        "/invocations",
        J,
        _b({"inputs": "x", "parameters": {"stop": [""]}}),
        400,
    ),
    (
        "stop-too-many",
        "POST",
        "/invocations",
        J,
        _b({"inputs": "x", "parameters": {"stop": list("abcdefghi")}}),
        400,
    ),
    (
        "stop-too-long",
        "POST",
        "/invocations",
        J,
        _b({"inputs": "x", "parameters": {"stop": ["s" * 65]}}),
        400,
    ),
    (
        "unknown-parameter",
        "POST",
        "/invocations",
        J,
        _b({"inputs": "x", "parameters": {"top_k": 5}}),
        400,
    ),
    ("unknown-field", "POST", "/invocations", J, _b({"inputs": "x", "max_new_tokens": 5}), 400),
    (
        "parameters-not-object",
        "POST",
        "/invocations",
        J,
        _b({"inputs": "x", "parameters": [1]}),
        400,
    ),
    ("messages-empty", "POST", "/invocations", J, _b({"messages": []}), 400),
    (
        "messages-bad-role",
        "POST",
        "/invocations",
        J,
        _b({"messages": [{"role": "robot", "content": "x"}]}),
        400,
    ),
    ("messages-no-content", "POST", "/invocations", J, _b({"messages": [{"role": "user"}]}), 400),
    (
        "messages-last-assistant",
        "POST",
        "/invocations",
        J,
        _b({"messages": [{"role": "assistant", "content": "x"}]}),
        400,
    ),
    ("chat-n-2", "POST", "/invocations", J, _b({"messages": MSG, "n": 2}), 400),
    (
        "chat-stream-not-bool",
        "POST",
        "/invocations",
        J,
        _b({"messages": MSG, "stream": "yes"}),
        400,
    ),
    (
        "chat-max-tokens-over-cap",
        "POST",
        "/invocations",
        J,
        _b({"messages": MSG, "max_tokens": 1000}),
        400,
    ),
    ("unknown-model", "POST", "/invocations", J, _b({"messages": MSG, "model": "gpt-4"}), 400),
    (
        "unknown-adapter-header",
        "POST",
        "/invocations",
        {**J, HEADER: "nope"},
        _b({"inputs": "x"}),
        400,
    ),
    (
        "conflicting-choice",
        "POST",
        "/invocations",
        {**J, HEADER: "base"},
        _b({"messages": MSG, "model": "rand"}),
        400,
    ),
    (
        "prompt-too-long",
        "POST",
        "/invocations",
        J,
        _b({"inputs": LONG, "parameters": {"max_new_tokens": 8}}),
        400,
    ),
    ("delete-unknown-adapter", "DELETE", "/adapters/nope", {}, None, 404),
    ("register-missing-src", "POST", "/adapters", J, _b({"name": "x"}), 400),
    (
        "register-missing-dir",
        "POST",
        "/adapters",
        J,
        _b({"name": "x", "src": "/nonexistent/dir"}),
        400,
    ),
    ("register-reserved-name", "POST", "/adapters", J, _b({"name": "base", "src": "/tmp"}), 400),
]


def test_bad_requests_are_4xx_with_a_message_and_server_stays_healthy(client):
    # Guards: every malformed or out-of-range request is a 4xx whose message says what is
    # wrong (never a 500 or a generation), and the server is still healthy afterwards.
    assert len(BAD_REQUESTS) >= 25
    failures = []
    for name, method, path, headers, body, expected in BAD_REQUESTS:
        r = client.request(method, path, headers=headers, content=body)
        msg = r.json().get("error", {}).get("message", "") if r.content.startswith(b"{") else ""
        if r.status_code != expected or len(msg) < 10:
            failures.append((name, r.status_code, r.text[:200]))
    assert not failures, failures
    assert client.get("/ping").status_code == 200
    assert tgi(client).status_code == 200


def _invoke(argv):
    from codetune.cli import build_parser

    args = build_parser().parse_args(["invoke", *argv])
    return args.func(args)


def test_invoke_cli_against_local_server(server, answers, capsys):
    # Guards: `codetune invoke --url` sends both payload styles, prints the answer (streamed or
    # not) and names the model that answered.
    assert _invoke(["--url", server.url, "--prompt", PROMPT, "--max-new-tokens", "4"]) == 0
    out, err = capsys.readouterr()
    assert out == answers["rand"] + "\n" and "[model: rand]" in err
    argv = ["--url", server.url, "--chat", "Say hi.", "--adapter", "base", "--max-new-tokens", "5"]
    assert _invoke([*argv, "--stream"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() and "[model: base]" in err
