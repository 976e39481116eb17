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
BEAM_WORKER_POOL_PORT = 50000
# The worker pool listens on loopback only (pipelines/worker_pool.py): its one client is the TaskManager beside it.
BEAM_WORKER_POOL_HOST = "127.0.0.1"
WORKER_POOL_COMMAND = [
    "python",
    "-m",
    "pipelines.worker_pool",
    f"--service_port={BEAM_WORKER_POOL_PORT}",
    "--container_executable=/opt/apache/beam/boot",
]
TF_SERVING_GRPC_PORT = 8500
TF_SERVING_REST_PORT = 8501
TF_SERVING_METRICS_PATH = "/monitoring/prometheus/metrics"
# Envoy in front of TF Serving (base/tf-serving/envoy.yaml): the network reaches these two ports, not TF Serving's.
TF_SERVING_TLS_PORT = 8443  # gRPC over mutual TLS, PredictionService only
TF_SERVING_METRICS_PORT = 8502  # the metrics path only
ENVOY_CONTAINER = "envoy"
# The TaskManagers' client certificate names this identity (URI SAN); Envoy lets only it call PredictionService.
TF_SERVING_CLIENT_IDENTITY = "spiffe://marketplace-inference/flink-taskmanager"
PREDICTION_SERVICE = "/tensorflow.serving.PredictionService/"
# The only Secrets a pod may mount, each in one container: TLS keys made outside the repository (deploy README).
SERVER_TLS_SECRET = "tf-serving-server-tls"
CLIENT_TLS_SECRET = "tf-serving-client-tls"
CLIENT_TLS_DIR = "/etc/tf-serving-client"

WORKER_POOL_CONTAINER = "beam-worker-pool"
TF_SERVING_CONTAINER = "tf-serving"
LAUNCHER_CONTAINER = "launcher"
TF_SERVING_CLIENT_LABEL = "marketplace-inference/tf-serving-client"

# The Kubernetes service accounts, one per job, and the site.env setting naming each one's Google service account.
JOBMANAGER_ACCOUNT = "flink-jobmanager"
TASKMANAGER_ACCOUNT = "flink-taskmanager"
SUBMITTER_ACCOUNT = "pipeline-submitter"
TF_SERVING_ACCOUNT = "tf-serving"
GOOGLE_ACCOUNTS = {
    JOBMANAGER_ACCOUNT: "JOBMANAGER_GSA",
    TASKMANAGER_ACCOUNT: "WORKER_GSA",
    SUBMITTER_ACCOUNT: "SUBMITTER_GSA",
    TF_SERVING_ACCOUNT: "TF_SERVING_GSA",
}
# Where a pod mounts its service account token; only the containers that call the Kubernetes API may.
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


def site_settings() -> dict[str, str]:
    """base/site.env as {name: value}: what differs between installations (project, buckets, accounts)."""
    text = (MANIFESTS_DIR / "base" / "site.env").read_text(encoding="utf-8")
    return dict(line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))
