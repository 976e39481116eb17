"""A real local Apache Flink 1.20 cluster for Beam's portable FlinkRunner, without Docker.

It plays, on one machine, the parts the Kubernetes deployment has: a standalone Flink 1.20.3 JobManager and
TaskManager (from the `apache-flink` PyPI distribution), Beam's Flink job server (the Java Beam runner, assembled
with Maven), and a Beam Python SDK worker pool (the role of the TaskManager's `--worker_pool` sidecar). Everything
lives under one state directory (default `build/flink/`, git-ignored):

    dist/        Flink 1.20.3, installed by pip, kept out of the project venv (apache-flink pins an old Beam)
    jobserver/   the pom generated here and the job server: one shaded jar (see "Submission time" below)
    conf/        this cluster's Flink configuration: Flink's default config.yaml plus a few commented overrides
    logs/        one log per component and run (jobmanager, taskmanager, jobserver, workerpool; the previous
                 run's as *.log.1), the install logs, and Flink's own rolling copies in logs/flink/
    checkpoints/ Flink checkpoints (filesystem), so a restarted TaskManager resumes from the last one
    state.json   pids and ports, so `stop` and `status` work from another process

Why Beam 2.62 Java: this machine's Maven mirror has no Beam 2.7x job server. The 2.62 runner built for Flink 1.19
submits to a 1.20 cluster once its Flink client jars are the cluster's own version (1.20.3), pinned in the pom.
Pipelines stay on the Beam 2.77 Python SDK; they reach the job server over the portable job API.

Submission time: the job server stages its whole classpath with every job (Beam's FlinkJobInvoker detects it;
no pipeline option turns that off), and the JobManager stores each staged jar in its blob server one round trip
at a time, about 80 ms per jar here. As 165 separate jars, submitting a trivial pipeline took 13 s (a prototype
with flink-dist-1.20.3.jar also on the classpath: 46 s); as one shaded jar, the way Beam publishes its own job
server, 2 to 3 s.

    flink = LocalFlink().start()          # installs on first use (about a minute), then about 20 s
    options = PipelineOptions(flink.pipeline_args(streaming=False))
    ...
    flink.stop()

    python -m localdev.flink install|start|stop|status [--state_dir DIR] [--slots N]

Processes started by `start` keep running after the starting process exits; each runs in its own session, so
`stop` can signal a component together with its children (the worker pool's SDK workers).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = PROJECT_ROOT / "build" / "flink"

FLINK_VERSION = "1.20.3"
# Newest Beam Java release whose Flink runner this machine's Maven mirror serves; see the module docstring.
BEAM_JAVA_VERSION = "2.62.0"
BEAM_FLINK_RUNNER = "beam-runners-flink-1.19"
# Every org.apache.flink artifact the 1.19 runner pulls in, pinned to the cluster's version: a 1.19 client fails
# to submit to 1.20 (ClassNotFoundException: RestoreMode) and mixed versions fail in odd places.
FLINK_CLIENT_ARTIFACTS = (
    "flink-annotations", "flink-clients", "flink-connector-datagen", "flink-core", "flink-core-api",
    "flink-datastream", "flink-datastream-api", "flink-file-sink-common", "flink-hadoop-fs", "flink-java",
    "flink-metrics-core", "flink-optimizer", "flink-queryable-state-client-java", "flink-rpc-akka-loader",
    "flink-rpc-core", "flink-runtime", "flink-streaming-java",
)
JOB_SERVER_MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"

COMPONENTS = ("jobmanager", "taskmanager", "jobserver", "workerpool")
READY_TIMEOUT_SECS = 120
STOP_TIMEOUT_SECS = 15
# Flink job states after which a job no longer runs (Flink's JobStatus.isGloballyTerminalState).
TERMINAL_JOB_STATES = frozenset({"FINISHED", "CANCELED", "FAILED"})
# Task states of a job that has not finished deploying yet (the `tasks` counters of /jobs/overview).
PENDING_TASK_STATES = ("created", "scheduled", "deploying", "initializing")


class FlinkError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Ports:
    """Every fixed port the cluster listens on (Flink's internal data and blob ports are picked at random)."""

    rest: int = 8081  # Flink REST API and web UI: --flink_master
    jobmanager_rpc: int = 6123
    job: int = 8099  # Beam job service: --job_endpoint
    artifact: int = 8098  # Beam artifact staging
    expansion: int = 8097  # Beam Java expansion service (cross-language transforms)
    worker_pool: int = 50000  # Beam SDK worker pool: --environment_config


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
        lines = [f"{c.name:<12} {'up' if c.up else 'down':<5} pid {c.pid or '-':<8} port {c.port or '-'}"
                 for c in self.components]
        lines.append(f"taskmanagers {self.taskmanagers}, slots {self.slots_free} free of {self.slots_total}, "
                     f"running jobs {self.running_jobs}")
        return "\n".join(lines)


# --- small process and network helpers ------------------------------------------------------------------------
def port_in_use(port: int) -> bool:
    """True when something listens on the port: binding fails (SO_REUSEADDR, as the JVM and gRPC bind) or it accepts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return port_accepts(port)


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("localhost", port), timeout=timeout):
            return True
    except OSError:
        return False


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], start time is [19]), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2:].split()


def process_start_time(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[19] if stat else None


def process_alive(pid: int, start_time: str | None = None) -> bool:
    """Alive and not a zombie; with start_time, also the same process (pids are reused)."""
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return start_time is None or stat[19] == start_time


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group. Zombies are skipped: a child killed under a process that
    has not reaped it yet is gone for our purposes, and `stop` may run from another process than `start`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) and int(stat[2]) == pgid:
            if stat[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def _display(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _log_tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"(no log at {path})"
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


class LocalFlink(contextlib.AbstractContextManager):
    """A local Flink 1.20 standalone cluster, Beam's Flink job server and a Beam Python SDK worker pool."""

    def __init__(
        self,
        state_dir: str | os.PathLike | None = None,
        slots: int = 2,
        ports: Ports | None = None,
        restart_attempts: int = 100,
        verbose: bool = True,
    ):
        self.state_dir = Path(state_dir or DEFAULT_STATE_DIR).resolve()
        self.slots = slots
        # Without explicit ports, those of the cluster the state file describes: `stop` and `status` from
        # another process then find a cluster started with other ports.
        recorded = self._read_state().get("ports")
        self.ports = ports or (Ports(**recorded) if recorded else Ports())
        # Fixed-delay restarts, 2 s apart: a job keeps retrying while a TaskManager or the worker pool is down
        # (about restart_attempts * 3 s). The flip side: a batch job that always fails takes that long to fail.
        self.restart_attempts = restart_attempts
        self.verbose = verbose
        self._processes: dict[str, subprocess.Popen] = {}  # those this object started, to reap them
        self._worker_env: dict[str, str] = {}

    # --- layout ---------------------------------------------------------------------------------------------------
    @property
    def dist_dir(self) -> Path:
        return self.state_dir / "dist"

    @property
    def flink_home(self) -> Path:
        return self.dist_dir / "pyflink"

    @property
    def jobserver_dir(self) -> Path:
        return self.state_dir / "jobserver"

    @property
    def jobserver_jar(self) -> Path:
        return self.jobserver_dir / "beam-flink-jobserver.jar"

    @property
    def conf_dir(self) -> Path:
        return self.state_dir / "conf"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def checkpoints_dir(self) -> Path:
        return self.state_dir / "checkpoints"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def log_path(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def _say(self, message: str, end: str = "\n") -> None:
        if self.verbose:
            print(message, end=end, flush=True)

    # --- install --------------------------------------------------------------------------------------------------
    def installed(self) -> bool:
        return self._flink_installed() and self._jobserver_installed()

    def _flink_installed(self) -> bool:
        return (self.flink_home / "lib" / f"flink-dist-{FLINK_VERSION}.jar").exists()

    def _jobserver_installed(self) -> bool:
        pom = self.jobserver_dir / "pom.xml"
        # The pom names every version: a changed pom (an upgrade) rebuilds the jar.
        return self.jobserver_jar.exists() and pom.exists() and pom.read_text() == jobserver_pom()

    def install(self) -> None:
        """Install Flink and the job server under the state directory; skips what is already there."""
        check_prerequisites()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if not self._flink_installed():
            self._install_flink()
        if not self._jobserver_installed():
            self._install_jobserver()

    def _install_flink(self) -> None:
        # Into a scratch directory first, so an interrupted install is never mistaken for a complete one.
        partial = self.state_dir / "dist.partial"
        shutil.rmtree(partial, ignore_errors=True)
        self._say(f"installing Flink {FLINK_VERSION} from PyPI into {_display(self.dist_dir)} ... ", end="")
        started = time.monotonic()
        log = self.logs_dir / "install-flink.log"
        # --no-deps: apache-flink pins an old apache-beam; the cluster needs only the jars and scripts inside.
        command = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
                   "--target", str(partial),
                   f"apache-flink=={FLINK_VERSION}", f"apache-flink-libraries=={FLINK_VERSION}"]
        self._run_logged(command, log, what="pip install of Flink")
        for script in (partial / "pyflink" / "bin").iterdir():
            script.chmod(0o755)  # the wheel ships the shell scripts without their executable bit
        shutil.rmtree(self.dist_dir, ignore_errors=True)
        partial.rename(self.dist_dir)
        self._say(f"{time.monotonic() - started:.0f} s")

    def _install_jobserver(self) -> None:
        self.jobserver_dir.mkdir(parents=True, exist_ok=True)
        pom = self.jobserver_dir / "pom.xml"
        pom.write_text(jobserver_pom())
        shutil.rmtree(self.jobserver_dir / "target", ignore_errors=True)
        self._say(f"building the Beam {BEAM_JAVA_VERSION} Flink job server with Maven into "
                  f"{_display(self.jobserver_jar)} ... ", end="")
        started = time.monotonic()
        flink_deps = self.jobserver_dir / "flink-dependencies.txt"
        # `package` shades the classpath into one jar; `dependency:list` records which Flink versions went in.
        command = ["mvn", "-B", "-q", "-f", str(pom), "package", "dependency:list", "-DincludeScope=runtime",
                   "-DincludeGroupIds=org.apache.flink", f"-DoutputFile={flink_deps}"]
        self._run_logged(command, self.logs_dir / "install-jobserver.log", what="Maven")
        stray = [line.strip() for line in flink_deps.read_text().splitlines()
                 if line.strip().startswith("org.apache.flink:flink-") and f":{FLINK_VERSION}:" not in line
                 and ":flink-shaded-" not in line]
        if stray:
            raise FlinkError(f"the job server would mix Flink versions (the cluster runs {FLINK_VERSION}): "
                             f"{', '.join(stray)}; pin them in FLINK_CLIENT_ARTIFACTS")
        # The jar appears under its final name only once complete: an interrupted build is never taken for one.
        (self.jobserver_dir / "target" / "beam-flink-jobserver.jar").replace(self.jobserver_jar)
        shutil.rmtree(self.jobserver_dir / "target", ignore_errors=True)
        self._say(f"{time.monotonic() - started:.0f} s")

    def _run_logged(self, command: list[str], log: Path, what: str) -> None:
        with open(log, "wb") as out:
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=self.state_dir,
                                    stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            self._say("failed")
            raise FlinkError(f"{what} failed with exit code {result.returncode}: {' '.join(command)}\n"
                             f"log: {log}\n{_log_tail(log)}")

    # --- configuration --------------------------------------------------------------------------------------------
    def config_overrides(self) -> dict[str, tuple[Any, str]]:
        """This cluster's settings over Flink's defaults: key -> (value, why)."""
        p = self.ports
        return {
            "jobmanager.rpc.address": ("localhost", "loopback only: a developer machine, nothing remote"),
            "jobmanager.bind-host": ("localhost", ""),
            "jobmanager.rpc.port": (p.jobmanager_rpc, ""),
            "taskmanager.bind-host": ("localhost", ""),
            "taskmanager.host": ("localhost", ""),
            "rest.address": ("localhost", ""),
            "rest.bind-address": ("localhost", ""),
            "rest.port": (p.rest, ""),
            "taskmanager.numberOfTaskSlots": (self.slots, "two: the demo's two streaming pipelines (parallelism 1) side by side"),
            "parallelism.default": (1, "a 2-core machine; pipelines ask for more with --parallelism"),
            "jobmanager.memory.process.size": ("1024m", "fits a small shared box (2 cores, 24 GB) beside the tests"),
            "taskmanager.memory.process.size": ("2560m", "Python work runs in the SDK workers, outside this JVM"),
            "taskmanager.memory.jvm-metaspace.size": ("768m", "each job loads Beam's runner in a class loader of its "
                                                      "own; at the default 256m the TaskManager died of "
                                                      "OutOfMemoryError: Metaspace after about 8 jobs"),
            "restart-strategy.type": ("fixed-delay", "keep retrying while a TaskManager or the worker pool is down, "
                                      "so a killed and restarted one recovers the job"),
            "restart-strategy.fixed-delay.attempts": (self.restart_attempts, ""),
            "restart-strategy.fixed-delay.delay": ("2 s", ""),
            "heartbeat.interval": (2000, "notice a killed TaskManager in seconds, not the default 50 s"),
            "heartbeat.timeout": (10000, ""),
            "state.backend.type": ("hashmap", "checkpoints in local files: a job restarted after a TaskManager "
                                   "was lost resumes from the last one (Flink 1.20 key names)"),
            "execution.checkpointing.dir": (self.checkpoints_dir.as_uri(), ""),
            "execution.checkpointing.savepoint-dir": ((self.state_dir / "savepoints").as_uri(), ""),
            "classloader.check-leaked-classloader": (False, "Beam's runner touches the job classloader after a "
                                                     "job ends; Beam's embedded Flink turns this check off too"),
            "io.tmp.dirs": (str(self.state_dir / "tmp"), "blobs and spill files under the state directory"),
            "blob.service.cleanup.interval": (60, "each job ships the 150 MB job server jar: let the TaskManager "
                                              "drop a finished job's copy after a minute, not an hour"),
        }

    def write_config(self) -> Path:
        """<state>/conf: a copy of Flink's conf directory whose config.yaml carries this cluster's overrides."""
        import yaml

        shutil.rmtree(self.conf_dir, ignore_errors=True)
        shutil.copytree(self.flink_home / "conf", self.conf_dir)
        defaults = _flatten(yaml.safe_load((self.flink_home / "conf" / "config.yaml").read_text()) or {})
        overrides = self.config_overrides()
        lines = ["# Written by localdev/flink.py on every start: edit that file, not this one.",
                 f"# Flink {FLINK_VERSION}'s defaults (from its conf/config.yaml), then this cluster's overrides.", ""]
        lines += [_yaml_line(key, value) for key, value in defaults.items() if key not in overrides]
        lines += ["", "# --- overrides ---"]
        for key, (value, why) in overrides.items():
            if why:
                lines.append(f"# {why}")
            lines.append(_yaml_line(key, value))
        (self.conf_dir / "config.yaml").write_text("\n".join(lines) + "\n")
        return self.conf_dir

    def _java_opts(self) -> str:
        """Flink's own JVM flags for Java 17 (module opens), reused for the job server."""
        import yaml

        defaults = _flatten(yaml.safe_load((self.flink_home / "conf" / "config.yaml").read_text()) or {})
        return str(defaults.get("env.java.opts.all", ""))

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

    def _record(self, name: str, process: subprocess.Popen) -> None:
        state = self._read_state() or self._new_state()
        state["processes"][name] = {"pid": process.pid, "start_time": process_start_time(process.pid),
                                    "log": str(self.log_path(name))}
        self._write_state(state)

    def _new_state(self) -> dict[str, Any]:
        return {"flink_version": FLINK_VERSION, "flink_home": str(self.flink_home), "slots": self.slots,
                "ports": dataclasses.asdict(self.ports), "processes": {}}

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
    def start(self, env: Mapping[str, str] | None = None) -> "LocalFlink":
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
        self._say(f"starting Flink {FLINK_VERSION} (JobManager, TaskManager), the Beam job server and the "
                  f"SDK worker pool ... ", end="")
        started = time.monotonic()
        try:
            # All four at once: they do not depend on each other to start (the TaskManager retries until the
            # JobManager is up), and the JVMs warm up in parallel.
            self._launch("jobmanager")
            self._launch("taskmanager")
            self._launch("jobserver")
            self._launch("workerpool")
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
            raise FlinkError(f"a local Flink from {_display(self.state_dir)} is already running ({pids}): "
                             f"run `python -m localdev.flink stop` first")
        self.state_file.unlink(missing_ok=True)  # a stale file from a cluster that died
        taken = [f"{port} ({name})" for name, port in dataclasses.asdict(self.ports).items() if port_in_use(port)]
        if taken:
            raise FlinkError(f"port already in use: {', '.join(taken)}; another Flink, job server or worker pool "
                             f"is running outside {_display(self.state_dir)}. Stop it, or pass other Ports.")

    def _command(self, name: str) -> tuple[list[str], dict[str, str]]:
        # Not the emulator's address of whoever starts the cluster: pipelines send it to their workers in their
        # options (--pubsub_emulator_host), as they must on a cluster that was started elsewhere.
        env = {k: v for k, v in os.environ.items() if k != "PUBSUB_EMULATOR_HOST"}
        if name in ("jobmanager", "taskmanager"):
            env.update(FLINK_HOME=str(self.flink_home), FLINK_CONF_DIR=str(self.conf_dir),
                       FLINK_LOG_DIR=str(self.logs_dir / "flink"), FLINK_PID_DIR=str(self.state_dir / "run"))
            # Foreground mode: the script execs the JVM, so the pid we hold is the JVM's and logs go to stdout.
            return [str(self.flink_home / "bin" / f"{name}.sh"), "start-foreground"], env
        if name == "jobserver":
            p = self.ports
            classpath = str(self.jobserver_jar)
            command = ["java", "-Xmx1g", *self._java_opts().split(),
                       "-Dorg.slf4j.simpleLogger.showDateTime=true",
                       "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
                       "-cp", classpath, JOB_SERVER_MAIN,
                       f"--flink-master=localhost:{p.rest}", f"--flink-conf-dir={self.conf_dir}",
                       "--job-host=localhost", f"--job-port={p.job}", f"--artifact-port={p.artifact}",
                       f"--expansion-port={p.expansion}", f"--artifacts-dir={self.state_dir / 'artifacts'}"]
            return command, env
        if name == "workerpool":
            # The pool starts SDK workers as plain `python`: put this interpreter's bin directory first on PATH
            # so they run with the project's venv, as the sidecar container runs with its image's Python.
            env.update(self._worker_env)
            env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
            return [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                    f"--service_port={self.ports.worker_pool}"], env
        raise ValueError(f"unknown component {name!r}")

    def _launch(self, name: str) -> subprocess.Popen:
        command, env = self._command(name)
        with open(self.log_path(name), "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
            log.flush()
            # A new session per component: it outlives the starting process, and stop() signals its whole group.
            # cwd is the project root so SDK workers import the project's modules as the pipeline does.
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, cwd=PROJECT_ROOT, start_new_session=True)
        self._processes[name] = process
        self._record(name, process)
        return process

    def _check_alive(self, name: str) -> None:
        if self._pid(name) is None:
            raise FlinkError(f"the {name} exited before it was ready; log: {self.log_path(name)}\n"
                             f"{_log_tail(self.log_path(name))}")

    def _wait_for_port(self, name: str, port: int, deadline: float) -> None:
        while not port_accepts(port):
            self._check_alive(name)
            if time.monotonic() > deadline:
                raise FlinkError(f"the {name} did not listen on port {port} within {READY_TIMEOUT_SECS} s; "
                                 f"log: {self.log_path(name)}\n{_log_tail(self.log_path(name))}")
            time.sleep(0.3)

    def _wait_for_cluster(self, deadline: float, new_taskmanager_from: set[str] | None = None) -> None:
        """Until the REST API reports a TaskManager with free slots (with new_taskmanager_from: a new one)."""
        while True:
            self._check_alive("jobmanager")
            self._check_alive("taskmanager")
            with contextlib.suppress(OSError, ValueError, KeyError):
                if new_taskmanager_from is None:
                    overview = self.rest("GET", "/overview")
                    if overview["taskmanagers"] >= 1 and overview["slots-available"] >= 1:
                        return
                elif set(self._taskmanager_ids()) - new_taskmanager_from:
                    return
            if time.monotonic() > deadline:
                name = "jobmanager" if not port_accepts(self.ports.rest) else "taskmanager"
                raise FlinkError(f"Flink reported no TaskManager with free slots within {READY_TIMEOUT_SECS} s; "
                                 f"log: {self.log_path(name)}\n{_log_tail(self.log_path(name))}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop every component (SIGTERM to each process group, SIGKILL what is left); idempotent."""
        state = self._read_state()
        entries = state.get("processes", {})
        # Reverse start order: the worker pool and job server first, so nothing submits to a dying cluster.
        for name in reversed(COMPONENTS):
            if name in entries:
                self._stop_group(name, entries[name], signal.SIGTERM)
        self.state_file.unlink(missing_ok=True)
        self._processes.clear()

    def _stop_group(self, name: str, entry: Mapping[str, Any], sig: signal.Signals) -> None:
        """Signal a component's process group, wait until it is empty, SIGKILL what is left after the timeout."""
        pid = entry["pid"]
        if process_alive(pid) and not process_alive(pid, entry.get("start_time")):
            return  # the pid now belongs to another process: ours is long gone
        # start_new_session made each component the leader of its own group: pgid == pid. The group also holds
        # the children, e.g. the SDK workers of the worker pool.
        for current in dict.fromkeys((sig, signal.SIGKILL)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, current)
            until = time.monotonic() + STOP_TIMEOUT_SECS
            while time.monotonic() < until:
                if name in self._processes:
                    self._processes[name].poll()  # reap our own child
                if not group_members(pid):
                    self._processes.pop(name, None)
                    return
                time.sleep(0.1)
        raise FlinkError(f"the {name} (process group {pid}) survived SIGKILL: {group_members(pid)}")

    def __enter__(self) -> "LocalFlink":
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
        before = set(self._taskmanager_ids())
        self._launch("taskmanager")
        self._wait_for_cluster(time.monotonic() + timeout, new_taskmanager_from=before)

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

    # --- REST API -------------------------------------------------------------------------------------------------
    def rest(self, method: str, path: str, timeout: float = 5) -> Any:
        """One call to Flink's REST API; the decoded JSON answer."""
        request = urllib.request.Request(f"http://localhost:{self.ports.rest}{path}", method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def _taskmanager_ids(self) -> list[str]:
        return [tm["id"] for tm in self.rest("GET", "/taskmanagers")["taskmanagers"]]

    def jobs(self) -> list[dict[str, Any]]:
        """All jobs the JobManager knows, from /jobs/overview: jid, name, state, tasks counters, ..."""
        return self.rest("GET", "/jobs/overview")["jobs"]

    def running_jobs(self) -> list[dict[str, Any]]:
        """Jobs that have not reached a terminal state (running, restarting, being cancelled, ...)."""
        return [job for job in self.jobs() if job["state"] not in TERMINAL_JOB_STATES]

    def cancel_all_jobs(self, timeout: float = 60) -> list[str]:
        """Cancel every job still running and wait until they are terminal; returns their ids."""
        deadline = time.monotonic() + timeout
        cancelled = []
        for job in self._patiently(self.running_jobs, deadline):
            with contextlib.suppress(urllib.error.HTTPError):  # it may have finished in between
                self._patiently(lambda: self.rest("PATCH", f"/jobs/{job['jid']}?mode=cancel"), deadline)
            cancelled.append(job["jid"])
        while any(job["jid"] in cancelled for job in self._patiently(self.running_jobs, deadline)):
            if time.monotonic() > deadline:
                raise FlinkError(f"jobs {cancelled} were not cancelled within {timeout} s")
            time.sleep(0.5)
        return cancelled

    @staticmethod
    def _patiently(call, deadline: float):
        """`call()`, again while the REST API times out or refuses (a JobManager busy on a loaded machine) until
        `deadline`. Flink's own answers (HTTP errors) are not retried."""
        while True:
            try:
                return call()
            except urllib.error.HTTPError:
                raise
            except OSError:  # timeouts, refused connections, URLError
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def wait_for_job_running(self, timeout: float = READY_TIMEOUT_SECS, name: str | None = None) -> dict[str, Any]:
        """Wait until a job (whose name contains `name`, if given) is RUNNING with all its tasks deployed."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError, KeyError):
                for job in self.jobs():
                    if name is not None and name not in job["name"]:
                        continue
                    tasks = job.get("tasks", {})
                    if job["state"] == "RUNNING" and not any(tasks.get(state) for state in PENDING_TASK_STATES):
                        return job
            if time.monotonic() > deadline:
                which = f"named *{name}* " if name else ""
                log = self.log_path("jobserver")
                raise FlinkError(f"no job {which}was running within {timeout} s; job server log: {log}\n"
                                 f"{_log_tail(log)}")
            time.sleep(0.5)

    # --- status and flags -----------------------------------------------------------------------------------------
    def status(self) -> ClusterStatus:
        ports = self.ports
        overview: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            if self._pid("jobmanager") is not None:
                overview = self.rest("GET", "/overview", timeout=3)
        component_ports = {"jobmanager": ports.rest, "taskmanager": None, "jobserver": ports.job,
                           "workerpool": ports.worker_pool}
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
        return ClusterStatus(components, overview.get("taskmanagers", 0), overview.get("slots-total", 0),
                             overview.get("slots-available", 0), overview.get("jobs-running", 0))

    def pipeline_args(self, streaming: bool, checkpointing_interval_ms: int = 5000) -> list[str]:
        """Beam pipeline flags that run a Python pipeline on this cluster (SDK workers from the worker pool)."""
        p = self.ports
        args = ["--runner=FlinkRunner", f"--flink_master=localhost:{p.rest}", "--flink_version=1.20",
                f"--job_endpoint=localhost:{p.job}", "--environment_type=EXTERNAL",
                f"--environment_config=localhost:{p.worker_pool}"]
        if streaming:
            args += ["--streaming", f"--checkpointing_interval={checkpointing_interval_ms}"]
        return args


def check_prerequisites() -> None:
    missing = []
    if shutil.which("java") is None:
        missing.append("java (a JDK 11 or 17; Debian: apt-get install openjdk-17-jdk-headless)")
    if shutil.which("mvn") is None:
        missing.append("mvn (Apache Maven 3; Debian: apt-get install maven)")
    if shutil.which("bash") is None:
        missing.append("bash (Flink's start scripts are bash)")
    if missing:
        raise FlinkError("the local Flink needs, on PATH: " + "; ".join(missing))


def jobserver_pom() -> str:
    """A throwaway Maven project that shades Beam's Flink job server, with Flink 1.20.3 clients, into one jar."""
    managed = "\n".join(
        f"      <dependency><groupId>org.apache.flink</groupId><artifactId>{artifact}</artifactId>"
        f"<version>{FLINK_VERSION}</version></dependency>"
        for artifact in FLINK_CLIENT_ARTIFACTS
    )
    return f"""<!-- Generated by localdev/flink.py: Beam's Flink job server as one jar. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local</groupId>
  <artifactId>beam-flink-jobserver</artifactId>
  <version>1</version>
  <properties>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
  </properties>
  <dependencyManagement>
    <!-- The cluster's Flink version for every Flink artifact the 1.19 runner depends on. -->
    <dependencies>
{managed}
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>{BEAM_FLINK_RUNNER}</artifactId>
      <version>{BEAM_JAVA_VERSION}</version>
    </dependency>
    <!-- A logging backend, so the job server's log says what it does. -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>1.7.30</version>
    </dependency>
  </dependencies>
  <build>
    <finalName>beam-flink-jobserver</finalName>
    <plugins>
      <plugin>
        <!-- One jar, as Beam's published job server is: Flink uploads staged jars one at a time. -->
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-shade-plugin</artifactId>
        <version>3.6.0</version>
        <executions>
          <execution>
            <phase>package</phase>
            <goals><goal>shade</goal></goals>
            <configuration>
              <createDependencyReducedPom>false</createDependencyReducedPom>
              <shadedArtifactAttached>false</shadedArtifactAttached>
              <filters>
                <filter>
                  <artifact>*:*</artifact>
                  <!-- Signatures of the input jars do not hold for the merged one. -->
                  <excludes>
                    <exclude>META-INF/*.SF</exclude>
                    <exclude>META-INF/*.DSA</exclude>
                    <exclude>META-INF/*.RSA</exclude>
                  </excludes>
                </filter>
              </filters>
              <transformers>
                <!-- Beam finds its registrars (file systems, options, translators) through service files. -->
                <transformer implementation="org.apache.maven.plugins.shade.resource.ServicesResourceTransformer"/>
              </transformers>
            </configuration>
          </execution>
        </executions>
      </plugin>
    </plugins>
  </build>
</project>
"""


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _yaml_line(key: str, value: Any) -> str:
    import yaml

    return yaml.safe_dump({key: value}, default_flow_style=False, width=10_000).strip()


# --- command line ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localdev.flink",
        description="A local Flink 1.20 cluster with Beam's job server and a Python SDK worker pool. "
                    "Pipelines tell their SDK workers where Pub/Sub is (--pubsub_emulator_host, by default the "
                    "launcher's PUBSUB_EMULATOR_HOST); the cluster needs no emulator address of its own.",
    )
    parser.add_argument("command", choices=("install", "start", "stop", "status"))
    parser.add_argument("--state_dir", default=str(DEFAULT_STATE_DIR), help="default: build/flink in the project")
    parser.add_argument("--slots", type=int, default=2, help="task slots of the TaskManager (start)")
    args = parser.parse_args(argv)
    flink = LocalFlink(state_dir=args.state_dir, slots=args.slots)
    try:
        if args.command == "install":
            check_prerequisites()
            if flink.installed():
                print(f"already installed in {_display(flink.state_dir)}")
            flink.install()
        elif args.command == "start":
            flink.start()
            print(f"\nup: Flink UI http://localhost:{flink.ports.rest}, Beam job server localhost:{flink.ports.job}, "
                  f"SDK worker pool localhost:{flink.ports.worker_pool}")
            print(f"logs: {_display(flink.logs_dir)}/{{{','.join(COMPONENTS)}}}.log")
            print("pipeline flags (batch):\n  " + " ".join(flink.pipeline_args(streaming=False)))
            print("pipeline flags (streaming):\n  " + " ".join(flink.pipeline_args(streaming=True)))
            print("stop with: python -m localdev.flink stop")
        elif args.command == "stop":
            running = bool(flink._live_components())
            flink.stop()
            print("stopped" if running else "nothing was running")
        else:
            status = flink.status()
            print(status.describe())
            return 0 if status.all_up else 3
    except FlinkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
