"""Watches a streaming job on Flink from the launcher, so that workers that cannot reach Pub/Sub fail visibly.

A worker whose Pub/Sub reader has had no successful pull for --pubsub_unreachable_secs fails its task with
PubsubUnreachable (transforms.pubsub_pull); Flink restarts the job, which would otherwise show RUNNING while it
reads nothing. The launcher stays attached to a streaming job, so it polls the job's exceptions through Flink's
REST API, and on that failure prints the reason, cancels the job and exits non-zero.
"""

from __future__ import annotations

import logging
import threading

from plumbing.flink_rest import FlinkRest, active_jobs, rest_url
from transforms.pubsub_pull import UNREACHABLE_MARKER

_LOGGER = logging.getLogger(__name__)

POLL_SECS = 5.0


class PubsubWatch:
    """A daemon thread polling `job_name`'s exceptions on the cluster at `flink_master` (host:port of its REST API).
    `reason` holds the failure once seen; the job is then cancelled."""

    def __init__(self, flink_master: str, job_name: str, poll_secs: float = POLL_SECS):
        self._rest = FlinkRest(rest_url(flink_master), timeout=10)
        self._job_name = job_name
        self._poll_secs = poll_secs
        self._stop = threading.Event()
        self.reason: str | None = None
        self._thread = threading.Thread(target=self._run, name="flink-pubsub-watch", daemon=True)

    def start(self) -> PubsubWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        job_id = None
        while not self._stop.wait(self._poll_secs):
            try:
                if job_id is None:
                    job_id = next((j["jid"] for j in active_jobs(self._rest.jobs(), self._job_name)), None)
                    continue
                for entry in self._rest.exceptions(job_id):
                    if UNREACHABLE_MARKER in entry.get("stacktrace", ""):
                        self.reason = _reason(entry["stacktrace"])
                        _LOGGER.error("the job's workers cannot reach Pub/Sub; cancelling it: %s", self.reason)
                        self._rest.cancel(job_id)
                        return
            except Exception as error:  # pylint: disable=broad-except
                # The REST API is a convenience here: the job runs on whether or not it answers.
                _LOGGER.debug("watching %s: %s", self._job_name, error)


def _reason(stacktrace: str) -> str:
    """The PubsubUnreachable message out of a (Java-wrapped) Python stack trace."""
    marker = f"{UNREACHABLE_MARKER}: "
    lines = [line for line in stacktrace.splitlines() if marker in line]
    return lines[-1].rsplit(marker, 1)[-1].strip() if lines else (stacktrace.splitlines() or ["unknown"])[0]
