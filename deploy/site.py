"""The deployment's fixed facts, stated once: its namespace, its ports, the names of its containers, and the
per-site settings (base/site.env).

The offline checks (deploy/validation/) hold every manifest to these values, and the CLI (deploy/__main__.py)
uses the same ones to reach the live cluster, so the two cannot drift apart. Nothing heavy is imported here: the
CLI imports this module just to build its parser.
"""

from __future__ import annotations

from deploy import MANIFESTS_DIR

KUBERNETES_VERSION = "1.32"
NAMESPACE = "marketplace-inference"
GPU = "nvidia.com/gpu"

# Ports, each stated once here and checked against every place the manifests use it.
FLINK_REST_PORT = 8081
FLINK_INTERNAL_PORTS = {
    "taskmanager.data.port": 6121,
    "taskmanager.rpc.port": 6122,
    "jobmanager.rpc.port": 6123,
    "blob.server.port": 6124,
}
FLINK_METRICS_PORT = 9249
BEAM_WORKER_POOL_PORT = 50000  # fixed by the SDK image's boot --worker_pool
TF_SERVING_GRPC_PORT = 8500
TF_SERVING_REST_PORT = 8501
TF_SERVING_METRICS_PATH = "/monitoring/prometheus/metrics"

WORKER_POOL_CONTAINER = "beam-worker-pool"
TF_SERVING_CONTAINER = "tf-serving"
LAUNCHER_CONTAINER = "launcher"
TF_SERVING_CLIENT_LABEL = "marketplace-inference/tf-serving-client"


def site_settings() -> dict[str, str]:
    """base/site.env as {name: value}: what differs between installations (project, buckets, accounts)."""
    text = (MANIFESTS_DIR / "base" / "site.env").read_text(encoding="utf-8")
    return dict(line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))
