"""The docker runtime against a real Docker engine, with the simulator in the test image as the server.

The test image (``pytest-autotuner-sim:test``, built by ``.ci/start-docker`` from tests/integration/docker_image/)
holds only an ``sglang.launch_server`` shim; the host's /usr, Python and work tree are mounted read-only. Without
an engine or the image these tests skip, except under CI=true, where they fail: CI must provide both.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from processes import interruptible

from pytest_autotuner.core.trial import Deadline, FailureClass, TrialFailure
from pytest_autotuner.runtimes.docker import (
    LABEL_HOST,
    LABEL_PID,
    LABEL_SESSION,
    LABEL_TASK,
    LABEL_TRIAL,
    DockerOptions,
    DockerRuntime,
)

pytestmark = pytest.mark.slow

TEST_IMAGE = os.environ.get("AUTOTUNE_TEST_IMAGE", "pytest-autotuner-sim:test")
REPO = Path(__file__).resolve().parents[2]
MODEL = "meta-llama/Llama-3.2-1B-Instruct"
FAKE_TOKEN = "hf_" + "T0kenForDockerRuntimeTests1234"
FAST = ["--sim-startup-scale", "0.01", "--sim-speedup", "8"]
LLAMA_1B_CONFIG = {
    "num_hidden_layers": 16, "hidden_size": 2048, "num_attention_heads": 32, "num_key_value_heads": 8,
    "vocab_size": 128256, "intermediate_size": 8192, "max_position_embeddings": 131072, "tie_word_embeddings": True,
}  # fmt: skip


def _mounts_for_test_image() -> dict[str, str]:
    """Host paths the test image needs: /usr (shared libraries), the Python prefix(es), the work tree."""
    volumes = {"/usr": "/usr:ro"}
    for path in {sys.prefix, sys.base_prefix, str(REPO)}:
        if not path.startswith("/usr/"):
            volumes[path] = f"{path}:ro"
    return volumes


def sim_settings(*extra: str, **overrides: Any) -> dict[str, Any]:
    """``docker`` settings that run the simulator in the test image without GPUs."""
    settings: dict[str, Any] = {
        "image": TEST_IMAGE,
        "pull": "never",
        "gpus": "none",
        "volumes": _mounts_for_test_image(),
        "env": {
            "PYTHONPATH": f"/opt/shim:{REPO}",
            "PATH": f"{sys.prefix}/bin:{sys.base_prefix}/bin:/usr/bin:/bin",
        },
        "extra_args": [*FAST, *extra],
        "stop_timeout": 5,
    }
    settings.update(overrides)
    return settings


def make_runtime(*extra: str, model: str = MODEL, readiness: float = 60.0, **overrides: Any) -> DockerRuntime:
    options = DockerOptions.coerce(sim_settings(*extra, **overrides))
    assert options.image is not None
    return DockerRuntime(
        model=model, image=options.image, options=options, task="docker-it", readiness_timeout=readiness,
        env={**os.environ, "HF_TOKEN": FAKE_TOKEN},
    )  # fmt: skip


# -- container settings (no engine needed) ----------------------------------------------------------------


def test_gpus_follow_tp_times_dp_and_the_spec_gpu_list() -> None:
    from docker.types import DeviceRequest

    runtime = DockerRuntime(model=MODEL, image="img:1", gpu_ids=[2, 3, 5], env={})
    kwargs = runtime.create_kwargs({"tp-size": 2, "dp-size": 1, "enable-mixed-chunk": True}, "trial7")
    (request,) = kwargs["device_requests"]
    assert isinstance(request, DeviceRequest)
    assert request.device_ids == ["2", "3"] and request.capabilities == [["gpu"]]
    assert kwargs["ports"] == {"30000/tcp": ("127.0.0.1", None)}
    assert kwargs["command"][-1] == "--enable-mixed-chunk" and "--dp-size" in kwargs["command"]
    assert kwargs["shm_size"] == "16g" and kwargs["ipc_mode"] == "host"
    assert "HF_TOKEN" not in kwargs["environment"]
    assert DockerRuntime(model=MODEL, image="i", env={}).create_kwargs({"tp": 2}, "t")["device_requests"][
        0
    ].device_ids == ["0", "1"]
    all_gpus = DockerRuntime(model=MODEL, image="i", options=DockerOptions(gpus="all"), env={})
    assert all_gpus.create_kwargs({}, "t")["device_requests"][0].count == -1
    assert "device_requests" not in DockerRuntime(
        model=MODEL, image="i", options=DockerOptions(gpus=0), env={}
    ).create_kwargs({"tp-size": 4}, "t")
    with pytest.raises(TrialFailure) as info:
        runtime.create_kwargs({"tp-size": 2, "dp-size": 2}, "t")
    assert info.value.failure_class == FailureClass.INFEASIBLE


def test_from_spec_reads_the_image_tag_and_the_docker_section() -> None:
    def fake_spec(**kw: Any) -> Any:
        base = {"model": SimpleNamespace(id_or_path=MODEL), "base_runtime": "sglang", "runtime_image_tag": "v0.5.2",
                "task_name": "t", "gpus": None}  # fmt: skip
        return SimpleNamespace(**{**base, **kw})

    runtime = DockerRuntime.from_spec(fake_spec(), readiness_timeout=5, connect=False)
    assert runtime.image == "lmsysorg/sglang:v0.5.2" and runtime.options == DockerOptions()
    vllm = DockerRuntime.from_spec(fake_spec(base_runtime="vllm"), readiness_timeout=5, connect=False)
    assert vllm.image == "vllm/vllm-openai:v0.5.2" and vllm.container_port == 8000
    assert vllm.command({})[:2] == ["--model", MODEL]
    custom = DockerRuntime.from_spec(
        fake_spec(docker={"image": "me/sglang:dev", "pull": "always", "shm_size": "32g", "ipc_mode": None}),
        readiness_timeout=5,
        connect=False,
    )
    assert custom.image == "me/sglang:dev" and custom.options.pull == "always"
    kwargs = custom.create_kwargs({}, "t")
    assert kwargs["shm_size"] == "32g" and "ipc_mode" not in kwargs
    with pytest.raises(ValueError, match=r"docker\.pull"):
        DockerOptions.coerce({"pull": "sometimes"})
    from pytest_autotuner.runtimes import RuntimeUnavailable

    with pytest.raises(RuntimeUnavailable, match="invalid docker settings"):
        DockerRuntime.from_spec(fake_spec(docker={"gpus": "some"}), readiness_timeout=5)


def test_from_spec_fails_up_front_when_the_image_is_missing(client: Any) -> None:
    from pytest_autotuner.runtimes import RuntimeUnavailable

    spec = SimpleNamespace(
        model=SimpleNamespace(id_or_path=MODEL), base_runtime="sglang", runtime_image_tag="x", task_name="t",
        gpus=None, docker=sim_settings(image="pytest-autotuner-missing:nope"),
    )  # fmt: skip
    with pytest.raises(RuntimeUnavailable, match=r"pytest-autotuner-missing:nope.*docker pull"):
        DockerRuntime.from_spec(spec, readiness_timeout=5)


# -- engine and cleanliness ------------------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must provide it: run .ci/start-docker before the tests", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """A Docker client whose engine answers and has the test image; skips (fails under CI) otherwise."""
    import docker

    problem = ""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as err:
        problem = f"no Docker engine answers ({err})"
    else:
        try:
            client.images.get(TEST_IMAGE)
        except docker.errors.ImageNotFound:
            problem = f"the test image {TEST_IMAGE} is missing (build it with .ci/start-docker)"
    if problem:
        _unavailable(problem)  # outside the except blocks: no chained traceback in the report
    yield client
    client.close()


def labelled(client: Any, **labels: str) -> list[Any]:
    """Containers (running or not) carrying the project's session label and the given labels."""
    filters = [LABEL_SESSION, *(f"{k}={v}" for k, v in labels.items())]
    return list(client.containers.list(all=True, filters={"label": filters}))


