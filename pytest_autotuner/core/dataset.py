"""Dataset replay: conversations in the ShareGPT shape, read from a JSONL file named by a ``dataset(...)`` scenario.

One JSON object per line, ``{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value":
"..."}, ...]}`` (``id`` and other keys ignored; ``user``/``assistant`` and OpenAI's ``role``/``content``
accepted too). A conversation is replayed as a chat session: its exchanges (a human message and the model's
reply, in order, from the first human message up to the first break in that alternation) are its turns;
each turn resends the whole history (the earlier messages and the replies the server gave) plus its human
message and asks for as many tokens as the recorded reply had, as a chat client does. (SGLang
``bench_serving --dataset-name sharegpt`` replays only the first exchange; ``first_exchange`` is that.)
Lengths here are counted by the word rule (one token per whitespace-separated word); the client recounts
with the server's tokenizer when it has one.

The path is relative to the spec file; the file is read when the spec is loaded (a missing, unreadable or
empty dataset is a collection error) and again by the benchmark client.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "Conversation",
    "DatasetError",
    "Exchange",
    "exchanges",
    "first_exchange",
    "load_conversations",
    "load_exchanges",
    "sample_exchanges",
]

T = TypeVar("T")
_HUMAN = ("human", "user")
_MODEL = ("gpt", "assistant", "chatgpt", "bard", "model")


class DatasetError(ValueError):
    """A dataset file that cannot be replayed; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Exchange:
    """One exchange of a conversation: the human message and the reply's length in tokens (word rule)."""

    prompt: str
    output_tokens: int

    @property
    def input_tokens(self) -> int:
        return len(self.prompt.split())


def _turns(obj: Any) -> list[tuple[str, str]]:
    turns = obj.get("conversations", obj.get("messages")) if isinstance(obj, dict) else None
    if not isinstance(turns, list):
        return []
    out = []
    for turn in turns:
        if not isinstance(turn, dict):
            return []
        who = str(turn.get("from", turn.get("role", ""))).lower()
        text = turn.get("value", turn.get("content"))
        if not isinstance(text, str):
            return []
        out.append((who, text))
    return out


#: A conversation's replayable exchanges, in order (at least one).
Conversation = tuple[Exchange, ...]


def exchanges(obj: Any) -> Conversation:
    """A conversation's exchanges from its first human message, while human and model alternate (empty when
    there is none: no human message answered by the model)."""
    turns = _turns(obj)
    while turns and turns[0][0] not in _HUMAN:  # a leading system message is not the prompt
        turns = turns[1:]
    out: list[Exchange] = []
    for at in range(0, len(turns) - 1, 2):
        (asker, prompt), (answerer, reply) = turns[at], turns[at + 1]
        if asker not in _HUMAN or answerer not in _MODEL or not prompt.strip() or not reply.split():
            break
        out.append(Exchange(prompt.strip(), len(reply.split())))
    return tuple(out)


def first_exchange(obj: Any) -> Exchange | None:
    """A conversation's first human message and the length of the reply to it; None when it has none."""
    found = exchanges(obj)
    return found[0] if found else None


def load_exchanges(path: str) -> tuple[Exchange, ...]:
    """Every replayable first exchange of the JSONL file at ``path``; raises DatasetError when there is none."""
    return tuple(c[0] for c in load_conversations(path))


@functools.lru_cache(maxsize=8)
def load_conversations(path: str) -> tuple[Conversation, ...]:
    """Every replayable conversation of the JSONL file at ``path``; raises DatasetError when there is none."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise DatasetError(f"cannot read the dataset {path} ({reason})") from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}:{number}: not a JSON object per line (JSONL): {err.msg}") from None
        conversation = exchanges(obj)
        if conversation:
            found.append(conversation)
    if not found:
        raise DatasetError(
            f"the dataset {path} has no conversation to replay: each line needs a `conversations` list that "
            'starts with a human message followed by a reply ({"from": "human"|"gpt", "value": "..."})'
        )
    return tuple(found)


def sample_exchanges(items: tuple[T, ...], rng: np.random.Generator, n: int) -> list[T]:
    """``n`` items (exchanges or conversations) in a seeded shuffled order, each once before any repeats."""
    order: list[int] = []
    while len(order) < n:
        order += [int(i) for i in rng.permutation(len(items))]
    return [items[i] for i in order[:n]]
