"""A real local Apache Flink 1.20 cluster for Beam's portable FlinkRunner, without Docker.

It plays, on one machine, the parts the Kubernetes deployment has: a standalone Flink 1.20.3 JobManager and
TaskManager (from the `apache-flink` PyPI distribution), Beam's Flink job server (the Java Beam runner, assembled
with Maven), and a Beam Python SDK worker pool (the role of the TaskManager's `--worker_pool` sidecar). Everything
lives under one state directory (default `build/flink/`, git-ignored; see layout.py).

    flink = LocalFlink().start()          # installs on first use (about a minute), then about 20 s
    options = PipelineOptions(flink.pipeline_args(streaming=False))
    ...
    flink.stop()

    python -m localdev.flink install|start|stop|status [--state_dir DIR] [--slots N] [--port_offset N]

One module per job:
    layout.py   the state directory's paths, FlinkError
    install.py  Flink from PyPI and the job server jar from pom.xml (why Beam 2.62 Java, why one shaded jar)
    config.py   the ports, and config.yaml: Flink's defaults plus this cluster's overrides, each with its reason
    cluster.py  LocalFlink: start, wait until ready, stop, fault injection, status
    jobs.py     the jobs on it through Flink's REST API: wait until one runs, cancel them all
    cli.py      the command line (`__main__.py` runs it)
"""

from localdev.flink.cli import main
from localdev.flink.cluster import COMPONENTS, STOP_TIMEOUT_SECS, ClusterStatus, ComponentStatus, LocalFlink
from localdev.flink.config import Ports
from localdev.flink.install import (
    BEAM_FLINK_RUNNER,
    BEAM_JAVA_VERSION,
    FLINK_CLIENT_ARTIFACTS,
    FLINK_VERSION,
    JOB_SERVER_MAIN,
    check_prerequisites,
    jobserver_pom,
)
from localdev.flink.jobs import PENDING_TASK_STATES, TERMINAL_JOB_STATES
from localdev.flink.layout import DEFAULT_STATE_DIR, PROJECT_ROOT, READY_TIMEOUT_SECS, FlinkError

# Where the tests and older callers found the process and port checks; they live in plumbing now.
from plumbing.ports import port_accepts, port_in_use
from plumbing.process import group_members, process_alive, process_start_time

__all__ = [
    "BEAM_FLINK_RUNNER",
    "BEAM_JAVA_VERSION",
    "COMPONENTS",
    "DEFAULT_STATE_DIR",
    "FLINK_CLIENT_ARTIFACTS",
    "FLINK_VERSION",
    "JOB_SERVER_MAIN",
    "PENDING_TASK_STATES",
    "PROJECT_ROOT",
    "READY_TIMEOUT_SECS",
    "STOP_TIMEOUT_SECS",
    "TERMINAL_JOB_STATES",
    "ClusterStatus",
    "ComponentStatus",
    "FlinkError",
    "LocalFlink",
    "Ports",
    "check_prerequisites",
    "group_members",
    "jobserver_pom",
    "main",
    "port_accepts",
    "port_in_use",
    "process_alive",
    "process_start_time",
]
