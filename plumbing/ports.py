"""Loopback TCP ports: pick a free one, tell whether one is taken or accepting connections, and who holds it.

Local stand-ins (the Pub/Sub emulator, the TF Serving stand-in, a local Flink) listen on loopback; these are the
checks that find them a port before they start and tell when they listen.

Two ways a port collides, and what each caller does about it:
- a port picked for the occasion (`free_port`) lies below Linux's ephemeral range, where no outgoing connection can
  be given it as its local port: a server restarted on the same port after a kill finds it free however many
  connections were made meanwhile. (The kernel's own pick, port 0, is inside that range.)
- a port that must be fixed (a local Flink's REST port, a server started by hand on its documented port) is
  checked before the server starts; when it is taken, `port_taken` is the one-line message that names the holder
  (`port_holder`, from /proc), so the person knows what to stop.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

# Linux's ephemeral range by default (net.ipv4.ip_local_port_range), when /proc does not say.
EPHEMERAL_DEFAULT = (32768, 60999)
# Where free_port looks: above the ports services are known by and the fixed ones this project uses (8081-8099,
# 8500, 6123, 9249), below the ephemeral range.
FREE_PORT_FLOOR = 20000
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column
_RANDOM = random.SystemRandom()  # not the `random` module's state, which a test may seed: two runs, one sequence


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel gives outgoing connections (and binds to port 0), inclusive."""
    try:
        low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return EPHEMERAL_DEFAULT
    return low, high


def free_port() -> int:
    """A port nothing is bound to now, outside the ephemeral range where it can be taken (see the module docstring).

    Another process may still bind it before the caller does; a server that then fails to bind says so, naming the
    holder (`port_taken`)."""
    low = ephemeral_range()[0]
    if low > FREE_PORT_FLOOR:
        for _ in range(200):
            port = _RANDOM.randrange(FREE_PORT_FLOOR, low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))  # no SO_REUSEADDR: a port in TIME_WAIT is passed over too
                except OSError:
                    continue
            return port
    # An ephemeral range that starts below the floor, or 200 taken ports in a row: the kernel's pick.
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


def _socket_inodes(port: int) -> tuple[list[int], list[int]]:
    """The inodes of the TCP sockets (IPv4 and IPv6) bound to local `port`: (listening, any other state)."""
    listening, other = [], []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            # sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
            fields = line.split()
            if len(fields) < 10 or int(fields[1].rsplit(":", 1)[1], 16) != port:
                continue
            inode = int(fields[9])
            if inode:  # 0: a socket no process holds any more (TIME_WAIT, an orphan)
                (listening if fields[3] == _LISTEN else other).append(inode)
    return listening, other


def _pids_holding(inodes: set[int]) -> list[int]:
    """The processes with a descriptor on one of these sockets; those this user may not inspect are skipped."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd.path) in wanted for fd in os.scandir(f"{entry.path}/fd")):
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to look at
            continue
    return sorted(pids)


# The JVM's options that take their value as the next argument (java --help): skipped with it, in search of the main
# class.
_JAVA_OPTIONS_WITH_VALUE = frozenset(
    {"-cp", "-classpath", "--class-path", "-p", "--module-path", "--upgrade-module-path", "--add-modules"}
    | {"--add-opens", "--add-exports", "--add-reads", "--patch-module", "--limit-modules", "--enable-native-access"}
)


def describe_command(argv: list[str], limit: int = 100) -> str:
    """A command line short enough for a one-line message: the program's name and, for a JVM, its main class or jar
    and what follows (not the options and class path before it)."""
    argv = [" ".join(arg.split()) for arg in argv]  # a script given to `python -c`, on one line
    if not argv:
        return "?"
    program, args = os.path.basename(argv[0]), argv[1:]
    if program == "java":
        skip_value = False
        for index, arg in enumerate(args):
            if skip_value:
                skip_value = False
            elif arg in _JAVA_OPTIONS_WITH_VALUE:
                skip_value = True
            elif arg == "-jar" or not arg.startswith("-"):
                main = args[index + 1 : index + 2] if arg == "-jar" else [arg]
                rest = args[index + 2 :] if arg == "-jar" else args[index + 1 :]
                args = ["...", *(os.path.basename(m) if arg == "-jar" else m.rsplit(".", 1)[-1] for m in main), *rest]
                break
    text = " ".join([program, *args])
    return text if len(text) <= limit else text[: limit - 4].rstrip() + " ..."


def port_holder(port: int) -> str | None:
    """Who holds TCP `port` on this machine, as "pid 1234 (java ... StandaloneSessionClusterEntrypoint ...)", found
    in /proc: the process listening on it, else one whose connection uses it as its local port. None when no
    process holds it (or none this user may inspect; /proc/net still shows the socket then: see `port_taken`)."""
    for inodes in _socket_inodes(port):
        if not inodes:
            continue
        for pid in _pids_holding(set(inodes)):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            return f"pid {pid} ({describe_command([a for a in argv if a])})"
    return None


def taken_by(port: int) -> str | None:
    """None when `port` is free; else who holds it: `port_holder`'s answer, or as much as can be said without it.

    Taken: a socket listens on it, on any address, IPv4 or IPv6 (/proc/net), or binding it on loopback fails."""
    listening, other = _socket_inodes(port)
    if not listening and not port_in_use(port):
        return None
    return port_holder(port) or (
        "a process this user may not inspect" if listening or other else "a process not found in /proc"
    )


def port_taken(port: int, remedy: str, what: str = "") -> str | None:
    """None when `port` is free; else one line for the person: "port 8081 (what) is taken by <holder>: <remedy>"."""
    holder = taken_by(port)
    if holder is None:
        return None
    label = f" ({what})" if what else ""
    return f"port {port}{label} is taken by {holder}: {remedy}"
