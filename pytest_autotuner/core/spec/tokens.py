"""How prompts are counted in tokens: a model's ``tokenizer.json`` when one is at hand, else the word rule.

SGLang counts a prompt with the model's tokenizer. The simulator and the benchmark client do the same when a
``tokenizer.json`` is available locally (read with the ``tokenizers`` package: no torch, no transformers,
nothing downloaded): the simulator counts and caches prompts by its token ids, the client builds prompts of
the requested length by its count (as SGLang's ``bench_serving --dataset-name random`` does). Without one
both fall back to the word rule: one token per whitespace-separated word, plus one more per 10 characters of
a long word, its tokens the words themselves (a long word cut into 10-character pieces).

A path may name the ``tokenizer.json`` file or the folder holding it (a model folder); the file is read at the
edge (``pytest_autotuner.inputs.load_tokenizer``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Protocol

__all__ = [
    "OUTPUT_WORDS",
    "WORD_RULE",
    "TokenCounter",
    "TokenizerError",
    "WordRule",
    "output_keys",
    "word_tokens",
]


#: The words the simulator generates, in order, one token each (a reply is `` the of and ...``).
OUTPUT_WORDS = ("the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "on")


def output_keys(counter: TokenCounter) -> tuple[Hashable, ...]:
    """The cache key of each generated word under ``counter``: its token (a word with its leading space is
    one token in a real BPE vocabulary and in the shipped one), so a resent reply matches what was cached."""
    keys: list[Hashable] = []
    for word in OUTPUT_WORDS:
        tokens = counter.encode(" " + word)
        keys.append(tokens[0] if len(tokens) == 1 else tokens)
    return tuple(keys)


class TokenizerError(ValueError):
    """A tokenizer path that cannot be used; the message names the path and why."""


class TokenCounter(Protocol):
    """Turns text into the tokens a server counts and caches (any hashable values)."""

    @property
    def description(self) -> str:
        """What counts: ``"word rule"`` or ``"tokenizer <path>"`` (for ``/get_server_info`` and reports)."""
        ...

    def encode(self, text: str) -> tuple[Hashable, ...]: ...


def word_tokens(words: Sequence[str]) -> tuple[str, ...]:
    """The word rule: a word is a token; a long word is one per 10-character piece (11 letters: 2 tokens)."""
    return tuple(w if len(w) < 10 else w[i : i + 10] for w in words for i in range(0, len(w) // 10 * 10 + 1, 10))


class WordRule:
    """The fallback: tokens by whitespace-separated words (``word_tokens``)."""

    description = "word rule"
    path: str | None = None

    def encode(self, text: str) -> tuple[Hashable, ...]:
        return word_tokens(text.split())


WORD_RULE = WordRule()
