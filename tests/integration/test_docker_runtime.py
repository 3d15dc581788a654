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
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from factories import spec as make_spec
from processes import interruptible
from pydantic import ValidationError

from pytest_autotuner.core.measure.trial import Deadline, FailureClass, TrialFailure
from pytest_autotuner.core.spec.runtime_settings import DockerSettings
from pytest_autotuner.runtimes import RuntimeUnavailable, docker_preflight
from pytest_autotuner.runtimes.docker import DockerHost
from pytest_autotuner.runtimes.docker_spec import LABEL_HOST, LABEL_PID, LABEL_SESSION, LABEL_TASK, LABEL_TRIAL

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


def make_host(*extra: str, model: str = MODEL, readiness: float = 60.0, **overrides: Any) -> DockerHost:
    settings = DockerSettings.model_validate(sim_settings(*extra, **overrides))
    assert settings.image is not None
    return DockerHost(
        model=model, settings=settings, image=settings.image, task="docker-it", readiness_timeout=readiness,
        env={**os.environ, "HF_TOKEN": FAKE_TOKEN},
    )  # fmt: skip


@pytest.fixture
def host_of() -> Iterator[Any]:
    """``make_host``, with every host made closed after the test (as the plugin does in a finally)."""
    made: list[DockerHost] = []

    def make(*extra: str, **kwargs: Any) -> DockerHost:
        made.append(make_host(*extra, **kwargs))
        return made[-1]

    yield make
    for host in made:
        host.close()


# -- container settings (no engine needed) ----------------------------------------------------------------


def test_gpus_follow_tp_times_dp_and_the_spec_gpu_list() -> None:
    from docker.types import DeviceRequest

    def host(settings: DockerSettings | None = None, gpu_ids: list[int] | None = None) -> DockerHost:
        return DockerHost(model=MODEL, settings=settings or DockerSettings(), image="img:1", gpu_ids=gpu_ids, env={})

    runtime = host(gpu_ids=[2, 3, 5])
    kwargs = runtime.container_spec.create_kwargs({"tp-size": 2, "dp-size": 1, "enable-mixed-chunk": True}, "trial7")
    (request,) = kwargs["device_requests"]
    assert isinstance(request, DeviceRequest)
    assert request.device_ids == ["2", "3"] and request.capabilities == [["gpu"]]
    assert kwargs["ports"] == {"30000/tcp": ("127.0.0.1", None)}
    assert kwargs["command"][-1] == "--enable-mixed-chunk" and "--dp-size" in kwargs["command"]
    assert kwargs["shm_size"] == "16g" and kwargs["ipc_mode"] == "host"
    assert "HF_TOKEN" not in kwargs["environment"]
    assert host().container_spec.create_kwargs({"tp": 2}, "t")["device_requests"][0].device_ids == ["0", "1"]
    assert host(DockerSettings(gpus="all")).container_spec.create_kwargs({}, "t")["device_requests"][0].count == -1
    assert "device_requests" not in host(DockerSettings(gpus=0)).container_spec.create_kwargs({"tp-size": 4}, "t")
    with pytest.raises(TrialFailure) as info:
        runtime.container_spec.create_kwargs({"tp-size": 2, "dp-size": 2}, "t")
    assert info.value.failure_class == FailureClass.INFEASIBLE


def test_from_spec_reads_the_image_tag_and_the_docker_section() -> None:
    def host(**overrides: Any) -> DockerHost:
        spec = make_spec(model={"id_or_path": MODEL}, runtime_image_tag="v0.5.2", **overrides)
        return DockerHost.from_spec(spec, readiness_timeout=5)

    default = host()
    assert default.image == "lmsysorg/sglang:v0.5.2" and default.settings == DockerSettings()
    vllm = host(base_runtime="vllm")
    assert vllm.image == "vllm/vllm-openai:v0.5.2" and vllm.container_port == 8000
    assert vllm.container_spec.command({})[:2] == ["--model", MODEL]
    custom = host(docker={"image": "me/sglang:dev", "pull": "always", "shm_size": "32g", "ipc_mode": None})
    assert custom.image == "me/sglang:dev" and custom.settings.pull == "always"
    kwargs = custom.container_spec.create_kwargs({}, "t")
    assert kwargs["shm_size"] == "32g" and "ipc_mode" not in kwargs
    assert custom.image_digest == ""  # known once prepared


