"""The preflight of a runtime image: its ``python3 -m sglang.launch_server --help`` and SGLang version.

Run once per image digest in a short container (no GPUs, no port) and cached under ``$PYTEST_AUTOTUNER_CACHE``
(default ``~/.cache/pytest-autotuner``), so a new image costs one container and a known one none. The help
becomes the argument table every configuration is checked against (``runtimes/base.table_from_help``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_autotuner.core.spec.sglang_args import version_from_tag
from pytest_autotuner.files import write_atomically
from pytest_autotuner.runtimes.base import RuntimeUnavailable, mask_secrets, tail_lines

if TYPE_CHECKING:
    from docker import DockerClient

    from pytest_autotuner.runtimes.docker_spec import ContainerSpec

__all__ = ["help_and_version", "help_cache_path"]

_PREFLIGHT_TIMEOUT_S = 300.0  # SGLang imports torch before it prints its help
_VERSION_SCRIPT = "import importlib.metadata as m; print(m.version('sglang'))"


def help_cache_path(image: str, digest: str, env: Mapping[str, str]) -> Path:
    """Where the help of the image with ``digest`` (else named ``image``) is cached."""
    root = Path(env.get("PYTEST_AUTOTUNER_CACHE") or Path.home() / ".cache" / "pytest-autotuner")
    key = hashlib.sha256((digest or image).encode()).hexdigest()[:24]
    return root / "sglang-help" / f"{key}.json"


def help_and_version(client: DockerClient, spec: ContainerSpec, digest: str) -> tuple[str, str]:
    """(the image's ``launch_server --help``, its SGLang version: the package metadata's, else its tag's)."""
    path = help_cache_path(spec.image, digest, spec.host_env)
    with contextlib.suppress(OSError, ValueError, KeyError):
        cached = json.loads(path.read_text("utf-8"))
        if cached["image_digest"] == digest:
            return str(cached["help"]), str(cached["version"])
    help_text = _run_once(client, spec, ["python3", "-m", "sglang.launch_server", "--help"], "help", check=True)
    version = _run_once(client, spec, ["python3", "-c", _VERSION_SCRIPT], "version", check=False).strip()
    version = version if re.fullmatch(r"\d+(\.\d+)+\S*", version) else version_from_tag(spec.image) or ""
    record = {"image": spec.image, "image_digest": digest, "version": version, "help": help_text}
    with contextlib.suppress(OSError):
        write_atomically(path, json.dumps(record))
    return help_text, version


def _run_once(client: DockerClient, spec: ContainerSpec, command: list[str], label: str, *, check: bool) -> str:
    """Run ``command`` in a fresh container of the image (no GPUs, no port), return its output."""
    import docker

    kwargs = spec.create_kwargs({}, f"preflight-{label}")
    kwargs.update(command=command, ports={}, device_requests=None)
    container = None
    try:
        container = client.containers.create(**kwargs)
        container.start()
        status = container.wait(timeout=_PREFLIGHT_TIMEOUT_S)
        output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
    except Exception as err:  # API errors and the wait's timeout alike
        if not check:
            return ""
        raise RuntimeUnavailable(f"the preflight `{' '.join(command)}` in {spec.image} failed: {err}") from None
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True, v=True)
    code = int(status.get("StatusCode", 1)) if isinstance(status, dict) else 1
    if code != 0:
        if not check:
            return ""
        tail = tail_lines(mask_secrets(output, spec.host_env), 5)
        raise RuntimeUnavailable(f"`{' '.join(command)}` in {spec.image} exited {code}: {tail}")
    return output
