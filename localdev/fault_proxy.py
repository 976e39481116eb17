"""A TCP proxy on loopback that makes network faults for real, between a client and a server the tests run.

    with FaultProxy(model_server.target) as proxy:
        handler = TFServingHandler(FRAUD, proxy.address, ...)
        proxy.stall()      # packets dropped: connections stay open, no byte passes either way, the client hears silence
        proxy.forward()    # the network is back: what waited in the buffers flows on
        proxy.reset_all()  # every open connection aborted with a TCP RST, both sides at once
        proxy.reset_mid_request(after_bytes=200)  # once: the connection that carries them is reset as they pass
        proxy.refuse()     # new connections accepted and reset at once; open ones carry on

Killing a server process (localdev.model_server's `kill`) closes its sockets cleanly, so the client learns at once
that the peer is gone. What a real network does is worse and is what this proxy adds: a silent stall (a dropped
route, a node gone without a FIN) that only deadlines notice, and resets in the middle of a stream. It moves bytes
and nothing else, so it carries any TCP protocol unchanged: TF Serving's gRPC, the Pub/Sub emulator's gRPC, HTTP.

One thread runs a `selectors` loop over every socket; the test's calls are handed to that thread and return once
done, so when `reset_all()` returns the resets have been sent. Nothing outside loopback is reached.

`reset_all()` lands whenever the test's thread gets to it: a request that already passed may have been answered by
then. `reset_mid_request()` is the one to use for "the connection dies with a request in flight": the loop's own
thread resets the connection in the step that forwards the request's bytes, so no answer can pass first, however
late any thread or process is scheduled.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable

from plumbing.ports import port_taken

FORWARD = "forward"
STALL = "stall"
REFUSE = "refuse"

_CHUNK = 256 * 1024
# Past this many bytes waiting for a slow receiver, stop reading from its peer: the sender feels TCP's backpressure.
_HIGH_WATER = 4 * 1024 * 1024


def _abort(sock: socket.socket) -> None:
    """Close with a TCP RST rather than a FIN: SO_LINGER on, with a zero timeout."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Link:
    """One proxied connection: the client's socket, the socket to the target, and the bytes waiting for each."""

    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client, self.upstream = client, upstream
        self.peer = {client: upstream, upstream: client}
        self.pending = {client: bytearray(), upstream: bytearray()}  # bytes to write to that socket
        self.ended = set()  # sockets that sent their FIN (read returned b"")
        self.shut = set()  # sockets we sent a FIN to, once all their pending bytes were written
        self.connected = False  # the connection to the target is established
        self.closed = False
        self.up_since_armed = 0  # bytes from the client since reset_mid_request() was called (or since accepted)

    @property
    def sockets(self) -> tuple[socket.socket, socket.socket]:
        return self.client, self.upstream


