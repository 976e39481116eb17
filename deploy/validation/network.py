"""The network check: the paths the system needs are open and the ones it must not have are closed, asked of
the NetworkPolicy evaluator (deploy/network_policy.py) for the real pods and a few stand-ins (another pod,
another namespace, DNS, Google's APIs, the operator, Prometheus, the metadata server).
"""

from __future__ import annotations

from deploy.manifests import find, flink_deployment, pods
from deploy.network_policy import Peer, allowed, external, peer
from deploy.site import (
    FLINK_INTERNAL_PORTS,
    FLINK_METRICS_PORT,
    FLINK_REST_PORT,
    NAMESPACE,
    TF_SERVING_GRPC_PORT,
    TF_SERVING_METRICS_PORT,
    TF_SERVING_REST_PORT,
    TF_SERVING_TLS_PORT,
    site_settings,
)


def check_network_policies(docs: list[dict]) -> list[str]:
    """The paths the system needs are open, and the ones it must not have are closed."""
    all_pods = {p.owner: peer(NAMESPACE, p.labels) for p in pods(docs)}
    fd_name = flink_deployment(docs)["metadata"]["name"]
    jobmanager = all_pods[f"FlinkDeployment/{fd_name}[jobManager]"]
    taskmanager = all_pods[f"FlinkDeployment/{fd_name}[taskManager]"]
    serving = all_pods["Deployment/tf-serving"]
    submitters = [v for k, v in all_pods.items() if k.startswith("Job/")]
    stranger = peer(NAMESPACE, {"app": "something-else"})
    dns = peer("kube-system", {"k8s-app": "kube-dns"})
    google = external("199.36.153.9")  # private.googleapis.com, through Private Google Access
    google_public = external("142.250.74.42")  # a public Google address: the internet, as far as policies know
    control_plane = external(site_settings()["CONTROL_PLANE_CIDR"].split("/")[0])
    operator = peer("flink-operator", {"app.kubernetes.io/name": "flink-kubernetes-operator"})
    operator_namespace_other_pod = peer("flink-operator", {"app": "webhook-or-anything"})
    prometheus = peer("monitoring", {"app.kubernetes.io/name": "prometheus"})
    other_namespace = peer("default", {"app": "curious"})
    metadata_server = external("169.254.169.254")

    must: list[tuple[str, Peer, Peer, int, str]] = [
        ("TaskManager -> TF Serving over mTLS (Envoy)", taskmanager, serving, TF_SERVING_TLS_PORT, "TCP"),
        ("TaskManager -> JobManager RPC", taskmanager, jobmanager, FLINK_INTERNAL_PORTS["jobmanager.rpc.port"], "TCP"),
        ("TaskManager -> JobManager blobs", taskmanager, jobmanager, FLINK_INTERNAL_PORTS["blob.server.port"], "TCP"),
        ("JobManager -> TaskManager RPC", jobmanager, taskmanager, FLINK_INTERNAL_PORTS["taskmanager.rpc.port"], "TCP"),
        (
            "TaskManager -> TaskManager data",
            taskmanager,
            taskmanager,
            FLINK_INTERNAL_PORTS["taskmanager.data.port"],
            "TCP",
        ),
        ("operator -> JobManager REST", operator, jobmanager, FLINK_REST_PORT, "TCP"),
        ("Prometheus -> Flink metrics", prometheus, taskmanager, FLINK_METRICS_PORT, "TCP"),
        ("Prometheus -> TF Serving metrics (Envoy)", prometheus, serving, TF_SERVING_METRICS_PORT, "TCP"),
        ("TaskManager -> Google APIs", taskmanager, google, 443, "TCP"),
        ("JobManager -> Google APIs", jobmanager, google, 443, "TCP"),
        ("JobManager -> Kubernetes API", jobmanager, control_plane, 443, "TCP"),
        ("TaskManager -> Kubernetes API (HA ConfigMap)", taskmanager, control_plane, 443, "TCP"),
        ("TF Serving -> Google APIs (model bucket)", serving, google, 443, "TCP"),
        ("TaskManager -> metadata server (Workload Identity)", taskmanager, metadata_server, 80, "TCP"),
        ("TF Serving -> DNS", serving, dns, 53, "UDP"),
        ("TaskManager -> DNS", taskmanager, dns, 53, "UDP"),
    ]
    must += [
        (f"submitter {i} -> JobManager REST", s, jobmanager, FLINK_REST_PORT, "TCP") for i, s in enumerate(submitters)
    ]
    must += [(f"submitter {i} -> DNS", s, dns, 53, "UDP") for i, s in enumerate(submitters)]
    must += [(f"submitter {i} -> Google APIs", s, google, 443, "TCP") for i, s in enumerate(submitters)]
    must_not: list[tuple[str, Peer, Peer, int, str]] = [
        # TF Serving's own ports take ModelService calls (config reloads) from anyone: only Envoy's reach out.
        ("TaskManager -> TF Serving's plaintext gRPC", taskmanager, serving, TF_SERVING_GRPC_PORT, "TCP"),
        ("TaskManager -> TF Serving's REST API", taskmanager, serving, TF_SERVING_REST_PORT, "TCP"),
        ("Prometheus -> TF Serving's REST API", prometheus, serving, TF_SERVING_REST_PORT, "TCP"),
        # Flink's REST API runs uploaded jars in the JobManager: the operator and the submitters only.
        ("TaskManager -> JobManager REST", taskmanager, jobmanager, FLINK_REST_PORT, "TCP"),
        (
            "another pod of the operator's namespace -> JobManager REST",
            operator_namespace_other_pod,
            jobmanager,
            FLINK_REST_PORT,
            "TCP",
        ),
        (
            "TaskManager -> TaskManager RPC",
            taskmanager,
            taskmanager,
            FLINK_INTERNAL_PORTS["taskmanager.rpc.port"],
            "TCP",
        ),
        (
            "TaskManager -> JobManager on the data port",
            taskmanager,
            jobmanager,
            FLINK_INTERNAL_PORTS["taskmanager.data.port"],
            "TCP",
        ),
        ("TaskManager -> a public address on 443", taskmanager, google_public, 443, "TCP"),
        ("TF Serving -> Kubernetes API", serving, control_plane, 443, "TCP"),
        ("another pod -> TF Serving", stranger, serving, TF_SERVING_TLS_PORT, "TCP"),
        ("another namespace -> TF Serving", other_namespace, serving, TF_SERVING_TLS_PORT, "TCP"),
        ("JobManager -> TF Serving", jobmanager, serving, TF_SERVING_TLS_PORT, "TCP"),
        ("another pod -> JobManager REST", stranger, jobmanager, FLINK_REST_PORT, "TCP"),
        ("another namespace -> JobManager REST", other_namespace, jobmanager, FLINK_REST_PORT, "TCP"),
        ("TaskManager -> the internet on 80", taskmanager, external("93.184.216.34"), 80, "TCP"),
        ("TF Serving -> JobManager REST", serving, jobmanager, FLINK_REST_PORT, "TCP"),
    ]
    must_not += [
        (f"submitter {i} -> TF Serving", s, serving, TF_SERVING_TLS_PORT, "TCP") for i, s in enumerate(submitters)
    ]
    must_not += [(f"submitter {i} -> Kubernetes API", s, control_plane, 443, "TCP") for i, s in enumerate(submitters)]
    must_not += [
        (f"submitter {i} -> TaskManager RPC", s, taskmanager, FLINK_INTERNAL_PORTS["taskmanager.rpc.port"], "TCP")
        for i, s in enumerate(submitters)
    ]
    problems = [
        f"network: {name} (port {port}/{proto}) must be allowed"
        for name, src, dst, port, proto in must
        if not allowed(docs, src, dst, port, proto)
    ]
    problems += [
        f"network: {name} (port {port}/{proto}) must be denied"
        for name, src, dst, port, proto in must_not
        if allowed(docs, src, dst, port, proto)
    ]
    if not any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in find(docs, "NetworkPolicy")
    ):
        problems.append("network: a default-deny policy (all pods, Ingress and Egress, no rules) is required")
    return problems
