"""Child processes that always stop: one started in a process group of its own with a log, waited on until ready,
and stopped with everything it started (signal the group, wait, kill).

Every local stand-in is such a child: the Pub/Sub emulator (a launcher script and its JVM), a streaming pipeline,
the TF Serving stand-in, a local Flink's components (the worker pool with its SDK workers), a benchmark's
workers. Each runs in a session of its own, so that one signal reaches it and all its children, and so that a
Ctrl-C in the terminal reaches only the parent, which then stops them in order.

    with ManagedProcess([...], "build/x.log", name="the model server") as server:
        server.wait_ready(lambda: server.logged(b"serving"), timeout=60, what="its 'serving' line")
        ...

`stop_group` and `group_members` also work on a group that another process started (its pid recorded in a
state file), which is how `python -m localdev.flink stop` stops a cluster started elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from plumbing.polling import PollTimeout, poll_until

# How often a wait looks again: /proc scans and poll() are cheap, and stopping should not idle.
_POLL_SECS = 0.1


class ProcessError(RuntimeError):
    """A managed process died before it was ready, was not ready in time, ran too long or outlived SIGKILL."""


# --- /proc: the one reading of process state -------------------------------------------------------------------
def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state [0], pgrp [2], start time [19]), None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def process_start_time(pid: int) -> str | None:
    stat = proc_stat(pid)
    return stat[19] if stat else None


def process_alive(pid: int, start_time: str | None = None) -> bool:
    """Alive and not a zombie; with start_time, also the same process (pids are reused)."""
    stat = proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return start_time is None or stat[19] == start_time


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group. Zombies are skipped: a child killed under a process that
    has not reaped it yet is gone for our purposes, and a group may be stopped from another process than the one
    that started it (which alone could reap it)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))) and int(stat[2]) == pgid:
            if stat[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def stop_group(
    pgid: int,
    *,
    sig: signal.Signals = signal.SIGTERM,
    grace: float = 10.0,
    reap: Callable[[], object] | None = None,
    name: str | None = None,
    error: type[Exception] = ProcessError,
) -> None:
    """Signal a process group, wait up to `grace` seconds until it has no live member, SIGKILL what is left and
    wait as long again; raise `error` if something outlives SIGKILL.

    A process group id cannot be reused while the group has members, so whatever is found in it is still ours.
    `reap` (the leader's Popen.poll, when we are its parent) is called while waiting, so it does not linger as a
    zombie.
    """

    def empty() -> bool | None:
        if reap is not None:
            reap()
        return True if not group_members(pgid) else None

    if empty():
        return
    for current in dict.fromkeys((sig, signal.SIGKILL)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, current)
        with contextlib.suppress(PollTimeout):
            poll_until(empty, timeout=grace, interval=_POLL_SECS)
            return
    raise error(f"{name or 'the process group'} (process group {pgid}) survived SIGKILL: {group_members(pgid)}")


def log_tail(path: str | os.PathLike, lines: int = 25) -> str:
    """The last lines of a log file, "" if there is none."""
    with contextlib.suppress(OSError):
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip("\n")
    return ""


# --- one child ---------------------------------------------------------------------------------------------------
class ManagedProcess(contextlib.AbstractContextManager):
    """A command run in its own session, its stdout and stderr in `log_path`.

    name: how messages call it ("the Pub/Sub emulator"). error: the exception class its failures raise, so each
    caller keeps its own (EmulatorError, PipelineDied, ...). append: keep the log's earlier runs and mark where
    this one starts (a process restarted on the same log); readiness looks only at what this run wrote.
    """

    def __init__(
        self,
        command: Sequence[str],
        log_path: str | os.PathLike,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        append: bool = False,
        error: type[Exception] = ProcessError,
    ):
        self.command = [str(part) for part in command]
        self.log_path = Path(log_path)
        self.name = name or " ".join(self.command[:3])
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._append = append
        self._error = error
        self._log_offset = 0
        self.popen: subprocess.Popen | None = None

    # --- state ---------------------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        if self.popen is None:
            raise self._error(f"{self.name} has not been started")
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode if self.popen is not None else None

    def poll(self) -> int | None:
        """The exit code once the process has exited (and reaps it), else None."""
        return self.popen.poll() if self.popen is not None else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    # --- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab" if self._append else "wb") as log:
            if self._append:
                log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.command)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            # A new session: the child and all it starts form one process group that stop() signals together.
            # stdin from /dev/null: a background child never reads the terminal.
            self.popen = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
            )
        return self

    def stop(self, grace: float = 10.0, sig: signal.Signals = signal.SIGTERM) -> None:
        """Signal the whole group (SIGTERM by default), wait up to `grace` seconds, SIGKILL what is left; idempotent."""
        if self.popen is None:
            return
        stop_group(self.popen.pid, sig=sig, grace=grace, reap=self.popen.poll, name=self.name, error=self._error)
        self.popen.poll()

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- waiting -------------------------------------------------------------------------------------------------
    def raise_if_exited(self, when: str = "") -> None:
        """Raise the caller's error, with the log's tail, if the process has exited (`when`: " before it was ready")."""
        code = self.poll()
        if code is not None:
            raise self._error(f"{self.name} exited with code {code}{when}; log {self.log_path}:\n{self.tail()}")

    def wait_ready(self, ready: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2) -> None:
        """Until `ready()` is true; the caller's error, with the log's tail, if the process exits first or
        `timeout` seconds pass. `what` says what ready means, for that message ("listening on port 8099")."""

        def check() -> bool | None:
            self.raise_if_exited(" before it was ready")
            return True if ready() else None

        try:
            poll_until(check, timeout=timeout, interval=interval, what=what)
        except PollTimeout:
            raise self._error(
                f"{self.name} was not ready ({what}) within {timeout:.0f} s; log {self.log_path}:\n{self.tail()}"
            ) from None

    def wait(self, timeout: float) -> int:
        """The exit code; past `timeout` seconds the process is stopped and the caller's error raised."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise self._error(f"{self.name} ran past {timeout:.0f} s; log {self.log_path}") from None

    # --- the log -------------------------------------------------------------------------------------------------
    def tail(self, lines: int = 25) -> str:
        return log_tail(self.log_path, lines)

    def logged(self, text: bytes) -> bool:
        """Whether this run has written `text` to the log (earlier runs' lines in an appended log do not count)."""
        with contextlib.suppress(OSError):
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return text in log.read()
        return False
