"""Synthetic prompts: requested length in words, distinct prefixes, exact length with a local tokenizer."""

from __future__ import annotations

from pathlib import Path

from pytest_autotuner.bench.prompts import PromptFactory
from pytest_autotuner.inputs import load_tokenizer

SHIPPED_TOKENIZER = Path(__file__).parents[2] / "tuning_specs" / "tokenizers" / "sim-bpe"


def test_prompts_have_the_requested_word_count_and_distinct_prefixes() -> None:
    prompts = PromptFactory(seed=1).build([1, 5, 300, 5])
    assert [len(p.split()) for p in prompts] == [1, 5, 300, 5]
    assert len({p.split()[0] for p in prompts}) == 4


def test_prompts_are_reproducible_for_a_seed() -> None:
    assert PromptFactory(seed=2).build([20, 30]) == PromptFactory(seed=2).build([20, 30])
    assert PromptFactory(seed=2).build([20]) != PromptFactory(seed=3).build([20])


def test_missing_tokenizer_directory_falls_back_to_words() -> None:
    factory = PromptFactory(seed=0, tokenizer="/nonexistent/tokenizer")
    assert not factory.exact
    assert len(factory.build([12])[0].split()) == 12


def test_a_tokenizer_gives_exact_token_counts() -> None:
    factory = PromptFactory(seed=0, tokenizer=str(SHIPPED_TOKENIZER))
    tokenizer = load_tokenizer(SHIPPED_TOKENIZER)
    lengths = [1, 3, 7, 50, 512, 2000]
    prompts = factory.build(lengths)
    assert factory.exact
    assert [len(tokenizer.ids(p)) for p in prompts] == lengths
    # the word rule counts these prompts differently: its prefix word is several byte-level tokens
    assert [len(p.split()) for p in prompts[2:]] != lengths[2:]


def test_a_prompt_is_cut_and_counted_by_the_tokenizer() -> None:
    factory = PromptFactory(seed=0, tokenizer=str(SHIPPED_TOKENIZER / "tokenizer.json"))
    text = "hello world, how are you today"
    assert factory.count(text) == len(load_tokenizer(SHIPPED_TOKENIZER).ids(text)) > len(text.split())
    assert factory.count(factory.truncate(text, 4)) == 4
    assert PromptFactory(seed=0).truncate(text, 4) == "hello world, how are"


def test_shared_prompts_share_exactly_the_system_prompt_within_a_group() -> None:
    prompts = PromptFactory(seed=4).build_shared(50, 10, [(0, 0), (1, 0), (0, 1), (0, 0)])
    assert [len(p.system.split()) for p in prompts] == [50] * 4
    assert [len(p.question.split()) for p in prompts] == [10] * 4
    assert prompts[0].system == prompts[2].system != prompts[1].system
    assert prompts[0].system.split()[0] != prompts[1].system.split()[0]  # groups part at the first token
    assert prompts[0].question.split()[0] != prompts[2].question.split()[0]  # questions part at theirs
    assert prompts[3] == prompts[0]  # the same (group, question) is the same prompt
