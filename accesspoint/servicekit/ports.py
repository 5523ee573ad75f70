"""Free loopback ports for servers started in another process (demos, test fixtures, benchmarks).

A port taken with ``bind(("127.0.0.1", 0))`` comes from the kernel's ephemeral range, the same range it hands
out as the source port of every outgoing connection. Between closing the probe and the child process binding
the port (a second or more while an interpreter starts), any client connection on the machine may take it as
its source port, and the child then fails with "address already in use". Ports are therefore picked at random
*below* the ephemeral range, where the kernel never puts a connection on its own, and checked free for TCP (and
UDP when asked). Parallel test workers (``PYTEST_XDIST_WORKER``) pick from disjoint slices of that range.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Below 10000 sit well-known services (PostgreSQL 5432, Redis 6379, 8080...): stay clear of them.
_LOWEST = 10000
_FALLBACK_EPHEMERAL_START = 32768
_ATTEMPTS = 200
# Its own generator: a test seeding the module-level one must not make two processes pick the same ports.
_RANDOM = random.SystemRandom()
# Ports this process handed out: a server picked for but not yet started must not be handed out twice.
_HANDED_OUT: set[int] = set()


def _picking_range() -> range:
    """The ports to pick from: above the well-known ones, below the kernel's ephemeral range."""
    try:
        ephemeral_start = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_start = _FALLBACK_EPHEMERAL_START
    if ephemeral_start - _LOWEST < 2000:
        # An unusual ephemeral range leaves no room below it: the kernel's own choice is all there is.
        return range(0)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker.removeprefix("gw")) if worker.startswith("gw") and worker[2:].isdigit() else 0
    width = (ephemeral_start - _LOWEST) // max(count, 1)
    start = _LOWEST + width * (index % max(count, 1))
    return range(start, start + width)


def _bindable(port: int, *, udp: bool) -> bool:
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port(*, udp: bool = False) -> int:
    """A port on 127.0.0.1 that nothing uses right now, for TCP (and UDP too with ``udp=True``)."""
    ports = _picking_range()
    for _ in range(_ATTEMPTS if ports else 0):
        port = _RANDOM.choice(ports)
        if port not in _HANDED_OUT and _bindable(port, udp=udp):
            _HANDED_OUT.add(port)
            return port
    for _ in range(_ATTEMPTS):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _HANDED_OUT and _bindable(port, udp=udp):
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port on 127.0.0.1")