@pytest.fixture
def client(engine: Any) -> Iterator[Any]:
    """The engine, checked after the test: no container with the project's labels may be left."""
    assert labelled(engine) == [], "a labelled container was left before this test"
    yield engine
    left = labelled(engine)
    for container in left:
        container.remove(force=True)
    assert left == [], f"labelled containers left behind: {[c.name for c in left]}"


# -- one trial -------------------------------------------------------------------------------------------


def test_launch_serves_and_the_engine_sees_the_configured_container(client: Any, tmp_path: Path) -> None:
    hf_cache = tmp_path / "hf"
    runtime = make_runtime("--served-model-name", FAKE_TOKEN, hf_cache=str(hf_cache))
    with runtime.launch({"chunked-prefill-size": 512}, deadline=Deadline(60), label="trial1") as endpoint:
        (container,) = labelled(client, **{LABEL_TRIAL: "trial1", LABEL_TASK: "docker-it"})
        attrs = client.api.inspect_container(container.id)  # the engine's own view
        with urllib.request.urlopen(f"{endpoint.base_url}/v1/models", timeout=5) as response:
            models = json.loads(response.read())
        assert runtime.is_alive()
        live_tail = runtime.log_tail(200)

    assert models["data"][0]["id"] == FAKE_TOKEN == endpoint.model_name
    assert endpoint.base_url.startswith("http://127.0.0.1:")
    bindings = attrs["NetworkSettings"]["Ports"]["30000/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
    assert endpoint.base_url.endswith(f":{bindings[0]['HostPort']}")
    assert attrs["HostConfig"]["PortBindings"]["30000/tcp"][0]["HostIp"] == "127.0.0.1"
    assert not attrs["HostConfig"].get("DeviceRequests")  # gpus: none
    assert attrs["HostConfig"]["IpcMode"] == "host"
    assert attrs["HostConfig"]["ShmSize"] == 16 * 1024**3
    assert attrs["HostConfig"]["Init"] is True
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/root/.cache/huggingface"]["Source"] == str(hf_cache)
    assert mounts["/usr"]["RW"] is False
    assert f"HF_TOKEN={FAKE_TOKEN}" in attrs["Config"]["Env"]
    assert attrs["Config"]["Cmd"][:5] == ["python3", "-m", "sglang.launch_server", "--model-path", MODEL]
    assert attrs["Config"]["Cmd"][5:9] == ["--host", "0.0.0.0", "--port", "30000"]
    assert "--chunked-prefill-size" in attrs["Config"]["Cmd"]
    labels = attrs["Config"]["Labels"]
    assert labels[LABEL_SESSION] == runtime.session_id and labels[LABEL_PID] == str(os.getpid())
    assert labels[LABEL_HOST]
    # the token is in the server's log (it echoes its args); the runtime never shows it
    assert "The server is fired up" in live_tail and "***" in live_tail and FAKE_TOKEN not in live_tail
    assert not runtime.is_alive()
    kept = runtime.log_tail(200)  # read before removal, kept afterwards
    assert "The server is fired up" in kept and FAKE_TOKEN not in kept
    runtime.close()


def test_a_local_model_directory_is_mounted_read_only_at_model(client: Any, tmp_path: Path) -> None:
    model_dir = tmp_path / "Tiny-Llama"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(LLAMA_1B_CONFIG))
    runtime = make_runtime(model=str(model_dir))
    with runtime.launch({}, deadline=Deadline(60), label="local") as endpoint:
        (container,) = labelled(client, **{LABEL_TRIAL: "local"})
        attrs = client.api.inspect_container(container.id)
    assert endpoint.model_name == "/model"  # the simulator read /model/config.json through the mount
    mount = next(m for m in attrs["Mounts"] if m["Destination"] == "/model")
    assert mount["Source"] == str(model_dir) and mount["RW"] is False
    assert "/root/.cache/huggingface" not in {m["Destination"] for m in attrs["Mounts"]}
    assert attrs["Config"]["Cmd"][3:5] == ["--model-path", "/model"]


