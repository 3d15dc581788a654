"""Dataset replay: ShareGPT-shaped JSONL read and sampled by seed, the synthetic generator and the converter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pytest_autotuner.bench.datasets import convert, generate, main
from pytest_autotuner.core.spec.dataset import DatasetError, sample_exchanges
from pytest_autotuner.core.spec.spec_text import SpecError
from pytest_autotuner.inputs import load_exchanges, load_spec

SHIPPED = Path(__file__).parents[2] / "tuning_specs" / "datasets" / "synthetic-chat.jsonl"


def _conversation(*turns: tuple[str, str]) -> dict[str, object]:
    return {"id": "x", "conversations": [{"from": who, "value": text} for who, text in turns]}


def _write(path: Path, *objects: object) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objects))
    return path


def test_a_request_replays_the_first_exchange(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "d.jsonl",
        _conversation(("system", "be brief"), ("human", "hello there you"), ("gpt", "hi " * 7), ("human", "more")),
        {"messages": [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c"}]},
        _conversation(("human", "no answer")),
    )
    replayed = [(e.prompt, e.input_tokens, e.output_tokens) for e in load_exchanges(str(path))]
    assert replayed == [("hello there you", 3, 7), ("a b", 2, 1)]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read the dataset"), ("", "no conversation to replay"), ("{\n", ":1: not a JSON object per line"),
     (json.dumps(_conversation(("gpt", "hi"))) + "\n", "no conversation to replay")],
)  # fmt: skip
def test_a_dataset_that_cannot_be_replayed_says_why(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / f"bad-{len(content or 'x')}.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_exchanges(str(path))


def test_sampling_is_seeded_and_uses_every_conversation_before_repeating() -> None:
    exchanges = load_exchanges(str(SHIPPED))
    first = sample_exchanges(exchanges, np.random.default_rng(3), len(exchanges) + 5)
    assert sorted(first[: len(exchanges)], key=exchanges.index) == list(exchanges)
    assert first == sample_exchanges(exchanges, np.random.default_rng(3), len(exchanges) + 5)
    assert first != sample_exchanges(exchanges, np.random.default_rng(4), len(exchanges) + 5)


def test_the_shipped_dataset_is_what_the_generator_makes(tmp_path: Path) -> None:
    assert main(["generate", str(tmp_path / "again.jsonl")]) == 0
    assert (tmp_path / "again.jsonl").read_text() == SHIPPED.read_text()
    assert generate(3, seed=1) == generate(3, seed=1) != generate(3, seed=2)


def test_convert_keeps_replayable_conversations_of_a_sharegpt_dump(tmp_path: Path) -> None:
    dump = [_conversation(("human", f"q{i}"), ("gpt", "a b")) for i in range(10)] + [_conversation(("gpt", "x"))]
    (tmp_path / "dump.json").write_text(json.dumps(dump))
    assert len(convert(tmp_path / "dump.json")) == 10
    sample = convert(tmp_path / "dump.json", limit=4, seed=1)
    assert len(sample) == 4 and sample == convert(tmp_path / "dump.json", limit=4, seed=1)
    assert main(["convert", str(tmp_path / "dump.json"), str(tmp_path / "out.jsonl")]) == 0
    assert len(load_exchanges(str(tmp_path / "out.jsonl"))) == 10


def _spec(folder: Path, scenario: str) -> Path:
    spec = {"task_name": "replay", "model": {"id_or_path": "m"}, "parameters": {"tp-size": [1]},
            "benchmark": {"traffic_scenarios": [scenario]}}  # fmt: skip
    path = folder / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def test_a_dataset_path_is_relative_to_the_spec_file(tmp_path: Path) -> None:
    (tmp_path / "specs" / "data").mkdir(parents=True)
    _write(tmp_path / "specs" / "data" / "chat.jsonl", _conversation(("human", "hello"), ("gpt", "hi")))
    spec = load_spec(_spec(tmp_path / "specs", "dataset(data/chat.jsonl)"))
    assert Path(spec.benchmark.dataset_root) == tmp_path / "specs"


@pytest.mark.parametrize(("content", "message"), [(None, "cannot read the dataset"), ("", "no conversation")])
def test_a_missing_or_empty_dataset_is_a_spec_error_naming_field_and_value(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "chat.jsonl").write_text(content)
    with pytest.raises(SpecError) as err:
        load_spec(_spec(tmp_path, "dataset(chat.jsonl)"))
    text = str(err.value)
    assert "`benchmark.traffic_scenarios.0`" in text and "'dataset(chat.jsonl)'" in text and message in text
    assert str(tmp_path / "chat.jsonl") in text
