"""The process runtime: `python3 -m sglang.launch_server` on the host, here a shim package that runs the
simulator, with the same failure tests as the docker runtime, each ending with no child process alive."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from processes import descendants, interruptible

from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, TrialFailure
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.evaluate import make_evaluate
from pytest_autotuner.runtimes.base import _get_json
from pytest_autotuner.runtimes.process import ProcessHost

pytestmark = pytest.mark.slow

SHIM = Path(__file__).parent / "docker_image"
REPO = Path(__file__).parents[2]
MODEL = "meta-llama/Llama-3.2-1B-Instruct"
PLAN = BenchmarkPlan(scenarios=(parse_scenario("D(64,16)"),), concurrencies=(2,), max_requests=8, warmup_requests=0)


def shim_env(*sim_flags: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SHIM), str(REPO), os.environ.get("PYTHONPATH", "")]),
        "SIM_EXTRA_ARGS": " ".join(["--sim-speedup", "4", "--sim-startup-scale", "0.01", *sim_flags]),
    }


def runtime(*sim_flags: str, readiness: float = 60.0) -> ProcessHost:
    return ProcessHost(model=MODEL, readiness_timeout=readiness, python=sys.executable, env=shim_env(*sim_flags))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def servers_of_this_test() -> list[int]:
    """Server processes (the shim runs the simulator) below this test process."""
    return [p for p in descendants(os.getpid()) if "pytest_autotuner.sim" in _cmdline(p)]


def test_a_server_launches_serves_and_is_killed_as_a_group() -> None:
    rt = runtime()
    with rt.launch({"chunked-prefill-size": 512}, deadline=Deadline(60), label="ok") as server:
        pid = server.pid
        assert server.endpoint.model_name
        assert server.endpoint.base_url.startswith("http://127.0.0.1:")
        assert alive(pid) and server.is_alive()
    assert not alive(pid) and not server.is_alive()
    rt.close()


def test_one_host_serves_launches_one_after_another_and_at_once() -> None:
    rt = runtime()
    with (
        rt.launch({}, deadline=Deadline(60), label="a") as first,
        rt.launch({}, deadline=Deadline(60), label="b") as second,
    ):
        assert first.endpoint.base_url != second.endpoint.base_url
        assert first.is_alive() and second.is_alive()
    with rt.launch({}, deadline=Deadline(60), label="c") as third:
        assert third.is_alive() and not first.is_alive()
    assert servers_of_this_test() == []
    rt.close()
    rt.close()  # idempotent


def test_a_cuda_graph_oom_at_startup_is_classified_with_the_log() -> None:
    rt = runtime()
    with (
        pytest.raises(TrialFailure) as failure,
        rt.launch({"mem-fraction-static": 0.97}, deadline=Deadline(60), label="oom"),
    ):
        pass
    assert failure.value.failure_class == FailureClass.OOM
    assert "Capture cuda graph failed" in failure.value.log_tail
    assert servers_of_this_test() == []


def test_a_readiness_timeout_is_classified_and_the_server_killed() -> None:
    rt = runtime("--sim-startup-delay", "60", readiness=2.0)
    with pytest.raises(TrialFailure) as failure, rt.launch({}, deadline=Deadline(60), label="slow"):
        pass
    assert failure.value.failure_class == FailureClass.READINESS_TIMEOUT
    assert servers_of_this_test() == []


def test_a_crash_during_the_benchmark_is_classified_crashed() -> None:
    rt = runtime("--sim-crash-after", "3")
    evaluate = make_evaluate(rt, PLAN)
    with pytest.raises(TrialFailure) as failure:
        evaluate({}, Deadline(60))
    assert failure.value.failure_class == FailureClass.CRASHED
    assert "simulated crash" in failure.value.log_tail
    assert servers_of_this_test() == []


def test_hf_token_is_masked_in_the_log_tail() -> None:
    rt = ProcessHost(
        model=MODEL, python=sys.executable, env={**shim_env(), "HF_TOKEN": "hf_abcdefghijklmnopqrstuvwxyz123"}
    )
    with rt.launch({}, deadline=Deadline(60), label="secret") as server:
        tail = server.log_tail(400)
    kept = server.log_tail(400)  # read back after teardown, when the log file is gone
    assert "hf_abcdefghijklmnopqrstuvwxyz123" not in tail + kept
    assert "The server is fired up" in tail and "The server is fired up" in kept
    rt.close()


def test_sigint_to_pytest_mid_trial_leaves_no_server_process(tmp_path: Path) -> None:
    spec = {
        "task_name": "process-sigint",
        "model": {"id_or_path": MODEL},
        "runtime": "process",
        "parameters": {"chunked-prefill-size": [512, 1024]},
        "optimization": {"strategy": "grid", "max_iterations": 2, "timeout_per_iteration": 300},
        "benchmark": {"traffic_scenarios": ["D(64,16)"], "num_concurrency": [2], "max_requests_per_iteration": 8},
    }
    (tmp_path / "tuning_specs").mkdir()
    (tmp_path / "tuning_specs" / "sigint.json").write_text(json.dumps(spec))
    env = {
        **shim_env("--sim-startup-delay", "120"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--autotune", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=interruptible,
    )
    servers: list[int] = []
    give_up = time.monotonic() + 120  # pytest's start and imports, on a busy machine
    while time.monotonic() < give_up and not servers:
        time.sleep(0.3)
        servers = [p for p in descendants(proc.pid) if "pytest_autotuner.sim" in _cmdline(p)]
    assert servers, "no server process started"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert "KeyboardInterrupt" in out
    give_up = time.monotonic() + 10  # killed as a group; the kernel may take a moment to reap
    while [p for p in servers if alive(p)] and time.monotonic() < give_up:
        time.sleep(0.1)
    assert not [p for p in servers if alive(p)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def test_a_health_poll_that_reads_back_its_own_request_is_no_answer_yet() -> None:
    """Before the server listens, a poll whose ephemeral port equals the server's port connects TCP to itself and
    reads back "GET /health HTTP/1.1" (seen with three workers on one machine); that is not a failed trial."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def echo() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(conn.recv(4096))

        threading.Thread(target=echo, daemon=True).start()
        assert _get_json(f"http://127.0.0.1:{listener.getsockname()[1]}/health", timeout=10.0) == (0, None)


