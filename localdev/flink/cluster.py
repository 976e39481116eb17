"""The local cluster's lifecycle: start its four components, wait until they are ready, record them, stop them,
kill and restart parts of it (fault injection), and report its status.

Each component runs in a session of its own (plumbing.process), so `stop` signals it together with its children
(the worker pool's SDK workers), and they keep running after the starting process exits. Their pids and start
times go to state.json, so `stop` and `status` also work from another process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localdev.flink import install
from localdev.flink.config import Ports, config_overrides, java_opts, write_config
from localdev.flink.install import FLINK_VERSION, JOB_SERVER_MAIN
from localdev.flink.jobs import JobsMixin
from localdev.flink.layout import PROJECT_ROOT, READY_TIMEOUT_SECS, FlinkError, Layout, display
from plumbing.flink_rest import FlinkRest, FlinkRestError
from plumbing.polling import PollTimeout, poll_until
from plumbing.ports import port_accepts, taken_by
from plumbing.process import ManagedProcess, log_tail, process_alive, process_start_time, stop_group

COMPONENTS = ("jobmanager", "taskmanager", "jobserver", "workerpool")
STOP_TIMEOUT_SECS = 15


@dataclasses.dataclass(frozen=True)
class ComponentStatus:
    name: str
    up: bool
    pid: int | None
    port: int | None


@dataclasses.dataclass(frozen=True)
class ClusterStatus:
    components: list[ComponentStatus]
    taskmanagers: int
    slots_total: int
    slots_free: int
    running_jobs: int

    @property
    def all_up(self) -> bool:
        return all(component.up for component in self.components) and self.taskmanagers > 0

    def describe(self) -> str:
        lines = [
            f"{c.name:<12} {'up' if c.up else 'down':<5} pid {c.pid or '-':<8} port {c.port or '-'}"
            for c in self.components
        ]
        lines.append(
            f"taskmanagers {self.taskmanagers}, slots {self.slots_free} free of {self.slots_total}, "
            f"running jobs {self.running_jobs}"
        )
        return "\n".join(lines)


class LocalFlink(Layout, JobsMixin, contextlib.AbstractContextManager):
    """A local Flink 1.20 standalone cluster, Beam's Flink job server and a Beam Python SDK worker pool."""

    def __init__(
        self,
        state_dir: str | os.PathLike | None = None,
        slots: int = 2,
        ports: Ports | None = None,
        restart_attempts: int = 100,
        verbose: bool = True,
    ):
        super().__init__(state_dir)
        self.slots = slots
        # Without explicit ports, those of the cluster the state file describes: `stop` and `status` from
        # another process then find a cluster started with other ports.
        recorded = self._read_state().get("ports")
        self.ports = ports or (Ports(**recorded) if recorded else Ports())
        # Fixed-delay restarts, 2 s apart: a job keeps retrying while a TaskManager or the worker pool is down
        # (about restart_attempts * 3 s). The flip side: a batch job that always fails takes that long to fail.
        self.restart_attempts = restart_attempts
        self.verbose = verbose
        self.client = FlinkRest(f"http://localhost:{self.ports.rest}", timeout=5)
        self._processes: dict[str, ManagedProcess] = {}  # those this object started, to reap them
        self._worker_env: dict[str, str] = {}

    def _say(self, message: str, end: str = "\n") -> None:
        if self.verbose:
            print(message, end=end, flush=True)

    # --- install and configuration --------------------------------------------------------------------------------
    def installed(self) -> bool:
        return install.installed(self)

    def install(self) -> None:
        """Install Flink and the job server under the state directory; skips what is already there."""
        install.install(self, self._say)

    def config_overrides(self) -> dict[str, tuple[Any, str]]:
        """This cluster's settings over Flink's defaults: key -> (value, why)."""
        return config_overrides(self, self.ports, self.slots, self.restart_attempts)

    def write_config(self) -> Path:
        return write_config(self, self.config_overrides())

    # --- state file -----------------------------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_file)

    def _record(self, name: str, pid: int) -> None:
        state = self._read_state() or self._new_state()
        state["processes"][name] = {"pid": pid, "start_time": process_start_time(pid), "log": str(self.log_path(name))}
        self._write_state(state)

    def _new_state(self) -> dict[str, Any]:
        return {
            "flink_version": FLINK_VERSION,
            "flink_home": str(self.flink_home),
            "slots": self.slots,
            "ports": dataclasses.asdict(self.ports),
            "processes": {},
        }

    def _pid(self, name: str) -> int | None:
        """The pid of a component if it is alive (ours: same start time as recorded)."""
        entry = self._read_state().get("processes", {}).get(name)
        if not entry:
            return None
        if name in self._processes:
            self._processes[name].poll()  # reap our own child, so a killed one is not a live zombie
        return entry["pid"] if process_alive(entry["pid"], entry.get("start_time")) else None

    def _live_components(self) -> dict[str, int]:
        return {name: pid for name in COMPONENTS if (pid := self._pid(name)) is not None}

    # --- lifecycle ------------------------------------------------------------------------------------------------
    def start(self, env: Mapping[str, str] | None = None) -> LocalFlink:
        """Install if needed, start all four components and wait until they are ready.

        env: extra environment for the worker pool, which its SDK workers inherit (e.g. PUBSUB_EMULATOR_HOST).
        """
        self._check_not_running()
        self.install()
        self._worker_env = dict(env or {})
        # Staged artifacts and Flink's blobs are per run: drop the previous run's, so they do not pile up.
        for directory in (self.state_dir / "artifacts", self.state_dir / "tmp"):
            shutil.rmtree(directory, ignore_errors=True)
        for directory in (self.logs_dir, self.checkpoints_dir, self.state_dir / "tmp", self.state_dir / "run"):
            directory.mkdir(parents=True, exist_ok=True)
        for name in COMPONENTS:  # one log per run; the previous run's stays beside it as <name>.log.1
            with contextlib.suppress(FileNotFoundError):
                self.log_path(name).replace(self.log_path(name).with_suffix(".log.1"))
        self.write_config()
        self._write_state(self._new_state())
        self._say(
            f"starting Flink {FLINK_VERSION} (JobManager, TaskManager), the Beam job server and the "
            f"SDK worker pool ... ",
            end="",
        )
        started = time.monotonic()
        try:
            # All four at once: they do not depend on each other to start (the TaskManager retries until the
            # JobManager is up), and the JVMs warm up in parallel.
            for name in COMPONENTS:
                self._launch(name)
            deadline = time.monotonic() + READY_TIMEOUT_SECS
            self._wait_for_cluster(deadline)
            self._wait_for_port("jobserver", self.ports.job, deadline)
            self._wait_for_port("workerpool", self.ports.worker_pool, deadline)
        except BaseException:
            self._say("failed")
            self.stop()
            raise
        self._say(f"{time.monotonic() - started:.0f} s")
        return self

    def _check_not_running(self) -> None:
        live = self._live_components()
        if live:
            pids = ", ".join(f"{name} {pid}" for name, pid in live.items())
            raise FlinkError(
                f"a local Flink from {display(self.state_dir)} is already running ({pids}): "
                f"run `python -m localdev.flink stop` first"
            )
        self.state_file.unlink(missing_ok=True)  # a stale file from a cluster that died
        holders: dict[str, list[str]] = {}  # who holds a port -> the ports it holds, as "8081 (rest)"
        for name, port in dataclasses.asdict(self.ports).items():
            if (holder := taken_by(port)) is not None:
                holders.setdefault(holder, []).append(f"{port} ({name})")
        if holders:
            taken = "; ".join(
                f"port {ports[0]} is taken by {holder}"
                if len(ports) == 1
                else f"ports {', '.join(ports)} are taken by {holder}"
                for holder, ports in holders.items()
            )
            raise FlinkError(
                f"{taken}: stop {'it' if len(holders) == 1 else 'them'}, or start this cluster on other ports "
                "(python -m localdev.flink start --port_offset=N)"
            )

    def _command(self, name: str) -> tuple[list[str], dict[str, str]]:
        # Not the emulator's address of whoever starts the cluster: pipelines send it to their workers in their
        # options (--pubsub_emulator_host), as they must on a cluster that was started elsewhere.
        env = {k: v for k, v in os.environ.items() if k != "PUBSUB_EMULATOR_HOST"}
        if name == "jobmanager" or name.startswith("taskmanager"):
            env.update(
                FLINK_HOME=str(self.flink_home),
                FLINK_CONF_DIR=str(self.conf_dir),
                FLINK_LOG_DIR=str(self.logs_dir / "flink"),
                FLINK_PID_DIR=str(self.state_dir / "run"),
            )
            # Foreground mode: the script execs the JVM, so the pid we hold is the JVM's and logs go to stdout.
            script = "jobmanager.sh" if name == "jobmanager" else "taskmanager.sh"
            return [str(self.flink_home / "bin" / script), "start-foreground"], env
        if name == "jobserver":
            p = self.ports
            command = [
                "java",
                "-Xmx1g",
                *java_opts(self).split(),
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
                "-cp",
                str(self.jobserver_jar),
                JOB_SERVER_MAIN,
                f"--flink-master=localhost:{p.rest}",
                f"--flink-conf-dir={self.conf_dir}",
                "--job-host=localhost",
                f"--job-port={p.job}",
                f"--artifact-port={p.artifact}",
                f"--expansion-port={p.expansion}",
                f"--artifacts-dir={self.state_dir / 'artifacts'}",
            ]
            return command, env
        if name == "workerpool":
            # The pool starts SDK workers as plain `python`: put this interpreter's bin directory first on PATH
            # so they run with the project's venv, as the sidecar container runs with its image's Python.
            env.update(self._worker_env)
            env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
            return [
                sys.executable,
                "-m",
                "pipelines.worker_pool",  # Beam's pool on loopback only (Beam's own binds every interface)
                f"--service_port={self.ports.worker_pool}",
            ], env
        raise ValueError(f"unknown component {name!r}")

    def _launch(self, name: str) -> ManagedProcess:
        command, env = self._command(name)
        # cwd is the project root so SDK workers import the project's modules as the pipeline does. The log is
        # appended to: a TaskManager or worker pool restarted by fault injection keeps one log per cluster run.
        process = ManagedProcess(
            command, self.log_path(name), name=f"the {name}", env=env, cwd=PROJECT_ROOT, append=True, error=FlinkError
        ).start()
        self._processes[name] = process
        self._record(name, process.pid)
        return process

    def _check_alive(self, name: str) -> None:
        if self._pid(name) is None:
            raise FlinkError(
                f"the {name} exited before it was ready; log: {self.log_path(name)}\n"
                f"{log_tail(self.log_path(name), 30)}"
            )

    def _wait_for_port(self, name: str, port: int, deadline: float) -> None:
        self._processes[name].wait_ready(
            lambda: port_accepts(port),
            timeout=max(0.0, deadline - time.monotonic()),
            what=f"listening on port {port}",
            interval=0.3,
        )

    def _wait_for_cluster(self, deadline: float, new_taskmanager_from: set[str] | None = None) -> None:
        """Until the REST API reports a TaskManager with free slots (with new_taskmanager_from: a new one)."""

        def registered() -> bool | None:
            self._check_alive("jobmanager")
            self._check_alive("taskmanager")
            with contextlib.suppress(FlinkRestError, ValueError, KeyError):
                if new_taskmanager_from is None:
                    overview = self.client.overview()
                    if overview["taskmanagers"] >= 1 and overview["slots-available"] >= 1:
                        return True
                elif set(self.client.taskmanager_ids()) - new_taskmanager_from:
                    return True
            return None

        try:
            poll_until(
                registered,
                timeout=max(0.0, deadline - time.monotonic()),
                interval=0.5,
                what="a TaskManager with free slots",
            )
        except PollTimeout:
            name = "jobmanager" if not port_accepts(self.ports.rest) else "taskmanager"
            raise FlinkError(
                f"Flink reported no TaskManager with free slots within {READY_TIMEOUT_SECS} s; "
                f"log: {self.log_path(name)}\n{log_tail(self.log_path(name), 30)}"
            ) from None

    def stop(self) -> None:
        """Stop every component (SIGTERM to each process group, SIGKILL what is left); idempotent."""
        entries = self._read_state().get("processes", {})
        # Reverse start order: the worker pool and job server first, so nothing submits to a dying cluster; then the
        # extra TaskManagers (add_taskmanager), the first one and the JobManager.
        extras = [name for name in entries if name not in COMPONENTS]
        for name in ["workerpool", "jobserver", *extras, "taskmanager", "jobmanager"]:
            if name in entries:
                self._stop_group(name, entries[name], signal.SIGTERM)
        self.state_file.unlink(missing_ok=True)
        self._processes.clear()

    def _stop_group(self, name: str, entry: Mapping[str, Any], sig: signal.Signals) -> None:
        """Signal a component's process group, wait until it is empty, SIGKILL what is left after the timeout."""
        pid = entry["pid"]
        if process_alive(pid) and not process_alive(pid, entry.get("start_time")):
            return  # the pid now belongs to another process: ours is long gone
        # Each component leads its own group (pgid == pid), which also holds its children, e.g. the SDK workers.
        own = self._processes.get(name)
        stop_group(
            pid, sig=sig, grace=STOP_TIMEOUT_SECS, reap=own.poll if own else None, name=f"the {name}", error=FlinkError
        )
        self._processes.pop(name, None)

    def __enter__(self) -> LocalFlink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- fault injection ------------------------------------------------------------------------------------------
    def kill_taskmanager(self) -> None:
        """SIGKILL the TaskManager's process group, as a crashed machine or an OOM-killed pod would go."""
        self._kill("taskmanager")

    def start_taskmanager(self, timeout: float = READY_TIMEOUT_SECS) -> None:
        """Start a TaskManager again and wait until it has registered with the JobManager."""
        if self._pid("taskmanager") is not None:
            raise FlinkError("the TaskManager is already running")
        before = set(self.client.taskmanager_ids())
        self._launch("taskmanager")
        self._wait_for_cluster(time.monotonic() + timeout, new_taskmanager_from=before)

    def add_taskmanager(self, timeout: float = READY_TIMEOUT_SECS) -> str:
        """Start one more TaskManager (as a second machine would bring its slots), wait until it has registered,
        and return its name (`taskmanager-2`, ...). The worker pool serves its SDK workers too: on one machine
        there is nothing to gain from a second pool. `stop` stops it with the rest; it is not restarted by
        `start_taskmanager`."""
        entries = self._read_state().get("processes", {})
        number = 2
        while f"taskmanager-{number}" in entries:
            number += 1
        name = f"taskmanager-{number}"
        before = set(self.client.taskmanager_ids())
        self._launch(name)
        self._wait_for_cluster(time.monotonic() + timeout, new_taskmanager_from=before)
        return name

    def kill_worker_pool(self) -> None:
        """SIGKILL the worker pool together with its SDK workers (they share its process group)."""
        self._kill("workerpool")

    def start_worker_pool(self, env: Mapping[str, str] | None = None, timeout: float = READY_TIMEOUT_SECS) -> None:
        """Start the worker pool again; env replaces the extra environment given before (None keeps it)."""
        if self._pid("workerpool") is not None:
            raise FlinkError("the worker pool is already running")
        if env is not None:
            self._worker_env = dict(env)
        self._launch("workerpool")
        self._wait_for_port("workerpool", self.ports.worker_pool, time.monotonic() + timeout)

    def _kill(self, name: str) -> None:
        entry = self._read_state().get("processes", {}).get(name)
        if not entry or self._pid(name) is None:
            raise FlinkError(f"the {name} is not running")
        self._stop_group(name, entry, signal.SIGKILL)

    # --- status and flags -----------------------------------------------------------------------------------------
    def status(self) -> ClusterStatus:
        ports = self.ports
        overview: dict[str, Any] = {}
        with contextlib.suppress(FlinkRestError, ValueError):
            if self._pid("jobmanager") is not None:
                overview = self.rest("GET", "/overview", timeout=3)
        component_ports = {
            "jobmanager": ports.rest,
            "taskmanager": None,
            "jobserver": ports.job,
            "workerpool": ports.worker_pool,
        }
        components = []
        for name in COMPONENTS:
            pid = self._pid(name)
            port = component_ports[name]
            if name == "jobmanager":
                up = pid is not None and bool(overview)
            elif name == "taskmanager":
                up = pid is not None and overview.get("taskmanagers", 0) > 0
            else:
                up = pid is not None and port_accepts(port)
            components.append(ComponentStatus(name, up, pid, port))
        return ClusterStatus(
            components,
            overview.get("taskmanagers", 0),
            overview.get("slots-total", 0),
            overview.get("slots-available", 0),
            overview.get("jobs-running", 0),
        )

    def pipeline_args(self, streaming: bool, checkpointing_interval_ms: int = 5000) -> list[str]:
        """Beam pipeline flags that run a Python pipeline on this cluster (SDK workers from the worker pool)."""
        p = self.ports
        args = [
            "--runner=FlinkRunner",
            f"--flink_master=localhost:{p.rest}",
            "--flink_version=1.20",
            f"--job_endpoint=localhost:{p.job}",
            "--environment_type=EXTERNAL",
            f"--environment_config=127.0.0.1:{p.worker_pool}",
        ]
        if streaming:
            args += ["--streaming", f"--checkpointing_interval={checkpointing_interval_ms}"]
        return args
