"""Time and memory of loading hostile specs and of searching huge spaces (issues 15 and 28's bounds).

Each case runs in a fresh interpreter that imports the package first, then times the one call and reports its
peak resident memory; "import only" is the floor the other rows add to. The tests assert the errors and the
behaviour (tests/integration/test_hostile_specs.py); this prints the figures quoted in benchmarks/RESULTS.md.

    python benchmarks/hostile_specs.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from pytest_autotuner.core.spec.spec_text import SpecError
    from pytest_autotuner.core.spec.task_spec import TaskSpec
    from pytest_autotuner.inputs import load_spec
    from pytest_autotuner.core.search.space import SearchSpace
    from pytest_autotuner.core.search.study import Search
    kind, payload, *rest = json.loads(sys.argv[1])
    max_gpus = rest[0] if rest else None
    start = time.perf_counter()
    outcome = "-"
    if kind == "load":
        try:
            load_spec(payload)
            outcome = "loaded"
        except SpecError as err:
            outcome = str(err).splitlines()[-1].strip()[:70]
    elif kind == "search":
        spec = TaskSpec.model_validate(payload)
        space = SearchSpace.from_spec(spec)
        search = Search(spec=spec, space=space, storage=None, study_name="b", seed=1, max_gpus=max_gpus)
        search.unhostable_note()  # what a run prints before its first trial
        proposed = set()
        for value in range(10):
            proposal = search.propose()
            if proposal is None:  # every configuration that fits was proposed
                break
            proposed.add(json.dumps(proposal.params, sort_keys=True))
            search.study.tell(proposal.trial, float(value))
        outcome = f"{len(proposed)} distinct proposals" + ("" if len(proposed) == 10 else ", then none left")
    seconds = time.perf_counter() - start
    print(json.dumps([seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, outcome]))
    """
)


def bomb(levels: int, where: str) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "parameters: {tp-size: [1]}\n" + f"{where}:\n" + "\n".join("  " + line for line in lines) + "\n"


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="hostile-bench-"))
    files = {
        "alias bomb under an unknown field (9 levels, 9^9 leaves)": ("s.yaml", bomb(9, "unknown")),
        "alias bomb in additional_params": ("s.yaml", bomb(9, "benchmark")),
        "JSON file of 255 KiB (one long description)": (
            "s.json",
            json.dumps({"parameters": {"x": [1]}, "description": "d" * 255_000}),
        ),
        "JSON nested 100,000 deep": ("s.json", '{"parameters": {"x": [1]}, "y": ' + "[" * 100_000),
        "20,000 listed values": ("s.json", json.dumps({"parameters": {"x": list(range(20_000))}})),
        "D(300000000,1)": (
            "s.json",
            json.dumps({"parameters": {"x": [1]}, "benchmark": {"traffic_scenarios": ["D(300000000,1)"]}}),
        ),
        "grid over a 1..10^9 int range": (
            "s.json",
            json.dumps({"parameters": {"x": {"low": 1, "high": 10**9}}, "optimization": {"strategy": "grid"}}),
        ),
        "dataset(/dev/zero)": ("s.json", _traffic("dataset(/dev/zero)")),
        "dataset of 1 GiB (sparse file)": ("s.json", _traffic("dataset(big.jsonl)")),
        "P(100000000,100000000,100000,100,100)": ("s.json", _traffic("P(100000000,100000000,100000,100,100)")),
        "D(100000,100), 10^6 requests a cell": ("s.json", _traffic("D(100000,100)", 1_000_000)),
    }
    with (folder / "big.jsonl").open("wb") as handle:
        handle.truncate(2**30)
    cases: list[tuple[str, list[object]]] = [("import only", ["none", None])]
    for i, (label, (name, text)) in enumerate(files.items()):
        path = folder / f"{i}-{name}"
        path.write_text(text)
        cases.append((label, ["load", str(path)]))
    wide = {"x": {"low": 1, "high": 10**9}}
    three = {f"p{i}": {"low": 1, "high": 1000} for i in range(3)}
    for strategy in ("bayesian", "random"):
        cases.append((f"{strategy}: 1..10^9 int range, 10 trials", ["search", _task(wide, strategy)]))
        cases.append((f"{strategy}: three 1..1000 ranges, 10 trials", ["search", _task(three, strategy)]))
    step = {"x": {"low": 0.0, "high": 1.0, "step": 1e-9}}
    cases.append(("random: float range step 1e-9, 10 trials", ["search", _task(step, "random")]))
    grid = {"a": {"low": 1, "high": 1000}, "b": {"low": 1, "high": 1000}}
    cases.append(("grid: 1,000,000 points (the limit), 10 trials", ["search", _task(grid, "grid")]))
    reported = {"max-running-requests": {"low": 1, "high": 300_000_000}}
    layout = {"tp-size": {"low": 1, "high": 10**12}, "dp-size": {"low": 1, "high": 10**12}}
    for strategy in ("bayesian", "random"):
        cases.append((f"{strategy}: 1..3x10^8 range, 2 GPUs, 10 trials", ["search", _task(reported, strategy), 2]))
        cases.append((f"{strategy}: tp, dp 1..10^12, 2 GPUs, 10 trials", ["search", _task(layout, strategy), 2]))
    tp_grid = {"tp-size": {"low": 1, "high": 1000}, "x": {"low": 1, "high": 1000}}
    cases.append(("grid: tp 1..1000 x 1000 values, 2 GPUs, 10 trials", ["search", _task(tp_grid, "grid"), 2]))

    print(f"{'case':<52} {'seconds':>8} {'peak MiB':>9}  outcome")
    for label, job in cases:
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(job)], capture_output=True, text=True, check=True)
        seconds, peak, outcome = json.loads(out.stdout)
        print(f"{label:<52} {seconds:>8.3f} {peak:>9.0f}  {outcome}")


def _traffic(scenario: str, requests: int = 100) -> str:
    bench = {"traffic_scenarios": [scenario], "max_requests_per_iteration": requests}
    return json.dumps({"parameters": {"x": [1]}, "benchmark": bench})


def _task(parameters: dict[str, object], strategy: str) -> dict[str, object]:
    return {"task_name": "bench", "parameters": parameters, "optimization": {"strategy": strategy}}


if __name__ == "__main__":
    main()
