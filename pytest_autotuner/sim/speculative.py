"""Speculative decoding (``--speculative-algorithm`` and its step, top-k and draft-token flags) in the simulator.

A speculative decode step of SGLang drafts ``num_steps`` tokens ahead for each running request (EAGLE's one-layer
draft head on the target's hidden states; a small draft model for STANDALONE; a lookup for NGRAM), then verifies
``num_draft_tokens`` tree nodes per request in one target forward, and keeps the longest accepted prefix plus
one token from the target: 1 to ``num_steps + 1`` tokens per request per step.

Cost of a step here: the draft, ``num_steps`` passes over ``batch x topk`` tokens, each ``draft_fraction`` of
a target pass of that size (EAGLE: one layer of ``num_layers`` plus the LM head's share of the weights; NGRAM
drafts on the CPU: none), and the verify pass, a target forward over ``batch x num_draft_tokens`` tokens that
reads each request's KV once. Verification is what makes long drafts expensive at large batches: the forward
turns compute-bound while the accepted length saturates, so the best draft length falls as load rises and as
acceptance falls.

Acceptance: ``acceptance[i]`` is the probability that draft position ``i + 1`` is accepted given that every
position before it was (per-position conditional rates of a chain draft). A tree of ``num_draft_tokens - 1``
nodes over ``num_steps`` positions has about ``(num_draft_tokens - 1) / num_steps`` candidates per position (at
most ``topk``), each accepted independently: ``1 - (1 - a_i) ** breadth``. Each request's accepted length is drawn
per step from these rates (the scheduler's seeded RNG). The defaults are assumptions in the range EAGLE-2/3 and
SGLang's published acceptance lengths put them (about 2.5-3.5 tokens per step at 3-5 draft steps for EAGLE3 on
chat traffic); a spec sets its own (``simulator.speculative_acceptance``, measured from ``sglang:spec_accept_length``
on a real server) because acceptance depends on the draft model and the traffic more than on anything here.
Not modelled: the draft model's weights and KV in GPU memory, adaptive drafting, and acceptance that varies with
the prompt.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

__all__ = ["DEFAULT_ACCEPTANCE", "Speculation", "auto_params", "parse_acceptance"]

#: per-position conditional acceptance by algorithm (positions past the list keep its last rate)
DEFAULT_ACCEPTANCE: dict[str, tuple[float, ...]] = {
    "EAGLE3": (0.80, 0.74, 0.70, 0.66, 0.62, 0.58, 0.55, 0.52),
    "EAGLE": (0.72, 0.64, 0.58, 0.54, 0.50, 0.47, 0.44, 0.42),
    "NEXTN": (0.72, 0.64, 0.58, 0.54, 0.50, 0.47, 0.44, 0.42),
    "STANDALONE": (0.70, 0.62, 0.56, 0.52, 0.48, 0.45, 0.42, 0.40),
    "NGRAM": (0.45, 0.35, 0.30, 0.27, 0.25, 0.23, 0.22, 0.21),
}
_LM_HEAD_SHARE = 0.06  # an EAGLE draft pass also runs the target's LM head: about this share of a target pass
_STANDALONE_FRACTION = 0.15  # a small draft model (a 1B for an 8B) against the target, per pass
MAX_STEPS = 64


def auto_params(architecture: str) -> tuple[int, int, int]:
    """(num_steps, topk, num_draft_tokens) when the flags leave them unset: SGLang 0.5's
    ``auto_choose_speculative_params`` ((3, 1, 4) for DeepSeek V2/V3 in 0.5.2, (5, 4, 8) otherwise)."""
    return (3, 1, 4) if architecture.startswith(("DeepseekV3", "DeepseekV2")) else (5, 4, 8)


def parse_acceptance(text: str) -> tuple[float, ...]:
    """``--sim-spec-acceptance 0.8,0.7,0.6``: rates in (0, 1], at least one."""
    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--sim-spec-acceptance: {text!r} is not a comma-separated list of numbers") from None
    if not rates or not all(0.0 < r <= 1.0 and math.isfinite(r) for r in rates):
        raise ValueError(f"--sim-spec-acceptance: every rate must be in (0, 1], got {text!r}")
    return rates


@dataclass(frozen=True)
class Speculation:
    """A resolved speculative-decoding setup of one server."""

    algorithm: str
    num_steps: int
    topk: int
    draft_tokens: int  # tree nodes verified per request, the token itself included
    acceptance: tuple[float, ...]
    draft_fraction: float  # one draft pass against a target pass over the same tokens

    @classmethod
    def resolve(
        cls,
        algorithm: str,
        num_steps: int | None,
        topk: int | None,
        draft_tokens: int | None,
        *,
        architecture: str,
        num_layers: int,
        acceptance: tuple[float, ...] | None = None,
    ) -> Speculation:
        """The flags as SGLang resolves them: unset ones from ``auto_params``; with ``topk`` 1 the draft tokens
        are ``num_steps + 1`` (SGLang adjusts them so)."""
        name = algorithm.upper()
        auto = auto_params(architecture)
        steps = min(num_steps if num_steps is not None else auto[0], MAX_STEPS)
        k = topk if topk is not None else auto[1]
        tokens = draft_tokens if draft_tokens is not None else auto[2]
        if k == 1:
            tokens = steps + 1
        tokens = max(2, min(tokens, steps * k + 1))
        if name == "NGRAM":
            fraction = 0.0
        elif name == "STANDALONE":
            fraction = _STANDALONE_FRACTION
        else:
            fraction = 1.0 / max(1, num_layers) + _LM_HEAD_SHARE
        rates = acceptance or DEFAULT_ACCEPTANCE.get(name, DEFAULT_ACCEPTANCE["EAGLE"])
        return cls(name, steps, k, tokens, rates, fraction)

    @property
    def breadth(self) -> float:
        """Candidates per draft position: the tree's nodes spread over its depth, at most ``topk``."""
        return max(1.0, min(float(self.topk), (self.draft_tokens - 1) / self.num_steps))

    @functools.cached_property
    def rates(self) -> tuple[float, ...]:
        """Per-position conditional acceptance of the tree (``breadth`` candidates at each position)."""
        picks = (self.acceptance[min(i, len(self.acceptance) - 1)] for i in range(self.num_steps))
        return tuple(1.0 - (1.0 - a) ** self.breadth for a in picks)

    def expected_tokens(self) -> float:
        """Tokens a request gains per step on average: 1 plus the expected accepted draft length."""
        total, reach = 1.0, 1.0
        for p in self.rates:
            reach *= p
            total += reach
        return total

    def draw(self, rng: random.Random, remaining: int) -> int:
        """One request's tokens from one step: 1 (the target's own) plus the accepted draft prefix, at most
        ``remaining``."""
        tokens = 1
        for p in self.rates:
            if tokens >= remaining or rng.random() >= p:
                break
            tokens += 1
        return min(tokens, max(1, remaining))
