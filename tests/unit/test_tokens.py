"""Token counting: the word rule, a tokenizer.json read with `tokenizers`, the spec field and the simulator flag."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from factories import spec as make_spec

from pytest_autotuner.core.spec.spec_text import SpecError
from pytest_autotuner.core.spec.tokens import WORD_RULE, TokenizerError, output_keys
from pytest_autotuner.inputs import load_spec, load_tokenizer
from pytest_autotuner.runtimes.sim import SimHost
from pytest_autotuner.sim.cli import parse_argv, token_counter
from pytest_autotuner.sim.protocol import parse_generation

SHIPPED = Path(__file__).parents[2] / "tuning_specs" / "tokenizers" / "sim-bpe"


def test_the_word_rule_counts_words_and_cuts_long_ones() -> None:
    assert WORD_RULE.encode("the cat  sat") == ("the", "cat", "sat")
    assert len(WORD_RULE.encode("abcdefghijkl")) == 2


def test_the_shipped_tokenizer_loads_from_its_folder_or_file_and_round_trips() -> None:
    folder, file = load_tokenizer(SHIPPED), load_tokenizer(SHIPPED / "tokenizer.json")
    assert folder.path == file.path == str((SHIPPED / "tokenizer.json").resolve())
    text = "the model explains qzx1f, and 42 more"
    assert folder.decode(folder.ids(text)) == text
    assert len(folder.ids(" the")) == 1 and len(folder.ids("qzx1f")) > 1  # known words whole, the rest in pieces
    # each generated word is one token, so a resent reply tokenizes as the tokens that were generated
    assert all(isinstance(k, int) for k in output_keys(folder))


def test_the_shipped_tokenizer_is_what_the_generator_makes(tmp_path: Path) -> None:
    from pytest_autotuner.bench.datasets import main

    assert main(["tokenizer", str(tmp_path)]) == 0
    assert (tmp_path / "tokenizer.json").read_text() == (SHIPPED / "tokenizer.json").read_text()
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"


@pytest.mark.parametrize("content", [None, "not json", '{"model": {}}'])
def test_a_path_that_is_no_tokenizer_says_which_and_why(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "tokenizer.json").write_text(content)
    with pytest.raises(TokenizerError, match=str(tmp_path)):
        load_tokenizer(tmp_path)


def test_the_simulator_counts_by_its_tokenizer_flag_else_the_model_folder_else_words(tmp_path: Path) -> None:
    base = ["--model-path", "meta-llama/Llama-3.1-8B-Instruct"]
    assert token_counter(parse_argv(base)) is WORD_RULE
    counter = token_counter(parse_argv([*base, "--sim-tokenizer", str(SHIPPED)]))
    assert counter.description == f"tokenizer {(SHIPPED / 'tokenizer.json').resolve()}"
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "tokenizer.json").write_text((SHIPPED / "tokenizer.json").read_text())
    assert token_counter(parse_argv(["--model-path", str(model)])).description.endswith("my-model/tokenizer.json")
    body = json.dumps({"prompt": "qzx1f the of", "max_tokens": 4}).encode()
    assert parse_generation("completions", body, "m").input_tokens == 3
    assert parse_generation("completions", body, "m", counter).input_tokens == len(counter.encode("qzx1f the of")) > 3


def test_a_chat_prompt_joins_stripped_messages_so_a_resent_reply_tokenizes_as_generated() -> None:
    counter = load_tokenizer(SHIPPED)
    messages = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": " the of and "},
                {"role": "user", "content": "more"}]  # fmt: skip
    gen = parse_generation("chat", json.dumps({"messages": messages}).encode(), "m", counter)
    keys = output_keys(counter)
    assert gen.tokens[: len(counter.encode("hello there")) + 3] == (*counter.encode("hello there"), *keys[:3])


def _write(tmp_path: Path, **simulator: object) -> Path:
    raw = make_spec().model_dump(mode="json", exclude_defaults=True)
    raw["simulator"] = simulator
    path = tmp_path / "tuning_specs" / "task.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw))
    return path


def test_the_spec_names_a_tokenizer_relative_to_itself_and_the_simulator_gets_it(tmp_path: Path) -> None:
    (tmp_path / "tuning_specs" / "tok").mkdir(parents=True)
    (tmp_path / "tuning_specs" / "tok" / "tokenizer.json").write_text((SHIPPED / "tokenizer.json").read_text())
    spec = load_spec(_write(tmp_path, tokenizer="tok"))
    expected = str((tmp_path / "tuning_specs" / "tok" / "tokenizer.json").resolve())
    assert spec.simulator.tokenizer_path == expected
    flags = SimHost(model="m", settings=spec.simulator, seed=0).own_flags((), 1)
    assert flags[flags.index("--sim-tokenizer") + 1] == expected


def test_a_spec_tokenizer_that_is_missing_is_a_spec_error_naming_field_and_value(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"`simulator.tokenizer` is \"nowhere/tok\": .*nowhere/tok is neither"):
        load_spec(_write(tmp_path, tokenizer="nowhere/tok"))


@pytest.mark.parametrize(
    ("model", "parameters", "scenario", "fits"),
    [("llama-3-2-1b-instruct", {}, "D(131000,72)", True), ("llama-3-2-1b-instruct", {}, "D(131000,73)", False),
     ("llama-3-2-1b-instruct", {"context-length": [4096, 8192]}, "D(8000,100)", True),
     ("llama-3-2-1b-instruct", {"context-length": [4096, 8192]}, "D(8000,200)", False),
     ("some-org/unknown-model", {}, "D(900000,100)", True),  # a context the project cannot know is not checked
     ("llama-3-2-1b-instruct", {}, "dataset(x.jsonl)", True)],  # a dataset's lengths are cut to fit
)  # fmt: skip
def test_generated_traffic_must_fit_the_models_context(
    tmp_path: Path, model: str, parameters: dict[str, list[int]], scenario: str, fits: bool
) -> None:
    (tmp_path / "tuning_specs").mkdir()
    (tmp_path / "tuning_specs" / "x.jsonl").write_text('{"conversations": [{"from": "human", "value": "hi"}, '
                                                       '{"from": "gpt", "value": "hello"}]}\n')  # fmt: skip
    raw = make_spec().model_dump(mode="json", exclude_defaults=True)
    raw["model"] = {"id_or_path": model}
    raw["parameters"] = {"schedule-policy": ["fcfs"], **parameters}
    raw["benchmark"] = {"traffic_scenarios": [scenario]}
    path = tmp_path / "tuning_specs" / "task.json"
    path.write_text(json.dumps(raw))
    if fits:
        load_spec(path)
        return
    with pytest.raises(
        SpecError, match=rf"`benchmark.traffic_scenarios.0`: '{re.escape(scenario)}'.*over the context length"
    ):
        load_spec(path)


def test_the_baseline_fingerprint_tells_token_counting_apart_by_the_tokenizers_content() -> None:
    from pytest_autotuner.core.outcome.baseline import fingerprint
    from pytest_autotuner.sim.cli import engine_config, server_info
    from pytest_autotuner.sim.perf_model import plan_memory

    spec = make_spec()

    def info(*flags: str) -> dict[str, object]:
        args = parse_argv(["--model-path", "meta-llama/Llama-3.1-8B-Instruct", *flags])
        cfg = engine_config(args)
        return server_info(args, cfg, plan_memory(cfg), token_counter(args))

    words = fingerprint(spec, {"runtime": "sim"}, info())["sim_token_counting"]
    by_folder = fingerprint(spec, {"runtime": "sim"}, info("--sim-tokenizer", str(SHIPPED)))["sim_token_counting"]
    by_file = fingerprint(spec, {"runtime": "sim"}, info("--sim-tokenizer", str(SHIPPED / "tokenizer.json")))
    assert words == "word rule" and by_folder.startswith("tokenizer sha256:")
    assert by_file["sim_token_counting"] == by_folder  # the content counts, not where the file lies
    assert "sim_token_counting" not in fingerprint(spec, {"runtime": "docker"}, {})  # real servers: their tokenizer
