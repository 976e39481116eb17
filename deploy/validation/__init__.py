"""Offline checks of a rendered overlay: schemas, security, ports, versions, GPUs, pipeline options, Pub/Sub,
network paths.

Each check takes the rendered documents (deploy.manifests.render) and returns a list of problems, each saying
what was expected and what was found; an empty list means the check passed. `python -m deploy validate` runs them
all, and so do the tests (tests/test_deploy_manifests.py), so CI and a person see the same verdict.

This module is the register of the checks, in the order they are reported; each lives in the module of its
subject (schemas, security, references, flink, tf_serving, submissions, pubsub, versions, gpu, network). The
values they hold the manifests to are in deploy/site.py.
"""

from __future__ import annotations

from collections.abc import Callable

from deploy.validation import (
    flink,
    gpu,
    network,
    pubsub,
    references,
    schemas,
    security,
    submissions,
    tf_serving,
    versions,
)


def checks(overlay: str) -> dict[str, Callable[[list[dict]], list[str]]]:
    """Every check by name, for one overlay (the GPU check depends on which)."""
    from deploy.manifests import render_yaml

    return {
        "kubernetes schemas": schemas.check_builtin_schemas,
        "FlinkDeployment schema": schemas.check_flink_deployment_schema,
        "Config Connector schemas": schemas.check_config_connector_schemas,
        "security": security.check_security,
        "no credentials": lambda docs: security.check_no_credentials(docs, render_yaml(overlay)),
        "references": references.check_references,
        "flink": flink.check_flink,
        "tf serving": tf_serving.check_tf_serving,
        "pipelines": submissions.check_pipelines,
        "pub/sub": pubsub.check_pubsub,
        "versions": versions.check_versions,
        "gpu": lambda docs: gpu.check_gpu(docs, overlay),
        "network policies": network.check_network_policies,
    }


def validate(overlay: str) -> dict[str, list[str]]:
    """All checks of one overlay: {check name: problems}."""
    from deploy.manifests import render

    docs = render(overlay)
    return {name: check(docs) for name, check in checks(overlay).items()}
