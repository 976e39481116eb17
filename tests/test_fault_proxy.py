"""The fault proxy itself, over real sockets against a real echo server: forward, stall, refuse, reset (all, or
mid-request), shutdown."""

import os
import socket
import socketserver
import threading
import time

import pytest

from localdev.fault_proxy import FaultProxy
from plumbing.ports import free_port

SILENCE_SECS = 0.5  # how long a stalled connection is listened to for a byte that must not come


class EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every byte back; on the client's FIN it closes. Records how each connection ended: eof or reset."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.endings = []

        class Echo(socketserver.BaseRequestHandler):
            def handle(handler):
                try:
                    while data := handler.request.recv(65536):
                        handler.request.sendall(data)
                    self.endings.append("eof")
                except ConnectionResetError:
                    self.endings.append("reset")

        super().__init__(("127.0.0.1", 0), Echo)
        self.target = f"127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


def connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def receive(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def say_hello(address: str) -> bytes:
    # The reset may come while connecting, sending or receiving, depending on how fast it follows the handshake.
    with connect(address) as sock:
        sock.sendall(b"hello")
        return sock.recv(100)


def wait_until(condition, timeout_secs=5.0):
    deadline = time.monotonic() + timeout_secs
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def echo():
    with EchoServer() as server:
        yield server


def test_forward_carries_bytes_both_ways_unchanged_and_counts_them(echo):
    with FaultProxy(echo.target) as proxy, connect(proxy.address) as sock:
        # Thousands of small messages, one at a time, as a chatty gRPC stream sends them.
        started = time.monotonic()
        for i in range(2000):
            message = f"message {i:05d}".encode()
            sock.sendall(message)
            assert receive(sock, len(message)) == message
        round_trips_per_sec = 2000 / (time.monotonic() - started)
        # A payload larger than the proxy's buffers, so backpressure has to work.
        payload = os.urandom(8 * 1024 * 1024)
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        assert receive(sock, len(payload)) == payload
        sender.join()
        # A half-close passes through: the server sees our FIN, echoes what it had and closes; we read to EOF.
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        assert receive(sock, 100) == b"last words"
        expected = 2000 * len(b"message 00000") + len(payload) + len(b"last words")
        assert wait_until(lambda: proxy.bytes_up == proxy.bytes_down == expected)
        assert proxy.connections == 1
        assert wait_until(lambda: echo.endings == ["eof"])
    print(f"{round_trips_per_sec:.0f} round trips/s through the proxy")


def test_stall_keeps_connections_open_and_silent_until_forward(echo):
    with FaultProxy(echo.target) as proxy, connect(proxy.address) as sock:
        sock.sendall(b"before")
        assert receive(sock, 6) == b"before"
        proxy.stall()
        sock.sendall(b"during")
        late = connect(proxy.address)  # the handshake completes (the kernel's backlog), then nothing
        late.sendall(b"late")
        for silent in (sock, late):
            silent.settimeout(SILENCE_SECS)
            with pytest.raises(socket.timeout):  # silence, not an error
                silent.recv(100)
            silent.settimeout(5)
        assert proxy.bytes_up == 6 and proxy.connections == 1
        proxy.forward()
        assert receive(sock, 6) == b"during"  # what waited in the buffers flows on
        assert receive(late, 4) == b"late"
        late.close()
        assert proxy.connections == 2


def test_refuse_resets_new_connections_and_keeps_open_ones(echo):
    with FaultProxy(echo.target) as proxy, connect(proxy.address) as sock:
        sock.sendall(b"open")
        assert receive(sock, 4) == b"open"
        proxy.refuse()
        with pytest.raises(ConnectionResetError):
            say_hello(proxy.address)
        sock.sendall(b"still")
        assert receive(sock, 5) == b"still"
        assert (proxy.refused, proxy.connections) == (1, 1)
        proxy.forward()
        with connect(proxy.address) as welcome:
            welcome.sendall(b"back")
            assert receive(welcome, 4) == b"back"


def test_reset_all_aborts_every_connection_on_both_sides(echo):
    with FaultProxy(echo.target) as proxy:
        clients = [connect(proxy.address) for _ in range(2)]
        for sock in clients:
            sock.sendall(b"hi")
            assert receive(sock, 2) == b"hi"
        assert proxy.reset_all() == 2
        for sock in clients:
            with pytest.raises(ConnectionResetError):
                sock.recv(100)
            sock.close()
        assert wait_until(lambda: echo.endings == ["reset", "reset"]), echo.endings
        assert proxy.resets == 2
        with connect(proxy.address) as again:  # the proxy itself carries on
            again.sendall(b"again")
            assert receive(again, 5) == b"again"


def test_reset_mid_request_aborts_the_connection_that_carries_the_bytes_before_any_answer_then_forwards(echo):
    with FaultProxy(echo.target) as proxy, connect(proxy.address) as sock:
        sock.sendall(b"before")  # counted before arming: does not count towards the reset
        assert receive(sock, 6) == b"before"
        proxy.reset_mid_request(after_bytes=100)
        sock.sendall(b"x" * 60)
        assert receive(sock, 60) == b"x" * 60  # below the mark: forwarded and answered
        sock.sendall(b"y" * 40)  # reaches it: the echo of these bytes must never arrive
        with pytest.raises(ConnectionResetError):
            sock.recv(100)
        assert wait_until(lambda: echo.endings == ["reset"]), echo.endings
        assert proxy.resets == 1
        with connect(proxy.address) as retry:  # once only: a new connection is forwarded, however much it carries
            retry.sendall(b"z" * 500)
            assert receive(retry, 500) == b"z" * 500
        assert (proxy.resets, proxy.connections) == (1, 2)


def test_a_target_that_is_not_listening_resets_the_client():
    with FaultProxy(f"127.0.0.1:{free_port()}") as proxy, pytest.raises(ConnectionResetError):
        say_hello(proxy.address)


def test_close_stops_the_thread_and_releases_every_socket(echo):
    def open_fds():
        return set(os.listdir("/proc/self/fd"))

    fds_before = open_fds()
    proxy = FaultProxy(echo.target).start()
    address = proxy.address
    clients = [connect(address) for _ in range(3)]
    for sock in clients:
        sock.sendall(b"x")
        assert receive(sock, 1) == b"x"
    proxy.stall()  # closing must not wait on stalled connections
    proxy.close()
    for sock in clients:
        sock.close()
    assert wait_until(lambda: len(echo.endings) == 3)
    assert not [t for t in threading.enumerate() if t.name.startswith("FaultProxy")]
    assert wait_until(lambda: open_fds() <= fds_before), open_fds() - fds_before  # the echo server's too, once closed
    with pytest.raises(ConnectionRefusedError):
        connect(address)
