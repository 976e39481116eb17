"""Where a local Flink keeps everything: the state directory's layout, and the error every part raises.

<state_dir>/ (default build/flink/, git-ignored)
    dist/        Flink, installed by pip, kept out of the project venv (apache-flink pins an old Beam)
    jobserver/   the pom rendered from pom.xml and the job server: one shaded jar
    conf/        this cluster's Flink configuration (config.py writes it on every start)
    logs/        one log per component and run (the previous run's as *.log.1), the install logs, and
                 Flink's own rolling copies in logs/flink/
    checkpoints/ Flink checkpoints (filesystem), so a restarted TaskManager resumes from the last one
    state.json   pids and ports, so `stop` and `status` work from another process
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = PROJECT_ROOT / "build" / "flink"
# How long a component, a restarted TaskManager or a submitted job may take to be ready on a loaded 2-core machine.
READY_TIMEOUT_SECS = 120


class FlinkError(RuntimeError):
    pass


class Layout:
    """The paths under one state directory."""

    def __init__(self, state_dir: str | os.PathLike | None = None):
        self.state_dir = Path(state_dir or DEFAULT_STATE_DIR).resolve()
        self.dist_dir = self.state_dir / "dist"
        self.flink_home = self.dist_dir / "pyflink"
        self.jobserver_dir = self.state_dir / "jobserver"
        self.jobserver_jar = self.jobserver_dir / "beam-flink-jobserver.jar"
        self.conf_dir = self.state_dir / "conf"
        self.logs_dir = self.state_dir / "logs"
        self.checkpoints_dir = self.state_dir / "checkpoints"
        self.state_file = self.state_dir / "state.json"

    def log_path(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"


def display(path: Path) -> str:
    """A path as a person reads it: relative to the working directory when under it."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)
