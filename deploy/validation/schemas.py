"""Schema checks: every rendered object against the schema of its kind, strictly, so that a misspelt field is an
error here instead of something the API server prunes without a word.

Built-in kinds are held to Kubernetes' own schemas (kubernetes-validate), the FlinkDeployment to the operator's
CRD (deploy/crd.py), the Config Connector objects to the fields their CRDs define (deploy/config_connector.py).
"""

from __future__ import annotations

from deploy import config_connector
from deploy.manifests import FLINK_API_VERSION, find, pods, ref
from deploy.site import KUBERNETES_VERSION


def check_builtin_schemas(docs: list[dict]) -> list[str]:
    """Every built-in resource against Kubernetes' own schema, strictly (unknown fields are errors)."""
    import kubernetes_validate

    problems = []
    for doc in docs:
        if doc["apiVersion"] == FLINK_API_VERSION or config_connector.is_config_connector(doc):
            continue  # custom resources: checked against their own schemas below
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(
                f"{ref(doc)}: {doc['apiVersion']} {doc['kind']} is not a Kubernetes {KUBERNETES_VERSION} kind"
            )
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path) or "<root>"
            problems.append(f"{ref(doc)}: {path}: {error.message}")
    return problems


def check_flink_deployment_schema(docs: list[dict]) -> list[str]:
    """The FlinkDeployment against the operator's CRD, and its pod templates against Kubernetes' Pod schema."""
    import kubernetes_validate

    from deploy import crd

    problems = []
    deployments = find(docs, "FlinkDeployment")
    if len(deployments) != 1:
        problems.append(f"expected one FlinkDeployment, found {len(deployments)}")
    for doc in deployments:
        problems += [f"{ref(doc)}: {p}" for p in crd.validate_flink_deployment(doc)]
    # The CRD's pod template schema allows any field; Kubernetes' own Pod schema catches misspelt ones, which
    # the API server would otherwise prune without a word.
    for pod in pods(deployments):
        as_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": pod.metadata, "spec": pod.spec}
        try:
            kubernetes_validate.validate(as_pod, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{pod.owner} pod template: {'.'.join(map(str, error.path))}: {error.message}")
    return problems


def check_config_connector_schemas(docs: list[dict]) -> list[str]:
    """The Config Connector objects (base/pubsub/) against the fields their CRDs define (deploy/config_connector.py)."""
    return [
        f"{ref(doc)}: {problem}"
        for doc in docs
        if config_connector.is_config_connector(doc)
        for problem in config_connector.validate(doc)
    ]
