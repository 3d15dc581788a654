"""Deploy files of a configuration: every file parses, the Kubernetes objects pass the API schema, the launch
command passes the preflight of the spec's SGLang version, and a changed flag in any file is a named drift."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import factories
import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_autotuner.core.measure.trial import ParamValue
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.deploy import (
    DEPLOY_FILES,
    deploy_drift,
    deploy_files,
    kubernetes_manifests,
    launch_argv,
    launch_problems,
    read_deploy_folder,
    write_deploy_folder,
)
from pytest_autotuner.deploy.drift import command_of
from pytest_autotuner.deploy.kubernetes import shm_quantity
from pytest_autotuner.inputs import load_spec

SPECS = sorted(Path(__file__).parents[2].joinpath("tuning_specs").glob("*.json"))
KUBERNETES = kubernetes_validate.latest_version()


def first_configuration(spec: TaskSpec) -> dict[str, ParamValue]:
    """One configuration of the spec's space: each list's first value, each range's low end."""
    out: dict[str, ParamValue] = {}
    for name, values in spec.parameters.items():
        out[name] = values[0] if isinstance(values, list) else values.low
    return out


def assert_valid(spec: TaskSpec, params: dict[str, ParamValue]) -> dict[str, str]:
    """Every deploy file of ``params`` parses as its kind, passes its schema, and reads back without drift."""
    files = deploy_files(spec, params)
    assert list(files) == list(DEPLOY_FILES)
    for name in ("launch.sh", "docker-run.sh"):
        argv = shlex.split(files[name].replace("\\\n", " "), comments=True)
        assert "sglang.launch_server" in argv
    compose = yaml.safe_load(files["compose.yaml"])
    (service,) = compose["services"].values()
    assert service["command"] == launch_argv(spec, params)
    documents = list(yaml.safe_load_all(files["kubernetes.yaml"]))
    assert [d["kind"] for d in documents] == ["Deployment", "Service"]
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
    assert launch_problems(spec, params) == []
    assert deploy_drift(spec, params, files, "deploy") == []
    return files


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_spec_gets_valid_deploy_files(path: Path) -> None:
    spec = load_spec(path)
    assert_valid(spec, first_configuration(spec))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_value_of_every_shipped_spec_passes_the_launch_check(path: Path) -> None:
    spec = load_spec(path)
    first = first_configuration(spec)
    for name, values in spec.parameters.items():
        for value in values if isinstance(values, list) else [values.low, values.high]:
            assert launch_problems(spec, {**first, name: value}) == [], (name, value)


LAYOUT = st.fixed_dictionaries(
    {
        "tp-size": st.sampled_from([1, 2, 4, 8]),
        "dp-size": st.sampled_from([1, 2, 4]),
        "pp-size": st.sampled_from([1, 2]),
    }
)
DOCKER = st.fixed_dictionaries(
    {},
    optional={
        "gpus": st.sampled_from(["auto", "all", "none", 2, [0, 3]]),
        "shm_size": st.sampled_from(["16g", "512m", "1.5g", "64G", "1073741824", None]),
        "ipc_mode": st.sampled_from(["host", "private", None]),
        "init": st.booleans(),
        "env": st.dictionaries(
            st.sampled_from(["NCCL_DEBUG", "SGLANG_LOG", "HF_TOKEN"]),
            st.sampled_from(["1", "a b"]),
        ),
        "volumes": st.dictionaries(st.sampled_from(["/data/a", "~/weights"]), st.sampled_from(["/mnt/a", "/w:ro"])),
        "extra_args": st.sampled_from(
            [
                [],
                ["--enable-metrics"],
                ["--log-level", "warning"],
                ["--json-model-override-args", '{"rope_scaling": {"type": "yarn", "factor": 4}}'],
                ["--served-model-name", "it's $HOME `x`"],
            ]
        ),
        "container_port": st.sampled_from([30000, 8080]),
    },
)
DEPLOY = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["llm", "sglang-best-1"]),
        "namespace": st.sampled_from(["serving", "default"]),
        "gpu_resource": st.sampled_from(["nvidia.com/gpu", "amd.com/gpu"]),
        "model_cache_claim": st.sampled_from(["hf-cache", "models"]),
        "hf_token_secret": st.sampled_from(["hf", "tokens"]),
    },
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=LAYOUT,
    docker=DOCKER,
    deploy=DEPLOY,
    task=st.sampled_from(["Team/Llama 8B throughput!", "x", "9-lives"]),
    version=st.sampled_from(["0.5.2", "0.5.23"]),
    policy=st.sampled_from(["lpm", "fcfs"]),
    mixed=st.booleans(),
)
def test_any_layout_and_container_settings_give_valid_files(
    layout: dict[str, int],
    docker: dict[str, Any],
    deploy: dict[str, str],
    task: str,
    version: str,
    policy: str,
    mixed: bool,
) -> None:
    params: dict[str, ParamValue] = {**layout, "schedule-policy": policy, "enable-mixed-chunk": mixed}
    spec = factories.spec(
        task_name=task,
        parameters={k: [v] for k, v in params.items()},
        docker=docker,
        deploy=deploy,
        simulator={"sglang_version": version},
    )
    files = assert_valid(spec, params)
    deployment, service = kubernetes_manifests(spec, params)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    gpus = layout["tp-size"] * layout["dp-size"] * layout["pp-size"]
    assert container["resources"]["limits"] == {spec.deploy.gpu_resource: gpus}
    assert [p["httpGet"]["path"] for p in (container["readinessProbe"], container["livenessProbe"])] == ["/health"] * 2
    assert service["spec"]["ports"][0]["port"] == (docker.get("container_port") or 30000)
    # data parallelism as SGLang does it: one server with --dp-size, one pod
    assert deployment["spec"]["replicas"] == 1
    assert container["command"].count("--dp-size") == 1
    assert ("--enable-mixed-chunk" in container["command"]) == mixed
    assert "HF_TOKEN=" not in files["docker-run.sh"] or "HF_TOKEN" in docker.get("env", {})


