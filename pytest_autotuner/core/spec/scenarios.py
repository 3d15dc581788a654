"""Traffic scenarios: the genai-bench grammar ``D(in,out)``, ``N(mi,si)/(mo,so)``, ``U(...)``, and shared prefixes.

``P(groups,prompts,system,question,output)`` is the shape of SGLang ``bench_serving``'s
``generated-shared-prefix`` dataset: ``groups`` system prompts of ``system`` tokens, each followed by
``prompts`` different questions of ``question`` tokens, every request asking for ``output`` tokens. Requests
draw their prompt in a seeded shuffled order over all groups (the order bench_serving sends them in), so a
cache-aware scheduler has prefixes to regroup; a cell of more requests than ``groups x prompts`` starts over.

``C(sessions,turns,in,out)`` or ``C(sessions,turns,in,out,system,think_ms)`` are multi-turn chats: ``sessions``
conversations of ``turns`` turns; each turn adds a user message of ``in`` tokens and asks for ``out`` tokens,
and resends the whole history (system prompt, earlier messages and the replies received), as chat clients
do. All sessions share one system prompt of ``system`` tokens (default 0: none); the user thinks ``think_ms``
milliseconds (server time) between a reply and the next turn. A session's turns go in order; the cell's
concurrency is how many sessions run at once. Request ``i`` is turn ``i % turns`` of session ``i // turns``, so
a cell sends ``min(max_requests, sessions x turns)`` requests.

``dataset(path)`` replays a JSONL file of ShareGPT-shaped conversations (``dataset.py``), the path relative to
the spec file; its lengths come from the file, so ``sample`` does not apply (the client draws the requests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ACCEPTED_FORMS",
    "MAX_CELL_TOKENS",
    "MAX_PROMPTS",
    "MAX_TOKENS_PER_REQUEST",
    "Conversations",
    "Scenario",
    "ScenarioError",
    "SharedPrefix",
    "longest_request",
    "parse_scenario",
]

#: Input + output tokens one request of a scenario may need (for N: mean + 3 std each), 2^20: above the context
#: of the models SGLang serves, and a bound on the prompt the client builds (a 300M-token prompt is GiBs).
MAX_TOKENS_PER_REQUEST = 1 << 20
#: Tokens (input + output) of all the requests of one cell, 2^27: the client builds a cell's prompts before the
#: cell starts (some 4 bytes a token, then the JSON bodies), so this bounds its memory to about a GiB; 1,000
#: requests of 128k tokens fit, as do 100 of 10^6.
MAX_CELL_TOKENS = 1 << 27
#: Distinct prompts of a shared-prefix scenario (``groups x prompts``): a cell sends at most
#: ``max_requests_per_iteration`` (<= 10^6) requests, so more would never be sent.
MAX_PROMPTS = 1_000_000

ACCEPTED_FORMS = (
    "D(in,out) e.g. D(100,100); N(mean_in,std_in)/(mean_out,std_out) e.g. N(480,240)/(300,150); "
    "U(min_in,max_in)/(min_out,max_out) e.g. U(50,100)/(50,200); U(max_in,max_out) e.g. U(100,200); "
    "P(groups,prompts,system,question,output) e.g. P(8,32,2000,100,100) (groups of prompts sharing a system prompt); "
    "C(sessions,turns,in,out) or C(sessions,turns,in,out,system,think_ms) e.g. C(16,4,200,100,1000,500) "
    "(multi-turn chats); dataset(path) e.g. dataset(datasets/chat.jsonl) (ShareGPT-shaped JSONL, relative to the spec)"
)
_CHAT_FIELDS = ("sessions", "turns", "in", "out", "system", "think_ms")
_SHARED_FIELDS = ("groups", "prompts", "system", "question", "output")

_NUM = r"(\d{1,12})"  # digits bounded: int() of a huge literal is slow
_PAIR = rf"\({_NUM},{_NUM}\)"
_PATTERNS: dict[str, re.Pattern[str]] = {
    "D": re.compile(rf"^D{_PAIR}$"),
    "N": re.compile(rf"^N{_PAIR}/{_PAIR}$"),
    "U4": re.compile(rf"^U{_PAIR}/{_PAIR}$"),
    "U2": re.compile(rf"^U{_PAIR}$"),
    "P": re.compile(rf"^P\({_NUM},{_NUM},{_NUM},{_NUM},{_NUM}\)$"),
    "C": re.compile(rf"^C\({_NUM},{_NUM},{_NUM},{_NUM}(?:,{_NUM},{_NUM})?\)$"),
}
_DATASET = re.compile(r"^dataset\(\s*([^()]*?)\s*\)$")


class ScenarioError(ValueError):
    """A scenario string that does not follow the grammar."""


@dataclass(frozen=True)
class SharedPrefix:
    """Groups of prompts sharing a system prompt (``P(...)``); token counts before any chat template."""

    groups: int
    prompts: int  # per group
    system: int
    question: int

    def assign(self, rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
        """(group, question) of ``n`` requests: every prompt once in a seeded shuffled order, then again."""
        total = self.groups * self.prompts
        order: list[int] = []
        while len(order) < n:
            order += [int(i) for i in rng.permutation(total)]
        return [divmod(i, self.prompts) for i in order[:n]]


@dataclass(frozen=True)
class Conversations:
    """Multi-turn chats (``C(...)``): each turn resends the history and adds ``input`` new tokens."""

    sessions: int
    turns: int
    input: int  # tokens of each user message
    output: int  # tokens asked for in each reply
    system: int = 0  # tokens of the system prompt all sessions share
    think: float = 0.0  # server seconds between a reply and the next turn

    def requests(self, limit: int) -> int:
        """Requests a cell sends when at most ``limit`` are allowed."""
        return min(limit, self.sessions * self.turns)

    def prompt_tokens(self, turn: int) -> int:
        """Prompt tokens of turn ``turn`` (0-based) by the requested lengths: history plus the new message."""
        return self.system + turn * (self.input + self.output) + self.input

    def history_tokens(self, turns: int) -> int:
        """Prompt tokens of a session's first ``turns`` turns together (arithmetic: each resends the history)."""
        return turns * (self.system + self.input) + (self.input + self.output) * turns * (turns - 1) // 2


