"""GPUs as a pool: trials take the device ids they need (tp x dp) and always give them back."""

from __future__ import annotations

from collections.abc import Mapping

from pytest_autotuner.core.measure.trial import ParamValue

__all__ = ["PARALLEL_FLAGS", "GpuPool", "gpus_needed"]

#: The names a parallel size goes by (SGLang's flag, its long alias, the short form some specs use).
PARALLEL_FLAGS: dict[str, tuple[str, ...]] = {
    "tp": ("tp-size", "tp", "tensor-parallel-size"),
    "dp": ("dp-size", "dp", "data-parallel-size"),
    "pp": ("pp-size", "pp", "pipeline-parallel-size"),
}


def gpus_needed(params: Mapping[str, ParamValue]) -> int:
    """GPUs one server needs: tensor x data x pipeline parallel size (SGLang flags ``tp-size``, ``dp-size``,
    ``pp-size``, or their long names). With ``enable-dp-attention`` the dp size is attention data parallelism
    inside the tp GPUs and adds none (as ``attn-dp-size`` never does)."""

    def size(*names: str) -> int:
        for name in names:
            value = params.get(name)
            if value is not None and not isinstance(value, bool):
                try:
                    return max(1, int(float(value)))
                except ValueError:
                    return 1
        return 1

    dp = 1 if params.get("enable-dp-attention") is True else size(*PARALLEL_FLAGS["dp"])
    return size(*PARALLEL_FLAGS["tp"]) * dp * size(*PARALLEL_FLAGS["pp"])


class GpuPool:
    """Hands out disjoint sets of device ids. Only the session's thread takes and gives back (the session starts a
    trial when its GPUs are free, and gives them back when it has ended), so the pool needs no lock."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = list(ids)
        self._free = list(ids)

    @property
    def total(self) -> int:
        return len(self.ids)

    @property
    def free(self) -> int:
        return len(self._free)

    def take(self, count: int) -> tuple[int, ...] | None:
        """The lowest ``count`` free ids, now held; None while fewer are free."""
        if count > self.total:
            raise ValueError(f"{count} GPUs requested but the pool has {self.total}")
        if len(self._free) < count:
            return None
        taken = tuple(sorted(self._free)[:count])
        for device in taken:
            self._free.remove(device)
        return taken

    def give_back(self, devices: tuple[int, ...]) -> None:
        """Return ids ``take`` handed out."""
        self._free.extend(d for d in devices if d in self.ids and d not in self._free)