def _changed(text: str, flag: str, old: str, new: str) -> str:
    """``text`` with the value of ``--flag`` changed from ``old`` to ``new`` (shell and YAML spellings)."""
    for indent in ("", "\n        - ", "\n    - "):  # the shell scripts, kubernetes.yaml, compose.yaml
        quote = "'" if indent else ""
        before, after = f"{flag}{indent or ' '}{quote}{old}{quote}", f"{flag}{indent or ' '}{quote}{new}{quote}"
        if before in text:
            return text.replace(before, after)
    raise AssertionError(f"--{flag} {old} not found in {text}")


SEED_PARAMS: dict[str, ParamValue] = {"tp-size": 2, "mem-fraction-static": 0.85, "chunked-prefill-size": 2048}


@pytest.mark.parametrize("name", DEPLOY_FILES)
def test_a_changed_flag_in_any_file_is_drift_naming_file_and_flag(name: str) -> None:
    spec = factories.spec()
    files = deploy_files(spec, SEED_PARAMS)
    files[name] = _changed(files[name], "--mem-fraction-static", "0.85", "0.9")
    assert deploy_drift(spec, SEED_PARAMS, files, "tuning_specs/x.deploy") == [
        f"tuning_specs/x.deploy/{name}: --mem-fraction-static is 0.9, the baseline's configuration has 0.85"
    ]


def test_a_flag_added_or_dropped_is_drift() -> None:
    spec = factories.spec()
    files = {"launch.sh": deploy_files(spec, SEED_PARAMS)["launch.sh"]}
    added = {"launch.sh": files["launch.sh"].rstrip("\n") + " \\\n  --enable-metrics\n"}
    assert deploy_drift(spec, SEED_PARAMS, added, "d") == [
        "d/launch.sh: --enable-metrics (set, no value) is not in the baseline's configuration"
    ]
    fewer = {k: v for k, v in SEED_PARAMS.items() if k != "chunked-prefill-size"}
    assert deploy_drift(spec, {**fewer, "chunked-prefill-size": 4096}, files, "d") == [
        "d/launch.sh: --chunked-prefill-size is 2048, the baseline's configuration has 4096"
    ]
    assert deploy_drift(spec, {**SEED_PARAMS, "schedule-policy": "lpm"}, files, "d") == [
        "d/launch.sh: --schedule-policy lpm of the baseline's configuration is missing"
    ]


def test_a_changed_gpu_request_is_drift() -> None:
    spec = factories.spec()
    manifest = deploy_files(spec, SEED_PARAMS)["kubernetes.yaml"]
    files = {"kubernetes.yaml": manifest.replace("nvidia.com/gpu: 2", "nvidia.com/gpu: 1")}
    assert deploy_drift(spec, SEED_PARAMS, files, "d") == [
        "d/kubernetes.yaml: requests 1 nvidia.com/gpu, the baseline's configuration uses 2 "
        "(tp-size x dp-size x pp-size)"
    ]


def test_an_unreadable_deploy_file_is_a_problem_not_a_crash() -> None:
    spec = factories.spec()
    problems = deploy_drift(spec, SEED_PARAMS, {"compose.yaml": "services: [\n", "launch.sh": "echo hi\n"}, "d")
    assert problems[0].startswith("d/compose.yaml: not readable as a deploy file (")
    assert problems[1] == "d/launch.sh: no `sglang.launch_server` command line found"


def test_a_flag_the_spec_version_lacks_fails_the_launch_check() -> None:
    spec = factories.spec(simulator={"sglang_version": "0.5.2"})
    assert launch_problems(spec, {"schedule-policy": "no-such-policy"})[0].startswith(
        "--schedule-policy 'no-such-policy' is not one of its choices"
    )
    assert launch_problems(spec, {"no-such-flag": 1}) != []


def test_written_folder_reads_back_and_scripts_are_executable(tmp_path: Path) -> None:
    spec = factories.spec()
    files = deploy_files(spec, SEED_PARAMS)
    paths = write_deploy_folder(tmp_path / "deploy", files)
    assert read_deploy_folder(tmp_path / "deploy") == files
    assert all((p.stat().st_mode & 0o111) == (0o111 if p.suffix == ".sh" else 0) for p in paths)
    assert command_of("compose.yaml", files["compose.yaml"]) == launch_argv(spec, SEED_PARAMS)[3:]
    assert json.dumps(files)  # plain text, nothing that JSON cannot carry


@pytest.mark.parametrize(
    ("docker", "kubernetes"),
    [("16g", "16Gi"), ("512m", "512Mi"), ("1.5g", "1536Mi"), ("64GB", "64Gi"), ("1073741824", "1073741824"),
     ("2k", "2Ki"), ("lots", None), (None, None)],
)  # fmt: skip
def test_shm_size_as_a_kubernetes_quantity(docker: str | None, kubernetes: str | None) -> None:
    assert shm_quantity(docker) == kubernetes
