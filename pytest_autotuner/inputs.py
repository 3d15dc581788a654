"""The files a spec names, read at the edge and bounded: the spec file, its datasets, its tokenizer, a local model
folder's config.json. The core parses what is read here (``core.spec.task_spec.parse_spec``,
``core.spec.dataset.read_conversations``, ``core.spec.models.profile_from_config``) and validates a spec's files
through ``SPEC_FILES``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from pytest_autotuner.core.spec.dataset import (
    MAX_DATASET_BYTES,
    Conversation,
    DatasetError,
    Exchange,
    read_conversations,
    too_big,
)
from pytest_autotuner.core.spec.models import ModelProfile, known_model, profile_from_config, unknown_model
from pytest_autotuner.core.spec.spec_text import MAX_SPEC_BYTES, SpecError
from pytest_autotuner.core.spec.task_spec import TaskSpec, parse_spec
from pytest_autotuner.core.spec.tokens import TokenizerError

__all__ = [
    "SPEC_FILES",
    "TokenizerFile",
    "context_length_of",
    "load_conversations",
    "load_exchanges",
    "load_spec",
    "load_tokenizer",
    "lookup_model",
    "tokenizer_file",
]


MAX_MODEL_CONFIG_BYTES = 2**20  #: a local model folder's config.json, read at most this much


def load_spec(path: str | Path) -> TaskSpec:
    """Load and validate a JSON or YAML spec file and the files it names; raises SpecError with a user-facing
    message. At most ``MAX_SPEC_BYTES`` are read, whatever the file is (``/dev/zero`` included)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as err:
        raise SpecError(f"{path}: cannot read the spec ({err.strerror})") from None
    return parse_spec(path, data, SPEC_FILES)


def load_exchanges(path: str) -> tuple[Exchange, ...]:
    """Every replayable first exchange of the JSONL file at ``path``; raises DatasetError when there is none."""
    return tuple(c[0] for c in load_conversations(path))


@functools.lru_cache(maxsize=8)
def load_conversations(path: str) -> tuple[Conversation, ...]:
    """Every replayable conversation of the JSONL file at ``path``; raises DatasetError when there is none.

    Streamed a line at a time and bounded: a file over ``MAX_DATASET_BYTES`` or a line over ``MAX_LINE_BYTES``
    is an error as soon as it shows (a regular file's size is known before reading; ``/dev/zero`` or a pipe
    fails at the limit it reaches first), so neither the collection nor the client reads an unbounded file.
    """
    try:
        status = os.stat(path)  # before opening: opening a FIFO would wait for a writer
        if not stat.S_ISREG(status.st_mode):
            raise DatasetError(
                f"the dataset {path} is not a regular file (a device, a pipe or a folder); a dataset is a JSONL "
                f"file of at most {MAX_DATASET_BYTES // 2**20} MiB"
            )
        if status.st_size > MAX_DATASET_BYTES:
            raise DatasetError(too_big(path, f"is {status.st_size:,} bytes"))
        with open(path, "rb") as handle:
            return read_conversations(path, handle)
    except OSError as err:
        raise DatasetError(f"cannot read the dataset {path} ({err.strerror})") from None


class TokenizerFile:
    """A Hugging Face ``tokenizer.json`` read with the ``tokenizers`` package; tokens are its ids."""

    def __init__(self, path: Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:  # a declared dependency; only a broken install lacks it
            raise TokenizerError(f"cannot read {path}: the `tokenizers` package is not installed") from None
        try:
            self._tok: Any = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception for malformed files
            raise TokenizerError(f"cannot read the tokenizer {path}: {str(err)[:200]}") from None
        self.path = str(path)
        self.description = f"tokenizer {path}"
        #: identifies the vocabulary wherever the file lies (baseline fingerprints compare it across machines)
        self.digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]

    def encode(self, text: str) -> tuple[Hashable, ...]:
        return tuple(self.ids(text))

    def ids(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=False))


def tokenizer_file(path: str | Path) -> Path | None:
    """The ``tokenizer.json`` that ``path`` names (the file, or a folder holding one), or None."""
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    return p if p.is_file() else None


@functools.lru_cache(maxsize=8)
def _load(path: str) -> TokenizerFile:
    return TokenizerFile(Path(path))


def load_tokenizer(path: str | Path) -> TokenizerFile:
    """The tokenizer at ``path`` (file or folder); raises TokenizerError naming the path when unusable."""
    found = tokenizer_file(path)
    if found is None:
        raise TokenizerError(f"{path} is neither a tokenizer.json file nor a folder holding one")
    return _load(str(found.resolve()))


def lookup_model(model_path: str) -> ModelProfile:
    """Profile for a model id (case and separators ignored, ``-Instruct`` optional) or a local HF folder."""
    config_file = Path(model_path) / "config.json"
    if config_file.is_file():
        with config_file.open("rb") as handle:  # bounded: a model's config.json is kilobytes
            data = handle.read(MAX_MODEL_CONFIG_BYTES + 1)
        if len(data) > MAX_MODEL_CONFIG_BYTES:
            raise ValueError(
                f"{config_file}: over {MAX_MODEL_CONFIG_BYTES // 2**20} MiB; is this a model's config.json?"
            )
        return profile_from_config(data.decode("utf-8", "replace"), config_file.parent.name, str(config_file))
    profile = known_model(model_path)
    if profile is None:
        raise unknown_model(model_path)
    return profile


def context_length_of(model_path: str) -> int | None:
    """The context length of a model the project knows (a local folder with a config.json, or a known id);
    None for any other model (a hub id the simulator has no profile for)."""
    try:
        return lookup_model(model_path).context_length
    except ValueError:
        return None


class _SpecFiles:
    """``core.spec.spec_model.SpecFiles``: what validating a spec reads, from disk."""

    def read_dataset(self, path: str) -> object:
        return load_exchanges(path)

    def read_tokenizer(self, path: str) -> str:
        return load_tokenizer(path).path

    def context_length(self, model_path: str) -> int | None:
        return context_length_of(model_path)


SPEC_FILES = _SpecFiles()
