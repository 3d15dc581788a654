"""The objectives a spec can name: one table, so a new objective (or one more of several) is one entry.

Each entry says which cell metric it reads, its unit, its direction, whether ``optimization.per_gpu`` divides it
(throughput and goodput are capacities a fleet buys per GPU; a latency is not), what the precision rule estimates
for it, and whether it is measured by the capacity search (``core/measure/capacity.py``: a ladder of load steps on one
server) instead of fixed cells (alone; beside other objectives, a trial runs both: ``evaluate.run_trial``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["OBJECTIVE_DEFS", "ObjectiveDef", "objective_def", "objective_direction"]


@dataclass(frozen=True)
class ObjectiveDef:
    name: str
    metric: str  # the cell metric averaged over cells ("capacity": the capacity search's answer)
    unit: str  # "s", "tok/s", "req/s"
    direction: Literal["minimize", "maximize"]
    per_gpu: bool = False  # ``optimization.per_gpu`` divides it by the GPUs a configuration uses
    precision_metric: str | None = "e2e"  # what ``benchmark.precision`` estimates; None: precision does not apply
    capacity: bool = False  # measured by the capacity search (``benchmark.capacity``), needs an SLO


OBJECTIVE_DEFS: dict[str, ObjectiveDef] = {
    d.name: d
    for d in (
        ObjectiveDef("minimize_latency", "e2e", "s", "minimize", precision_metric="e2e"),
        ObjectiveDef("maximize_throughput", "output_throughput", "tok/s", "maximize", True, "throughput"),
        ObjectiveDef("minimize_ttft", "ttft", "s", "minimize", precision_metric="ttft"),
        ObjectiveDef("minimize_tpot", "tpot", "s", "minimize", precision_metric="tpot"),
        # the highest load at which every SLO holds (see core/measure/capacity.py for why the load, not the goodput)
        ObjectiveDef("maximize_goodput", "capacity", "req/s", "maximize", True, None, capacity=True),
    )
}


def objective_def(name: str) -> ObjectiveDef:
    return OBJECTIVE_DEFS[name]


def objective_direction(name: str) -> Literal["minimize", "maximize"]:
    """An objective's direction (from the table; an unknown name by its prefix, for messages about it)."""
    known = OBJECTIVE_DEFS.get(name)
    if known is not None:
        return known.direction
    return "maximize" if name.startswith("maximize") else "minimize"
