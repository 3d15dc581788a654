"""Deploy files of a configuration: the launch command, ``docker run``, Compose and Kubernetes, generated from
the spec (pure functions: configuration + spec -> file texts), written next to the report and, with the
baseline, next to the spec, where ``--autotune-check`` compares them with the baseline's configuration."""

from __future__ import annotations

from pytest_autotuner.deploy.drift import deploy_drift
from pytest_autotuner.deploy.files import (
    DEPLOY_FILES,
    committed_folder,
    deploy_files,
    launch_command,
    read_deploy_folder,
    write_deploy_folder,
)
from pytest_autotuner.deploy.kubernetes import kubernetes_manifests
from pytest_autotuner.deploy.launch import launch_argv, launch_problems, spec_sglang_version

__all__ = [
    "DEPLOY_FILES",
    "committed_folder",
    "deploy_drift",
    "deploy_files",
    "kubernetes_manifests",
    "launch_argv",
    "launch_command",
    "launch_problems",
    "read_deploy_folder",
    "spec_sglang_version",
    "write_deploy_folder",
]
