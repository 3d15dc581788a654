"""The models the simulator knows and what the project reads of a model: architecture and context length.

A profile comes from a local Hugging Face folder's ``config.json`` (read at the edge, ``inputs.lookup_model``;
parsed here, ``profile_from_config``), or from the table of the models the simulator is calibrated for (an id,
case and separators ignored, ``-Instruct`` optional). The simulator's performance model sizes the KV pool and
step times from it; spec validation checks traffic against its context length.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = ["MODELS", "ModelProfile", "known_model", "profile_from_config", "unknown_model"]


@dataclass(frozen=True)
class ModelProfile:
    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    intermediate_size: int
    context_length: int = 131072
    tie_word_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_params(self) -> float:
        """Parameter count of a Llama-style decoder (untied embeddings)."""
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        attn = h * h * 2 + h * kv * 2
        mlp = 3 * h * self.intermediate_size
        return self.num_layers * (attn + mlp) + (1 if self.tie_word_embeddings else 2) * self.vocab_size * h

    @property
    def weight_bytes(self) -> float:
        return 2.0 * self.num_params  # bf16

    def kv_bytes_per_token(self, kv_cache_dtype: str = "auto") -> float:
        elem = 1 if kv_cache_dtype.startswith("fp8") else 2
        return 2.0 * self.num_layers * self.num_kv_heads * self.head_dim * elem


MODELS: dict[str, ModelProfile] = {
    "llama-3.2-1b": ModelProfile("Llama-3.2-1B", 16, 2048, 32, 8, 128256, 8192, tie_word_embeddings=True),
    "llama-3.1-8b": ModelProfile("Llama-3.1-8B", 32, 4096, 32, 8, 128256, 14336),
    "llama-3.1-70b": ModelProfile("Llama-3.1-70B", 80, 8192, 64, 8, 128256, 28672),
}


def _normalise(name: str) -> str:
    key = re.sub(r"[^a-z0-9]+", "-", name.rsplit("/", 1)[-1].lower()).strip("-")
    return re.sub(r"^meta-|-instruct$", "", key)


_KNOWN = {_normalise(k): v for k, v in MODELS.items()}


def known_model(model_path: str) -> ModelProfile | None:
    """The profile of a model id the simulator is calibrated for (case and separators ignored, ``-Instruct``
    optional), else None. A local folder's ``config.json`` is read at the edge (``inputs.lookup_model``)."""
    return _KNOWN.get(_normalise(model_path))


def unknown_model(model_path: str) -> ValueError:
    """The error for a model the simulator knows neither by id nor by a local config.json."""
    known = ", ".join(p.name for p in MODELS.values())
    return ValueError(
        f"`--model-path` {model_path!r} is not a model the simulator knows; use one of {known} "
        "(optionally with -Instruct), or a local directory containing a Hugging Face config.json"
    )


def profile_from_config(text: str, name: str, where: str) -> ModelProfile:
    """The profile a Hugging Face ``config.json`` (its ``text``) describes; ``where`` names the file in errors."""
    try:
        cfg = json.loads(text)
        if not isinstance(cfg, dict):
            raise TypeError(f"a JSON object, not {type(cfg).__name__}")
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        return ModelProfile(
            name=name,
            num_layers=int(cfg["num_hidden_layers"]),
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads", heads)),
            vocab_size=int(cfg["vocab_size"]),
            intermediate_size=int(cfg.get("intermediate_size", 4 * hidden)),
            context_length=int(cfg.get("max_position_embeddings", 131072)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(
            f"{where}: cannot read the model architecture ({exc!r}); it needs num_hidden_layers, "
            "hidden_size, num_attention_heads, num_key_value_heads and vocab_size"
        ) from exc
