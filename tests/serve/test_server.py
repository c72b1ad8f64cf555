"""The inference server over real HTTP: payload styles, adapter choice, streaming, adapter
registration, bad requests, batching and logs. One server for the whole module."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import pytest

from codetune.serve import ServeConfig, ServerThread

pytestmark = pytest.mark.slow

HEADER = "X-Amzn-SageMaker-Adapter-Identifier"
PROMPT = "def add(a, b):\n    return"
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def server(random_adapter, embedded_model_dir):
    cfg = ServeConfig.from_env(
        adapters={"rand": str(random_adapter)},
        max_new_tokens_cap=64,
        default_max_new_tokens=4,
        max_batch_size=8,
        max_wait_ms=200,
        max_body_bytes=MAX_BODY,
        stream_chunk_tokens=3,
        torch_threads=1,
    )
    with ServerThread(cfg) as srv:
        srv.wait_ready()
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


def test_concurrent_requests_are_batched(server, client):
    # Guards: dynamic batching — concurrent requests share generate() calls.
    before_batches, before_rows = server.state.batcher.batches, server.state.batcher.rows
    results = []

    def one(i):
        results.append(tgi(client, {"adapter_id": "base" if i % 2 else "rand"}).status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 6
    rows = server.state.batcher.rows - before_rows
    batches = server.state.batcher.batches - before_batches
    assert rows == 6 and batches < 6  # mixed adapters in one batch are fine


def test_access_log_has_one_json_line_per_request(client, caplog):
    # Guards: one structured log line per request with id, adapter, token counts and timings.
    with caplog.at_level(logging.INFO, logger="codetune.serve.access"):
        r = tgi(client, headers={"X-Request-Id": "req-123"})
        client.post("/invocations", json={"inputs": ""}, headers={"X-Request-Id": "bad-1"})
        # the server writes a request's line after its response is sent: wait for both
        deadline = time.time() + 10
        while time.time() < deadline:
            lines = [
                json.loads(rec.getMessage())
                for rec in caplog.records
                if rec.name.endswith("access")
            ]
            if {"req-123", "bad-1"} <= {line["request_id"] for line in lines}:
                break
            time.sleep(0.05)
    ok = [line for line in lines if line["request_id"] == "req-123"]
    assert len(ok) == 1 and r.headers["x-request-id"] == "req-123"
    line = ok[0]
    assert line["status"] == 200 and line["adapter"] == "rand"
    assert line["tokens_in"] > 0 and 0 < line["tokens_out"] <= 4
    assert line["queue_s"] >= 0 and line["generate_s"] > 0
    bad = [line for line in lines if line["status"] == 400]
    assert len(bad) == 1 and "inputs" in bad[0]["error"]


def test_unexpected_error_is_500_with_request_id_and_logged(server, client, caplog):
    # Guards: a server bug is a 500 (not a 4xx), logged with its traceback; the server survives.
    batcher = server.state.batcher
    original = batcher._generate

    def broken(*a, **k):
        raise RuntimeError("simulated kernel failure")

    batcher._generate = broken
    try:
        with caplog.at_level(logging.ERROR, logger="codetune.serve"):
            r = tgi(client)
    finally:
        batcher._generate = original
    assert r.status_code == 500
    assert "request id" in r.json()["error"]["message"]
    assert any("simulated kernel failure" in (rec.exc_text or "") for rec in caplog.records)
    assert tgi(client).status_code == 200


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
