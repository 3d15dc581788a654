"""Traffic scenarios in the genai-bench grammar: ``D(in,out)``, ``N(mi,si)/(mo,so)``, ``U(...)``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ACCEPTED_FORMS", "MAX_TOKENS_PER_REQUEST", "Scenario", "ScenarioError", "parse_scenario"]

#: Input + output tokens one request of a scenario may need (for N: mean + 3 std each), 2^20: above the context
#: of the models SGLang serves, and a bound on the prompt the client builds (a 300M-token prompt is GiBs).
MAX_TOKENS_PER_REQUEST = 1 << 20

ACCEPTED_FORMS = (
    "D(in,out) e.g. D(100,100); N(mean_in,std_in)/(mean_out,std_out) e.g. N(480,240)/(300,150); "
    "U(min_in,max_in)/(min_out,max_out) e.g. U(50,100)/(50,200); U(max_in,max_out) e.g. U(100,200)"
)

_NUM = r"(\d{1,12})"  # digits bounded: int() of a huge literal is slow
_PAIR = rf"\({_NUM},{_NUM}\)"
_PATTERNS: dict[str, re.Pattern[str]] = {
    "D": re.compile(rf"^D{_PAIR}$"),
    "N": re.compile(rf"^N{_PAIR}/{_PAIR}$"),
    "U4": re.compile(rf"^U{_PAIR}/{_PAIR}$"),
    "U2": re.compile(rf"^U{_PAIR}$"),
}


class ScenarioError(ValueError):
    """A scenario string that does not follow the grammar."""


@dataclass(frozen=True)
class Scenario:
    """One traffic scenario: how input and output token counts of requests are drawn."""

    text: str
    kind: Literal["D", "N", "U"]
    input: tuple[int, int]
    output: tuple[int, int]

    def sample(self, rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
        """Draw ``n`` (input_tokens, output_tokens) pairs."""
        if self.kind == "D":
            return [(self.input[0], self.output[0])] * n
        if self.kind == "N":
            ins = rng.normal(self.input[0], self.input[1], n)
            outs = rng.normal(self.output[0], self.output[1], n)
            return [(max(1, int(i)), max(2, int(o))) for i, o in zip(ins, outs, strict=True)]
        ins_u = rng.integers(self.input[0], self.input[1], n, endpoint=True)
        outs_u = rng.integers(self.output[0], self.output[1], n, endpoint=True)
        return [(int(i), int(o)) for i, o in zip(ins_u, outs_u, strict=True)]

    @property
    def max_total_tokens(self) -> int:
        """Largest input + output a request of this scenario is expected to need (for context checks)."""
        if self.kind == "N":
            return self.input[0] + 3 * self.input[1] + self.output[0] + 3 * self.output[1]
        if self.kind == "D":
            return self.input[0] + self.output[0]
        return self.input[1] + self.output[1]


def parse_scenario(text: str) -> Scenario:
    """Parse one scenario string; raises ScenarioError naming the accepted forms."""
    if not isinstance(text, str):
        raise ScenarioError(f"scenario must be a string, got {text!r}; accepted forms: {ACCEPTED_FORMS}")
    compact = text.strip()
    for key, pattern in _PATTERNS.items():
        match = pattern.match(compact)
        if not match:
            continue
        nums = [int(g) for g in match.groups()]
        if key == "D":
            scenario = Scenario(compact, "D", (nums[0], 0), (nums[1], 0))
        elif key == "N":
            scenario = Scenario(compact, "N", (nums[0], nums[1]), (nums[2], nums[3]))
        elif key == "U4":
            scenario = Scenario(compact, "U", (nums[0], nums[1]), (nums[2], nums[3]))
        else:
            scenario = Scenario(compact, "U", (1, nums[0]), (1, nums[1]))
        _check_bounds(scenario)
        return scenario
    raise ScenarioError(f"{text!r} is not a traffic scenario; accepted forms: {ACCEPTED_FORMS}")


def _check_bounds(scenario: Scenario) -> None:
    if scenario.max_total_tokens > MAX_TOKENS_PER_REQUEST:
        raise ScenarioError(
            f"{scenario.text!r}: a request may need {scenario.max_total_tokens:,} tokens (input + output), over the "
            f"cap of {MAX_TOKENS_PER_REQUEST:,}; use counts within the model's context"
        )
    if scenario.kind == "D" and (scenario.input[0] < 1 or scenario.output[0] < 1):
        raise ScenarioError(f"{scenario.text!r}: token counts must be at least 1")
    if scenario.kind == "N" and (scenario.input[0] < 1 or scenario.output[0] < 1):
        raise ScenarioError(f"{scenario.text!r}: mean token counts must be at least 1")
    if scenario.kind == "U":
        for lo, hi in (scenario.input, scenario.output):
            if lo < 1 or hi < lo:
                raise ScenarioError(f"{scenario.text!r}: each range needs 1 <= min <= max, got ({lo},{hi})")
