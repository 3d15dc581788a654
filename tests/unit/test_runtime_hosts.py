"""Runtime hosts without a server: what a session's host does once, what each launch gets, and where the runtime
kinds come from. The Docker host talks to a recording stand-in for the engine here; tests/integration covers the
real one."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, get_args

import docker
import pytest
from factories import spec as make_spec
from processes import gather_in_threads

from pytest_autotuner.core.spec.runtime_kinds import RUNTIME_KINDS
from pytest_autotuner.core.spec.runtime_settings import DockerSettings
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.runtimes import RuntimeUnavailable, create_host
from pytest_autotuner.runtimes.docker import DockerHost
from pytest_autotuner.runtimes.process import ProcessHost
from pytest_autotuner.runtimes.sim import SimHost, sim_seed

MODEL = "meta-llama/Llama-3.2-1B-Instruct"


@dataclass
class FakeImage:
    id: str
    attrs: dict[str, Any]


@dataclass
class FakeEngine:
    """The parts of ``docker.DockerClient`` that ``DockerHost.prepare`` uses, counting every call."""

    images_present: dict[str, FakeImage] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)

    def ping(self) -> bool:
        self.calls["ping"] += 1
        return True

    @property
    def containers(self) -> FakeEngine:
        return self

    @property
    def images(self) -> FakeEngine:
        return self

    @property
    def api(self) -> FakeEngine:
        return self

    def list(self, **kwargs: Any) -> list[Any]:
        self.calls["container list"] += 1
        return []

    def get(self, name: str) -> FakeImage:
        self.calls["image get"] += 1
        if name not in self.images_present:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return self.images_present[name]

    def pull(self, repo: str, tag: str, **kwargs: Any) -> Iterator[dict[str, str]]:
        self.calls["pull"] += 1
        self.images_present[f"{repo}:{tag}"] = FakeImage("sha256:pulled", {"RepoDigests": [f"{repo}@sha256:abc"]})
        return iter([{"status": f"Downloaded newer image for {repo}:{tag}"}])

    def close(self) -> None:
        self.calls["close"] += 1


def docker_host(engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> DockerHost:
    def from_env() -> FakeEngine:
        engine.calls["client"] += 1
        return engine

    monkeypatch.setattr(docker, "from_env", from_env)
    return DockerHost(model=MODEL, settings=DockerSettings(**settings), image="org/sglang:v1", env={})


@pytest.mark.parametrize("pull", ["always", "missing"])
def test_a_docker_host_connects_sweeps_and_pulls_once_however_often_it_is_prepared(
    pull: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()
    host = docker_host(engine, monkeypatch, pull=pull)
    threads = [threading.Thread(target=host.prepare) for _ in range(4)]  # workers racing at session start
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    host.prepare()
    assert engine.calls["client"] == engine.calls["ping"] == engine.calls["container list"] == 1
    assert engine.calls["pull"] == 1
    assert host.image_digest == "org/sglang@sha256:abc"  # the RepoDigest of the pulled image


def test_pull_always_pulls_even_a_present_image_and_missing_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    present = {"org/sglang:v1": FakeImage("sha256:local", {"RepoDigests": []})}
    missing_policy = FakeEngine(images_present=dict(present))
    host = docker_host(missing_policy, monkeypatch, pull="missing")
    host.prepare()
    assert missing_policy.calls["pull"] == 0
    assert host.image_digest == "sha256:local"  # no RepoDigest (built here): the image ID
    always = FakeEngine(images_present=dict(present))
    docker_host(always, monkeypatch, pull="always").prepare()
    assert always.calls["pull"] == 1


def test_a_missing_image_with_pull_never_is_unavailable_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine()
    host = docker_host(engine, monkeypatch, pull="never")
    with pytest.raises(RuntimeUnavailable, match=r"org/sglang:v1 is not on this machine.*docker pull org/sglang:v1"):
        host.prepare()
    assert engine.calls["pull"] == 0


def test_no_engine_is_unavailable_and_close_without_a_client_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_engine() -> Any:
        raise docker.errors.DockerException("Error while fetching server API version")

    monkeypatch.setattr(docker, "from_env", no_engine)
    host = DockerHost(model=MODEL, settings=DockerSettings(), image="org/sglang:v1", env={})
    with pytest.raises(RuntimeUnavailable, match=r"no Docker engine answers.*start dockerd"):
        host.prepare()
    host.close()
    host.close()


def test_close_lets_go_of_the_client_once(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine(images_present={"org/sglang:v1": FakeImage("sha256:local", {})})
    host = docker_host(engine, monkeypatch)
    host.prepare()
    host.close()
    host.close()
    assert engine.calls["close"] == 1


def test_sim_launches_get_distinct_deterministic_seeds_from_concurrent_workers() -> None:
    host = SimHost(model=MODEL, settings=make_spec().simulator, seed=7)
    numbers = gather_in_threads(lambda: [host.next_launch() for _ in range(200)], threads=8)
    assert sorted(numbers) == list(range(1, 1601))
    argv = host.command({}, port=30000, launch=3)
    assert argv[argv.index("--sim-seed") + 1] == str(sim_seed(7, 3)) == str((7 * 1000 + 3) * 100_003 + 1)
    assert sim_seed(7, 3) != sim_seed(7, 4) != sim_seed(8, 3)


def test_process_and_sim_hosts_have_no_image_to_fingerprint() -> None:
    for host in (ProcessHost(model=MODEL), SimHost(model=MODEL, settings=make_spec().simulator, seed=0)):
        host.prepare()
        version = "0.5.23-sim" if host.kind == "sim" else ""  # the simulator names the version it imitates
        assert host.fingerprint_facts() == {"runtime": host.kind, "image": "", "image_digest": "",
                                            "sglang_version": version}  # fmt: skip
        host.close()


def test_runtime_kinds_are_listed_once_for_the_spec_and_create_host() -> None:
    assert get_args(TaskSpec.model_fields["runtime"].annotation) == RUNTIME_KINDS
    spec = make_spec(model={"id_or_path": MODEL})
    assert [create_host(kind, spec, seed=0).kind for kind in RUNTIME_KINDS] == list(RUNTIME_KINDS)
    with pytest.raises(RuntimeUnavailable, match="use one of: docker, process, sim"):
        create_host("podman", spec, seed=0)
