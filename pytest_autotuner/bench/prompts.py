"""Synthetic prompts of a requested length, built once per cell so the send path only slices strings.

Without a tokenizer a prompt of ``n`` tokens is ``n`` space-separated short common English words: the
project's simulator counts one token per whitespace-separated word, and BPE tokenizers of real models map
each of these words (with its leading space) to a single token, so the length is close for real servers too.
The requested and the actual counts are both recorded; actual counts always come from the server's ``usage``.

With ``tokenizer`` naming a local directory and ``transformers`` importable, prompts are built from token ids
and come out at the exact length (before the chat template). Nothing is ever downloaded from the hub.

Shared prefixes (``P(...)`` scenarios, ``build_shared``): each group's system prompt starts with a word unique
to the group and each question with a word unique to it, so requests of one group share exactly the system
prompt's tokens and nothing more, and requests of different groups share nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PromptFactory", "SharedPrompt"]

logger = logging.getLogger(__name__)

# Every word is three letters, so a prompt of ``n`` words is a slice of 4 * n - 1 characters of one long text.
_WORDS = (
    "the", "and", "for", "you", "not", "are", "but", "can", "all", "one", "was", "has", "its", "new", "now",
    "way", "may", "day", "use", "her", "see", "him", "two", "how", "out", "any", "who", "get", "our", "own",
    "old", "man", "far", "few", "big", "run", "set", "put", "end", "why", "let", "say", "ask", "top", "red",
)  # fmt: skip
_WIDTH = 4
_LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


@dataclass(frozen=True)
class SharedPrompt:
    """A request of a shared-prefix scenario: its group's system prompt and its own question."""

    group: int
    system: str
    question: str


class PromptFactory:
    """Builds prompts of a given token count, each starting with a distinct prefix word."""

    def __init__(self, *, seed: int, tokenizer: str | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        self._text = ""
        self._tokenizer: Any = _load_tokenizer(tokenizer) if tokenizer else None
        self._ids: list[int] = []

    @property
    def exact(self) -> bool:
        """True when a local tokenizer makes prompt lengths exact."""
        return self._tokenizer is not None

    def build(self, n_tokens: Sequence[int]) -> list[str]:
        """One prompt per requested length, in order; prompt ``i`` starts with a prefix unique to it."""
        if not n_tokens:
            return []
        longest = max(n_tokens)
        self._grow(longest)
        letters = self._rng.choice(_LETTERS, size=(len(n_tokens), 3))
        prompts = []
        for i, n in enumerate(n_tokens):
            prefix = f"{letters[i].tobytes().decode()}{i:x}"
            if self._tokenizer is not None:
                prompts.append(self._exact(prefix, n))
            elif n <= 1:
                prompts.append(prefix)
            else:
                prompts.append(f"{prefix} {self._text[: _WIDTH * (n - 1) - 1]}")
        return prompts

    def build_shared(self, system: int, question: int, assignment: Sequence[tuple[int, int]]) -> list[SharedPrompt]:
        """One prompt per (group, question) of ``assignment``: ``system`` tokens shared by the group's requests,
        then ``question`` tokens shared with no other request of the group (the same pair, the same prompt)."""
        if not assignment:
            return []
        groups = sorted({g for g, _ in assignment})
        questions = sorted(set(assignment))
        systems = dict(zip(groups, self.build([system] * len(groups)), strict=True))
        asked = dict(zip(questions, self.build([question] * len(questions)), strict=True))
        return [SharedPrompt(g, systems[g], asked[(g, q)]) for g, q in assignment]

    def _grow(self, n_words: int) -> None:
        if len(self._text) >= _WIDTH * n_words:
            return
        picks = self._rng.integers(0, len(_WORDS), size=n_words + 64)
        self._text = " ".join(_WORDS[p] for p in picks)
        if self._tokenizer is not None:
            self._ids = list(self._tokenizer.encode(self._text, add_special_tokens=False))

    def _exact(self, prefix: str, n: int) -> str:
        tok = self._tokenizer
        head = list(tok.encode(prefix, add_special_tokens=False))
        ids = (head + self._ids[: max(0, n - len(head))])[: max(1, n)]
        return str(tok.decode(ids))


def _load_tokenizer(path: str) -> Any:
    """A local Hugging Face tokenizer, or None (with a warning) when unavailable; never downloads."""
    if not os.path.isdir(path):
        logger.warning("`tokenizer` %r is not a local directory; using approximate word prompts", path)
        return None
    try:
        from transformers import AutoTokenizer  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        logger.warning("`tokenizer` is set but transformers is not installed; using approximate word prompts")
        return None
    return AutoTokenizer.from_pretrained(path, local_files_only=True)
