"""The jobs on a local cluster, through Flink's REST API: list them, wait until one runs, cancel them all.

A mixin of LocalFlink (it needs the cluster's `client`, a plumbing.flink_rest.FlinkRest, and its `log_path`), so
tests and benchmarks keep calling `flink.wait_for_job_running()` and `flink.cancel_all_jobs()`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from localdev.flink.layout import READY_TIMEOUT_SECS, FlinkError
from plumbing.flink_rest import PENDING_TASK_STATES, TERMINAL_STATES, FlinkRest, FlinkRestError, Refused, Unreachable
from plumbing.polling import PollTimeout, poll_until
from plumbing.process import log_tail

T = TypeVar("T")

# Kept under their old names: the local cluster's callers import them from localdev.flink.
TERMINAL_JOB_STATES = TERMINAL_STATES


class JobsMixin:
    client: FlinkRest
    log_path: Callable[[str], Path]

    def rest(self, method: str, path: str, timeout: float = 5) -> Any:
        """One call to Flink's REST API; the decoded JSON answer. Any 2xx status is an answer."""
        return self.client.call(method, path, expected=range(200, 300), timeout=timeout)

    def jobs(self) -> list[dict[str, Any]]:
        """All jobs the JobManager knows, from /jobs/overview: jid, name, state, tasks counters, ..."""
        return self.client.jobs()

    def running_jobs(self) -> list[dict[str, Any]]:
        """Jobs that have not reached a terminal state (running, restarting, being cancelled, ...)."""
        return [job for job in self.jobs() if job["state"] not in TERMINAL_STATES]

    def cancel_all_jobs(self, timeout: float = 60) -> list[str]:
        """Cancel every job still running and wait until they are terminal; returns their ids."""
        deadline = time.monotonic() + timeout
        cancelled = []
        for job in _patiently(self.running_jobs, deadline):
            with contextlib.suppress(Refused):  # it may have finished in between
                _patiently(lambda jid=job["jid"]: self.client.cancel(jid), deadline)
            cancelled.append(job["jid"])

        def all_terminal() -> bool | None:
            still = [job for job in _patiently(self.running_jobs, deadline) if job["jid"] in cancelled]
            return None if still else True

        try:
            poll_until(all_terminal, timeout=max(0.0, deadline - time.monotonic()), interval=0.5)
        except PollTimeout:
            raise FlinkError(f"jobs {cancelled} were not cancelled within {timeout} s") from None
        return cancelled

    def wait_for_job_running(self, timeout: float = READY_TIMEOUT_SECS, name: str | None = None) -> dict[str, Any]:
        """Wait until a job (whose name contains `name`, if given) is RUNNING with all its tasks deployed."""

        def running_job() -> dict[str, Any] | None:
            with contextlib.suppress(FlinkRestError, ValueError, KeyError):
                for job in self.jobs():
                    if name is not None and name not in job["name"]:
                        continue
                    tasks = job.get("tasks", {})
                    if job["state"] == "RUNNING" and not any(tasks.get(state) for state in PENDING_TASK_STATES):
                        return job
            return None

        try:
            return poll_until(running_job, timeout=timeout, interval=0.5, what="a running job")
        except PollTimeout:
            which = f"named *{name}* " if name else ""
            log = self.log_path("jobserver")
            raise FlinkError(
                f"no job {which}was running within {timeout} s; job server log: {log}\n{log_tail(log, 30)}"
            ) from None


def _patiently(call: Callable[[], T], deadline: float) -> T:
    """`call()`, again while the REST API does not answer (a JobManager busy on a loaded machine) until `deadline`,
    then its last failure. Flink's own answers (HTTP errors) are not retried."""
    failure: Unreachable | None = None

    def attempt() -> tuple[T] | None:
        nonlocal failure
        try:
            return (call(),)  # in a tuple: a call may answer None
        except Unreachable as error:
            failure = error
            return None

    try:
        return poll_until(attempt, timeout=max(0.0, deadline - time.monotonic()), interval=1)[0]
    except PollTimeout:
        raise failure from None
