"""Ports for local servers: below the range the kernel gives outgoing connections, never handed out twice."""

from __future__ import annotations

import itertools
from pathlib import Path

from processes import gather_in_threads

from pytest_autotuner.runtimes.process import free_port, release_port


def _ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_ports_lie_below_the_outgoing_range_with_room_for_derived_ports() -> None:
    low = _ephemeral_low()
    for _ in range(40):
        port = free_port()
        release_port(port)
        if low - 300 - 10000 >= 2000:
            assert port >= 10000 and port + 300 <= low


def test_threads_drawing_at_once_never_share_a_port_or_its_derived_range() -> None:
    drawn = sorted(gather_in_threads(lambda: [free_port() for _ in range(5)], threads=4))
    assert len(drawn) == 20
    assert all(b - a >= 300 for a, b in itertools.pairwise(drawn))
    for port in drawn:
        release_port(port)


def test_a_released_port_is_the_only_reservation_lifted() -> None:
    first, second = free_port(), free_port()
    release_port(first)
    release_port(first)  # twice is harmless
    assert abs(free_port() - second) >= 300