class FaultProxy(contextlib.AbstractContextManager):
    """Forwards TCP from `.address` (127.0.0.1 on a free port, or on `port`) to `target` ("host:port"), with faults
    switched on demand.

    Counters (read at any time): `connections` proxied, `refused` (reset on arrival in refuse mode), `resets`
    (connections aborted by `reset_all` or `reset_mid_request`), `bytes_up` (client to target) and `bytes_down`.
    """

    def __init__(self, target: str, *, port: int = 0):
        host, _, target_port = target.rpartition(":")
        self._target = (host.strip("[]"), int(target_port))  # resolved in start(), not on import or construction
        self._port = port
        self._mode = FORWARD
        self._reset_after: int | None = None  # armed by reset_mid_request: bytes from a client that trip it
        self._links: set[_Link] = set()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.connections = self.refused = self.resets = self.bytes_up = self.bytes_down = 0

    # --- the test's side ----------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    @property
    def mode(self) -> str:
        return self._mode

    def start(self) -> FaultProxy:
        self._family, _, _, _, self._target_address = socket.getaddrinfo(*self._target, type=socket.SOCK_STREAM)[0]
        try:
            self._listener = socket.create_server(("127.0.0.1", self._port), backlog=128)
        except OSError as error:
            taken = (
                port_taken(self._port, "stop it, or let the proxy pick a free port (port=0)") if self._port else None
            )
            raise OSError(error.errno, taken or str(error)) from error
        self._listener.setblocking(False)
        self._wake_recv, self._wake_send = socket.socketpair()
        self._wake_recv.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_recv, selectors.EVENT_READ, "wake")
        self._running = True
        self._thread = threading.Thread(target=self._loop, name=f"FaultProxy({self.address})", daemon=True)
        self._thread.start()
        return self

    def forward(self) -> None:
        self._set_mode(FORWARD)

    def stall(self) -> None:
        """Stop passing bytes, both ways, on every connection; keep them open. New ones wait in the backlog."""
        self._set_mode(STALL)

    def refuse(self) -> None:
        """Reset every new connection as it arrives; open ones carry on."""
        self._set_mode(REFUSE)

    def reset_all(self) -> int:
        """Abort every open connection with a RST to both ends; returns how many there were."""
        return self._in_loop(self._reset_all)

    def reset_mid_request(self, after_bytes: int) -> None:
        """Arm a one-shot reset: the first connection to carry `after_bytes` bytes from its client, counted from
        this call, is aborted with a RST to both ends in the loop step that forwards the byte reaching that count.
        The target may have read them; no answer to them reaches the client. Then the proxy forwards as before, so
        a retry on a new connection passes; `resets` counts the one reset.

        Count past what a client sends unprompted: an idle HTTP/2 client sends only control frames, each at most
        17 bytes (PING), and only in reply to what it receives."""
        if after_bytes < 1:
            raise ValueError(f"after_bytes must be at least 1, got {after_bytes}")

        def arm():
            self._reset_after = after_bytes
            for link in self._links:
                link.up_since_armed = 0

        self._in_loop(arm)

    def close(self) -> None:
        if self._thread is None:
            return
        self._in_loop(self._stop)
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise RuntimeError(f"{self._thread.name} did not stop")
        self._thread = None
        for sock in (self._listener, self._wake_recv, self._wake_send):
            sock.close()
        self._selector.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- hand-over to the loop's thread ---------------------------------------------------------------------
    def _in_loop(self, command: Callable[[], object]):
        """Run `command` in the loop's thread (which owns every socket) and return its result."""
        if self._thread is None:
            raise RuntimeError("the proxy is not running")
        done: queue.SimpleQueue = queue.SimpleQueue()
        self._commands.put((command, done))
        self._wake_send.send(b"\0")
        try:
            failed, result = done.get(timeout=10)
        except queue.Empty:
            raise RuntimeError(f"{self._thread.name}: its loop did not answer within 10 s") from None
        if failed:
            raise result
        return result

    def _set_mode(self, mode: str) -> None:
        def apply():
            self._mode = mode
            self._listen()
            for link in list(self._links):
                self._watch(link)

        self._in_loop(apply)

    # --- the loop -------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while self._running:
            for key, events in self._selector.select():
                if not self._running:
                    break
                if key.data == "wake":
                    self._run_commands()
                elif key.data == "listener":
                    self._accept()
                elif not key.data.closed:
                    self._serve(key.data, key.fileobj, events)

    def _run_commands(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_recv.recv(4096):
                pass
        while not self._commands.empty():
            command, done = self._commands.get()
            try:
                done.put((False, command()))
            except Exception as error:  # pylint: disable=broad-except
                done.put((True, error))  # raised again in the caller's thread

    def _stop(self) -> None:
        self._running = False
        for link in list(self._links):
            self._close(link, abort=True)

    def _reset_all(self) -> int:
        links = list(self._links)
        for link in links:
            self._close(link, abort=True)
        self.resets += len(links)
        return len(links)

    def _listen(self) -> None:
        # In a stall the listener is not watched: the kernel completes handshakes into the backlog and no byte
        # passes, as on a network that drops packets. They are accepted when the stall ends.
        self._want(self._listener, 0 if self._mode == STALL else selectors.EVENT_READ, "listener")

    def _want(self, sock: socket.socket, events: int, data) -> None:
        """Watch `sock` for `events` (0: not at all), touching the selector only when that changes."""
        try:
            key = self._selector.get_key(sock)
        except KeyError:
            if events:
                self._selector.register(sock, events, data)
            return
        if not events:
            self._selector.unregister(sock)
        elif key.events != events:
            self._selector.modify(sock, events, data)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            if self._mode == REFUSE:
                _abort(client)
                self.refused += 1
                continue
            client.setblocking(False)
            upstream = socket.socket(self._family, socket.SOCK_STREAM)
            upstream.setblocking(False)
            for sock in (client, upstream):
                # Small gRPC frames must not wait for Nagle's algorithm: the proxy must not add latency.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, upstream)
            self._links.add(link)
            self.connections += 1
            # Connect without blocking the loop: done when the socket turns writable (see _serve).
            if upstream.connect_ex(self._target_address) not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                self._close(link, abort=True)
                continue
            self._watch(link)

    def _watch(self, link: _Link) -> None:
        """Watch the link's sockets for what can move now: nothing in a stall; else read from a socket while its
        peer's backlog is small, write to a socket while bytes wait for it (or its connect is under way)."""
        for sock in link.sockets:
            events = 0
            if self._mode != STALL:
                if sock is link.upstream and not link.connected:
                    events = selectors.EVENT_WRITE
                else:
                    if sock not in link.ended and len(link.pending[link.peer[sock]]) < _HIGH_WATER:
                        events |= selectors.EVENT_READ
                    if link.pending[sock]:
                        events |= selectors.EVENT_WRITE
            self._want(sock, events, link)

    def _serve(self, link: _Link, sock: socket.socket, events: int) -> None:
        try:
            if sock is link.upstream and not link.connected:
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise ConnectionRefusedError(error, "cannot connect to the target")
                link.connected = True
                self._flush(link, sock)  # what the client sent meanwhile, and its FIN if it already closed
            else:
                if events & selectors.EVENT_READ:
                    self._read(link, sock)
                    if self._tripped(link):
                        return
                if events & selectors.EVENT_WRITE:
                    self._flush(link, sock)
        except OSError:
            # One side failed (reset, refused, broken pipe): the other side learns it as a reset too.
            self._close(link, abort=True)
            return
        if link.ended == set(link.sockets) and not any(link.pending.values()):
            self._close(link, abort=False)
        else:
            self._watch(link)

    def _read(self, link: _Link, sock: socket.socket) -> None:
        data = sock.recv(_CHUNK)
        peer = link.peer[sock]
        if not data:
            link.ended.add(sock)
        elif sock is link.client:
            self.bytes_up += len(data)
            link.up_since_armed += len(data)
        else:
            self.bytes_down += len(data)
        link.pending[peer] += data
        # Write at once when the peer can take it: one trip through the selector less per message.
        if link.connected or peer is link.client:
            self._flush(link, peer)

    def _tripped(self, link: _Link) -> bool:
        """The armed one-shot reset, once `link` carried its bytes: `_read` has just written them on to the target
        (as far as its socket took them); nothing of the answer has been read, and the link is aborted now."""
        if self._reset_after is None or link.up_since_armed < self._reset_after:
            return False
        self._reset_after = None
        self._close(link, abort=True)
        self.resets += 1
        return True

    def _flush(self, link: _Link, sock: socket.socket) -> None:
        pending = link.pending[sock]
        if pending:
            try:
                sent = sock.send(pending)
            except (BlockingIOError, InterruptedError):
                return
            del pending[:sent]
        # Pass on a half-close once everything before it has been written.
        if not pending and link.peer[sock] in link.ended and sock not in link.shut:
            link.shut.add(sock)
            sock.shutdown(socket.SHUT_WR)

    def _close(self, link: _Link, abort: bool) -> None:
        link.closed = True
        self._links.discard(link)
        for sock in link.sockets:
            self._want(sock, 0, link)
            if abort:
                _abort(sock)
            else:
                sock.close()
