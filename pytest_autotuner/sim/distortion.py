"""Reality stand-ins: a simulator that differs, on purpose, from what a screening model of it knows.

``--sim-distortion FILE`` reads a JSON object that changes the simulated server after its flags are resolved:

```json
{
  "gpu": "h200",
  "prefill": 1.15, "decode": 0.9, "per_step_s": 0.0004, "memory": 0.92, "startup": 1.5, "noise": 0.05,
  "flags": [
    {"flag": "enable-mixed-chunk", "value": true, "decode": 1.25},
    {"flag": "schedule-policy", "value": "lpm", "per_waiting_s": 0.00002},
    {"flag": "chunked-prefill-size", "value": 8192, "memory": 0.95, "startup": 1.2}
  ]
}
```

Every field is optional. ``gpu``: the GPU actually priced (its constants and memory), whatever ``--sim-gpu`` says.
``prefill`` and ``decode``: factors on the time of prefill and decode steps; ``per_step_s``: seconds added to
every step; ``per_waiting_s``: seconds added to a step per request waiting in the queue; ``memory``: a factor on
the KV cache's token capacity; ``startup``: a factor on the simulated startup; ``noise``: the run-to-run noise
(replaces ``--sim-noise``). ``flags``: effects that apply when the server runs with a flag at a value
(``value`` omitted: any value the flag is given; a flag not given has its SGLang default, so an effect on
``"enable-mixed-chunk", "value": false`` applies when it is not given), with the same factor and
addend fields; several matching effects multiply (factors) and add (addends).

A file that is not such an object fails the simulator's start with the file, the field and the value named.
``/get_server_info`` gives ``sim_distortion``: the file's path and SHA-256 (not its content: a screening model
must not read the answer there).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Distortion", "Effects", "FlagEffect", "load_distortion"]

_MAX_BYTES = 1_000_000
_FACTORS = ("prefill", "decode", "memory", "startup")
_ADDENDS = ("per_step_s", "per_waiting_s")
_TOP = {"gpu", "noise", "flags", *_FACTORS, *_ADDENDS}
_EFFECT = {"flag", "value", *_FACTORS, *_ADDENDS}


@dataclass(frozen=True)
class Effects:
    """Factors on step times, KV capacity and startup, and seconds added to steps."""

    prefill: float = 1.0
    decode: float = 1.0
    memory: float = 1.0
    startup: float = 1.0
    per_step_s: float = 0.0
    per_waiting_s: float = 0.0

    def and_then(self, other: Effects) -> Effects:
        """Both at once: factors multiply, added seconds add."""
        return Effects(self.prefill * other.prefill, self.decode * other.decode, self.memory * other.memory,
                       self.startup * other.startup, self.per_step_s + other.per_step_s,
                       self.per_waiting_s + other.per_waiting_s)  # fmt: skip


@dataclass(frozen=True)
class FlagEffect:
    """What a distortion changes while the server runs with ``flag`` (at ``value``, or at any value)."""

    flag: str
    value: Any = None
    any_value: bool = True
    effects: Effects = field(default_factory=Effects)

    def applies(self, given: Any) -> bool:
        return given is not None if self.any_value else given == self.value


@dataclass(frozen=True)
class Distortion:
    """A reality stand-in resolved for one server's flags (``for_flags``), or as read from its file."""

    source: str = ""
    digest: str = ""
    gpu: str | None = None
    noise: float | None = None
    effects: Effects = field(default_factory=Effects)
    flags: tuple[FlagEffect, ...] = ()

    @property
    def memory(self) -> float:
        return self.effects.memory

    @property
    def startup(self) -> float:
        return self.effects.startup

    def for_flags(self, values: dict[str, Any]) -> Distortion:
        """The distortion with the effects of the flags this server runs with folded in (``values``: flag name
        -> the value it resolved to, SGLang's default where not given)."""
        effects = self.effects
        for effect in self.flags:
            if effect.applies(values.get(effect.flag)):
                effects = effects.and_then(effect.effects)
        return Distortion(self.source, self.digest, self.gpu, self.noise, effects)

    def step(self, seconds: float, *, prefill: bool, waiting: int) -> float:
        """A step's seconds as the distorted server takes them."""
        e = self.effects
        return seconds * (e.prefill if prefill else e.decode) + e.per_step_s + e.per_waiting_s * waiting


def _number(path: Path, where: str, value: Any, *, low: float, high: float, addend: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{path}: {where} must be a number, got {value!r}")
    ok = low <= value <= high if addend else low < value <= high
    if not ok:
        bound = f"in [{low:g}, {high:g}]" if addend else f"in ({low:g}, {high:g}]"
        raise ValueError(f"{path}: {where} must be {bound}, got {value!r}")
    return float(value)


def _fields(path: Path, where: str, raw: dict[str, Any], allowed: set[str]) -> dict[str, float]:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise ValueError(f"{path}: {where}{unknown[0]!r} is not a distortion field (known: {known})")
    out = {}
    for name in _FACTORS:
        if name in raw:
            out[name] = _number(path, f"{where}{name}", raw[name], low=0.0, high=100.0)
    for name in _ADDENDS:
        if name in raw:
            out[name] = _number(path, f"{where}{name}", raw[name], low=0.0, high=10.0, addend=True)
    return out


def load_distortion(path: str | Path, gpus: set[str]) -> Distortion:
    """Read and check a distortion file; ValueError naming the file, the field and the value."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_BYTES + 1)  # never the whole of a huge file (or /dev/zero)
    except OSError as exc:
        raise ValueError(f"--sim-distortion {path}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > _MAX_BYTES:
        raise ValueError(f"{path}: a distortion file is at most 1 MB, this one is longer")
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a distortion is a JSON object, got {type(raw).__name__}")
    values = _fields(path, "", {k: v for k, v in raw.items() if k not in ("gpu", "noise", "flags")}, _TOP)
    gpu = raw.get("gpu")
    if gpu is not None and gpu not in gpus:
        raise ValueError(f"{path}: gpu {gpu!r} is not a simulated GPU (known: {', '.join(sorted(gpus))})")
    noise = raw.get("noise")
    if noise is not None:
        noise = _number(path, "noise", noise, low=0.0, high=10.0, addend=True)
    effects = raw.get("flags", [])
    if not isinstance(effects, list) or len(effects) > 256:
        raise ValueError(f"{path}: flags must be a list of at most 256 effects, got {effects!r:.80}")
    parsed = []
    for i, effect in enumerate(effects):
        where = f"flags[{i}]."
        if not isinstance(effect, dict):
            raise ValueError(f"{path}: flags[{i}] must be an object, got {effect!r:.80}")
        flag = effect.get("flag")
        if not isinstance(flag, str) or not flag.strip("-"):
            raise ValueError(f"{path}: {where}flag must name an SGLang flag, got {flag!r}")
        factors = _fields(path, where, {k: v for k, v in effect.items() if k not in ("flag", "value")}, _EFFECT)
        parsed.append(FlagEffect(flag.lstrip("-"), effect.get("value"), "value" not in effect, Effects(**factors)))
    return Distortion(str(path), hashlib.sha256(data).hexdigest(), gpu, noise, Effects(**values), tuple(parsed))
