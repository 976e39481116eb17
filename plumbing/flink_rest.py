"""The one client of Flink's REST API (https://nightlies.apache.org/flink/flink-docs-release-1.20/docs/ops/rest_api/),
and the job states it reports.

Three places talk to a JobManager: the launcher's submission step (deploy.submit) and its Pub/Sub watch
(pipelines.flink_watch) over plain HTTP, the deploy CLI through a pod port-forward (deploy.cluster), and the
local cluster's tooling (localdev.flink). They share this client; only how a request travels differs, which is
the one method a subclass replaces (`_send`).

Only the standard library and `requests` (imported when a client is made) are used: the launcher image has both.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

# Flink job states after which a job no longer runs (Flink's JobStatus.isGloballyTerminalState). Any other state
# holds the job's name: another job of that name must not be started beside it.
TERMINAL_STATES = frozenset({"FINISHED", "CANCELED", "FAILED"})
# Task states of a job that has not finished deploying yet (the `tasks` counters of /jobs/overview).
PENDING_TASK_STATES = ("created", "scheduled", "deploying", "initializing")
# The entry class of a Beam job jar (`--output_executable_path`), for POST /jars/<id>/run.
BEAM_ENTRY_CLASS = "org.apache.beam.runners.flink.FlinkPipelineRunner"


class FlinkRestError(RuntimeError):
    """A call to Flink's REST API failed: Flink answered with a status the call does not expect (`Refused`) or not
    at all (`Unreachable`)."""


class Unreachable(FlinkRestError):
    """The REST API did not answer (the JobManager may still be starting)."""


class Refused(FlinkRestError):
    """Flink answered with an HTTP status the call does not expect (`status`)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def rest_url(flink_master: str) -> str:
    """http://host:port for a `--flink_master` value, which may or may not carry its scheme."""
    return flink_master.rstrip("/") if flink_master.startswith(("http://", "https://")) else f"http://{flink_master}"


class FlinkRest:
    """Flink's REST API at `base_url`; every call has a timeout and raises FlinkRestError when it fails."""

    def __init__(self, base_url: str, timeout: float = 60.0):
        self._base = base_url.rstrip("/")
        self._timeout = timeout
        self._session = None  # a requests.Session, made on the first call

    def _send(self, method: str, path: str, timeout: float, **kwargs) -> tuple[int, bytes]:
        """One HTTP request: (status, body). Raises Unreachable when no answer comes."""
        import requests

        if self._session is None:
            self._session = requests.Session()
        try:
            response = self._session.request(method, f"{self._base}{path}", timeout=timeout, **kwargs)
        except requests.RequestException as error:
            raise Unreachable(f"{method} {self._base}{path}: {error}") from error
        return response.status_code, response.content

    def call(
        self, method: str, path: str, expected: Collection[int] = (200,), timeout: float | None = None, **kwargs
    ) -> Any:
        """The decoded JSON answer ({} for an empty one); Refused when the status is not one of `expected`."""
        import json

        status, body = self._send(method, path, self._timeout if timeout is None else timeout, **kwargs)
        if status not in expected:
            text = body[:500].decode(errors="replace")
            raise Refused(f"{method} {path}: expected HTTP {tuple(expected)}, got {status}: {text}", status)
        return json.loads(body) if body else {}

    # --- cluster -------------------------------------------------------------------------------------------------
    def overview(self) -> dict:
        """taskmanagers, slots-total, slots-available, jobs-running, ..."""
        return self.call("GET", "/overview")

    def taskmanager_ids(self) -> list[str]:
        return [tm["id"] for tm in self.call("GET", "/taskmanagers")["taskmanagers"]]

    # --- jobs ----------------------------------------------------------------------------------------------------
    def jobs(self) -> list[dict]:
        """Every job the JobManager knows, from /jobs/overview: jid, name, state, tasks counters, ..."""
        return self.call("GET", "/jobs/overview")["jobs"]

    def job(self, job_id: str) -> dict:
        return self.call("GET", f"/jobs/{job_id}")

    def exceptions(self, job_id: str) -> list[dict]:
        """The job's failures, newest first: each with exceptionName, stacktrace and timestamp."""
        return self.call("GET", f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]

    def cancel(self, job_id: str) -> None:
        self.call("PATCH", f"/jobs/{job_id}?mode=cancel", expected=(200, 202))

    def stop_with_savepoint(self, job_id: str) -> str:
        # No targetDirectory: the cluster's state.savepoints.dir (the bucket) is used.
        return self.call("POST", f"/jobs/{job_id}/stop", expected=(200, 202), json={"drain": False})["request-id"]

    def savepoint_status(self, job_id: str, trigger_id: str) -> dict:
        return self.call("GET", f"/jobs/{job_id}/savepoints/{trigger_id}")

    # --- jars ----------------------------------------------------------------------------------------------------
    def upload_jar(self, path: str) -> str:
        with open(path, "rb") as jar:
            files = {"jarfile": (os.path.basename(path), jar, "application/x-java-archive")}
            reply = self.call("POST", "/jars/upload", files=files)
        return reply["filename"].rsplit("/", 1)[-1]

    def run_jar(self, jar_id: str, savepoint_path: str | None, entry_class: str = BEAM_ENTRY_CLASS) -> str:
        body: dict[str, Any] = {"entryClass": entry_class}
        if savepoint_path:
            # Every operator's state must find its place in the new job; a topology change that drops state fails
            # the start instead of silently losing it.
            body.update(savepointPath=savepoint_path, allowNonRestoredState=False)
        return self.call("POST", f"/jars/{jar_id}/run", json=body)["jobid"]

    def delete_jar(self, jar_id: str) -> None:
        self.call("DELETE", f"/jars/{jar_id}")


def active_jobs(jobs: list[dict], job_name: str) -> list[dict]:
    """The jobs of that name that have not reached a terminal state."""
    return [job for job in jobs if job["name"] == job_name and job["state"] not in TERMINAL_STATES]
