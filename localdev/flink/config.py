"""A local Flink's configuration: the ports it listens on, and its config.yaml, which is Flink's default one with a
few overrides, each with the reason it is there.

The overrides fit a small shared developer machine (2 cores), keep everything on loopback, and make faults
recover the way they do on Kubernetes: fixed-delay restarts while a TaskManager or the worker pool is down, and
checkpoints in local files so a restarted job resumes from the last one.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localdev.flink.install import FLINK_VERSION
from localdev.flink.layout import Layout


@dataclasses.dataclass(frozen=True)
class Ports:
    """Every fixed port the cluster listens on (Flink's internal data and blob ports are picked at random)."""

    rest: int = 8081  # Flink REST API and web UI: --flink_master
    jobmanager_rpc: int = 6123
    job: int = 8099  # Beam job service: --job_endpoint
    artifact: int = 8098  # Beam artifact staging
    expansion: int = 8097  # Beam Java expansion service (cross-language transforms)
    # Beam SDK worker pool: --environment_config. Not Beam's usual 50000: that is in Linux's ephemeral range
    # (32768-60999), where any outgoing connection (a test's to the emulator, say) may hold it.
    worker_pool: int = 8096

    def shifted(self, offset: int) -> Ports:
        """Every port moved by `offset`: a second cluster beside this one (`--port_offset`)."""
        moved = {name: port + offset for name, port in dataclasses.asdict(self).items()}
        outside = {name: port for name, port in moved.items() if not 1024 <= port <= 65535}
        if outside:
            raise ValueError(f"a port offset of {offset} moves ports out of 1024-65535: {outside}")
        return Ports(**moved)


def config_overrides(layout: Layout, ports: Ports, slots: int, restart_attempts: int) -> dict[str, tuple[Any, str]]:
    """This cluster's settings over Flink's defaults: key -> (value, why)."""
    p = ports
    return {
        "jobmanager.rpc.address": ("localhost", "loopback only: a developer machine, nothing remote"),
        "jobmanager.bind-host": ("localhost", ""),
        "jobmanager.rpc.port": (p.jobmanager_rpc, ""),
        "taskmanager.bind-host": ("localhost", ""),
        "taskmanager.host": ("localhost", ""),
        "rest.address": ("localhost", ""),
        "rest.bind-address": ("localhost", ""),
        "rest.port": (p.rest, ""),
        "taskmanager.numberOfTaskSlots": (
            slots,
            "two: the demo's two streaming pipelines (parallelism 1) side by side",
        ),
        "parallelism.default": (1, "a 2-core machine; pipelines ask for more with --parallelism"),
        "jobmanager.memory.process.size": ("1024m", "fits a small shared box (2 cores, 24 GB) beside the tests"),
        "taskmanager.memory.process.size": ("2560m", "Python work runs in the SDK workers, outside this JVM"),
        "taskmanager.memory.jvm-metaspace.size": (
            "768m",
            "each job loads Beam's runner in a class loader of its "
            "own; at the default 256m the TaskManager died of "
            "OutOfMemoryError: Metaspace after about 8 jobs",
        ),
        "restart-strategy.type": (
            "fixed-delay",
            "keep retrying while a TaskManager or the worker pool is down, "
            "so a killed and restarted one recovers the job",
        ),
        "restart-strategy.fixed-delay.attempts": (restart_attempts, ""),
        "restart-strategy.fixed-delay.delay": ("2 s", ""),
        "heartbeat.interval": (2000, "notice a killed TaskManager in seconds, not the default 50 s"),
        "heartbeat.timeout": (10000, ""),
        "state.backend.type": (
            "hashmap",
            "checkpoints in local files: a job restarted after a TaskManager "
            "was lost resumes from the last one (Flink 1.20 key names)",
        ),
        "execution.checkpointing.dir": (layout.checkpoints_dir.as_uri(), ""),
        "execution.checkpointing.savepoint-dir": ((layout.state_dir / "savepoints").as_uri(), ""),
        "classloader.check-leaked-classloader": (
            False,
            "Beam's runner touches the job classloader after a "
            "job ends; Beam's embedded Flink turns this check off too",
        ),
        "io.tmp.dirs": (str(layout.state_dir / "tmp"), "blobs and spill files under the state directory"),
        "blob.service.cleanup.interval": (
            60,
            "each job ships the 150 MB job server jar: let the TaskManager "
            "drop a finished job's copy after a minute, not an hour",
        ),
    }


def write_config(layout: Layout, overrides: Mapping[str, tuple[Any, str]]) -> Path:
    """<state>/conf: a copy of Flink's conf directory whose config.yaml carries this cluster's overrides."""
    shutil.rmtree(layout.conf_dir, ignore_errors=True)
    shutil.copytree(layout.flink_home / "conf", layout.conf_dir)
    defaults = flink_defaults(layout)
    lines = [
        "# Written by localdev/flink/config.py on every start: edit that file, not this one.",
        f"# Flink {FLINK_VERSION}'s defaults (from its conf/config.yaml), then this cluster's overrides.",
        "",
    ]
    lines += [_yaml_line(key, value) for key, value in defaults.items() if key not in overrides]
    lines += ["", "# --- overrides ---"]
    for key, (value, why) in overrides.items():
        if why:
            lines.append(f"# {why}")
        lines.append(_yaml_line(key, value))
    (layout.conf_dir / "config.yaml").write_text("\n".join(lines) + "\n")
    return layout.conf_dir


def java_opts(layout: Layout) -> str:
    """Flink's own JVM flags for Java 17 (module opens), reused for the job server."""
    return str(flink_defaults(layout).get("env.java.opts.all", ""))


def flink_defaults(layout: Layout) -> dict[str, Any]:
    """Flink's default config.yaml (as its distribution ships it), flattened to dotted keys."""
    import yaml

    return _flatten(yaml.safe_load((layout.flink_home / "conf" / "config.yaml").read_text()) or {})


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
