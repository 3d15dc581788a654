"""Synthetic prompts of a requested length, built once per cell so the send path only slices strings.

Without a tokenizer a prompt of ``n`` tokens is ``n`` space-separated short common English words: the
project's simulator counts one token per whitespace-separated word, and BPE tokenizers of real models map
each of these words (with its leading space) to a single token, so the length is close for real servers too.
The requested and the actual counts are both recorded; actual counts always come from the server's ``usage``.

With ``tokenizer`` naming a local ``tokenizer.json`` (or a folder holding one; read with the ``tokenizers``
package, ``core/spec/tokens.py``), prompts are built from token ids and come out at the exact length by that
tokenizer's count (before any chat template), as SGLang ``bench_serving``'s random dataset builds them: ids
of the word text are cut to the length, decoded, re-encoded and corrected until the count is exact. Nothing is
ever downloaded from the hub.

Shared prefixes (``P(...)`` scenarios, ``build_shared``): each group's system prompt starts with a word unique
to the group and each question with a word unique to it, so requests of one group share exactly the system
prompt's tokens and nothing more, and requests of different groups share nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pytest_autotuner.core.spec.tokens import TokenizerError
from pytest_autotuner.inputs import TokenizerFile, load_tokenizer

__all__ = ["PROMPT_WORDS", "PromptFactory", "SharedPrompt"]

logger = logging.getLogger(__name__)

# Every word is three letters, so a prompt of ``n`` words is a slice of 4 * n - 1 characters of one long text.
_WORDS = (
    "the", "and", "for", "you", "not", "are", "but", "can", "all", "one", "was", "has", "its", "new", "now",
    "way", "may", "day", "use", "her", "see", "him", "two", "how", "out", "any", "who", "get", "our", "own",
    "old", "man", "far", "few", "big", "run", "set", "put", "end", "why", "let", "say", "ask", "top", "red",
)  # fmt: skip
PROMPT_WORDS = _WORDS
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
        self._tokenizer: TokenizerFile | None = _load_tokenizer(tokenizer) if tokenizer else None
        self._ids: list[int] = []

    @property
    def exact(self) -> bool:
        """True when a local tokenizer makes prompt lengths exact."""
        return self._tokenizer is not None

    def count(self, text: str) -> int:
        """Tokens of ``text``: by the tokenizer, else by the word rule."""
        if self._tokenizer is not None:
            return len(self._tokenizer.ids(text))
        return len(text.split())

    def truncate(self, text: str, n: int) -> str:
        """The first ``n`` tokens of ``text`` (by the tokenizer, else words), as text."""
        if self._tokenizer is None:
            return " ".join(text.split()[:n])
        ids = self._tokenizer.ids(text)
        return text if len(ids) <= n else self._tokenizer.decode(ids[:n])

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
        if self._tokenizer is not None:  # the words after the prefix, each with its leading space
            self._ids = self._tokenizer.ids(" " + self._text)

    def _exact(self, prefix: str, n: int) -> str:
        """A prompt of exactly ``n`` tokens (when the tokenizer allows): the prefix, then word tokens."""
        tok = self._tokenizer
        assert tok is not None
        head = tok.ids(prefix)[: max(1, n)]
        body = max(0, n - len(head))
        text = tok.decode(head + self._ids[:body])
        for _ in range(8):  # decoding can merge across the cut; re-encode and correct, as bench_serving does
            off = len(tok.ids(text)) - n
            if off == 0 or body - off < 0 or body - off > len(self._ids):
                break
            body -= off
            text = tok.decode(head + self._ids[:body])
        return text


def _load_tokenizer(path: str) -> TokenizerFile | None:
    """A local tokenizer.json (or a folder holding one), or None with a warning when unusable; never downloads."""
    try:
        return load_tokenizer(path)
    except TokenizerError as err:
        logger.warning("`tokenizer`: %s; using approximate word prompts", err)
        return None
