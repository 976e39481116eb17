"""Loopback TCP ports: pick a free one, and tell whether one is taken or accepting connections.

Local stand-ins (the Pub/Sub emulator, the TF Serving stand-in, a local Flink) listen on loopback; these are the
checks that find them a port before they start and tell when they listen.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick); a race with other processes remains, as always."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    """True when a connection to localhost:port is accepted: the server there has started listening."""
    try:
        with socket.create_connection(("localhost", port), timeout=timeout):
            return True
    except OSError:
        return False


def port_in_use(port: int) -> bool:
    """True when something listens on the port: binding fails (SO_REUSEADDR, as the JVM and gRPC bind) or it accepts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return port_accepts(port)
