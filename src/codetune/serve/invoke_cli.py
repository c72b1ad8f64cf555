"""Call a deployed SageMaker endpoint (boto3, SigV4) or a local server (plain HTTP).

Examples::

    codetune invoke --url http://127.0.0.1:8080 --prompt "def add(a, b):"
    codetune invoke --url http://127.0.0.1:8080 --chat "Fix: def f(x): return x +* 1" --stream
    codetune invoke --endpoint codetune-prod --region eu-west-1 --prompt "def add(a, b):" \\
        --adapter mybugfix --max-new-tokens 64
    codetune invoke --endpoint codetune-prod --chat "Explain this bug" --stream   # response stream
    codetune invoke --url http://127.0.0.1:8080 --payload request.json --raw

``--prompt`` sends a TGI-style request (``{"inputs", "parameters"}``); ``--chat`` sends an
OpenAI chat request (``{"messages", ...}``); ``--payload`` sends a JSON file as is. With
``--stream`` the answer is printed as it arrives (server-sent events; on SageMaker through
InvokeEndpointWithResponseStream). The model that answered is printed on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

HELP = "call a SageMaker endpoint or a local server"


def build_payload(args: argparse.Namespace) -> dict:
    """The request body for the chosen style; raises CodetuneError for conflicting inputs."""
    from codetune.errors import CodetuneError

    given = [x for x in (args.prompt, args.chat, args.payload) if x is not None]
    if len(given) != 1:
        raise CodetuneError("give exactly one of --prompt, --chat or --payload")
    if args.payload:
        try:
            body = json.loads(Path(args.payload).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CodetuneError(f"--payload {args.payload}: {e}") from e
        if args.stream:
            body["stream"] = True
        return body
    if args.prompt is not None:
        params: dict = {"max_new_tokens": args.max_new_tokens}
        if args.temperature is not None:
            params["temperature"] = args.temperature
        if args.stop:
            params["stop"] = args.stop
        if args.adapter:
            params["adapter_id"] = args.adapter
        body = {"inputs": args.prompt, "parameters": params}
    else:
        body = {"messages": [{"role": "user", "content": args.chat}]}
        body["max_tokens"] = args.max_new_tokens
        if args.temperature is not None:
            body["temperature"] = args.temperature
        if args.stop:
            body["stop"] = args.stop
        if args.adapter:
            body["model"] = args.adapter
    if args.stream:
        body["stream"] = True
    return body


def iter_sse(chunks: Iterable[bytes]) -> Iterator[dict | str]:
    """Parse server-sent events from arbitrary byte chunks (SageMaker PayloadParts split
    events anywhere); yields each ``data:`` payload as JSON (or the string ``[DONE]``)."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            for line in event.decode("utf-8").splitlines():
                if line.startswith("data:"):
                    data = line[5:].strip()
                    yield data if data == "[DONE]" else json.loads(data)


def text_of_event(event: dict | str) -> str:
    """The new text in one streamed event (chat chunk or TGI token); raises on an error event."""
    from codetune.errors import CodetuneError

    if not isinstance(event, dict):
        return ""
    if "error" in event:
        raise CodetuneError(f"server error while streaming: {event['error'].get('message')}")
    if "choices" in event:
        return event["choices"][0].get("delta", {}).get("content") or ""
    if event.get("generated_text") is not None:  # TGI's final event repeats the whole text
        return ""
    return (event.get("token") or {}).get("text", "")


def text_of_response(body) -> str:
    """The generated text of a non-streamed response of either style."""
    if isinstance(body, list):
        return body[0]["generated_text"]
    return body["choices"][0]["message"]["content"]


def _local(args, body: dict, out: Callable[[str], None]) -> str:
    import httpx

    from codetune.errors import CodetuneError

    url = args.url.rstrip("/") + "/invocations"
    headers = {"Content-Type": "application/json"}
    if args.adapter_header:
        headers["X-Amzn-SageMaker-Adapter-Identifier"] = args.adapter_header
    with httpx.Client(timeout=args.timeout, trust_env=False) as c:
        with c.stream("POST", url, json=body, headers=headers) as r:
            if r.status_code >= 400:
                r.read()
                raise CodetuneError(f"{url} answered {r.status_code}: {r.text}")
            model = r.headers.get("X-Codetune-Model", "?")
            if body.get("stream"):
                for event in iter_sse(r.iter_bytes()):
                    out(text_of_event(event))
            else:
                r.read()
                out(r.text if args.raw else text_of_response(r.json()))
    return model


def _sagemaker(args, body: dict, out: Callable[[str], None], client=None) -> str:
    from codetune.errors import CodetuneError

    if client is None:
        import boto3

        client = boto3.client("sagemaker-runtime", region_name=args.region)
    kwargs = {
        "EndpointName": args.endpoint,
        "ContentType": "application/json",
        "Accept": "text/event-stream" if body.get("stream") else "application/json",
        "Body": json.dumps(body).encode(),
    }
    if args.inference_component:
        kwargs["InferenceComponentName"] = args.inference_component
    try:
        if body.get("stream"):
            resp = client.invoke_endpoint_with_response_stream(**kwargs)
            parts = (e["PayloadPart"]["Bytes"] for e in resp["Body"] if "PayloadPart" in e)
            for event in iter_sse(parts):
                out(text_of_event(event))
            return "?"  # SageMaker does not relay custom response headers on streams
        resp = client.invoke_endpoint(**kwargs)
    except client.exceptions.ModelError as e:  # the container answered 4xx/5xx
        raise CodetuneError(f"endpoint {args.endpoint}: {e}") from e
    raw = resp["Body"].read().decode("utf-8")
    parsed = json.loads(raw)
    out(raw if args.raw else text_of_response(parsed))
    if isinstance(parsed, dict) and "model" in parsed:
        return parsed["model"]
    return "?"


def run(args: argparse.Namespace, *, client=None) -> int:
    from codetune.errors import CodetuneError

    if bool(args.url) == bool(args.endpoint):
        raise CodetuneError("give exactly one of --url (local server) or --endpoint (SageMaker)")
    body = build_payload(args)

    def out(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    if args.url:
        model = _local(args, body, out)
    else:
        model = _sagemaker(args, body, out, client=client)
    sys.stdout.write("\n")
    print(f"[model: {model}]", file=sys.stderr)
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "invoke",
        help=HELP,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = p.add_argument_group("target (one of)")
    target.add_argument("--url", help="local server base URL, e.g. http://127.0.0.1:8080")
    target.add_argument("--endpoint", help="SageMaker endpoint name (boto3, SigV4)")
    p.add_argument("--region", help="AWS region (default: your AWS configuration)")
    p.add_argument("--inference-component", help="SageMaker inference component name")
    what = p.add_argument_group("request (one of)")
    what.add_argument("--prompt", help="TGI-style request with this text as inputs")
    what.add_argument("--chat", help="OpenAI chat request with this user message")
    what.add_argument("--payload", help="JSON file sent as the request body")
    p.add_argument("--adapter", help="adapter (or 'base') to answer: adapter_id / model field")
    p.add_argument(
        "--adapter-header",
        help="send the adapter in X-Amzn-SageMaker-Adapter-Identifier (local servers only; "
        "on SageMaker the platform sets it for adapter inference components)",
    )
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float)
    p.add_argument("--stop", action="append", help="stop sequence (repeatable)")
    p.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    p.add_argument("--raw", action="store_true", help="print the raw JSON response")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds (local only)")
    p.set_defaults(func=run)
    return p
