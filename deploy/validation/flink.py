"""The Flink check: the session cluster the pipelines are submitted to (HA, state in a bucket, a restart
strategy, metrics, ports) and the worker-pool sidecar in which their Python code runs.
"""

from __future__ import annotations

import re

from deploy.manifests import MAIN_CONTAINER, flink_deployment, flink_role_pod, pods
from deploy.site import (
    FLINK_INTERNAL_PORTS,
    FLINK_METRICS_PORT,
    FLINK_REST_PORT,
    TF_SERVING_CLIENT_LABEL,
    WORKER_POOL_COMMAND,
    WORKER_POOL_CONTAINER,
)


def check_flink(docs: list[dict]) -> list[str]:
    """Session mode, HA, state in a bucket, restart strategy, metrics, ports; the worker-pool sidecar."""
    problems = []
    fd = flink_deployment(docs)
    spec = fd["spec"]
    config = spec.get("flinkConfiguration", {})
    if "job" in spec:
        problems.append("FlinkDeployment: session mode (no spec.job): the pipelines are submitted by their Jobs")
    if spec.get("flinkVersion") != "v1_20":
        problems.append(f"FlinkDeployment: flinkVersion must be v1_20, got {spec.get('flinkVersion')!r}")
    expected = {
        "rest.port": str(FLINK_REST_PORT),
        **{k: str(v) for k, v in FLINK_INTERNAL_PORTS.items()},
        "high-availability.type": "kubernetes",
        "metrics.reporter.prom.factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
        "metrics.reporter.prom.port": str(FLINK_METRICS_PORT),
    }
    for key, value in expected.items():
        if config.get(key) != value:
            problems.append(f"FlinkDeployment: flinkConfiguration {key} must be {value!r}, got {config.get(key)!r}")
    for key in ("high-availability.storageDir", "state.checkpoints.dir", "state.savepoints.dir"):
        if not re.fullmatch(r"gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]/\S+", config.get(key, "")):
            problems.append(f"FlinkDeployment: {key} must be a gs:// path in the bucket, got {config.get(key)!r}")
    if not config.get("restart-strategy.type"):
        problems.append("FlinkDeployment: a restart strategy (restart-strategy.type) is required")
    for pod in pods([fd]):
        annotations = pod.metadata.get("annotations", {})
        if annotations.get("prometheus.io/port") != str(FLINK_METRICS_PORT):
            problems.append(f"{pod.owner}: prometheus.io/port must be {FLINK_METRICS_PORT}")
        main_ports = {p["containerPort"] for p in pod.container(MAIN_CONTAINER).get("ports", [])}
        if FLINK_METRICS_PORT not in main_ports:
            problems.append(f"{pod.owner}: {MAIN_CONTAINER} must declare port {FLINK_METRICS_PORT} (metrics)")
    taskmanager = flink_role_pod([fd], "taskManager")
    try:
        sidecar = taskmanager.container(WORKER_POOL_CONTAINER)
    except LookupError as error:
        return problems + [str(error)]
    # The pool is unauthenticated: it listens on loopback (pipelines.worker_pool), where only the TaskManager
    # beside it can reach it, and declares no port; the image's own `boot --worker_pool` would listen everywhere.
    if sidecar.get("command") != WORKER_POOL_COMMAND or sidecar.get("args"):
        problems.append(
            f"{WORKER_POOL_CONTAINER}: must run the loopback worker pool, command {WORKER_POOL_COMMAND} and no "
            f"args, got command {sidecar.get('command')} args {sidecar.get('args')}"
        )
    if sidecar.get("ports"):
        problems.append(f"{WORKER_POOL_CONTAINER}: the worker pool listens on loopback; declare no ports")
    for probe in ("readinessProbe", "livenessProbe"):
        if "exec" not in sidecar.get(probe, {}):
            problems.append(
                f"{WORKER_POOL_CONTAINER}: {probe} must be an exec probe (a kubelet probe would dial the pod's "
                f"address, where the loopback pool does not listen), got {sidecar.get(probe)}"
            )
    if taskmanager.labels.get(TF_SERVING_CLIENT_LABEL) != "true":
        problems.append(f"TaskManagers run the pipelines' code and must carry {TF_SERVING_CLIENT_LABEL}=true")
    return problems
