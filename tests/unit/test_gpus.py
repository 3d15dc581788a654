"""GPU pool and concurrent trials: disjoint device sets, release on every path, infeasible without launch."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from factories import result, spec

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.trial import Deadline, Params
from pytest_autotuner.core.outcome.session import TuningSession
from pytest_autotuner.core.search.gpu_pool import GpuPool, gpus_needed
from pytest_autotuner.core.search.space import SearchSpace
from pytest_autotuner.core.search.study import Search, study_name_for
from pytest_autotuner.runtimes.gpus import detect_gpus, gpu_memory_mib
from pytest_autotuner.threads import Threads


def test_gpus_needed_is_tp_times_dp() -> None:
    assert gpus_needed({"tp-size": 2, "dp-size": 3}) == 6
    assert gpus_needed({"mem-fraction-static": 0.8}) == 1


def test_detection_prefers_the_spec_then_the_simulated_host_then_cuda_visible_devices() -> None:
    assert detect_gpus(spec(gpus=[4, 5]), "docker") == [4, 5]
    assert detect_gpus(spec(simulator={"num_gpus": 8}), "sim") == list(range(8))
    assert detect_gpus(spec(), "process", env={"CUDA_VISIBLE_DEVICES": "2,3"}) == [2, 3]
    assert detect_gpus(spec(docker={"gpus": "none"}), "docker") == []


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An nvidia-smi on PATH listing an H100 and two 141 GB GPUs (named an H200 and, to test an unknown name, a
    T4), for the three queries the tool makes."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        '#!/bin/sh\n[ "$2" = "--format=csv,noheader,nounits" ] || exit 9\n'
        'case "$1" in\n'
        '  --query-gpu=index) printf "0\\n1\\n2\\n" ;;\n'
        '  --query-gpu=index,memory.total) printf "0, 81559\\n1, 143771\\n2, 143771\\n" ;;\n'
        '  --query-gpu=index,name) printf "0, NVIDIA H100 80GB HBM3\\n1, NVIDIA H200\\n2, Tesla T4\\n" ;;\n'
        "  *) exit 9 ;;\n"
        "esac\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")


@pytest.mark.usefixtures("fake_nvidia_smi")
def test_without_cuda_visible_devices_the_gpus_are_those_nvidia_smi_lists() -> None:
    assert detect_gpus(spec(), "docker", env={}) == [0, 1, 2]


@pytest.mark.usefixtures("fake_nvidia_smi")
def test_gpu_memory_is_the_smallest_of_the_gpus_used_as_nvidia_smi_reports_it() -> None:
    assert gpu_memory_mib(spec(), "docker", [1, 2]) == 143771
    assert gpu_memory_mib(spec(), "process", [0, 1]) == 81559
    assert gpu_memory_mib(spec(), "docker", [7]) is None  # not a GPU nvidia-smi lists
    assert gpu_memory_mib(spec(), "docker", []) is None
    assert gpu_memory_mib(spec(simulator={"gpu": "h200"}), "sim", [0]) == 143771  # the simulated GPU's


@pytest.mark.usefixtures("fake_nvidia_smi")
def test_the_screen_prices_the_runners_own_gpu_by_its_nvidia_smi_name() -> None:
    from pytest_autotuner.runtimes.gpus import runner_gpu

    assert runner_gpu([1, 0]) == ("h200", "NVIDIA H200")
    assert runner_gpu([0]) == ("h100", "NVIDIA H100 80GB HBM3")
    assert runner_gpu([2]) == (None, "Tesla T4")
    assert runner_gpu([5]) == (None, "no GPU name from nvidia-smi")
    assert runner_gpu([]) == (None, "no GPU name from nvidia-smi")


def test_without_nvidia_smi_no_gpu_and_no_memory_are_known(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus(spec(), "docker", env={}) == []
    assert gpu_memory_mib(spec(), "docker", [0]) is None


def test_the_pool_hands_out_disjoint_sets_and_takes_them_back() -> None:
    pool = GpuPool([0, 1, 2])
    first = pool.take(2)
    assert first == (0, 1)
    assert pool.take(1) == (2,) and pool.free == 0
    assert pool.take(1) is None  # a trial waits: none is free
    pool.give_back(first)
    assert pool.take(2) == (0, 1)
    pool.give_back((0, 1, 2))
    pool.give_back((2,))  # given back twice: still three
    assert pool.free == 3
    with pytest.raises(ValueError, match="4 GPUs requested but the pool has 3"):
        pool.take(4)


def test_a_trial_waits_until_enough_gpus_are_free() -> None:
    """tp=1 and tp=2 on a 2-GPU runner with two workers: the tp=2 trial starts only after the tp=1 one ended."""
    s = spec(
        parameters={"tp-size": [1, 2]},
        optimization={"strategy": "grid", "max_iterations": 2, "confirm_runs": 0, "start_from_defaults": False},
    )
    search = Search(spec=s, space=SearchSpace.from_spec(s), storage=None, study_name=study_name_for(s, "t"), seed=2,
                    max_gpus=2)  # fmt: skip
    spans: dict[int, tuple[float, float]] = {}

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        begun = time.monotonic()
        time.sleep(0.3)
        spans[int(params["tp-size"])] = (begun, time.monotonic())
        return result(1.0)

    session = TuningSession(spec=s, search=search, evaluate=evaluate, workers=2, gpu_pool=GpuPool([0, 1]),
                            background=Threads())  # fmt: skip
    session.search()
    (one_start, one_end), (two_start, two_end) = sorted(spans.values())
    assert one_end <= two_start or two_end <= one_start  # never at once: together they need 3 GPUs
    assert session.gpu_pool is not None and session.gpu_pool.free == 2


def concurrent_session(
    workers: int, pool_size: int, max_iterations: int = 8, overlap_wait: float = 0.0
) -> tuple[TuningSession, dict]:
    """A grid session whose ``evaluate`` records GPU use; with ``overlap_wait``, each trial waits up to that long
    for another to be running (until one has), so concurrency shows however slowly the workers are scheduled."""
    s = spec(
        parameters={"tp-size": [1, 2, 4], "chunked-prefill-size": [512, 1024, 2048, 4096]},
        optimization={"strategy": "grid", "max_iterations": max_iterations, "confirm_runs": 0},
    )
    search = Search(spec=s, space=SearchSpace.from_spec(s), storage=None, study_name=study_name_for(s, "t"), seed=2,
                    max_gpus=pool_size)  # fmt: skip
    lock = threading.Lock()
    state = {"running": 0, "peak": 0, "held": set(), "calls": 0}
    overlap = threading.Event()

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        with lock:
            assert not state["held"] & set(deadline.devices), "two trials got the same GPU"
            assert len(deadline.devices) == gpus_needed(params)
            state["held"] |= set(deadline.devices)
            state["running"] += 1
            state["peak"] = max(state["peak"], state["running"])
            state["calls"] += 1
            if state["running"] > 1:
                overlap.set()
        overlap.wait(overlap_wait)
        time.sleep(0.15)
        with lock:
            state["held"] -= set(deadline.devices)
            state["running"] -= 1
        return result(1.0 + int(params["tp-size"]) / 10)

    session = TuningSession(
        spec=s,
        search=search,
        evaluate=evaluate,
        workers=workers,
        gpu_pool=GpuPool(list(range(pool_size))),
        background=Threads(),
    )
    return session, state


def test_trials_run_concurrently_on_disjoint_gpus() -> None:
    session, state = concurrent_session(workers=4, pool_size=4, overlap_wait=2.0)
    session.search()
    trials, _ = session.records()
    assert len(trials) == 8
    assert state["peak"] > 1  # one trial at a time never gets there, however long each waits


def test_configurations_needing_more_gpus_than_the_runner_has_are_not_trials() -> None:
    session, state = concurrent_session(workers=2, pool_size=2, max_iterations=12)
    assert session.search_state.unhostable_note() == "tp-size=4 needs 4 GPUs; this runner has 2: skipped"
    session.search()
    trials = session.records()[0]
    assert {t.params["tp-size"] for t in trials} == {1, 2}  # tp=4 never ran, never counted
    assert len(trials) == state["calls"] == 8  # the 8 hostable grid points: the space ends before the budget


def test_a_sampler_proposing_unhostable_points_gets_others_without_spending_the_budget() -> None:
    s = spec(
        parameters={"tp-size": [1, 2], "dp-size": [1, 2], "chunked-prefill-size": [512, 1024, 2048, 4096]},
        optimization={
            "strategy": "bayesian",
            "max_iterations": 6,
            "confirm_runs": 0,
            "start_from_defaults": False,
            "remeasure_best": False,
        },
        initial_configs=[{"tp-size": 2, "dp-size": 1, "chunked-prefill-size": 512}],  # enqueued, unhostable
    )
    search = Search(spec=s, space=SearchSpace.from_spec(s), storage=None, study_name=study_name_for(s, "t"), seed=3,
                    max_gpus=1)  # fmt: skip
    calls: list[Params] = []

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        calls.append(params)
        return result(1.0)

    session = TuningSession(spec=s, search=search, evaluate=evaluate, gpu_pool=GpuPool([0]))
    session.search()
    assert len(calls) == 4  # only tp=1, dp=1 fits: its 4 points, then the space is spent
    assert all(gpus_needed(p) == 1 for p in calls)
    unhostable = [t for t in search.study.get_trials() if "unhostable" in t.user_attrs]
    assert unhostable and all(t.user_attrs["unhostable"] > 1 for t in unhostable)
    assert len(session.records()[0]) == 4


def _search(parameters: dict[str, object], strategy: str, max_gpus: int) -> Search:
    s = spec(parameters=parameters, optimization={"strategy": strategy, "max_iterations": 8, "confirm_runs": 0,
                                                  "start_from_defaults": False})  # fmt: skip
    return Search(spec=s, space=SearchSpace.from_spec(s), storage=None, study_name="s", seed=1, max_gpus=max_gpus)


def test_a_range_of_parallel_sizes_is_one_line_of_the_note() -> None:
    search = _search({"tp-size": {"low": 1, "high": 300_000_000}, "dp-size": [1, 4]}, "random", 2)
    assert search.unhostable_note().splitlines() == [
        "tp-size=3..300000000 needs 3 to 300000000 GPUs; this runner has 2: skipped",
        "dp-size=4 needs 4 GPUs; this runner has 2: skipped",
    ]
    listed = _search({"tp-size": list(range(1, 10_001))}, "random", 2)  # the longest list: one line too
    assert listed.unhostable_note() == (
        "tp-size=3, 4, 5, ... (9998 values) need 3 to 10000 GPUs; this runner has 2: skipped"
    )
    stepped = _search({"tp-size": {"low": 1, "high": 9, "step": 4}}, "grid", 4)  # 1, 5, 9
    assert stepped.unhostable_note() == "tp-size=5..9 needs 5 to 9 GPUs; this runner has 4: skipped"


@pytest.mark.parametrize("strategy", ["grid", "random", "bayesian"])
def test_a_wide_parallel_range_proposes_what_fits_at_once(strategy: str) -> None:
    # 500,000 tp sizes (x 2: the grid at its limit) on 2 GPUs: the proposals come from the two that fit
    search = _search({"tp-size": {"low": 1, "high": 500_000}, "chunked-prefill-size": [512, 1024]}, strategy, 2)
    proposed = []
    for _ in range(4):
        proposal = search.propose()
        assert proposal is not None
        proposed.append(proposal.params)
        search.study.tell(proposal.trial, 1.0)
    assert all(p["tp-size"] in (1, 2) for p in proposed)
    assert len({(p["tp-size"], p["chunked-prefill-size"]) for p in proposed}) == 4  # each point that fits, once
    assert search.propose() is None  # and then the space is spent


def test_a_space_where_nothing_fits_proposes_nothing_and_says_why() -> None:
    search = _search({"tp-size": {"low": 3, "high": 10**12}, "dp-size": [2, 4]}, "bayesian", 4)
    assert search.unhostable_note().splitlines()[0] == (
        "no configuration fits: each needs at least 6 GPUs; this runner has 4"
    )
    assert search.propose() is None
    assert search.study.get_trials() == []  # no trial opened and closed to find out


@pytest.mark.parametrize(
    ("name", "gpu"),
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H100 PCIe", "h100"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA H800", "h100"),
        ("NVIDIA A100-SXM4-80GB", "a100-80g"),
        ("NVIDIA A100 80GB PCIe", "a100-80g"),
        ("NVIDIA B200", "b200"),
        ("NVIDIA GB200", "gb200"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "rtx-pro-6000"),
        ("NVIDIA A100-SXM4-40GB", None),  # a 40 GB A100: the simulator has none like it
        ("Tesla T4", None),
    ],
)
def test_nvidia_smi_names_map_to_the_simulators_gpus(name: str, gpu: str | None) -> None:
    from pytest_autotuner.runtimes.gpus import simulated_gpu

    assert simulated_gpu(name) == gpu


@pytest.mark.parametrize("attention", [[True], [True, False]])
def test_dp_attention_costs_no_gpus_so_its_dp_size_bounds_nothing(attention: list[bool]) -> None:
    """With ``enable-dp-attention`` the dp size splits attention inside the tp GPUs: tp 8 with dp 8 fits 8 GPUs.
    The space is not called unhostable, no dp value is skipped, and the configurations proposed fit."""
    search = _search({"tp-size": [2, 4], "dp-size": [2, 4], "enable-dp-attention": attention}, "random", 4)
    assert search.unhostable_note() == ""
    proposed = []
    while (proposal := search.propose()) is not None:
        proposed.append(proposal.params)
        search.study.tell(proposal.trial, 1.0)
    assert proposed and all(gpus_needed(p) <= 4 for p in proposed)
    assert {(p["tp-size"], p["dp-size"]) for p in proposed if p["enable-dp-attention"]} == {(2, 2), (2, 4), (4, 2),
                                                                                            (4, 4)}  # fmt: skip
    if False in attention:  # replicas: only tp 2 x dp 2 fits
        assert {(p["tp-size"], p["dp-size"]) for p in proposed if not p["enable-dp-attention"]} == {(2, 2)}
    # DeepSeek's layout: tp 8, dp 8 with DP attention on one 8-GPU node
    deepseek = _search({"tp-size": [8], "dp-size": [8], "enable-dp-attention": attention}, "grid", 8)
    assert deepseek.unhostable_note() == ""
    proposal = deepseek.propose()
    assert proposal is not None and gpus_needed(proposal.params) == 8 and proposal.params["enable-dp-attention"]
