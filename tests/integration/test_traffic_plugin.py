"""Structured traffic (shared prefixes, multi-turn chats) through the whole plugin on the simulator."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_plugin import sim_spec, write_specs

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("scenario", ["P(2,4,200,20,8)", "C(4,3,40,8,200,0)"])
def test_the_report_and_results_carry_the_cells_cache_hit_rate(pytester: pytest.Pytester, scenario: str) -> None:
    bench = {"traffic_scenarios": [scenario], "num_concurrency": [2], "max_requests_per_iteration": 12,
             "warmup_requests": 1}  # fmt: skip
    spec = sim_spec("cache-task", parameters={"disable-radix-cache": [False, True]}, benchmark=bench)
    write_specs(pytester, cache=spec)
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    folder = pytester.path / "reports" / "cache-task"
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    column = next(c for c in rows[0] if c.endswith(" cache_hit_rate"))
    rates = {row["disable-radix-cache"]: float(row[column]) for row in rows}
    assert rates["True"] == 0.0 and rates["False"] > 0.3, rates
    best = json.loads((folder / "results.json").read_text())["best"]
    confirmed = best["cells"][0]["cache_hit_rate"]
    assert best["params"] == {"disable-radix-cache": False} and confirmed > 0.3
    assert f"{confirmed:.1%}</td>" in (folder / "index.html").read_text()
    if scenario.startswith("C"):  # each turn resends the history: the hit rate grows with the turn number
        by_turn = best["cells"][0]["cache_hit_rate_by_turn"]
        assert len(by_turn) == 3 and by_turn == sorted(by_turn) and by_turn[2] > by_turn[0], by_turn


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [("P(0,32,2000,100,100)", "*`groups` (field 1 of P(*)) must be at least 1, got 0*"),
     ("C(8,4,100,0)", "*`out` (field 4 of C(*)) must be at least 1, got 0*"),
     ("P(8,32,131000,100,100)", "*`benchmark.traffic_scenarios.0`: 'P(8,32,131000,100,100)': a request needs up to "
      "`system` + `question` + `output` = 131000 + 100 + 100 = 131,200 tokens, over the context length of 131,072*"),
     ("C(4,40,2000,2000)", "*'C(4,40,2000,2000)'*`turns` x (`in` + `out`) = 0 + 40 x (2000 + 2000) = 160,000 tokens*"),
     ("dataset(missing.jsonl)", "*'dataset(missing.jsonl)': cannot read the dataset */missing.jsonl (No such file*")],
)  # fmt: skip
def test_bad_traffic_is_a_collection_error(pytester: pytest.Pytester, scenario: str, expected: str) -> None:
    write_specs(pytester, broken=sim_spec("broken", benchmark={"traffic_scenarios": [scenario]}))
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting tuning_specs/broken.json*", expected])


def test_a_dataset_next_to_the_spec_replays_through_the_plugin(pytester: pytest.Pytester) -> None:
    shipped = Path(__file__).parents[2] / "tuning_specs" / "datasets" / "synthetic-chat.jsonl"
    bench = {"traffic_scenarios": ["dataset(datasets/chat.jsonl)"], "num_concurrency": [4],
             "max_requests_per_iteration": 12, "warmup_requests": 1}  # fmt: skip
    write_specs(pytester, replay=sim_spec("replay-task", benchmark=bench))
    (pytester.path / "tuning_specs" / "datasets").mkdir()
    (pytester.path / "tuning_specs" / "datasets" / "chat.jsonl").write_text(shipped.read_text())
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    cell = json.loads((pytester.path / "reports" / "replay-task" / "results.json").read_text())["best"]["cells"][0]
    assert cell["label"] == "dataset(datasets/chat.jsonl) c=4" and cell["completed"] == 12
    # every exchange of a conversation is a turn resending the history: later turns find more of it cached
    by_turn = cell["cache_hit_rate_by_turn"]
    assert len(by_turn) >= 2 and by_turn[0] < 0.5 < by_turn[1], by_turn


def test_an_empty_dataset_is_a_collection_error(pytester: pytest.Pytester) -> None:
    write_specs(pytester, broken=sim_spec("broken", benchmark={"traffic_scenarios": ["dataset(empty.jsonl)"]}))
    (pytester.path / "tuning_specs" / "empty.jsonl").write_text("")
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*ERROR collecting tuning_specs/broken.json*", "*'dataset(empty.jsonl)'*has no conversation to replay*"]
    )


def test_a_tokenizer_next_to_the_spec_counts_the_simulators_tokens_and_the_report_says_so(
    pytester: pytest.Pytester,
) -> None:
    shipped = Path(__file__).parents[2] / "tuning_specs" / "tokenizers" / "sim-bpe" / "tokenizer.json"
    spec = sim_spec("tok-task", parameters={"schedule-policy": ["fcfs"]})
    spec["simulator"] = {**spec["simulator"], "tokenizer": "tok"}  # type: ignore[dict-item]
    write_specs(pytester, tok=spec)
    (pytester.path / "tuning_specs" / "tok").mkdir()
    (pytester.path / "tuning_specs" / "tok" / "tokenizer.json").write_text(shipped.read_text())
    (pytester.path / "tuning_specs" / "tok" / "tokenizer_config.json").write_text("{}")  # not specs either
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    folder = pytester.path / "reports" / "tok-task"
    environment = json.loads((folder / "results.json").read_text())["environment"]
    path = str((pytester.path / "tuning_specs" / "tok" / "tokenizer.json").resolve())
    assert environment["token_counting"] == f"tokenizer {path} (the simulator counts and caches prompts by its ids)"
    assert "token_counting" in (folder / "index.html").read_text()