def test_a_cuda_graph_oom_at_startup_is_classified_with_the_log(client: Any) -> None:
    runtime = make_runtime()
    with (
        pytest.raises(TrialFailure) as info,
        runtime.launch({"mem-fraction-static": 0.97}, deadline=Deadline(60), label="oom"),
    ):
        pytest.fail("the server must not become ready")
    assert info.value.failure_class == FailureClass.OOM
    assert "exited with code 1" in info.value.message
    assert "Capture cuda graph failed" in info.value.log_tail
    assert "Capture cuda graph failed" in runtime.log_tail()


def test_a_readiness_timeout_is_classified_and_torn_down(client: Any) -> None:
    runtime = make_runtime("--sim-startup-delay", "60", readiness=3.0)
    started = time.monotonic()
    with pytest.raises(TrialFailure) as info, runtime.launch({}, deadline=Deadline(60), label="slow"):
        pytest.fail("the server must not become ready")
    assert info.value.failure_class == FailureClass.READINESS_TIMEOUT
    assert time.monotonic() - started < 45  # the 3 s readiness timeout, not the 60 s startup or deadline


def test_a_cancelled_deadline_stops_the_wait_and_removes_the_container(client: Any) -> None:
    runtime = make_runtime("--sim-startup-delay", "60")
    deadline = Deadline(60)
    threading.Timer(2.0, deadline.cancel).start()
    started = time.monotonic()
    with pytest.raises(TrialFailure), runtime.launch({}, deadline=deadline, label="cancelled"):
        pytest.fail("the server must not become ready")
    assert time.monotonic() - started < 45  # the cancel after 2 s, not the 60 s startup or deadline


