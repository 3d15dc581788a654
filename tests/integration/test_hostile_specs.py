"""Hostile and strange specs: every one is a clean error naming file, field and value, or loads and behaves.

The cases run in one child process under an address-space limit (``RLIMIT_AS``), so a blow-up (an alias bomb,
a materialised search space, a serialised huge value) fails its case with MemoryError instead of taking the
machine down. The child reports per case: the error message (or what it loaded), any other exception with its
traceback, and how much its peak resident memory grew. Nothing here measures time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MEMORY_LIMIT = 700 * 2**20  # the child's address space: the interpreter, pydantic and Optuna use ~150 MiB
CASE_MEMORY = 200 * 2**20  # growth of the peak resident memory that one case may cause

BASE: dict[str, Any] = {"parameters": {"tp-size": [1, 2]}}


def spec(**changes: Any) -> str:
    """The base spec with top-level fields replaced, as JSON."""
    return json.dumps({**BASE, **changes})


def bomb(levels: int, where: str) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    body = "\n".join("  " + line for line in lines)
    return f"parameters: {{tp-size: [1]}}\n{where}:\n{body}\n"


# (id, file name, content, expected substrings, or None: the spec loads)
Case = tuple[str, str, str | bytes, list[str] | None]
CASES: list[Case] = [
    # -- the file itself
    ("not-utf8", "s.json", b'\xff\xfe{"parameters": {}}', ["not UTF-8", "0xff"]),
    ("latin1-string", "s.json", b'{"parameters": {"x": ["caf\xe9"]}}', ["not UTF-8", "0xe9"]),
    ("utf8-bom", "s.json", '\ufeff{"parameters": {"tp-size": [1]}}', None),
    ("empty-json", "s.json", "", ["not valid JSON"]),
    ("trailing-garbage", "s.json", '{"parameters": {"tp-size": [1]}} x', ["not valid JSON"]),
    ("top-level-list", "s.json", "[1, 2]", ["must be a JSON/YAML object", "list"]),
    ("yaml-scalar", "s.yaml", "hello", ["must be a JSON/YAML object", "str"]),
    ("yaml-empty", "s.yaml", "", ["must be a JSON/YAML object"]),
    ("huge-file", "s.json", spec(description="x" * 300_000), ["over 256 KiB"]),
    ("json-deep-nesting", "s.json", '{"parameters": {"tp-size": [1]}, "x": ' + "[" * 100_000, ["nested"]),
    (
        "json-nesting-40",
        "s.json",
        spec(benchmark={"additional_params": json.loads('{"a": ' * 40 + "1" + "}" * 40)}),
        ["nested more than 32"],
    ),
    ("yaml-deep-nesting", "s.yaml", "parameters: {tp-size: [1]}\nx: " + "[" * 20_000 + "]" * 20_000, ["nested"]),
    ("json-int-5000-digits", "s.json", '{"parameters": {"tp-size": [' + "7" * 5000 + "]}}", ["not valid JSON"]),
    ("yaml-python-tag", "s.yaml", "parameters: !!python/object:os.system {}\n", ["not valid YAML"]),
    # -- YAML aliases and duplicate keys
    ("alias-bomb-unknown-field", "s.yaml", bomb(9, "unknown"), ["expands to more than"]),
    ("alias-bomb-additional-params", "s.yaml", bomb(9, "benchmark"), ["expands to more than"]),
    ("alias-small-is-fine", "s.yaml", "v: &v [1, 2]\nparameters: {tp-size: *v}\n", ["unknown field", "`v`"]),
    ("alias-recursive", "s.yaml", "parameters: {tp-size: [1]}\nx: &a [*a]\n", ["refers to itself"]),
    (
        "yaml-duplicate-top-key",
        "s.yaml",
        "parameters: {tp-size: [1]}\nparameters: {tp-size: [2]}\n",
        ["duplicate key", "parameters", ":2"],
    ),
    (
        "yaml-duplicate-nested-key",
        "s.yaml",
        "parameters:\n  x: {low: 1, high: 4, low: 2}\n",
        ["duplicate key", '"low"'],
    ),
    (
        "yaml-merge-key-allowed",
        "s.yaml",
        "parameters:\n  x: &r {low: 1, high: 4}\n  y: {<<: *r, high: 8}\n",
        None,
    ),
    (
        "json-duplicate-top-key",
        "s.json",
        '{"parameters": {"tp-size": [1]}, "parameters": {"x": [1]}}',
        ["duplicate key", "parameters"],
    ),
    (
        "json-duplicate-nested-key",
        "s.json",
        '{"parameters": {"x": {"low": 1, "high": 2, "high": 9}}}',
        ["duplicate key", "high"],
    ),
    # -- numbers that are not numbers
    (
        "range-low-nan",
        "s.json",
        '{"parameters": {"x": {"low": NaN, "high": 3}}}',
        ["parameters.x.low", "finite", "nan"],
    ),
    (
        "range-high-inf",
        "s.json",
        '{"parameters": {"x": {"low": 1, "high": Infinity}}}',
        ["parameters.x.high", "finite"],
    ),
    (
        "range-low-minus-inf",
        "s.json",
        '{"parameters": {"x": {"low": -Infinity, "high": 1}}}',
        ["parameters.x.low", "finite"],
    ),
    ("yaml-range-nan", "s.yaml", "parameters:\n  x: {low: .nan, high: 3}\n", ["parameters.x.low", "finite"]),
    (
        "yaml-speedup-inf",
        "s.yaml",
        "parameters: {tp-size: [1]}\nsimulator: {speedup: .inf}\n",
        ["simulator.speedup", "finite", "inf"],
    ),
    (
        "json-speedup-inf",
        "s.json",
        '{"parameters": {"tp-size": [1]}, "simulator": {"speedup": Infinity}}',
        ["simulator.speedup", "finite"],
    ),
    ("speedup-zero", "s.json", spec(simulator={"speedup": 0}), ["simulator.speedup", "greater than 0", "got 0"]),
    ("speedup-huge", "s.json", spec(simulator={"speedup": 1e300}), ["simulator.speedup", "1e+300"]),
    ("choice-nan", "s.json", '{"parameters": {"x": [1.0, NaN]}}', ["parameters.x", "finite"]),
    (
        "slo-threshold-nan",
        "s.json",
        '{"parameters": {"tp-size": [1]}, "slo": {"ttft": {"threshold": NaN}}}',
        ["slo.ttft.threshold", "finite"],
    ),
    (
        "timeout-inf",
        "s.json",
        '{"parameters": {"tp-size": [1]}, "optimization": {"timeout_per_iteration": Infinity}}',
        ["optimization.timeout_per_iteration", "finite"],
    ),
    (
        "max-time-1e300",
        "s.json",
        spec(benchmark={"max_time_per_iteration": 1e300}),
        ["benchmark.max_time_per_iteration", "86400"],
    ),
    (
        "range-bound-1e30",
        "s.json",
        spec(parameters={"x": {"low": 1, "high": 10**30}}),
        ["parameters.x", "high", "keep bounds"],
    ),
    (
        "range-step-1e-300",
        "s.json",
        spec(parameters={"x": {"low": 0.0, "high": 1.0, "step": 1e-300}}),
        ["parameters.x", "step", "larger step"],
    ),
    # -- request rates and concurrency
    (
        "request-rate-zero",
        "s.json",
        spec(benchmark={"request_rates": [0]}),
        ["benchmark.request_rates.0", "greater than 0", "got 0"],
    ),
    (
        "request-rate-negative",
        "s.json",
        spec(benchmark={"request_rates": [2, -1]}),
        ["benchmark.request_rates.1", "got -1"],
    ),
    (
        "request-rate-nan",
        "s.json",
        '{"parameters": {"tp-size": [1]}, "benchmark": {"request_rates": [NaN]}}',
        ["benchmark.request_rates.0", "finite", "nan"],
    ),
    (
        "request-rate-yaml-inf",
        "s.yaml",
        "parameters: {tp-size: [1]}\nbenchmark: {request_rates: [.inf]}\n",
        ["benchmark.request_rates.0", "finite"],
    ),
    ("concurrency-zero", "s.json", spec(benchmark={"num_concurrency": [0]}), ["benchmark.num_concurrency", "got 0"]),
    (
        "concurrency-billion",
        "s.json",
        spec(benchmark={"num_concurrency": [10**9]}),
        ["benchmark.num_concurrency", "1000000000"],
    ),
    (
        "too-many-concurrencies",
        "s.json",
        spec(benchmark={"num_concurrency": list(range(1, 500))}),
        ["benchmark.num_concurrency", "at most 64"],
    ),
    (
        "max-iterations-1e12",
        "s.json",
        spec(optimization={"max_iterations": 10**12}),
        ["optimization.max_iterations", "100000"],
    ),
    ("seed-negative", "s.json", spec(optimization={"seed": -1}), ["optimization.seed", "got -1"]),
    # -- initial configs
    (
        "initial-not-a-choice",
        "s.json",
        spec(initial_configs=[{"tp-size": 3}]),
        ["initial_configs.0.tp-size", "value 3", "[1, 2]"],
    ),
    (
        "initial-outside-range",
        "s.json",
        spec(parameters={"x": {"low": 1, "high": 8}}, initial_configs=[{"x": 9}]),
        ["initial_configs.0.x", "value 9", "outside the range 1..8"],
    ),
    (
        "initial-not-integer",
        "s.json",
        spec(parameters={"x": {"low": 1, "high": 8}}, initial_configs=[{"x": 1.5}]),
        ["initial_configs.0.x", "1.5", "not an integer"],
    ),
    (
        "initial-off-step",
        "s.json",
        spec(parameters={"x": {"low": 0, "high": 1, "step": 0.25}}, initial_configs=[{"x": 0.3}]),
        ["initial_configs.0.x", "0.3", "steps"],
    ),
    (
        "initial-string-for-range",
        "s.json",
        spec(parameters={"x": {"low": 1, "high": 8}}, initial_configs=[{"x": "4"}]),
        ["initial_configs.0.x", '"4"', "not a number"],
    ),
    (
        "initial-nan",
        "s.json",
        '{"parameters": {"x": {"low": 1, "high": 8}}, "initial_configs": [{"x": NaN}]}',
        ["initial_configs.0.x", "finite"],
    ),
    (
        "initial-1024.0-is-1024",
        "s.json",
        spec(parameters={"x": [512, 1024]}, initial_configs=[{"x": 1024.0}]),
        None,
    ),
    # -- token counts
    (
        "tokens-300M",
        "s.json",
        spec(benchmark={"traffic_scenarios": ["D(300000000,1)"]}),
        ["benchmark.traffic_scenarios.0", "D(300000000,1)", "300,000,001", "1,048,576"],
    ),
    (
        "tokens-normal-tail",
        "s.json",
        spec(benchmark={"traffic_scenarios": ["N(500000,200000)/(10,1)"]}),
        ["benchmark.traffic_scenarios", "N(500000,200000)/(10,1)"],
    ),
    (
        "tokens-uniform-max",
        "s.json",
        spec(benchmark={"traffic_scenarios": ["U(1,999999999999)/(1,1)"]}),
        ["benchmark.traffic_scenarios", "U(1,999999999999)/(1,1)"],
    ),
    (
        "tokens-50-digits",
        "s.json",
        spec(benchmark={"traffic_scenarios": ["D(" + "9" * 50 + ",1)"]}),
        ["benchmark.traffic_scenarios", "not a traffic scenario"],
    ),
    ("tokens-at-cap-loads", "s.json", spec(benchmark={"traffic_scenarios": ["D(1000000,48576)"]}), None),
    # -- additional_params
    (
        "additional-params-100k",
        "s.json",
        spec(benchmark={"additional_params": {"x": "y" * 100_000}}),
        ["benchmark.additional_params", "bytes", "16384"],
    ),
    (
        "additional-params-nan",
        "s.json",
        '{"parameters": {"tp-size": [1]}, "benchmark": {"additional_params": {"t": NaN}}}',
        ["benchmark.additional_params", "NaN"],
    ),
    (
        "additional-params-yaml-date",
        "s.yaml",
        "parameters: {tp-size: [1]}\nbenchmark: {additional_params: {d: 2024-01-01}}\n",
        ["benchmark.additional_params", "not plain JSON"],
    ),
    ("additional-params-small-loads", "s.json", spec(benchmark={"additional_params": {"temperature": 0.0}}), None),
    # -- duplicate and mixed choices
    ("choices-1024-and-1024.0", "s.json", spec(parameters={"x": [1024, 1024.0]}), ["parameters.x", "1024", "twice"]),
    ("choices-string-twice", "s.json", spec(parameters={"x": ["a", "b", "a"]}), ["parameters.x", '"a"', "twice"]),
    ("choices-bool-and-int", "s.json", spec(parameters={"x": [True, 1]}), ["parameters.x", "mixes"]),
    ("choices-20000", "s.json", spec(parameters={"x": list(range(20_000))}), ["parameters.x", "at most 10000"]),
    (
        "choices-object",
        "s.json",
        spec(parameters={"x": [{"a": 1}]}),
        ["parameters.x", "not a number, string or boolean"],
    ),
    # -- GPUs
    ("gpus-minus-one", "s.json", spec(gpus=[-1]), ["gpus.0", "greater than or equal to 0", "got -1"]),
    ("gpus-negative-pair", "s.json", spec(gpus=[-1, -2]), ["gpus.0", "gpus.1"]),
    ("gpus-2000", "s.json", spec(gpus=list(range(2000))), ["`gpus`", "at most 1024"]),
    ("gpus-100000", "s.json", spec(gpus=list(range(100_000))), ["over 256 KiB"]),
    ("gpus-twice", "s.json", spec(gpus=[0, 1, 0]), ["`gpus`", "GPU 0 is listed twice"]),
    ("gpu-id-huge", "s.json", spec(gpus=[10**9]), ["gpus.0", "1000000000"]),
    ("docker-gpus-negative", "s.json", spec(docker={"gpus": [-1]}), ["docker.gpus", "got -1"]),
    ("docker-gpus-100000", "s.json", spec(docker={"gpus": 100_000}), ["docker.gpus", "100000"]),
    ("sim-num-gpus-100000", "s.json", spec(simulator={"num_gpus": 100_000}), ["simulator.num_gpus", "100000"]),
    # -- flags the runtime owns
    (
        "param-host",
        "s.json",
        spec(parameters={"host": ["0.0.0.0"]}),
        ["parameters.host", "--host", "set by the runtime"],
    ),
    ("param-port", "s.json", spec(parameters={"port": [80]}), ["parameters.port", "--port"]),
    ("param-model-path", "s.json", spec(parameters={"model-path": ["/other"]}), ["parameters.model-path"]),
    ("param-model", "s.json", spec(parameters={"model": ["/other"]}), ["parameters.model"]),
    ("param-abbreviated-host", "s.json", spec(parameters={"ho": ["0.0.0.0"]}), ["parameters.ho", "--ho"]),
    (
        "sim-extra-host",
        "s.json",
        spec(simulator={"extra_args": ["--host", "0.0.0.0"]}),
        ["simulator.extra_args", "--host", "runtime sets itself"],
    ),
    (
        "sim-extra-seed",
        "s.json",
        spec(simulator={"extra_args": ["--sim-seed", "3"]}),
        ["simulator.extra_args", "--sim-seed"],
    ),
    ("sim-extra-noise-allowed", "s.json", spec(simulator={"extra_args": ["--sim-noise", "0.1"]}), None),
    (
        "docker-extra-port-equals",
        "s.json",
        spec(docker={"extra_args": ["--port=1234"]}),
        ["docker.extra_args", "--port=1234"],
    ),
    (
        "docker-extra-model-path",
        "s.json",
        spec(docker={"extra_args": ["--model-path", "/x"]}),
        ["docker.extra_args", "--model-path"],
    ),
    (
        "docker-extra-underscore-host",
        "s.json",
        spec(docker={"extra_args": ["--HOST"]}),
        ["docker.extra_args", "--HOST"],
    ),
    # -- names and lengths
    ("task-name-ansi", "s.json", spec(task_name="a\x1b[31mred"), ["task_name", "control character", "\\u001b"]),
    ("task-name-newline", "s.json", spec(task_name="line1\nline2"), ["task_name", "control character"]),
    ("task-name-10000", "s.json", spec(task_name="n" * 10_000), ["task_name", "at most 200"]),
    ("task-name-dollar-loads", "s.json", spec(task_name="$x^2$ team/a", parameters={"x": ["$a$", "b"]}), None),
    ("description-100k", "s.json", spec(description="d" * 100_000), ["description", "at most 4096"]),
    ("parameters-200", "s.json", spec(parameters={f"p{i}": [1] for i in range(200)}), ["`parameters`", "at most 64"]),
    ("parameter-name-5000", "s.json", spec(parameters={"a" * 5000: [1]}), ["parameters.", "not an SGLang flag name"]),
    ("unknown-field-huge", "s.json", spec(extra="z" * 200_000), ["`extra`", "unknown field"]),
    ("unknown-field-ansi-name", "s.json", spec(**{"\x1b[2J": 1}), ["unknown field", "\\x1b[2J"]),
    (
        "grid-1e9",
        "s.json",
        spec(parameters={"x": {"low": 1, "high": 10**9}}, optimization={"strategy": "grid"}),
        ["optimization.strategy", "1e+09", "1,000,000"],
    ),
    (
        "grid-continuous",
        "s.json",
        spec(parameters={"x": {"low": 0.1, "high": 0.9}}, optimization={"strategy": "grid"}),
        ["parameters.x", "no grid"],
    ),
    ("bayesian-1e9-loads", "s.json", spec(parameters={"x": {"low": 1, "high": 10**9}}), None),
    ("container-port-70000", "s.json", spec(docker={"container_port": 70_000}), ["docker.container_port", "65535"]),
    # -- datasets (files made by DATASET_FILES) and generated traffic: bounded at collection
    (
        "dataset-dev-zero",
        "s.json",
        spec(benchmark={"traffic_scenarios": ["D(10,10)", "dataset(/dev/zero)"]}),
        ["benchmark.traffic_scenarios.1", "'dataset(/dev/zero)'", "/dev/zero", "not a regular file", "64 MiB"],
    ),
    (
        "dataset-fifo",
        "s.json",
        spec(benchmark={"traffic_scenarios": ["dataset(pipe.jsonl)"]}),
        ["benchmark.traffic_scenarios.0", "pipe.jsonl", "not a regular file", "64 MiB"],
    ),
    (
        "dataset-folder",
        "s.json",
        spec(benchmark={"traffic_scenarios": ["dataset(.)"]}),
        ["benchmark.traffic_scenarios.0", "not a regular file"],
    ),
    (
        "dataset-1gib",
        "s.json",
        spec(benchmark={"traffic_scenarios": ["dataset(big.jsonl)"]}),
        ["benchmark.traffic_scenarios.0", "'dataset(big.jsonl)'", "big.jsonl", "1,073,741,824 bytes", "64 MiB"],
    ),
    (
        "dataset-just-over",
        "s.json",
        spec(benchmark={"traffic_scenarios": ["dataset(over.jsonl)"]}),
        ["benchmark.traffic_scenarios.0", "over.jsonl", "67,108,865 bytes", "64 MiB"],
    ),
    (
        "dataset-9mib-line",
        "s.json",
        spec(benchmark={"traffic_scenarios": ["dataset(line.jsonl)"]}),
        ["benchmark.traffic_scenarios.0", "line.jsonl:2", "8 MiB"],
    ),
    ("dataset-small-loads", "s.json", spec(benchmark={"traffic_scenarios": ["dataset(chat.jsonl)"]}), None),
    (
        "shared-prefix-1e16-prompts",
        "s.json",
        spec(benchmark={"traffic_scenarios": ["P(100000000,100000000,100000,100,100)"]}),
        ["benchmark.traffic_scenarios.0", "`groups` x `prompts`", "1,000,000"],
    ),
    (
        "shared-prefix-1e12-system",
        "s.json",
        spec(benchmark={"traffic_scenarios": ["P(1,1,999999999999,1,1)"]}),
        ["benchmark.traffic_scenarios.0", "`system` + `question` + `output`", "1,048,576"],
    ),
    (
        "chat-100000-turns",
        "s.json",
        spec(benchmark={"traffic_scenarios": ["C(1,100000,100,100)"]}),
        ["benchmark.traffic_scenarios.0", "`turns`", "1,048,576"],
    ),
    (
        "cell-1e6-requests-of-1e5-tokens",
        "s.json",
        spec(benchmark={"traffic_scenarios": ["D(100000,100)"], "max_requests_per_iteration": 1_000_000}),
        ["benchmark.traffic_scenarios.0", "1,000,000 requests", "max_requests_per_iteration", "134,217,728"],
    ),
    ("volume-bad-mode", "s.json", spec(docker={"volumes": {"/a": "/b:xx"}}), ["docker.volumes", ":ro"]),
]


def _conversation_line(words: int) -> str:
    turns = [{"from": "human", "value": "hi " * words}, {"from": "gpt", "value": "hello"}]
    return json.dumps({"conversations": turns}) + "\n"


def _sparse(size: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with path.open("wb") as handle:
            handle.truncate(size)  # a hole: no disk, no time

    return make


#: Files a case's spec refers to, made next to it: (name, how)
DATASET_FILES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "dataset-fifo": ("pipe.jsonl", lambda path: os.mkfifo(path)),
    "dataset-1gib": ("big.jsonl", _sparse(2**30)),
    "dataset-just-over": ("over.jsonl", _sparse(64 * 2**20 + 1)),
    "dataset-9mib-line": (
        "line.jsonl",
        lambda path: path.write_text(_conversation_line(2) + _conversation_line(3_000_000)),
    ),
    "dataset-small-loads": ("chat.jsonl", lambda path: path.write_text(_conversation_line(5) * 3)),
}

#: Search spaces that must not be materialised: the search proposes a few configurations under the limit.
SEARCH_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("bayesian-int-1e9", {"x": {"low": 1, "high": 10**9}}, "bayesian"),
    ("random-int-1e9", {"x": {"low": 1, "high": 10**9}}, "random"),
    ("random-three-1000-ranges", {f"p{i}": {"low": 1, "high": 1000} for i in range(3)}, "random"),
    ("bayesian-three-1000-ranges", {f"p{i}": {"low": 1, "high": 1000} for i in range(3)}, "bayesian"),
    ("random-float-step-1e-9", {"x": {"low": 0.0, "high": 1.0, "step": 1e-9}}, "random"),
    ("bayesian-float-step-1e-9", {"x": {"low": 0.0, "high": 1.0, "step": 1e-9}}, "bayesian"),
    ("grid-at-the-limit", {"a": {"low": 1, "high": 1000}, "b": {"low": 1, "high": 1000}}, "grid"),
]

CHILD = textwrap.dedent(
    """
    import json, resource, sys, traceback
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from pytest_autotuner.core.spec.spec_text import SpecError
    from pytest_autotuner.inputs import load_spec
    from pytest_autotuner.core.search.space import SearchSpace
    from pytest_autotuner.core.search.study import Search
    from pytest_autotuner.core.spec.task_spec import TaskSpec

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def run(kind, payload):
        if kind == "load":
            try:
                spec = load_spec(payload)
            except SpecError as err:
                return {{"error": str(err)}}
            return {{"loaded": spec.task_name, "slug": spec.slug}}
        spec = TaskSpec.model_validate(payload)
        space = SearchSpace.from_spec(spec)
        search = Search(spec=spec, space=space, storage=None, study_name="s", seed=1)
        points = []
        for value in range(4):
            proposal = search.propose()
            points.append(proposal.params)
            search.study.tell(proposal.trial, float(value))
        return {{"points": points, "contained": all(space.contains(p) for p in points)}}

    for line in sys.stdin:
        case_id, kind, payload = json.loads(line)
        before = peak()
        try:
            result = run(kind, payload)
        except BaseException as err:  # a crash of the case, reported, not raised
            result = {{"crash": "".join(traceback.format_exception(err))[-3000:]}}
        result["grew"] = peak() - before
        print(json.dumps([case_id, result]), flush=True)
    """
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("hostile")
    jobs = []
    for case_id, name, content, _ in CASES:
        path = folder / case_id / name
        path.parent.mkdir()
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        if case_id in DATASET_FILES:
            file_name, make = DATASET_FILES[case_id]
            make(path.parent / file_name)
        jobs.append([case_id, "load", str(path)])
    for case_id, parameters, strategy in SEARCH_CASES:
        payload = {"task_name": case_id, "parameters": parameters, "optimization": {"strategy": strategy}}
        jobs.append([case_id, "search", payload])
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.format(limit=MEMORY_LIMIT)],
        input="".join(json.dumps(job) + "\n" for job in jobs),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    out: dict[str, dict[str, Any]] = {}
    for line in proc.stdout.splitlines():
        case_id, result = json.loads(line)
        out[case_id] = result
    out["__stderr__"] = {"text": proc.stderr[-3000:]}
    return out


def _result(results: dict[str, dict[str, Any]], case_id: str) -> dict[str, Any]:
    assert case_id in results, f"the child died before case {case_id}: {results['__stderr__']['text']}"
    result = results[case_id]
    assert "crash" not in result, result["crash"]
    assert result["grew"] < CASE_MEMORY, f"peak memory grew by {result['grew'] / 2**20:.0f} MiB"
    return result


def test_the_table_holds_at_least_60_cases() -> None:
    assert len(CASES) + len(SEARCH_CASES) >= 60
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize(("case_id", "name", "content", "expected"), CASES, ids=[case[0] for case in CASES])
def test_hostile_spec(
    results: dict[str, dict[str, Any]], case_id: str, name: str, content: str | bytes, expected: list[str] | None
) -> None:
    result = _result(results, case_id)
    if expected is None:
        assert "loaded" in result, result.get("error")
        return
    assert "error" in result, f"the spec loaded: {result}"
    message = result["error"]
    assert f"{case_id}/{name}" in message  # the file
    for text in expected:
        assert text in message, message
    assert "Traceback" not in message and 'File "' not in message
    assert "\x1b" not in message and len(message) < 3000, message[:3000]


@pytest.mark.parametrize(("case_id", "parameters", "strategy"), SEARCH_CASES, ids=[c[0] for c in SEARCH_CASES])
def test_huge_spaces_are_searched_without_listing_them(
    results: dict[str, dict[str, Any]], case_id: str, parameters: dict[str, Any], strategy: str
) -> None:
    result = _result(results, case_id)
    points = result["points"]
    assert len(points) == 4 and result["contained"]
    assert len({json.dumps(p, sort_keys=True) for p in points}) == 4  # no configuration twice


def test_distinct_task_names_get_distinct_report_folders(results: dict[str, dict[str, Any]]) -> None:
    from pytest_autotuner.core.spec.task_spec import TaskSpec

    names = ["team/a", "team_a", "team a", "team\\a", "TEAM_A", "team_a."]
    slugs = [TaskSpec.model_validate({"task_name": n, "parameters": {"x": [1]}}).slug for n in names]
    assert len(set(slugs)) == len(names), slugs
    assert slugs[1] == "team_a"  # an already safe name is its own folder
    assert all("/" not in s and "\\" not in s and " " not in s for s in slugs)


def test_the_child_ran_under_the_memory_limit(results: dict[str, dict[str, Any]]) -> None:
    # a control: the same child refuses an allocation above the limit, so the limit is real
    limit = MEMORY_LIMIT
    probe = f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\nb = bytearray({limit})"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "MemoryError" in proc.stderr
