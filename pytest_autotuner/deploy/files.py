"""The deploy folder: its files for a configuration (pure), and reading and writing it (at the edge)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_autotuner.deploy.containers import compose_yaml, docker_run_script
from pytest_autotuner.deploy.kubernetes import kubernetes_yaml
from pytest_autotuner.deploy.launch import launch_argv, shell_line, spec_sglang_version
from pytest_autotuner.files import write_atomically

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.trial import ParamValue
    from pytest_autotuner.core.spec.task_spec import TaskSpec

__all__ = [
    "DEPLOY_FILES",
    "committed_folder",
    "deploy_files",
    "launch_command",
    "launch_script",
    "read_deploy_folder",
    "write_deploy_folder",
]

#: What a deploy folder holds, in the order the report lists it.
DEPLOY_FILES = ("launch.sh", "docker-run.sh", "compose.yaml", "kubernetes.yaml")


def launch_script(spec: TaskSpec, params: Mapping[str, ParamValue]) -> str:
    """``launch.sh``: the server on this host, as ``python3 -m sglang.launch_server ...``."""
    return (
        "#!/bin/sh\n"
        f"# {spec.task_name}: the confirmed best configuration, written by pytest-autotuner; its flags were\n"
        f"# checked against SGLang {spec_sglang_version(spec)}'s argument table.\n"
        "exec " + shell_line(launch_argv(spec, params, in_container=False)) + "\n"
    )


def deploy_files(spec: TaskSpec, params: Mapping[str, ParamValue]) -> dict[str, str]:
    """Every deploy file of the configuration ``params`` (name -> text), in ``DEPLOY_FILES`` order."""
    return {
        "launch.sh": launch_script(spec, params),
        "docker-run.sh": docker_run_script(spec, params),
        "compose.yaml": compose_yaml(spec, params),
        "kubernetes.yaml": kubernetes_yaml(spec, params),
    }


def launch_command(spec: TaskSpec, params: Mapping[str, ParamValue]) -> str:
    """The launch command on one line (results.json, the summary)."""
    return shlex.join(launch_argv(spec, params, in_container=False))


def committed_folder(spec: TaskSpec, spec_path: Path) -> Path:
    """Where a spec's committed deploy files live: ``deploy.folder`` (relative to the spec file), else
    ``<stem>.deploy/`` next to it, like ``<stem>.baseline.json``."""
    if spec.deploy.folder:
        return spec_path.parent / spec.deploy.folder
    return spec_path.with_name(f"{spec_path.name.split('.')[0]}.deploy")


def write_deploy_folder(folder: Path, files: Mapping[str, str]) -> list[Path]:
    """Write each file atomically (shell scripts executable); return their paths."""
    paths = []
    for name, text in files.items():
        path = folder / name
        write_atomically(path, text)
        if name.endswith(".sh"):
            path.chmod(0o755)
        paths.append(path)
    return paths


def read_deploy_folder(folder: Path) -> dict[str, str]:
    """The deploy files present in ``folder`` (name -> text); {} when there is none."""
    return {name: (folder / name).read_text("utf-8") for name in DEPLOY_FILES if (folder / name).is_file()}
