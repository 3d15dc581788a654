"""What a cell sends: each request's lengths and body, drawn by seed, and the sessions of multi-turn traffic.

``CellRequests.prepare`` draws the lengths of all requests of a cell (measured first, then warm-ups) and encodes
their bodies before the first is sent, so the load loops (``client.py``) only send. Traffic with structure
(``core/spec/scenarios.py``): ``P(...)`` requests share their group's system prompt (a system message, or the head
of a completions prompt); ``C(...)`` sessions and ``dataset(...)`` replays resend their history with the replies
the client received, so a session's later bodies are built when the turn is sent (``turn_body``). Prompts are
built by the tokenizer the simulator counts with when it names one in ``/get_server_info`` (``sim_tokenizer``),
else by the plan's tokenizer or the word rule.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_autotuner.bench.prompts import PromptFactory
from pytest_autotuner.core.spec.dataset import sample_exchanges
from pytest_autotuner.inputs import load_conversations

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.plan import BenchmarkPlan
    from pytest_autotuner.core.spec.scenarios import Conversations, Scenario

__all__ = ["CellRequests"]


def _runs(starts: list[int]) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal values in ``starts`` (the requests of one session)."""
    out: list[tuple[int, int]] = []
    for i, s in enumerate(starts):
        if out and out[-1][0] == s:
            out[-1] = (s, i + 1)
        else:
            out.append((s, i + 1))
    return out


