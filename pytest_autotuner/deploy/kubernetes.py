"""A Kubernetes Deployment and Service for a configuration: one pod running one SGLang server on tp x dp x pp
GPUs (data parallelism as SGLang does it: ``--dp-size`` inside the one server), probed on ``/health``."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pytest_autotuner.deploy.launch import (
    CONTAINER_HF_CACHE,
    CONTAINER_MODEL_DIR,
    container_port,
    deploy_image,
    gpu_count,
    launch_argv,
    resource_name,
    spec_sglang_version,
)

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.trial import ParamValue
    from pytest_autotuner.core.spec.task_spec import TaskSpec

__all__ = ["kubernetes_manifests", "kubernetes_yaml", "shm_quantity"]

_PROBE_PERIOD_S = 10
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*$", re.IGNORECASE)
_BINARY = {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi", "t": "Ti"}
_BINARY_DOWN = {"Ki": "", "Mi": "Ki", "Gi": "Mi", "Ti": "Gi"}


def shm_quantity(docker_size: str | None) -> str | None:
    """Docker's ``--shm-size`` (``16g``, ``512m``, bytes) as a Kubernetes quantity (``16Gi``); None if unreadable."""
    found = _SIZE.match(docker_size or "")
    if not found:
        return None
    number, unit = found.group(1), _BINARY[found.group(2).lower()]
    if not unit:
        return str(math.ceil(float(number)))
    return f"{number}{unit}" if "." not in number else f"{math.ceil(float(number) * 1024)}{_BINARY_DOWN[unit]}"


def _labels(spec: TaskSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": resource_name(spec), "app.kubernetes.io/managed-by": "pytest-autotuner"}


def _metadata(spec: TaskSpec) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": resource_name(spec)}
    if spec.deploy.namespace:
        meta["namespace"] = spec.deploy.namespace
    meta["labels"] = _labels(spec)
    return meta


def _probe(period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": period, "timeoutSeconds": 5,
            "failureThreshold": failures}  # fmt: skip


def _volumes(spec: TaskSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts): shared memory as a memory-backed emptyDir of docker.shm_size, the model cache (a
    claim, or an emptyDir) where the Docker runtime mounts it, and ``docker.volumes`` as host paths."""
    shm: dict[str, Any] = {"medium": "Memory"}
    size = shm_quantity(spec.docker.shm_size)
    if size:
        shm["sizeLimit"] = size
    model = spec.model.id_or_path if spec.model is not None else ""
    local = bool(model) and Path(model).exists()
    claim = spec.deploy.model_cache_claim
    cache: dict[str, Any] = {"persistentVolumeClaim": {"claimName": claim}} if claim else {"emptyDir": {}}
    volumes = [{"name": "dshm", "emptyDir": shm}, {"name": "model-cache", **cache}]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "model-cache", "mountPath": CONTAINER_MODEL_DIR if local else CONTAINER_HF_CACHE,
         **({"readOnly": True} if local and claim else {})},
    ]  # fmt: skip
    for i, (host, target) in enumerate(spec.docker.volumes.items()):
        path, _, mode = target.partition(":")
        volumes.append({"name": f"host-{i}", "hostPath": {"path": str(Path(host).expanduser())}})
        mounts.append({"name": f"host-{i}", "mountPath": path, **({"readOnly": True} if mode == "ro" else {})})
    return volumes, mounts


def kubernetes_manifests(spec: TaskSpec, params: Mapping[str, ParamValue]) -> list[dict[str, Any]]:
    """The Deployment and the Service, as Kubernetes API objects."""
    port = container_port(spec)
    gpus = gpu_count(params)
    env: list[dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in spec.docker.env.items()]
    if "HF_TOKEN" not in spec.docker.env:
        secret = {"name": spec.deploy.hf_token_secret, "key": "token", "optional": True}
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": secret}})
    volumes, mounts = _volumes(spec)
    startup_failures = max(1, math.ceil(spec.optimization.timeout_per_iteration / _PROBE_PERIOD_S))
    container: dict[str, Any] = {
        "name": "sglang",
        "image": deploy_image(spec),
        "command": launch_argv(spec, params),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "resources": {"limits": {spec.deploy.gpu_resource: gpus}, "requests": {spec.deploy.gpu_resource: gpus}},
        "volumeMounts": mounts,
        # loading weights and capturing CUDA graphs takes minutes: the startup probe allows what a trial allowed
        "startupProbe": _probe(_PROBE_PERIOD_S, startup_failures),
        "readinessProbe": _probe(_PROBE_PERIOD_S, 3),
        "livenessProbe": _probe(30, 3),
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": _labels(spec)},
            "template": {
                "metadata": {"labels": _labels(spec)},
                "spec": {"containers": [container], "volumes": volumes},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec),
        "spec": {
            "type": "ClusterIP",
            "selector": _labels(spec),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def kubernetes_yaml(spec: TaskSpec, params: Mapping[str, ParamValue]) -> str:
    """The Deployment and Service as one multi-document YAML file."""
    header = (
        f"# {spec.task_name}: the confirmed best configuration ({gpu_count(params)} GPU(s): tp x dp x pp), "
        f"written by pytest-autotuner; flags checked against SGLang {spec_sglang_version(spec)}.\n"
        f"# HF_TOKEN comes from the Secret {spec.deploy.hf_token_secret!r} (key `token`) when it exists.\n"
    )
    body = yaml.safe_dump_all(kubernetes_manifests(spec, params), sort_keys=False, width=120)
    return header + body
