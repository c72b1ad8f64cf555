"""`codetune batch`: a JSONL of requests answered line for line by the inference server's own
parsing, routing and continuous batching (in process, or a running server over HTTP), and the
server's Batch Transform mode (SAGEMAKER_BATCH) that SageMaker's batch contract needs.

One model load per fixture; every request asks for at most 3 new tokens.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from codetune import cli
from codetune.errors import CodetuneError
from codetune.serve import ServeConfig, batch

SETTINGS = {"torch_threads": 1, "max_batch_size": 8, "default_max_new_tokens": 3}
N = 50


def _line(i: int) -> dict:
    """Request i of the 50: TGI or chat, naming the adapter, the base, nothing, or an
    adapter nobody loaded (every fifth line). Each TGI prompt names its index and echoes
    it back (return_full_text), so an answer shows which line it answers."""
    choice = ["rand", "base", None, "rand", "nope"][i % 5]
    if i % 2 == 0:
        params = {"max_new_tokens": 2, "return_full_text": True, "details": True}
        if choice:
            params["adapter_id"] = choice
        return {"inputs": f"def f{i}(x):\n    return", "parameters": params}
    body = {"messages": [{"role": "user", "content": f"Write f{i}."}], "max_tokens": 2}
    if choice:
        body["model"] = choice
    return body


def _expected_model(i: int) -> str | None:
    return {"rand": "rand", "base": "base", None: "rand", "nope": None}[
        ["rand", "base", None, "rand", "nope"][i % 5]
    ]  # None as a choice: the single loaded adapter is the default


@pytest.fixture(scope="module")
def config(random_adapter):
    return ServeConfig.from_env(adapters={"rand": str(random_adapter)}, **SETTINGS)


@pytest.fixture(scope="module")
def cli_run(random_adapter, tmp_path_factory):
    """`codetune batch` on 50 requests, in process."""
    d = tmp_path_factory.mktemp("batch")
    src, out = d / "requests.jsonl", d / "answers.jsonl"
    src.write_text("".join(json.dumps(_line(i)) + "\n" for i in range(N)))
    argv = ["batch", str(src), "-o", str(out), "--adapter", f"rand={random_adapter}"]
    for k, v in SETTINGS.items():
        argv += ["--set", f"{k}={v}"]
    rc = cli.main(argv)
    return rc, [json.loads(x) for x in out.read_text().splitlines()]


def test_fifty_requests_give_fifty_lines_in_input_order(cli_run):
    # Guards the core contract: output line i answers input line i.
    rc, out = cli_run
    assert rc == 0
    assert len(out) == N
    for i, ans in enumerate(out):
        if _expected_model(i) is None:
            continue
        if i % 2 == 0:
            assert ans[0]["generated_text"].startswith(f"def f{i}(x):"), (i, ans)
            assert ans[0]["details"]["generated_tokens"] == 2
        else:
            assert ans["object"] == "chat.completion", (i, ans)
            assert ans["usage"]["completion_tokens"] == 2


def test_each_line_is_answered_by_the_model_it_names(cli_run):
    # Guards per-line routing: adapter, base, or the default (the one loaded adapter).
    _, out = cli_run
    for i, ans in enumerate(out):
        want = _expected_model(i)
        if want is None:
            continue
        got = ans[0]["details"]["adapter"] if i % 2 == 0 else ans["model"]
        assert got == want, (i, ans)


def test_unknown_adapter_lines_are_error_lines_listing_known_never_base(cli_run):
    # Guards strict routing in batch: an unknown adapter never gets a base-model answer.
    _, out = cli_run
    unknown = [out[i] for i in range(N) if _expected_model(i) is None]
    assert len(unknown) == N // 5
    for ans in unknown:
        assert set(ans) == {"error"}, ans
        assert ans["error"]["type"] == "unknown_adapter"
        assert (
            "'nope'" in ans["error"]["message"] and "known: base, rand" in ans["error"]["message"]
        )


@pytest.fixture(scope="module")
def in_process(config):
    """Several batch runs and raw requests against one in-process app (one model load)."""
    lines = [json.dumps(_line(i)).encode() for i in (1, 2, 4)]  # chat/base, TGI/none, TGI/nope
    no_choice = [
        json.dumps({"inputs": "def g(x):", "parameters": {"max_new_tokens": 2, "details": True}}),
        json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
    ]
    odd = [b"", b"[1, 2]", json.dumps({"inputs": "def h():", "stream": True}).encode()]

    async def scenario():
        res = {}
        async with batch.in_process_server(config) as client:
            res["params"] = (await client.get("/execution-parameters")).json()
            r = await client.post("/invocations", json={"inputs": "x", "parameters": {"n": 2}})
            res["raw_error"] = (r.status_code, r.headers.get("x-codetune-status"), r.json())
            res["lines"], res["summary"] = await batch.run_batch(client, lines, concurrency=2)
            res["job_base"], _ = await batch.run_batch(
                client, [x.encode() for x in no_choice], concurrency=2, model="base"
            )
            res["job_rand_named"], _ = await batch.run_batch(
                client, lines[:1], concurrency=1, model="rand"
            )
            res["odd"], _ = await batch.run_batch(client, odd, concurrency=3)
            try:
                await batch.run_batch(client, lines, concurrency=1, model="nope")
            except CodetuneError as e:
                res["unknown_job_model"] = str(e)
        return res

    return asyncio.run(scenario())


def test_execution_parameters_ask_single_record_and_the_engine_batch(in_process):
    # Guards the Batch Transform contract: one JSON request per invocation, as many in
    # flight as the engine decodes together.
    assert in_process["params"] == {
        "MaxConcurrentTransforms": SETTINGS["max_batch_size"],
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 1,
    }


def test_batch_mode_answers_a_request_error_with_200_and_the_error_body(in_process):
    # Guards the job: SageMaker fails a transform job on a non-2xx answer, so in batch mode
    # the error is the record's output line; the real status travels in a header.
    status, real, body = in_process["raw_error"]
    assert (status, real) == (200, "400")
    assert body["error"]["code"] == 400 and "n" in body["error"]["message"]


def test_run_batch_summary_counts_answers_and_error_lines(in_process):
    s = in_process["summary"]
    assert (s.lines, s.answers, s.errors, s.concurrency) == (3, 2, 1, 2)
    assert json.loads(in_process["lines"][2])["error"]["type"] == "unknown_adapter"


def test_job_model_fills_lines_that_name_none(in_process):
    # Guards the per-job adapter: lines naming nothing are answered by the job's choice.
    tgi, chat = (json.loads(x) for x in in_process["job_base"])
    assert tgi[0]["details"]["adapter"] == "base"
    assert chat["model"] == "base"


def test_a_line_naming_its_model_keeps_it_under_a_job_model(in_process):
    (ans,) = (json.loads(x) for x in in_process["job_rand_named"])
    assert ans["model"] == "base"  # the line says base, the job says rand


def test_unknown_job_model_stops_before_any_line(in_process):
    # Guards fail-fast: a typo in --model is one clear error, not N error lines.
    msg = in_process["unknown_job_model"]
    assert msg.startswith("--model nope: unknown model or adapter 'nope'")
    assert "known: base, rand" in msg


def test_blank_non_object_and_streaming_lines_are_error_lines_in_place(in_process):
    # Guards alignment: a line that cannot be a request still owns its output line.
    blank, array, stream = (json.loads(x)["error"] for x in in_process["odd"])
    assert "empty body" in blank["message"]
    assert "JSON list" in array["message"]
    assert "streaming is not available in batch" in stream["message"]


def test_url_mode_against_a_running_server_gives_the_same_lines(config, tmp_path):
    # Guards --url: a server outside batch mode answers errors with 4xx; the lines written
    # are the same as in process (ids and timestamps aside).
    from codetune.serve import ServerThread

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(_line(i)) + "\n" for i in range(5)))
    with ServerThread(config) as srv:
        srv.wait_ready()
        rc = cli.main(["batch", str(src), "-o", str(out), "--url", srv.url])
    assert rc == 0
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [a[0]["details"]["adapter"] for a in got[0:3:2]] == ["rand", "rand"]
    assert got[1]["model"] == "base" and got[3]["model"] == "rand"
    assert got[4]["error"]["type"] == "unknown_adapter"
    assert got[4]["error"]["code"] == 400


def test_from_dataset_writes_the_bugfix_prompts_as_chat_requests(tmp_path):
    # Guards the converter: the prompt turns of each bugfix record, in file order, never
    # the answer.
    rec = lambda i, task: {  # noqa: E731
        "task": task,
        "messages": [
            {"role": "user", "content": f"fix {i}"},
            {"role": "assistant", "content": f"answer {i}"},
        ],
    }
    ds = tmp_path / "ds"
    ds.mkdir()
    rows = [rec(0, "bugfix"), rec(1, "complete"), rec(2, "bugfix")]
    (ds / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    req = tmp_path / "req.jsonl"
    argv = ["batch", "--from-dataset", str(ds), "--max-new-tokens", "7"]
    assert cli.main([*argv, "--write-requests", str(req)]) == 0
    got = [json.loads(x) for x in req.read_text().splitlines()]
    assert got == [
        {"messages": [{"role": "user", "content": "fix 0"}], "max_tokens": 7},
        {"messages": [{"role": "user", "content": "fix 2"}], "max_tokens": 7},
    ]


def test_from_dataset_without_the_split_names_the_file(tmp_path, capsys):
    assert cli.main(["batch", "--from-dataset", str(tmp_path), "--write-requests", "x"]) == 2
    assert "no test.jsonl" in capsys.readouterr().err


def test_read_lines_keeps_blank_lines_in_place(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_bytes(b'{"a": 1}\n\n{"b": 2}\r\n')
    assert batch.read_lines(p) == [b'{"a": 1}', b"", b'{"b": 2}']


def test_sagemaker_batch_env_turns_batch_mode_on_and_default_model_is_read(monkeypatch):
    monkeypatch.setenv("SAGEMAKER_BATCH", "true")
    monkeypatch.setenv("CODETUNE_DEFAULT_MODEL", "py")
    cfg = ServeConfig.from_env()
    assert cfg.batch is True and cfg.default_model == "py"
    monkeypatch.setenv("SAGEMAKER_BATCH", "false")
    assert ServeConfig.from_env().batch is False


def test_non_batch_server_keeps_4xx(config):
    # Guards real-time serving: the 200-for-errors rule is Batch Transform's only.
    from codetune.serve.middleware import GuardMiddleware

    async def app(scope, receive, send):
        raise AssertionError("not reached")

    async def call(cfg):
        mw = GuardMiddleware(app, cfg)
        transport = httpx.ASGITransport(app=mw)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post(
                "/invocations", content=b"[]", headers={"content-type": "application/json"}
            )

    import dataclasses

    assert asyncio.run(call(config)).status_code == 400
    assert asyncio.run(call(dataclasses.replace(config, batch=True))).status_code == 200
