"""Dataset replay: conversations in the ShareGPT shape, read from a JSONL file named by a ``dataset(...)`` scenario.

One JSON object per line, ``{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value":
"..."}, ...]}`` (``id`` and other keys ignored; ``user``/``assistant`` and OpenAI's ``role``/``content``
accepted too). Like SGLang ``bench_serving --dataset-name sharegpt``, a request replays a conversation's first
exchange: the first human message is the prompt and the first reply's length is the output length. Lengths
are counted by the word rule (one token per whitespace-separated word), the rule the simulator counts with.

The path is relative to the spec file; the file is read when the spec is loaded (a missing, unreadable or
empty dataset is a collection error) and again by the benchmark client.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DatasetError", "Exchange", "first_exchange", "load_exchanges", "sample_exchanges"]

_HUMAN = ("human", "user")
_MODEL = ("gpt", "assistant", "chatgpt", "bard", "model")


class DatasetError(ValueError):
    """A dataset file that cannot be replayed; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Exchange:
    """A conversation's first exchange: the prompt and the reply's length in tokens (word rule)."""

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


def first_exchange(obj: Any) -> Exchange | None:
    """A conversation's first human message and the length of the reply to it; None when it has none."""
    turns = _turns(obj)
    while turns and turns[0][0] not in _HUMAN:  # a leading system message is not the prompt
        turns = turns[1:]
    if len(turns) < 2 or turns[1][0] not in _MODEL:
        return None
    prompt, reply = turns[0][1].strip(), len(turns[1][1].split())
    if not prompt or reply < 1:
        return None
    return Exchange(prompt, reply)


@functools.lru_cache(maxsize=8)
def load_exchanges(path: str) -> tuple[Exchange, ...]:
    """Every replayable first exchange of the JSONL file at ``path``; raises DatasetError when there is none."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise DatasetError(f"cannot read the dataset {path} ({reason})") from None
    exchanges = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}:{number}: not a JSON object per line (JSONL): {err.msg}") from None
        exchange = first_exchange(obj)
        if exchange is not None:
            exchanges.append(exchange)
    if not exchanges:
        raise DatasetError(
            f"the dataset {path} has no conversation to replay: each line needs a `conversations` list that "
            'starts with a human message followed by a reply ({"from": "human"|"gpt", "value": "..."})'
        )
    return tuple(exchanges)


def sample_exchanges(exchanges: tuple[Exchange, ...], rng: np.random.Generator, n: int) -> list[Exchange]:
    """``n`` exchanges in a seeded shuffled order, each once before any repeats."""
    order: list[int] = []
    while len(order) < n:
        order += [int(i) for i in rng.permutation(len(exchanges))]
    return [exchanges[i] for i in order[:n]]
