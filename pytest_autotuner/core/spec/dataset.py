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
empty dataset, or one over ``MAX_DATASET_BYTES``, is a collection error) and again by the benchmark client,
a line at a time each time: opened at the edge (``pytest_autotuner.inputs.load_conversations``), parsed here
(``read_conversations``) from the stream it is given.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "MAX_DATASET_BYTES",
    "MAX_LINE_BYTES",
    "Conversation",
    "DatasetError",
    "Exchange",
    "exchanges",
    "first_exchange",
    "read_conversations",
    "sample_exchanges",
]

T = TypeVar("T")
#: A dataset file's size: read at collection and again by each trial's client, it is a sample to replay, not a
#: corpus (a 64 MiB file is some 100,000 ShareGPT conversations; ``bench.datasets convert --limit`` samples one)
MAX_DATASET_BYTES = 64 * 2**20
#: One line (one conversation): above what a model's context holds (``scenarios.MAX_TOKENS_PER_REQUEST``)
MAX_LINE_BYTES = 8 * 2**20
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


def too_big(path: str, what: str) -> str:
    return (
        f"the dataset {path} {what}, over the limit of {MAX_DATASET_BYTES // 2**20} MiB ({MAX_DATASET_BYTES:,} "
        "bytes); replay a sample of it (python -m pytest_autotuner.bench.datasets convert DUMP OUT --limit N)"
    )


def read_conversations(path: str, handle: BinaryIO) -> tuple[Conversation, ...]:
    found = []
    total = 0
    for number in itertools.count(1):
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            break
        total += len(line)
        if total > MAX_DATASET_BYTES:
            raise DatasetError(too_big(path, f"holds more than {MAX_DATASET_BYTES:,} bytes"))
        if len(line) > MAX_LINE_BYTES:
            raise DatasetError(
                f"{path}:{number}: a line is over {MAX_LINE_BYTES // 2**20} MiB ({MAX_LINE_BYTES:,} bytes), the "
                "limit of one conversation; is this a JSONL file of conversations?"
            )
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise DatasetError(f"cannot read the dataset {path} (line {number} is not UTF-8 text)") from None
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
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