@pytest.mark.parametrize(
    ("docker", "named"),
    [
        ({"pull": "sometimes"}, "pull"),
        ({"gpus": "some"}, "gpus"),
        ({"stop_timeout": -1}, "stop_timeout"),
        ({"volumes": {"/data": "/data:rx"}}, "volumes"),
    ],
)
def test_invalid_docker_settings_fail_with_the_spec(docker: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        make_spec(docker=docker)


def test_prepare_fails_up_front_when_the_image_is_missing(client: Any, host_of: Any) -> None:
    host = host_of(image="pytest-autotuner-missing:nope")
    with pytest.raises(RuntimeUnavailable, match=r"pytest-autotuner-missing:nope.*docker pull"):
        host.prepare()
    with pytest.raises(RuntimeUnavailable), host.launch({}, deadline=Deadline(30), label="noimage"):
        pytest.fail("unreachable")  # a launch prepares first: no container without the image


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
    # what a killed earlier run on this machine left (a SIGKILLed pytest cleans nothing up) goes as the next
    # session's sweep removes it, so each test below checks only what this run leaves
    sweeper = make_host()
    try:
        sweeper.remove_leftovers()
    finally:
        sweeper.close()
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


def test_launch_serves_and_the_engine_sees_the_configured_container(client: Any, host_of: Any, tmp_path: Path) -> None:
    hf_cache = tmp_path / "hf"
    host = host_of("--served-model-name", FAKE_TOKEN, hf_cache=str(hf_cache))
    with host.launch({"chunked-prefill-size": 512}, deadline=Deadline(60), label="trial1") as server:
        endpoint = server.endpoint
        (container,) = labelled(client, **{LABEL_TRIAL: "trial1", LABEL_TASK: "docker-it"})
        attrs = client.api.inspect_container(container.id)  # the engine's own view
        with urllib.request.urlopen(f"{endpoint.base_url}/v1/models", timeout=5) as response:
            models = json.loads(response.read())
        assert server.is_alive()
        live_tail = server.log_tail(200)

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
    assert labels[LABEL_SESSION] == host.session_id and labels[LABEL_PID] == str(os.getpid())
    assert labels[LABEL_HOST]
    # the token is in the server's log (it echoes its args); the runtime never shows it
    assert "The server is fired up" in live_tail and "***" in live_tail and FAKE_TOKEN not in live_tail
    assert not server.is_alive()
    kept = server.log_tail(200)  # read before removal, kept afterwards
    assert "The server is fired up" in kept and FAKE_TOKEN not in kept
    # prepare() read the image's digest: a locally built image has no RepoDigest, so its ID
    assert host.image_digest == client.images.get(TEST_IMAGE).id
    assert host.fingerprint_facts() == {"runtime": "docker", "image": TEST_IMAGE, "image_digest": host.image_digest,
                                        "sglang_version": ""}  # fmt: skip  # no preflight yet


def test_the_preflight_reads_the_images_help_once_per_digest(
    client: Any, host_of: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_AUTOTUNER_CACHE", str(tmp_path / "cache"))
    host = host_of()
    host.host_env["PYTEST_AUTOTUNER_CACHE"] = str(tmp_path / "cache")
    table = host.argument_table()
    assert table is not None and len(table.options) == 529  # 0.5.23's help: its 531 options less two hidden
    assert "cuda-graph-max-bs-decode" in table and "cuda-graph-max-bs" not in table
    assert table.lookup("tp-size").type == "int"  # type: ignore[union-attr]  # from the shipped table
    assert f"`sglang.launch_server --help` of {TEST_IMAGE}" == table.source
    assert labelled(client) == []  # the preflight's containers are gone
    cached = json.loads(host.help_cache_path().read_text())
    assert cached["image_digest"] == host.image_digest == client.images.get(TEST_IMAGE).id
    assert host.fingerprint_facts()["image_digest"] == host.image_digest

    again = host_of()
    again.host_env["PYTEST_AUTOTUNER_CACHE"] = str(tmp_path / "cache")
    monkeypatch.setattr(
        docker_preflight, "_run_once", lambda *a, **k: pytest.fail("the cached help of this digest was not used")
    )
    assert again.argument_table().options == table.options


def test_a_docker_session_with_a_flag_the_image_lacks_fails_before_any_container(
    client: Any, pytester: pytest.Pytester
) -> None:
    spec = tuning_spec("docker-bad-flag")
    spec["parameters"] = {"cuda-graph-max-bs": [8, 16]}
    write_specs(pytester, spec)
    result = pytester.runpytest_subprocess(
        "--autotune", "--autotune-runtime=docker", "-p", "no:cacheprovider", "--autotune-report-dir",
        str(pytester.path / "reports"), timeout=150,
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*docker-bad-flag: 1 flag problem(s) against SGLang (version unknown) (`sglang.launch_server --help` of*",
        "*--cuda-graph-max-bs is not an option of SGLang*closest: --cuda-graph-max-bs-decode*",
    ])  # fmt: skip
    assert "trial #" not in result.stdout.str()


def test_a_local_model_directory_is_mounted_read_only_at_model(client: Any, host_of: Any, tmp_path: Path) -> None:
    model_dir = tmp_path / "Tiny-Llama"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(LLAMA_1B_CONFIG))
    host = host_of(model=str(model_dir))
    with host.launch({}, deadline=Deadline(60), label="local") as server:
        (container,) = labelled(client, **{LABEL_TRIAL: "local"})
        attrs = client.api.inspect_container(container.id)
    assert server.endpoint.model_name == "/model"  # the simulator read /model/config.json through the mount
    mount = next(m for m in attrs["Mounts"] if m["Destination"] == "/model")
    assert mount["Source"] == str(model_dir) and mount["RW"] is False
    assert "/root/.cache/huggingface" not in {m["Destination"] for m in attrs["Mounts"]}
    assert attrs["Config"]["Cmd"][3:5] == ["--model-path", "/model"]


def test_a_cuda_graph_oom_at_startup_is_classified_with_the_log(client: Any, host_of: Any) -> None:
    host = host_of()
    with (
        pytest.raises(TrialFailure) as info,
        host.launch({"mem-fraction-static": 0.97}, deadline=Deadline(60), label="oom"),
    ):
        pytest.fail("the server must not become ready")
    assert info.value.failure_class == FailureClass.OOM
    assert "exited with code 1" in info.value.message
    assert "Capture cuda graph failed" in info.value.log_tail


def test_a_readiness_timeout_is_classified_and_torn_down(client: Any, host_of: Any) -> None:
    host = host_of("--sim-startup-delay", "60", readiness=3.0)
    with pytest.raises(TrialFailure) as info, host.launch({}, deadline=Deadline(60), label="slow"):
        pytest.fail("the server must not become ready")
    assert info.value.failure_class == FailureClass.READINESS_TIMEOUT
    assert labelled(client) == []


def test_a_cancelled_deadline_stops_the_wait_and_removes_the_container(client: Any, host_of: Any) -> None:
    host = host_of("--sim-startup-delay", "60")
    deadline = Deadline(60)
    threading.Timer(2.0, deadline.cancel).start()
    with pytest.raises(TrialFailure), host.launch({}, deadline=deadline, label="cancelled"):
        pytest.fail("the server must not become ready")
    assert labelled(client) == []


def test_an_error_in_the_benchmark_still_removes_the_container(client: Any, host_of: Any) -> None:
    host = host_of()
    with pytest.raises(KeyboardInterrupt), host.launch({}, deadline=Deadline(60), label="interrupted"):
        assert labelled(client, **{LABEL_TRIAL: "interrupted"})
        raise KeyboardInterrupt
    assert labelled(client) == []


def test_a_crash_during_the_benchmark_is_classified_crashed(client: Any, host_of: Any) -> None:
    from pytest_autotuner.core.measure.plan import BenchmarkPlan
    from pytest_autotuner.core.spec.scenarios import parse_scenario
    from pytest_autotuner.evaluate import make_evaluate

    plan = BenchmarkPlan(
        scenarios=(parse_scenario("D(64,32)"),), concurrencies=(2,), max_requests=20, max_time=20,
        warmup_requests=0, request_timeout=10,
    )  # fmt: skip
    evaluate = make_evaluate(host_of("--sim-crash-after", "3"), plan)
    with pytest.raises(TrialFailure) as info:
        evaluate({"chunked-prefill-size": 512}, Deadline(60))
    assert info.value.failure_class == FailureClass.CRASHED
    assert "simulated crash" in info.value.log_tail


def test_one_host_connects_sweeps_checks_and_pulls_once_for_all_its_launches(
    client: Any, host_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pull: always`` pulls once per session, not per trial; launches (two of them at once) add no client,
    ping, leftover sweep or image check."""
    import docker
    from docker.api.client import APIClient
    from docker.models.containers import ContainerCollection
    from docker.models.images import ImageCollection

    calls: Counter[str] = Counter()

    def counted(name: str, method: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return method(*args, **kwargs)

        return wrapper

    def fake_pull(self: Any, repository: str, tag: str | None = None, **kwargs: Any) -> Iterator[dict[str, str]]:
        calls["pull"] += 1  # the test image is local: no registry to pull it from
        return iter([{"status": f"Downloaded newer image for {repository}:{tag}"}])

    monkeypatch.setattr(docker, "from_env", counted("client", docker.from_env))
    monkeypatch.setattr(docker.DockerClient, "ping", counted("ping", docker.DockerClient.ping))
    monkeypatch.setattr(ContainerCollection, "list", counted("container list", ContainerCollection.list))
    monkeypatch.setattr(ImageCollection, "get", counted("image get", ImageCollection.get))
    monkeypatch.setattr(APIClient, "pull", fake_pull)

    host = host_of(pull="always")
    host.prepare()
    prepared = dict(calls)
    assert prepared["client"] == prepared["ping"] == prepared["container list"] == prepared["pull"] == 1

    def trial(label: str) -> str:
        with host.launch({}, deadline=Deadline(60), label=label) as server:
            assert server.is_alive()
            return server.endpoint.base_url

    with ThreadPoolExecutor(2) as pool:
        urls = list(pool.map(trial, ["trial1", "trial2"]))
    urls.append(trial("trial3"))
    assert len(set(urls)) == 3  # three servers
    assert dict(calls) == prepared
    host.prepare()  # again: nothing to do
    assert dict(calls) == prepared


def test_close_removes_what_a_launch_left_and_is_idempotent(client: Any, host_of: Any) -> None:
    host = host_of()
    launch = host.launch({}, deadline=Deadline(60), label="abandoned")
    launch.__enter__()  # a trial whose teardown never ran
    assert labelled(client, **{LABEL_TRIAL: "abandoned"})
    host.close()
    assert labelled(client) == []
    host.close()
    launch.__exit__(None, None, None)  # its teardown finds nothing left to remove


def test_leftovers_of_dead_sessions_are_removed_and_live_ones_kept(client: Any, host_of: Any) -> None:
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
        removed = host_of().remove_leftovers()
        assert sorted(removed) == sorted(c.name for c in created[:2])
        assert [c.labels[LABEL_SESSION] for c in labelled(client)] == ["alive"]
    finally:
        for container in created:
            with contextlib.suppress(Exception):
                container.remove(force=True)


# -- whole sessions through the plugin ---------------------------------------------------------------------


def tuning_spec(name: str, *extra: str, **optimization: Any) -> dict[str, Any]:
    """A session spec; the simulator's flags travel in the shim's SIM_EXTRA_ARGS, since the preflight rightly
    rejects ``--sim-*`` in ``docker.extra_args`` (the image's help is SGLang's)."""
    docker = sim_settings()
    docker["extra_args"] = []
    docker["env"]["SIM_EXTRA_ARGS"] = " ".join([*FAST, *extra])
    return {
        "task_name": name,
        "model": {"id_or_path": MODEL},
        "runtime": "docker",
        "parameters": {"chunked-prefill-size": [512, 2048]},
        "optimization": {"strategy": "grid", "max_iterations": 2, "timeout_per_iteration": 60, "confirm_runs": 1,
                         **optimization},
        "benchmark": {"traffic_scenarios": ["D(64,32)"], "num_concurrency": [2], "max_requests_per_iteration": 8,
                      "warmup_requests": 1},
        "docker": docker,
    }  # fmt: skip


def write_specs(pytester: pytest.Pytester, *specs: dict[str, Any]) -> None:
    folder = pytester.path / "tuning_specs"
    folder.mkdir(exist_ok=True)
    for spec in specs:
        (folder / f"{spec['task_name']}.json").write_text(json.dumps(spec))


def test_a_tuning_session_runs_through_the_docker_runtime(client: Any, pytester: pytest.Pytester) -> None:
    write_specs(pytester, tuning_spec("docker-session"))
    result = pytester.runpytest_subprocess(
        "--autotune", "--autotune-runtime=docker", "-p", "no:cacheprovider", "--autotune-report-dir",
        str(pytester.path / "reports"), timeout=150,
    )  # fmt: skip
    result.stdout.fnmatch_lines(["*docker-session: grid search on docker, 2 trials*", "*trial #* [[]2/2]*"])
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
