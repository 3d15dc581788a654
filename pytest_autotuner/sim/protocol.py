"""Request parsing and response bodies in SGLang's OpenAI-compatible and native formats.

Token counting (``core/spec/tokens.py``): with a tokenizer (``--sim-tokenizer``, or the ``tokenizer.json`` of a
local model folder) a prompt is its token ids, as SGLang counts it; without one, the word rule: each
whitespace-separated word is one token, plus one more per 10 characters of a long word. The prompt's tokens
are the keys of the radix cache. A chat request's prompt is its messages' contents, each stripped, joined by
one space (no chat template: the simulator knows none), so a resent reply tokenizes as it was generated.
Usage carries ``prompt_tokens_details.cached_tokens`` as SGLang 0.5.23 does with
``--enable-cache-report`` (``/generate``: ``meta_info.cached_tokens``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pytest_autotuner.core.spec.tokens import OUTPUT_WORDS, WORD_RULE, word_tokens

if TYPE_CHECKING:
    from collections.abc import Hashable

    from pytest_autotuner.core.spec.tokens import TokenCounter

__all__ = [
    "GenerationRequest",
    "RequestError",
    "count_tokens",
    "error_body",
    "parse_generation",
    "prompt_tokens",
    "sse",
    "token_text",
]

Api = Literal["chat", "completions", "generate"]

DEFAULT_MAX_TOKENS = 128


class RequestError(ValueError):
    """A malformed request: answered with HTTP 400 before any stream starts."""


@dataclass
class GenerationRequest:
    api: Api
    tokens: tuple[Hashable, ...]  # the prompt's tokens (radix cache keys)
    input_tokens: int
    max_tokens: int
    stream: bool
    ignore_eos: bool
    include_usage: bool
    model: str


def count_tokens(words: list[str]) -> int:
    return sum(1 + len(w) // 10 for w in words)


def prompt_tokens(words: list[str]) -> tuple[str, ...]:
    """The prompt's tokens by the word rule: a word, or a long word's 10-character pieces (``count_tokens``)."""
    return word_tokens(words)


def token_text(index: int) -> str:
    """Text of the ``index``-th generated token (one short word, so it re-counts as one token)."""
    return " " + OUTPUT_WORDS[index % len(OUTPUT_WORDS)]


def _prompt_text(api: Api, body: dict[str, Any]) -> str:
    if api == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("`messages` is required and must be a non-empty list of chat messages")
        parts: list[str] = []
        for message in messages:
            if not isinstance(message, dict) or "role" not in message:
                raise RequestError(f"each message needs a `role` and `content`, got {message!r:.80}")
            content = message.get("content")
            if isinstance(content, list):
                parts += [str(p.get("text", "")).strip() for p in content if isinstance(p, dict)]
            elif isinstance(content, str):
                parts.append(content.strip())
            elif content is not None:
                raise RequestError("message `content` must be a string or a list of content parts")
        return " ".join(p for p in parts if p)
    key = "prompt" if api == "completions" else "text"
    prompt = body.get(key)
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise RequestError(f"`{key}` is required and must be a non-empty string")
    return prompt


def _int_field(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RequestError(f"`{name}` must be a positive integer, got {value!r}")
    return value


def parse_generation(api: Api, raw: bytes, served_model: str, counter: TokenCounter = WORD_RULE) -> GenerationRequest:
    """Validate one generation request body and count its prompt with ``counter``; raises RequestError with an
    OpenAI-style message."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    text = _prompt_text(api, body)
    params = body.get("sampling_params", {}) if api == "generate" else body
    if not isinstance(params, dict):
        raise RequestError("`sampling_params` must be an object")
    max_key = "max_new_tokens" if api == "generate" else "max_tokens"
    raw_max = params.get(max_key, params.get("max_completion_tokens"))
    max_tokens = DEFAULT_MAX_TOKENS if raw_max is None else _int_field(raw_max, max_key)
    temperature = params.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
        raise RequestError(f"`temperature` must be a number >= 0, got {temperature!r}")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(f"`stream` must be a boolean, got {stream!r}")
    options = body.get("stream_options") or {}
    return GenerationRequest(
        api=api,
        tokens=(tokens := counter.encode(text)),
        input_tokens=max(1, len(tokens)),
        max_tokens=max_tokens,
        stream=stream,
        ignore_eos=bool(params.get("ignore_eos", False)),
        include_usage=isinstance(options, dict) and bool(options.get("include_usage", False)),
        model=str(body.get("model") or served_model),
    )


def error_body(message: str, status: int = 400) -> dict[str, Any]:
    kind = "BadRequestError" if status == 400 else "InternalServerError"
    return {"object": "error", "message": message, "type": kind, "param": None, "code": status}


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


@dataclass
class ResponseShape:
    """Builds the chunks and bodies of one request's answer."""

    req: GenerationRequest
    rid: str
    cached_tokens: int = 0  # prompt tokens found in the radix cache, known once the request is admitted

    def __post_init__(self) -> None:
        self.created = int(time.time())

    def _chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.req.api == "chat" else "text_completion"
        return {
            "id": self.rid,
            "object": obj,
            "created": self.created,
            "model": self.req.model,
            "choices": [choice],
        }

    def role_chunk(self) -> dict[str, Any]:
        return self._chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})

    def content_chunk(self, text: str, generated: int, reason: str | None = None) -> dict[str, Any]:
        if self.req.api == "chat":
            return self._chunk({"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None})
        if self.req.api == "completions":
            return self._chunk({"index": 0, "text": text, "logprobs": None, "finish_reason": None})
        return {"text": text, "meta_info": self.meta(generated, reason)}

    def finish_chunk(self, reason: str) -> dict[str, Any]:
        if self.req.api == "chat":
            return self._chunk({"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason})
        return self._chunk({"index": 0, "text": "", "logprobs": None, "finish_reason": reason})

    def usage(self, generated: int) -> dict[str, Any]:
        n_in = self.req.input_tokens
        return {
            "prompt_tokens": n_in,
            "completion_tokens": generated,
            "total_tokens": n_in + generated,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }

    def usage_chunk(self, generated: int) -> dict[str, Any]:
        chunk = self._chunk({})
        chunk["choices"] = []
        chunk["usage"] = self.usage(generated)
        return chunk

    def meta(self, generated: int, reason: str | None) -> dict[str, Any]:
        finish = None if reason is None else {"type": reason, "length": generated}
        return {
            "id": self.rid,
            "prompt_tokens": self.req.input_tokens,
            "completion_tokens": generated,
            "cached_tokens": self.cached_tokens,
            "finish_reason": finish,
        }

    def full_body(self, text: str, generated: int, reason: str) -> dict[str, Any]:
        if self.req.api == "generate":
            return {"text": text, "meta_info": self.meta(generated, reason)}
        if self.req.api == "chat":
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
            obj = "chat.completion"
        else:
            choice, obj = {"index": 0, "text": text}, "text_completion"
        choice.update(logprobs=None, finish_reason=reason)
        return {
            "id": self.rid,
            "object": obj,
            "created": self.created,
            "model": self.req.model,
            "choices": [choice],
            "usage": self.usage(generated),
        }
