"""GPUs as a pool: trials take the device ids they need (tp x dp) and always give them back."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping

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
    ``pp-size``, or their long names)."""

    def size(*names: str) -> int:
        for name in names:
            value = params.get(name)
            if value is not None and not isinstance(value, bool):
                try:
                    return max(1, int(float(value)))
                except ValueError:
                    return 1
        return 1

    return size(*PARALLEL_FLAGS["tp"]) * size(*PARALLEL_FLAGS["dp"]) * size(*PARALLEL_FLAGS["pp"])


class GpuPool:
    """Hands out disjoint sets of device ids; a trial blocks until enough are free."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = list(ids)
        self._free = list(ids)
        self._changed = threading.Condition()

    @property
    def total(self) -> int:
        return len(self.ids)

    @property
    def free(self) -> int:
        with self._changed:
            return len(self._free)

    @contextlib.contextmanager
    def acquire(self, count: int, *, cancelled: threading.Event | None = None) -> Iterator[tuple[int, ...]]:
        """The lowest ``count`` free ids, held for the duration of the block (released on every exit path)."""
        if count > self.total:
            raise ValueError(f"{count} GPUs requested but the pool has {self.total}")
        with self._changed:
            while len(self._free) < count:
                if cancelled is not None and cancelled.is_set():
                    raise InterruptedError("cancelled while waiting for GPUs")
                self._changed.wait(0.2)
            taken = tuple(sorted(self._free)[:count])
            for device in taken:
                self._free.remove(device)
        try:
            yield taken
        finally:
            with self._changed:
                self._free.extend(taken)
                self._changed.notify_all()