def test_an_error_in_the_benchmark_still_removes_the_container(client: Any) -> None:
    runtime = make_runtime()
    with pytest.raises(KeyboardInterrupt), runtime.launch({}, deadline=Deadline(60), label="interrupted"):
        assert labelled(client, **{LABEL_TRIAL: "interrupted"})
        raise KeyboardInterrupt
    assert labelled(client) == []


def test_a_missing_image_with_pull_never_names_the_image_and_the_fix(client: Any) -> None:
    runtime = make_runtime(image="pytest-autotuner-missing:nope")
    with pytest.raises(TrialFailure) as info, runtime.launch({}, deadline=Deadline(30), label="noimage"):
        pytest.fail("unreachable")
    assert info.value.failure_class == FailureClass.IMAGE_MISSING
    assert "pytest-autotuner-missing:nope" in info.value.message and "docker pull" in info.value.message


def test_a_crash_during_the_benchmark_is_classified_crashed(client: Any) -> None:
    from pytest_autotuner.core.plan import BenchmarkPlan
    from pytest_autotuner.core.scenarios import parse_scenario
    from pytest_autotuner.evaluate import make_evaluate

    runtime = make_runtime("--sim-crash-after", "3")
    plan = BenchmarkPlan(
        scenarios=(parse_scenario("D(64,32)"),), concurrencies=(2,), max_requests=20, max_time=20,
        warmup_requests=0, request_timeout=10,
    )  # fmt: skip
    evaluate = make_evaluate(lambda n: runtime, plan)
    with pytest.raises(TrialFailure) as info:
        evaluate({"chunked-prefill-size": 512}, Deadline(60))
    assert info.value.failure_class == FailureClass.CRASHED
    assert "simulated crash" in info.value.log_tail
    runtime.close()


def test_leftovers_of_dead_sessions_are_removed_and_live_ones_kept(client: Any) -> None:
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = dead.stdout.strip()
    common = {LABEL_HOST: socket.gethostname(), LABEL_TASK: "old", LABEL_TRIAL: "trial1"}
    created = [
        client.containers.create(TEST_IMAGE, labels={**common, LABEL_SESSION: "crashed", LABEL_PID: dead_pid}),
        client.containers.create(TEST_IMAGE, labels={LABEL_SESSION: "unlabelled-old"}),
        client.containers.create(TEST_IMAGE, labels={**common, LABEL_SESSION: "alive", LABEL_PID: str(os.getppid())}),
    ]
    try:
        removed = make_runtime().remove_leftovers()
        assert sorted(removed) == sorted(c.name for c in created[:2])
        assert [c.labels[LABEL_SESSION] for c in labelled(client)] == ["alive"]
    finally:
        for container in created:
            with contextlib.suppress(Exception):
                container.remove(force=True)


