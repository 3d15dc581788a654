"""The runtime image on the engine: present, pulled per ``docker.pull``, and its digest.

Called once per session by ``DockerHost.prepare``; every failure is ``RuntimeUnavailable`` with what to do.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from pytest_autotuner.runtimes.base import RuntimeUnavailable

if TYPE_CHECKING:
    from docker import DockerClient

__all__ = ["ensure_image", "image_digest"]

logger = logging.getLogger(__name__)

_PULL_LOG_INTERVAL_S = 5.0


def ensure_image(client: DockerClient, image: str, pull: str) -> None:
    """Make sure ``image`` is on the engine: pull it when missing (``pull`` 'missing') or always ('always');
    'never' refuses a missing image."""
    import docker

    try:
        client.images.get(image)
        present = True
    except docker.errors.ImageNotFound:
        present = False
    if not present and pull == "never":
        raise RuntimeUnavailable(
            f"the image {image} is not on this machine and docker.pull is 'never'; "
            f"run `docker pull {image}` (or build it) first, or set docker.pull to 'missing'"
        )
    if pull == "always" or not present:
        _pull(client, image)


def _pull(client: DockerClient, image: str) -> None:
    import docker
    from docker.utils import parse_repository_tag

    repo, tag = parse_repository_tag(image)
    logger.info("pulling %s (this can take minutes for a serving image)", image)
    last_log = 0.0
    try:
        for event in client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
            if "error" in event:
                raise docker.errors.APIError(str(event["error"]))
            status = f"{event.get('id', '')} {event.get('status', '')} {event.get('progress', '')}".strip()
            now = time.monotonic()
            if "progress" not in event or now - last_log >= _PULL_LOG_INTERVAL_S:
                logger.info("pull %s: %s", image, status)
                last_log = now
    except docker.errors.DockerException as err:
        raise RuntimeUnavailable(
            f"cannot pull {image}: {err}; check the image name and runtime_image_tag, the registry "
            "login (docker login) and the network, or pull it yourself and set docker.pull 'never'"
        ) from None
    logger.info("pulled %s", image)


def image_digest(client: DockerClient, image: str) -> str:
    """The image's RepoDigest (``repo@sha256:...``) when it came from a registry, else its image ID."""
    import docker

    try:
        found = client.images.get(image)
    except docker.errors.DockerException as err:
        raise RuntimeUnavailable(f"cannot inspect the image {image}: {err}") from None
    digests = found.attrs.get("RepoDigests") or []
    return str(digests[0]) if digests else str(found.id or "")
