"""Ports: a free one cannot collide with an outgoing connection, and a taken one is reported with its holder, found
in /proc, for real: listeners in other processes, over IPv4 and IPv6, and a connection's local end."""

import os
import socket
import subprocess
import sys

import pytest

from plumbing.ports import (
    FREE_PORT_FLOOR,
    describe_command,
    ephemeral_range,
    free_port,
    port_holder,
    port_in_use,
    port_taken,
)

LISTENER = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
server = socket.create_server((sys.argv[1], int(sys.argv[2])), family=family)
print("listening", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


@pytest.fixture
def listener():
    """Starts a listening socket in another process; yields a function (host, port) -> that process."""
    started = []

    def listen(host: str, port: int) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", LISTENER, host, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        started.append(process)
        assert process.stdout.readline() == b"listening\n"
        return process

    yield listen
    for process in started:
        process.stdin.close()
        process.wait(timeout=10)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::1"])
def test_a_port_another_process_listens_on_is_reported_with_its_pid_and_command(listener, host):
    port = free_port()
    process = listener(host, port)
    # The script given to -c, on one line: a message is one line.
    assert port_holder(port).startswith(f"pid {process.pid} (python -c import socket, sys family = "), port_holder(port)
    message = port_taken(port, "stop it, or choose another port with --port", what="the stand-in")
    assert message.startswith(f"port {port} (the stand-in) is taken by pid {process.pid} (python -c ")
    assert message.endswith("): stop it, or choose another port with --port")
    assert "\n" not in message


def test_a_port_is_free_again_once_its_holder_is_gone(listener):
    port = free_port()
    process = listener("127.0.0.1", port)
    assert port_in_use(port)
    process.stdin.close()
    process.wait(timeout=10)
    assert port_holder(port) is None
    assert port_taken(port, "stop it") is None


def test_a_free_port_has_no_holder():
    port = free_port()
    assert port_holder(port) is None
    assert port_taken(port, "stop it") is None
    assert not port_in_use(port)


def test_a_connections_local_port_is_reported_with_the_process_that_made_it():
    # What the kernel gives an outgoing connection, in the ephemeral range: a fixed port there may be taken this way.
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
        local_port = client.getsockname()[1]
        assert port_holder(local_port).startswith(f"pid {os.getpid()} (")


def test_free_ports_lie_below_the_ephemeral_range_where_no_connection_is_given_them():
    low, high = ephemeral_range()
    assert FREE_PORT_FLOOR < low <= high
    picks = {free_port() for _ in range(50)}
    assert all(FREE_PORT_FLOOR <= port < low for port in picks), sorted(picks)
    assert len(picks) > 40, "picked at random, not one after another"


def test_a_jvm_is_described_by_its_main_class_or_jar_not_its_options():
    flink = ["/usr/lib/jvm/java-17/bin/java", "-Xmx1g", "--add-opens", "java.base/java.lang=ALL-UNNAMED"]
    flink += ["-Dlog.file=/x/flink.log", "-classpath", "/a.jar:/b.jar"]
    flink += ["org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint", "--configDir", "/x/conf"]
    assert describe_command(flink) == "java ... StandaloneSessionClusterEntrypoint --configDir /x/conf"
    emulator = ["java", "-Xmx512m", "-jar", "/sdk/lib/cloud-pubsub-emulator-0.8.20-all.jar", "--port=8085"]
    assert describe_command(emulator) == "java ... cloud-pubsub-emulator-0.8.20-all.jar --port=8085"
    long = describe_command(["/venv/bin/python", "-m", "localdev.model_server", "--model_dir=" + "m" * 200])
    assert long.startswith("python -m localdev.model_server --model_dir=mmm") and long.endswith(" ...")
    assert len(long) <= 100


def test_a_local_flink_whose_port_is_taken_refuses_to_start_naming_the_holder(listener, tmp_path, monkeypatch):
    from localdev.flink import FlinkError, LocalFlink, Ports

    ports = Ports(*(free_port() for _ in range(6)))
    holder = listener("127.0.0.1", ports.rest)
    monkeypatch.setattr(LocalFlink, "install", lambda self: pytest.fail("started past a taken port"))
    with pytest.raises(FlinkError) as refused:
        LocalFlink(state_dir=tmp_path, ports=ports, verbose=False).start()
    assert str(refused.value) == (
        f"port {ports.rest} (rest) is taken by {port_holder(ports.rest)}: stop it, or start this cluster on other "
        "ports (python -m localdev.flink start --port_offset=N)"
    )
    assert f"pid {holder.pid} (python -c " in str(refused.value)