# -- whole sessions through the plugin ---------------------------------------------------------------------


def tuning_spec(name: str, *extra: str, **optimization: Any) -> dict[str, Any]:
    return {
        "task_name": name,
        "model": {"id_or_path": MODEL},
        "runtime": "docker",
        "parameters": {"chunked-prefill-size": [512, 2048]},
        "optimization": {"strategy": "grid", "max_iterations": 2, "timeout_per_iteration": 60, "confirm_runs": 1,
                         **optimization},
        "benchmark": {"traffic_scenarios": ["D(64,32)"], "num_concurrency": [2], "max_requests_per_iteration": 8,
                      "warmup_requests": 1},
        "docker": sim_settings(*extra),
    }  # fmt: skip


_CONFTEST_WITHOUT_DOCKER_SECTION = '''
"""spec.py has no `docker` section yet: hand the test's docker settings to the runtime directly."""
import json
from pytest_autotuner.runtimes import docker as _docker

_SETTINGS = json.loads({settings!r})
_from_spec = _docker.DockerRuntime.from_spec.__func__


def _with_settings(cls, spec, *, readiness_timeout):
    runtime = _from_spec(cls, spec, readiness_timeout=readiness_timeout, connect=False)
    runtime.options = _docker.DockerOptions.coerce(_SETTINGS[spec.task_name])
    runtime.image = runtime.options.image
    runtime.prepare()
    return runtime


_docker.DockerRuntime.from_spec = classmethod(_with_settings)
'''


def write_specs(pytester: pytest.Pytester, *specs: dict[str, Any]) -> None:
    """Spec files; the docker section goes to a conftest.py while spec.py does not know it yet."""
    from pytest_autotuner.core.spec import TaskSpec

    folder = pytester.path / "tuning_specs"
    folder.mkdir(exist_ok=True)
    if "docker" not in TaskSpec.model_fields:
        settings = {spec["task_name"]: spec.pop("docker") for spec in specs}
        pytester.makeconftest(_CONFTEST_WITHOUT_DOCKER_SECTION.format(settings=json.dumps(settings)))
    for spec in specs:
        (folder / f"{spec['task_name']}.json").write_text(json.dumps(spec))


def test_a_tuning_session_runs_through_the_docker_runtime(client: Any, pytester: pytest.Pytester) -> None:
    write_specs(pytester, tuning_spec("docker-session"))
    result = pytester.runpytest_subprocess(
        "--autotune", "--autotune-runtime=docker", "-p", "no:cacheprovider", "--autotune-report-dir",
        str(pytester.path / "reports"), timeout=150,
    )  # fmt: skip
    result.stdout.fnmatch_lines(["*docker-session: grid search on docker, 2 trials*", "*trial 2/2*"])
    result.assert_outcomes(passed=1)


def test_sigint_mid_trial_leaves_no_container(client: Any, pytester: pytest.Pytester) -> None:
    write_specs(pytester, tuning_spec("docker-sigint", "--sim-startup-delay", "120", timeout_per_iteration=300))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--autotune", "--autotune-runtime=docker", "-p", "no:cacheprovider",
         "--autotune-report-dir", str(pytester.path / "reports")],
        cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=interruptible,
    )  # fmt: skip
    try:
        give_up = time.monotonic() + 120  # pytest's start and imports, on a busy machine
        while not labelled(client, **{LABEL_TASK: "docker-sigint"}):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < give_up, "no labelled container appeared within 120 s"
            time.sleep(0.3)
        time.sleep(1.0)  # the trial waits for readiness now
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in output or "Interrupted" in output, output[-3000:]
    assert labelled(client) == [], output[-3000:]
