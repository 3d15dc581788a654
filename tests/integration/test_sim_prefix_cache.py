"""Shared-prefix traffic through the real client against the simulator process: what its radix cache did."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import SimProcess

from pytest_autotuner.bench.client import run_benchmark
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.runtimes.base import Endpoint

FAST = ["--sim-speedup", "20", "--sim-startup-scale", "0.02", "--sim-noise", "0"]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Any]:
    started: list[SimProcess] = []

    def start(*flags: str) -> Endpoint:
        sim = SimProcess(tmp_path, *FAST, *flags)
        started.append(sim)
        sim.wait_ready()
        info = sim.get_json("/server_info")  # as the runtimes do: the client reads the context length there
        return Endpoint(sim.base, "meta-llama/Llama-3.2-1B-Instruct", time_scale=20.0, server_info=info)

    yield start
    for sim in started:
        sim.kill()


def _plan(scenario: str, api: str = "chat") -> BenchmarkPlan:
    return BenchmarkPlan(
        scenarios=(parse_scenario(scenario),), concurrencies=(4,), max_requests=24, warmup_requests=0,
        max_time=120.0, api=api,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_requests_of_a_group_hit_the_cached_system_prompt(launch: Any, api: str) -> None:
    cell = run_benchmark(launch(), _plan("P(2,6,300,20,8)", api)).cells[0]
    assert cell.completed == 24
    cached = [r.cached_tokens for r in cell.records]
    assert all(c in (0, 300, 319) for c in cached), cached  # nothing, the system prompt, all but the last token
    # each group's system prompt is computed once (in-batch dedup aside); the 12 repeats hit the whole prompt
    assert cached.count(0) <= 4 and cell.cache_hit_rate > 0.8
    assert cell.as_dict()["cached_tokens"] == sum(c or 0 for c in cached)


def test_disable_radix_cache_reports_nothing_cached(launch: Any) -> None:
    cell = run_benchmark(launch("--disable-radix-cache"), _plan("P(2,6,300,20,8)")).cells[0]
    assert cell.completed == 24
    assert [r.cached_tokens for r in cell.records] == [0] * 24 and cell.cache_hit_rate == 0.0


def test_unique_prompts_share_nothing(launch: Any) -> None:
    cell = run_benchmark(launch(), _plan("D(300,8)")).cells[0]
    assert cell.completed == 24 and cell.cached_tokens == 0


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_each_turn_of_a_chat_resends_the_history_and_finds_more_of_it_cached(launch: Any, api: str) -> None:
    plan = BenchmarkPlan(
        scenarios=(parse_scenario("C(3,4,50,8,100,200)"),), concurrencies=(2,), max_requests=100,
        warmup_requests=1, max_time=120.0, api=api,  # type: ignore[arg-type]
    )  # fmt: skip
    cell = run_benchmark(launch(), plan).cells[0]
    assert cell.completed == 12  # 3 sessions x 4 turns, however many requests the plan allows
    by_turn: dict[int, list[int]] = {}
    for record in cell.records:
        turn = (record.requested_input_tokens - 150) // 58
        assert record.input_tokens == record.requested_input_tokens  # history = system + turns x (in + out) + in
        by_turn.setdefault(turn, []).append(record.cached_tokens or 0)
    assert sorted(by_turn) == [0, 1, 2, 3]
    means = [sum(v) / len(v) for _, v in sorted(by_turn.items())]
    assert means == sorted(means) and means[3] > means[1] > means[0]
    # from turn 1 on, all of the previous turn's prompt and all but the last token of its reply are cached
    assert all(c >= 100 + (t - 1) * 58 + 50 + 7 for t, v in by_turn.items() if t for c in v)


def test_think_time_separates_a_reply_from_the_next_turn_in_server_time(launch: Any) -> None:
    plan = BenchmarkPlan(
        scenarios=(parse_scenario("C(1,3,20,4,0,2000)"),), concurrencies=(1,), max_requests=3, warmup_requests=0,
        max_time=120.0,
    )  # fmt: skip
    records = sorted(run_benchmark(launch(), plan).cells[0].records, key=lambda r: r.send_time)
    for before, after in itertools.pairwise(records):
        assert before.e2e is not None
        assert after.send_time - (before.send_time + before.e2e) == pytest.approx(2.0, abs=1e-6)


def test_dataset_replay_sends_the_first_exchanges_capped_to_the_servers_context(launch: Any, tmp_path: Path) -> None:
    rows = [
        {"conversations": [{"from": "human", "value": "word " * 400}, {"from": "gpt", "value": "reply " * 300}]},
        {"conversations": [{"from": "human", "value": "short question"}, {"from": "gpt", "value": "an answer"}]},
    ]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plan = BenchmarkPlan(
        scenarios=(parse_scenario("dataset(chat.jsonl)"),), concurrencies=(2,), max_requests=4, warmup_requests=0,
        max_time=120.0, dataset_root=str(tmp_path),
    )  # fmt: skip
    cell = run_benchmark(launch("--context-length", "256"), plan).cells[0]
    assert cell.completed == 4
    lengths = sorted((r.input_tokens, r.output_tokens) for r in cell.records)
    assert lengths == [(2, 2), (2, 2), (127, 128), (127, 128)]  # 400 + 300 cut to fit 256
    assert all(r.input_tokens == r.requested_input_tokens for r in cell.records)


def test_dataset_replay_sends_every_exchange_of_a_conversation_in_order(launch: Any, tmp_path: Path) -> None:
    exchanges = [("alpha " * 30, "x " * 6), ("beta " * 20, "y " * 5), ("gamma " * 10, "z " * 4)]
    turns = [{"from": who, "value": text} for human, gpt in exchanges for who, text in (("human", human), ("gpt", gpt))]
    (tmp_path / "chat.jsonl").write_text(json.dumps({"conversations": turns}) + "\n")
    plan = BenchmarkPlan(
        scenarios=(parse_scenario("dataset(chat.jsonl)"),), concurrencies=(1,), max_requests=6, warmup_requests=0,
        max_time=120.0, dataset_root=str(tmp_path),
    )  # fmt: skip
    records = sorted(run_benchmark(launch(), plan).cells[0].records, key=lambda r: r.send_time)
    assert [(r.input_tokens, r.output_tokens) for r in records] == [(30, 6), (56, 5), (71, 4)] * 2
    assert all(r.input_tokens == r.requested_input_tokens for r in records)
    # turn 2 finds turn 1's prompt and reply cached (all but the reply's last token), turn 3 turn 2's
    cached = [r.cached_tokens for r in records]
    assert cached[1] >= 30 + 5 and cached[2] >= 56 + 4 and cached[0] < cached[1] < cached[2]
    assert cached[3] >= 29  # the second replay of the conversation finds its first message cached too


SHIPPED_TOKENIZER = Path(__file__).parents[2] / "tuning_specs" / "tokenizers" / "sim-bpe"


def test_with_a_tokenizer_the_simulator_counts_and_the_client_builds_prompts_by_it(launch: Any) -> None:
    endpoint = launch("--sim-tokenizer", str(SHIPPED_TOKENIZER))
    assert endpoint.server_info["sim_token_counting"] == "tokenizer"
    assert endpoint.server_info["sim_tokenizer"] == str((SHIPPED_TOKENIZER / "tokenizer.json").resolve())
    cell = run_benchmark(endpoint, _plan("D(512,8)", api="completions")).cells[0]
    assert cell.completed == 24 and {r.input_tokens for r in cell.records} == {512}
    # the word rule counts the same prompts differently (each prompt's own first word is several BPE tokens)
    words = launch()
    assert words.server_info["sim_token_counting"] == "word rule" and words.server_info["sim_tokenizer"] is None
    plan = BenchmarkPlan(scenarios=(parse_scenario("D(512,8)"),), concurrencies=(4,), max_requests=24,
                         warmup_requests=0, max_time=120.0, api="completions",
                         tokenizer=str(SHIPPED_TOKENIZER))  # fmt: skip
    assert {r.input_tokens for r in run_benchmark(words, plan).cells[0].records} != {512}


def test_with_a_tokenizer_the_radix_cache_matches_token_ids(launch: Any) -> None:
    cell = run_benchmark(launch("--sim-tokenizer", str(SHIPPED_TOKENIZER)), _plan("P(2,6,300,20,8)")).cells[0]
    assert cell.completed == 24
    # 300 system tokens by the tokenizer, then a space and 20 more (the joining space may merge with the question)
    assert all(r.input_tokens in (320, 321) for r in cell.records)
    cached = [r.cached_tokens or 0 for r in cell.records]
    assert all(c == 0 or c >= 300 for c in cached), cached  # nothing, or at least the whole system prompt
    assert cached.count(0) <= 4 and cell.cache_hit_rate > 0.8
