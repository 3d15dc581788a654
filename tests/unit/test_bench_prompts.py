"""Synthetic prompts: requested length in words, distinct prefixes, exact length with a local tokenizer."""

from __future__ import annotations

from pytest_autotuner.bench.prompts import PromptFactory


class WordTokenizer:
    """Stands in for a Hugging Face tokenizer: one id per whitespace-separated word."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [self.vocab.setdefault(word, len(self.vocab)) for word in text.split()]

    def decode(self, ids: list[int]) -> str:
        words = {i: w for w, i in self.vocab.items()}
        return " ".join(words[i] for i in ids)


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
    factory = PromptFactory(seed=0)
    tokenizer = WordTokenizer()
    factory._tokenizer = tokenizer  # what _load_tokenizer returns for a local directory
    prompts = factory.build([1, 7, 50])
    assert factory.exact
    assert [len(tokenizer.encode(p)) for p in prompts] == [1, 7, 50]


def test_shared_prompts_share_exactly_the_system_prompt_within_a_group() -> None:
    prompts = PromptFactory(seed=4).build_shared(50, 10, [(0, 0), (1, 0), (0, 1), (0, 0)])
    assert [len(p.system.split()) for p in prompts] == [50] * 4
    assert [len(p.question.split()) for p in prompts] == [10] * 4
    assert prompts[0].system == prompts[2].system != prompts[1].system
    assert prompts[0].system.split()[0] != prompts[1].system.split()[0]  # groups part at the first token
    assert prompts[0].question.split()[0] != prompts[2].question.split()[0]  # questions part at theirs
    assert prompts[3] == prompts[0]  # the same (group, question) is the same prompt
