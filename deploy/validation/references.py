"""The references check: everything a resource names exists in the manifests, everything is in the namespace,
and no site placeholder is left where base/site.env should have replaced it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from deploy import config_connector
from deploy.manifests import find, pods, ref
from deploy.site import NAMESPACE


def check_references(docs: list[dict]) -> list[str]:
    """Everything a resource names exists: ConfigMaps, service accounts, scale targets, selectors' pods."""
    problems = []
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for doc in docs:
        if doc["kind"] != "Namespace" and doc["metadata"].get("namespace") != NAMESPACE:
            problems.append(f"{ref(doc)}: must be in namespace {NAMESPACE}, got {doc['metadata'].get('namespace')!r}")
    for pod in pods(docs):
        for volume in pod.spec.get("volumes", []):
            if "configMap" in volume and ("ConfigMap", volume["configMap"]["name"]) not in names:
                problems.append(
                    f"{pod.owner}: volume {volume['name']} names a missing ConfigMap {volume['configMap']['name']}"
                )
        if ("ServiceAccount", pod.service_account) not in names:
            problems.append(f"{pod.owner}: service account {pod.service_account!r} is not in the manifests")
    for doc in filter(config_connector.is_config_connector, docs):
        for kind, name in config_connector.name_references(doc):
            if (kind, name) not in names:
                problems.append(f"{ref(doc)}: refers to {kind}/{name}, which is not in the manifests")
    workload_pods = [p for p in pods(docs) if p.owner.startswith("Deployment/")]
    for doc in find(docs, "Service") + find(docs, "PodDisruptionBudget"):
        selector = doc["spec"].get("selector", {})
        selector = selector.get("matchLabels", selector) if doc["kind"] == "PodDisruptionBudget" else selector
        if not any(all(p.labels.get(k) == v for k, v in selector.items()) for p in workload_pods):
            problems.append(f"{ref(doc)}: selector {selector} matches no pod template")
    for hpa in find(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) not in names:
            problems.append(f"{ref(hpa)}: scale target {target['kind']}/{target['name']} is not in the manifests")
        deployments = find(docs, target["kind"], target["name"])
        if deployments and "replicas" in deployments[0]["spec"]:
            problems.append(
                f"{ref(hpa)}: leave {target['kind']}/{target['name']}.spec.replicas unset; the autoscaler owns it"
            )
    for doc in docs:
        for path in _placeholders(doc):
            problems.append(f"{ref(doc)}: {path} still holds a site placeholder (set it in base/site.env)")
    return problems


PLACEHOLDER = re.compile(
    r"\b(CONTROL_PLANE_CIDR|FLINK_BUCKET|MODEL_BUCKET|JOBMANAGER_GSA|WORKER_GSA|SUBMITTER_GSA|TF_SERVING_GSA|GCP_PROJECT)\b"
)


def _placeholders(node, path="") -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _placeholders(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _placeholders(value, f"{path}[{i}]")
    elif isinstance(node, str) and PLACEHOLDER.search(node) and not path.endswith(".data.site.env"):
        yield path
