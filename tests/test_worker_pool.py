"""The SDK worker pool listens on loopback only: Beam's own entry point binds every interface, unauthenticated."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest

from plumbing.ports import free_port, port_accepts
from plumbing.process import ManagedProcess

LISTEN = "0A"  # the TCP state column of /proc/net/tcp{,6}


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net/tcp{,6} print addresses as 32-bit words in host (little-endian) order."""
    words = [bytes.fromhex(hex_address[i : i + 8])[::-1] for i in range(0, len(hex_address), 8)]
    return ipaddress.ip_address(b"".join(words))


def listening_addresses(port: int) -> set:
    """The local addresses of the sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].rpartition(":")
            if int(hex_port, 16) == port and fields[3] == LISTEN:
                found.add(_address(address))
    return found


def is_loopback(address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


@pytest.mark.parametrize(
    "module, loopback_only",
    [("pipelines.worker_pool", True), ("apache_beam.runners.worker.worker_pool_main", False)],
    ids=["ours", "beams-own"],
)
def test_the_worker_pool_listens_on_loopback_only(tmp_path, module, loopback_only):
    """Ours listens on loopback alone; Beam's own, the control that shows the test can tell, everywhere."""
    port = free_port()
    command = [sys.executable, "-m", module, f"--service_port={port}"]
    with ManagedProcess(command, tmp_path / "pool.log", name="the worker pool") as pool:
        pool.wait_ready(lambda: port_accepts(port), timeout=60, what=f"listening on port {port}")
        addresses = listening_addresses(port)
    assert addresses
    assert all(is_loopback(a) for a in addresses) is loopback_only, addresses
