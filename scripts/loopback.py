"""Loopback helpers shared by the throwaway servers (throwaway_pg, throwaway_haproxy)."""

from __future__ import annotations

import socket


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 at this moment: the kernel's choice, never a hard-coded one.

    Another process may take it before the caller binds it; the callers retry on a new one then.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