@dataclass(frozen=True)
class Scenario:
    """One traffic scenario: how input and output token counts of requests are drawn."""

    text: str
    kind: Literal["D", "N", "U", "P", "C", "R"]
    input: tuple[int, int]
    output: tuple[int, int]
    shared: SharedPrefix | None = None  # kind "P": the prompt structure
    chat: Conversations | None = None  # kind "C": the sessions
    dataset: str | None = None  # kind "R": the JSONL file, as written (relative to the spec file)

    def sample(self, rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
        """Draw ``n`` (input_tokens, output_tokens) pairs (``C``: request ``i`` is turn ``i % turns``)."""
        if self.chat is not None:
            return [(self.chat.prompt_tokens(i % self.chat.turns), self.chat.output) for i in range(n)]
        if self.dataset is not None:
            raise ValueError(f"{self.text!r}: a dataset's lengths come from its file (core.spec.dataset), not sample()")
        if self.kind in ("D", "P"):
            return [(self.input[0], self.output[0])] * n
        if self.kind == "N":
            ins = rng.normal(self.input[0], self.input[1], n)
            outs = rng.normal(self.output[0], self.output[1], n)
            return [(max(1, int(i)), max(2, int(o))) for i, o in zip(ins, outs, strict=True)]
        ins_u = rng.integers(self.input[0], self.input[1], n, endpoint=True)
        outs_u = rng.integers(self.output[0], self.output[1], n, endpoint=True)
        return [(int(i), int(o)) for i, o in zip(ins_u, outs_u, strict=True)]

    def cell_tokens(self, measured: int, warmups: int) -> int | None:
        """Input + output tokens of the requests of a cell of ``measured`` requests and ``warmups`` warm-ups, by
        the requested lengths (``N``: mean + 3 std), arithmetic; None for a dataset (its file is bounded)."""
        if self.dataset is not None:
            return None
        if self.chat is not None:  # request i is turn i % turns; a warm-up is a first turn
            chat = self.chat
            sent = chat.requests(measured)
            sessions, rest = divmod(sent, chat.turns)
            return (
                sessions * chat.history_tokens(chat.turns)
                + chat.history_tokens(rest)
                + (sent + warmups) * chat.output
                + warmups * chat.prompt_tokens(0)
            )
        return (measured + warmups) * self.max_total_tokens

    @property
    def max_total_tokens(self) -> int:
        """Largest input + output a request of this scenario is expected to need (for context checks)."""
        if self.kind == "N":
            return self.input[0] + 3 * self.input[1] + self.output[0] + 3 * self.output[1]
        if self.kind == "D":
            return self.input[0] + self.output[0]
        if self.kind == "P":
            return self.input[0] + self.output[0]
        if self.chat is not None:
            return self.chat.prompt_tokens(self.chat.turns - 1) + self.chat.output
        return self.input[1] + self.output[1]


def longest_request(scenario: Scenario) -> str:
    """How the longest request of ``scenario`` adds up, naming the scenario's fields (for context errors)."""
    total = f"{scenario.max_total_tokens:,}"
    if scenario.kind == "D":
        return f"`in` + `out` = {scenario.input[0]} + {scenario.output[0]} = {total}"
    if scenario.kind == "N":
        (mi, si), (mo, so) = scenario.input, scenario.output
        return f"mean + 3 std of `in` and of `out` = {mi} + 3 x {si} + {mo} + 3 x {so} = {total}"
    if scenario.shared is not None:
        p = scenario.shared
        return f"`system` + `question` + `output` = {p.system} + {p.question} + {scenario.output[0]} = {total}"
    if scenario.chat is not None:
        c = scenario.chat
        return (
            f"the last turn's history and reply, `system` + `turns` x (`in` + `out`) = {c.system} + {c.turns} x "
            f"({c.input} + {c.output}) = {total}"
        )
    return f"`max_in` + `max_out` = {scenario.input[1]} + {scenario.output[1]} = {total}"


def parse_scenario(text: str) -> Scenario:
    """Parse one scenario string; raises ScenarioError naming the accepted forms."""
    if not isinstance(text, str):
        raise ScenarioError(f"scenario must be a string, got {text!r}; accepted forms: {ACCEPTED_FORMS}")
    compact = text.strip()
    replay = _DATASET.match(compact)
    if replay:
        if not replay.group(1):
            raise ScenarioError(f"{text!r}: `dataset` needs a JSONL file path, e.g. dataset(datasets/chat.jsonl)")
        return Scenario(compact, "R", (0, 0), (0, 0), dataset=replay.group(1))
    for key, pattern in _PATTERNS.items():
        match = pattern.match(compact)
        if not match:
            continue
        nums = [int(g) for g in match.groups() if g is not None]
        if key == "P":
            return _shared_prefix(compact, nums)
        if key == "C":
            return _conversations(compact, nums)
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
            f"{scenario.text!r}: a request may need {longest_request(scenario)} tokens (input + output), over the "
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


def _shared_prefix(text: str, nums: list[int]) -> Scenario:
    for name, value in zip(_SHARED_FIELDS, nums, strict=True):
        if value < 1:
            raise ScenarioError(
                f"{text!r}: `{name}` (field {_SHARED_FIELDS.index(name) + 1} of "
                f"P({','.join(_SHARED_FIELDS)})) must be at least 1, got {value}"
            )
    groups, prompts, system, question, output = nums
    if groups * prompts > MAX_PROMPTS:
        raise ScenarioError(
            f"{text!r}: `groups` x `prompts` = {groups} x {prompts} = {groups * prompts:,} distinct prompts, over "
            f"the limit of {MAX_PROMPTS:,} (a cell sends at most 1,000,000 requests); use fewer groups or prompts"
        )
    shared = SharedPrefix(groups, prompts, system, question)
    scenario = Scenario(text, "P", (system + question, 0), (output, 0), shared)
    _check_bounds(scenario)
    return scenario


def _conversations(text: str, nums: list[int]) -> Scenario:
    for index, (name, value) in enumerate(zip(_CHAT_FIELDS, nums, strict=False)):
        if value < 1 and index < 4:
            raise ScenarioError(
                f"{text!r}: `{name}` (field {index + 1} of C({','.join(_CHAT_FIELDS)})) must be at least 1, got {value}"
            )
    sessions, turns, n_in, n_out, *rest = nums
    system, think_ms = rest if rest else (0, 0)
    chat = Conversations(sessions, turns, n_in, n_out, system, think_ms / 1000.0)
    scenario = Scenario(text, "C", (chat.prompt_tokens(turns - 1), 0), (n_out, 0), chat=chat)
    _check_bounds(scenario)
    return scenario