def test_the_preflight_reads_the_hosts_help_once() -> None:
    host = runtime()
    table = host.argument_table()
    assert len(table.options) == 529 and "cuda-graph-max-bs-decode" in table  # the shim prints 0.5.23's help
    assert table.source == f"`{sys.executable} -m sglang.launch_server --help` on this host"
    assert host.argument_table() is table  # once per host
    assert host.fingerprint_facts()["sglang_version"] == table.version


def test_a_server_that_cannot_print_its_help_makes_the_runtime_unavailable() -> None:
    from pytest_autotuner.runtimes import RuntimeUnavailable

    host = ProcessHost(model=MODEL, python=sys.executable, env={**os.environ, "PYTHONPATH": str(REPO)})
    with pytest.raises(RuntimeUnavailable, match="No module named 'sglang'"):
        host.argument_table()


@pytest.mark.parametrize("taken", [0, 1, 3, 4])
def test_a_port_taken_before_the_server_binds_it_is_retried_on_another(
    taken: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another program binds the drawn port between the check and the server's bind (a clean clone's CI failed a
    confirmation run on it): the launch goes on on a fresh port, up to four tries, and then names the cause."""
    from pytest_autotuner.runtimes import process

    real_free_port = process.free_port
    squatters: list[socket.socket] = []

    def free_port_then_taken() -> int:
        port = real_free_port()
        if len(squatters) < taken:
            squatter = socket.socket()
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            squatters.append(squatter)
        return port

    monkeypatch.setattr(process, "free_port", free_port_then_taken)
    try:
        if taken < 4:
            with runtime().launch({}, deadline=Deadline(60), label="squatted") as server:
                port = int(server.endpoint.base_url.rsplit(":", 1)[1])
                assert port not in {s.getsockname()[1] for s in squatters}
                assert _get_json(f"{server.endpoint.base_url}/health", timeout=5.0)[0] == 200
        else:
            with pytest.raises(TrialFailure) as caught, runtime().launch({}, deadline=Deadline(60), label="squatted"):
                pass
            assert caught.value.failure_class is FailureClass.LAUNCH_FAILED
            assert "address already in use" in caught.value.message
    finally:
        for squatter in squatters:
            squatter.close()
    assert not [p for p in servers_of_this_test() if alive(p)]
