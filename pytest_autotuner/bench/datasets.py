"""Datasets for ``dataset(...)`` scenarios: generate a synthetic one, or convert a ShareGPT dump you have; and
the small tokenizer the project ships for tokenizer-exact simulation.

    python -m pytest_autotuner.bench.datasets generate tuning_specs/datasets/synthetic-chat.jsonl
    python -m pytest_autotuner.bench.datasets convert ShareGPT_V3_unfiltered_cleaned_split.json out.jsonl
    python -m pytest_autotuner.bench.datasets tokenizer tuning_specs/tokenizers/sim-bpe

``generate`` writes seeded conversations in the ShareGPT shape (one JSON object per line): 1-3 exchanges,
prompt and reply lengths log-normal around ShareGPT's (a median of about 80 words in and 150 out, long tails),
made of common English words, so nothing is downloaded. ``convert`` reads a ShareGPT dump (a JSON array, or
JSONL) and keeps the conversations that start with a human message answered by the model, as JSONL; with
``--limit N`` a seeded sample of N. ``tokenizer`` trains a byte-level BPE (the kind Llama 3 uses) of at most
1,024 ids (641: the merges run out) with the ``tokenizers`` package on seeded text of the words the client's
prompts, the datasets and the simulator's replies are made of, and writes ``tokenizer.json`` and a
``tokenizer_config.json`` (so that ``transformers.AutoTokenizer`` loads the folder too): each of those words
with its leading space is one token, any other text splits into byte pieces, as with a real model's
tokenizer. Nothing here reaches the network.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pytest_autotuner.core.spec.dataset import first_exchange
from pytest_autotuner.core.spec.tokens import OUTPUT_WORDS

__all__ = ["convert", "generate", "main"]

_WORDS = (
    "the of and to in is that for it as was with be on not you are this have but from they we can what "
    "about which when there their one all would will more how make like time just know take people into year "
    "your good some could them see other than then now look only come its over think also back after use two "
    "work first well way even new want because any these give day most us model data code function write "
    "explain example please help question answer list value error file number system user language"
)
_VOCABULARY = tuple(_WORDS.split())


def _text(rng: np.random.Generator, words: int) -> str:
    picks = rng.integers(0, len(_VOCABULARY), size=max(1, words))
    return " ".join(_VOCABULARY[i] for i in picks)


def generate(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` synthetic conversations, reproducible for a seed."""
    rng = np.random.default_rng(seed)
    conversations = []
    for index in range(count):
        turns = []
        for _ in range(int(rng.integers(1, 4))):
            prompt = int(min(1500, rng.lognormal(np.log(80), 0.9)))
            reply = int(min(1000, rng.lognormal(np.log(150), 0.8)))
            turns += [{"from": "human", "value": _text(rng, prompt)}, {"from": "gpt", "value": _text(rng, reply)}]
        conversations.append({"id": f"synthetic-{index}", "conversations": turns})
    return conversations


def train_tokenizer(out: Path, seed: int = 0) -> Path:
    """Train the shipped byte-level BPE into the folder ``out``; returns the tokenizer.json written."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from pytest_autotuner.bench.prompts import PROMPT_WORDS

    words = sorted({*_VOCABULARY, *PROMPT_WORDS, *OUTPUT_WORDS})
    rng = np.random.default_rng(seed)
    lines = [" ".join(words[i] for i in rng.integers(0, len(words), size=64)) for _ in range(2000)]
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer=trainer)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tokenizer.json"
    tokenizer.save(str(path))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 131072,
              "eos_token": "<|endoftext|>", "clean_up_tokenization_spaces": False}  # fmt: skip
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def _read_dump(path: Path) -> Iterable[Any]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON array of conversations")
        return data
    return (json.loads(line) for line in text.splitlines() if line.strip())


def convert(source: Path, limit: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The replayable conversations of a ShareGPT dump, in the dataset format; a seeded sample with ``limit``."""
    kept = [
        {"id": str(obj.get("id", index)), "conversations": obj["conversations"]}
        for index, obj in enumerate(_read_dump(source))
        if isinstance(obj, dict) and isinstance(obj.get("conversations"), list) and first_exchange(obj)
    ]
    if limit is not None and limit < len(kept):
        picks = sorted(np.random.default_rng(seed).choice(len(kept), size=limit, replace=False).tolist())
        kept = [kept[i] for i in picks]
    return kept


def _write(conversations: list[dict[str, Any]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in conversations), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_autotuner.bench.datasets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write a synthetic ShareGPT-shaped dataset")
    gen.add_argument("out", type=Path)
    gen.add_argument("--count", type=int, default=64)
    gen.add_argument("--seed", type=int, default=0)
    conv = commands.add_parser("convert", help="convert a ShareGPT dump you already have")
    conv.add_argument("source", type=Path)
    conv.add_argument("out", type=Path)
    conv.add_argument("--limit", type=int, default=None)
    conv.add_argument("--seed", type=int, default=0)
    tok = commands.add_parser("tokenizer", help="train the small byte-level BPE tokenizer the project ships")
    tok.add_argument("out", type=Path, help="folder for tokenizer.json and tokenizer_config.json")
    tok.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "tokenizer":
        print(f"wrote {train_tokenizer(args.out, args.seed)}")
        return 0
    if args.command == "generate":
        conversations = generate(args.count, args.seed)
    else:
        conversations = convert(args.source, args.limit, args.seed)
        if not conversations:
            print(f"{args.source}: no conversation starts with a human message answered by the model", file=sys.stderr)
            return 1
    _write(conversations, args.out)
    print(f"wrote {len(conversations)} conversations to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
