"""``--autotune-check``: do the committed deploy files still run the baseline's configuration?

Each file that carries the server's command line (``launch.sh``, ``docker-run.sh``, ``compose.yaml``,
``kubernetes.yaml``) is read back, its flags after ``sglang.launch_server`` compared with the configuration's;
the address, port and model are the deployment's own and not compared. The Kubernetes GPU request is compared
with tp x dp x pp.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pytest_autotuner.deploy.launch import SERVER_MODULE, gpu_count, server_flags

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.trial import ParamValue
    from pytest_autotuner.core.spec.task_spec import TaskSpec

__all__ = ["command_of", "deploy_drift", "flag_values"]

_NOT_COMPARED = frozenset({"host", "port", "model-path", "model"})


def flag_values(argv: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``--flag v1 v2`` / ``--flag=v`` / ``--flag`` as {flag: values}; the values of a repeated flag add up."""
    out: dict[str, tuple[str, ...]] = {}
    current: str | None = None
    for token in argv:
        if token.startswith("--"):
            name, eq, value = token[2:].partition("=")
            current = None if eq else name
            out[name] = out.get(name, ()) + ((value,) if eq else ())
        elif current is not None:
            out[current] = (*out[current], token)
    return out


def _after_module(argv: Sequence[str]) -> list[str] | None:
    return list(argv[argv.index(SERVER_MODULE) + 1 :]) if SERVER_MODULE in argv else None


def _shell_argv(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return shlex.split("\n".join(lines).replace("\\\n", " "))


def _deployment(docs: list[Any]) -> dict[str, Any] | None:
    return next((d for d in docs if isinstance(d, dict) and d.get("kind") == "Deployment"), None)


def command_of(name: str, text: str) -> list[str] | None:
    """The server's arguments (after ``sglang.launch_server``) in the deploy file ``name``; None when none is
    found. ValueError when the file is not readable as its kind."""
    if name.endswith(".sh"):
        return _after_module(_shell_argv(text))
    docs = list(yaml.safe_load_all(text))
    if name == "compose.yaml":
        services = (docs[0] or {}).get("services", {}) if docs and isinstance(docs[0], dict) else {}
        for service in services.values():
            command = service.get("command") if isinstance(service, dict) else None
            if isinstance(command, str):
                command = shlex.split(command)
            if isinstance(command, list):
                return _after_module([str(t) for t in command])
        return None
    deployment = _deployment(docs)
    if deployment is None:
        return None
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        argv = [str(t) for t in (container.get("command") or []) + (container.get("args") or [])]
        if SERVER_MODULE in argv:
            return _after_module(argv)
    return None


def _kubernetes_gpus(text: str, resource: str) -> str | None:
    deployment = _deployment(list(yaml.safe_load_all(text)))
    if deployment is None:
        return None
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        limits = (container.get("resources") or {}).get("limits") or {}
        if resource in limits:
            return str(limits[resource])
    return None


def _shown(values: tuple[str, ...]) -> str:
    return " ".join(values) if values else "(set, no value)"


def deploy_drift(spec: TaskSpec, params: Mapping[str, ParamValue], files: Mapping[str, str], where: str) -> list[str]:
    """One line per difference between the committed deploy files (``name -> text``, from the folder ``where``)
    and the configuration ``params``: which file, which flag, its value there and the baseline's. [] when all
    match."""
    expected = {k: v for k, v in flag_values(server_flags(spec, params)).items() if k not in _NOT_COMPARED}
    problems: list[str] = []
    for name, text in sorted(files.items()):
        path = f"{Path(where, name).as_posix()}"
        try:
            argv = command_of(name, text)
        except (yaml.YAMLError, ValueError, KeyError, TypeError, AttributeError) as err:
            problems.append(f"{path}: not readable as a deploy file ({type(err).__name__}: {err})")
            continue
        if argv is None:
            problems.append(f"{path}: no `{SERVER_MODULE}` command line found")
            continue
        found = {k: v for k, v in flag_values(argv).items() if k not in _NOT_COMPARED}
        for flag in sorted(expected.keys() | found.keys()):
            ours, theirs = expected.get(flag), found.get(flag)
            if ours == theirs:
                continue
            if theirs is None:
                problems.append(f"{path}: --{flag} {_shown(ours or ())} of the baseline's configuration is missing")
            elif ours is None:
                problems.append(f"{path}: --{flag} {_shown(theirs)} is not in the baseline's configuration")
            else:
                has = _shown(ours)
                problems.append(f"{path}: --{flag} is {_shown(theirs)}, the baseline's configuration has {has}")
        if name == "kubernetes.yaml":
            gpus = _kubernetes_gpus(text, spec.deploy.gpu_resource)
            if gpus is not None and gpus != str(gpu_count(params)):
                problems.append(
                    f"{path}: requests {gpus} {spec.deploy.gpu_resource}, the baseline's configuration uses "
                    f"{gpu_count(params)} (tp-size x dp-size x pp-size)"
                )
    return problems
