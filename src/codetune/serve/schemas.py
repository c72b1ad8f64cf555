"""Request payloads the endpoint accepts, validated with pydantic.

Two styles, told apart by their keys:

- Text Generation Inference (what SageMaker's Hugging Face predictor sends):
  ``{"inputs": "...", "parameters": {...}, "stream": false}``
- OpenAI chat completions: ``{"messages": [...], "model": "...", "max_tokens": ..., "stream": ...}``

Unknown fields are rejected (a typo such as ``max_token`` must not be silently ignored);
the error names the field and lists the supported ones. Limits that depend on the server's
configuration (token cap, number of stop sequences) are checked in :func:`check_limits`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_STOP_CHARS = 64


def _check_stop(value: list[str] | str | None) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    for s in items:
        if not s:
            raise ValueError("stop sequences must be non-empty strings")
        if len(s) > MAX_STOP_CHARS:
            raise ValueError(f"each stop sequence must be at most {MAX_STOP_CHARS} characters")
    return items


class _Strict(BaseModel):
    # strict: "max_new_tokens": "10" is a client bug worth reporting, not coercing.
    model_config = ConfigDict(extra="forbid", strict=True)


class TGIParameters(_Strict):
    """``parameters`` of a TGI-style request."""

    max_new_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: list[str] | None = None
    adapter_id: str | None = Field(default=None, min_length=1)
    do_sample: bool | None = None
    seed: int | None = Field(default=None, ge=0)
    return_full_text: bool = False
    details: bool = False

    @field_validator("stop")
    @classmethod
    def _stop_ok(cls, v):
        return _check_stop(v)


class TGIRequest(_Strict):
    """``{"inputs": str, "parameters": {...}, "stream": bool}``."""

    inputs: str = Field(min_length=1)
    parameters: TGIParameters = Field(default_factory=TGIParameters)
    stream: bool = False


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Strict):
    """OpenAI chat completions request (the subset that a single-choice server supports)."""

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = Field(default=None, min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    seed: int | None = Field(default=None, ge=0)
    n: Literal[1] = 1
    user: str | None = None
    stream_options: dict | None = None

    @field_validator("stop")
    @classmethod
    def _stop_ok(cls, v):
        return _check_stop(v)

    @field_validator("messages")
    @classmethod
    def _last_not_assistant(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if v[-1].role == "assistant":
            raise ValueError("the last message must be from the user (or system), not assistant")
        return v


def describe(err: ValidationError, model: type[BaseModel]) -> str:
    """One readable sentence per problem: ``parameters.top_p: must be > 0``, plus the list of
    supported fields when a field is unknown."""
    parts = []
    unknown = False
    for e in err.errors(include_url=False):
        loc = ".".join(str(x) for x in e["loc"]) or "body"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            unknown = True
            msg = "is not a supported field"
        parts.append(f"{loc}: {msg}")
    text = "; ".join(parts)
    if unknown:
        text += f". Supported fields: {', '.join(model.model_fields)}"
        if model is TGIRequest:
            text += f"; parameters: {', '.join(TGIParameters.model_fields)}"
    return text


def check_limits(
    max_new_tokens: int, stop: list[str] | None, *, cap: int, max_stop: int, field: str
) -> str | None:
    """The first limit broken, as a message saying what to change; ``None`` when all hold."""
    if max_new_tokens > cap:
        return f"{field} is {max_new_tokens}; this server allows at most {cap}. Lower it."
    if stop and len(stop) > max_stop:
        return f"{len(stop)} stop sequences given; at most {max_stop} are allowed."
    return None