class CellRequests:
    """The requests of one cell: lengths (input, output tokens) and bodies by index, measured ones first."""

    def __init__(self, plan: BenchmarkPlan, model: str, server_info: dict[str, Any]) -> None:
        self.plan, self.model = plan, model
        self._server_info = server_info
        self.context_length = int(server_info.get("context_length") or 0)  # 0: unknown
        self.lengths: list[tuple[int, int]] = []
        self.bodies: list[bytes] = []
        # Multi-turn sessions (``C(...)``, ``dataset(...)``): request i's session begins at session_starts[i];
        # the sessions' request ranges in order; the user's message of each request; think time between turns.
        self.multi_turn = False
        self.session_starts: list[int] = []
        self.sessions_of: list[range] = []
        self.user_texts: list[str] = []
        self.system_text: str | None = None
        self.think = 0.0
        self.replies: dict[int, str] = {}  # the reply text of each turn, resent in the session's later turns

    def tokenizer(self) -> str | None:
        """The tokenizer prompts are built with: the plan's, else the one the simulator counts with (a local
        tokenizer.json it names in ``/get_server_info``), so that a prompt of n tokens is n tokens to it."""
        if self.plan.tokenizer:
            return self.plan.tokenizer
        path = self._server_info.get("sim_tokenizer")
        return path if isinstance(path, str) and Path(path).is_file() else None

    def prepare(self, scenario: Scenario, seed: int) -> None:
        """Draw the lengths of all requests (measured first, then warm-ups) and encode their bodies."""
        self.rng = np.random.default_rng(seed)
        n = self.plan.max_requests + self.plan.warmup_requests
        factory = PromptFactory(seed=seed, tokenizer=self.tokenizer())
        if scenario.dataset is not None:
            self._prepare_replay(scenario.dataset, factory)
            return
        self.lengths = scenario.sample(self.rng, n)
        shared = scenario.shared
        if scenario.chat is not None:
            self._prepare_sessions(scenario.chat, factory)
            return
        if shared is not None:
            prompts = factory.build_shared(shared.system, shared.question, shared.assign(self.rng, n))
            self.bodies = [
                json.dumps(self._body(p.question, out, system=p.system)).encode()
                for p, (_, out) in zip(prompts, self.lengths, strict=True)
            ]
            return
        texts = factory.build([i for i, _ in self.lengths])
        self.bodies = [
            json.dumps(self._body(prompt, out)).encode() for prompt, (_, out) in zip(texts, self.lengths, strict=True)
        ]

    def _prepare_replay(self, dataset: str, factory: PromptFactory) -> None:
        """Dataset replay: conversations drawn by seed, each a session of its exchanges (``core/spec/dataset.py``).

        Lengths are counted as the server counts (its tokenizer when the factory has it, else words) and kept
        within the server's context, as bench_serving filters: a first message too long is cut to fit, and a
        conversation ends before the turn whose history and reply would not fit. Warm-ups are first exchanges
        of conversations of their own."""
        conversations = load_conversations(str(Path(self.plan.dataset_root, dataset).resolve()))
        measured, warm = self.plan.max_requests, self.plan.warmup_requests
        context = self.context_length
        self.lengths, self.user_texts, self.session_starts = [], [], []
        self.bodies, self.think = [], 0.0
        picks = iter(sample_exchanges(conversations, self.rng, measured + warm))
        while len(self.lengths) < measured:
            start, history = len(self.lengths), 0
            for turn, exchange in enumerate(next(picks)):
                text, out = exchange.prompt, exchange.output_tokens
                if context and turn == 0:
                    out = max(1, min(out, context // 2))
                    text = factory.truncate(text, context - out - 1)
                n_in = history + factory.count(text)
                if (context and n_in + out > context) or len(self.lengths) >= measured:
                    break
                self.lengths.append((n_in, out))
                self.user_texts.append(text)
                self.session_starts.append(start)
                history = n_in + out
        self.sessions_of = [range(s, e) for s, e in _runs(self.session_starts)]
        self.bodies = [b""] * len(self.lengths)
        for _ in range(warm):
            first = next(picks)[0]
            out = max(1, min(first.output_tokens, context // 2)) if context else first.output_tokens
            text = factory.truncate(first.prompt, context - out - 1) if context else first.prompt
            self.lengths.append((factory.count(text), out))
            self.bodies.append(json.dumps(self._body(text, out)).encode())
        self.multi_turn = True
        self.system_text = None

    def _prepare_sessions(self, chat: Conversations, factory: PromptFactory) -> None:
        """Multi-turn chats: one system prompt, a user message per turn; bodies are built when a turn is sent
        (they carry the replies received). Warm-ups are first turns of sessions of their own."""
        self.multi_turn, self.think = True, chat.think
        self.system_text = factory.build([chat.system])[0] if chat.system else None
        measured, warm = self.plan.max_requests, self.plan.warmup_requests
        count = chat.requests(measured)
        self.user_texts = factory.build([chat.input] * (count + warm))
        self.session_starts = [i - i % chat.turns for i in range(count)]
        self.sessions_of = [range(s, min(count, s + chat.turns)) for s in range(0, count, chat.turns)]
        self.bodies = [b""] * (measured + warm)
        for k in range(warm):
            body = self._body(self.user_texts[-warm + k], chat.output, system=self.system_text)
            self.bodies[measured + k] = json.dumps(body).encode()

    def turn_body(self, index: int) -> bytes:
        """A turn of a session: the system prompt, the session's earlier turns and their replies, its message."""
        first = self.session_starts[index]
        messages = [{"role": "system", "content": self.system_text}] if self.system_text is not None else []
        for j in range(first, index):
            messages.append({"role": "user", "content": self.user_texts[j]})
            messages.append({"role": "assistant", "content": self.replies.get(j, "")})
        messages.append({"role": "user", "content": self.user_texts[index]})
        body: dict[str, Any] = {"model": self.model}
        if self.plan.api == "chat":
            body["messages"] = messages
        else:  # a plain transcript: the same tokens in the same order
            body["prompt"] = " ".join(str(m["content"]).strip() for m in messages if m["content"])
        body.update(stream=True, stream_options={"include_usage": True}, max_tokens=self.lengths[index][1],
                    ignore_eos=True)  # fmt: skip
        body.update(self.plan.additional_params)
        return json.dumps(body).encode()

    def _body(self, prompt: str, out: int, *, system: str | None = None) -> dict[str, Any]:
        """A request body; ``system`` goes first (a system message, or the head of a completions prompt)."""
        body: dict[str, Any] = {"model": self.model}
        if self.plan.api == "chat":
            system_messages = [{"role": "system", "content": system}] if system is not None else []
            body["messages"] = [*system_messages, {"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt if system is None else f"{system} {prompt}"
        body.update(stream=True, stream_options={"include_usage": True}, max_tokens=out, ignore_eos=True)
        body.update(self.plan.additional_params)
        return body
