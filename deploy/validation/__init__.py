"""Offline checks of a rendered overlay: schemas, security, least privilege (API tokens and Roles, Google grants,
TF Serving's mTLS), ports, versions, pinned images and packages, GPUs, pipeline options, Pub/Sub, network paths.

Each check takes the rendered documents (deploy.manifests.render) and returns a list of problems, each saying
what was expected and what was found; an empty list means the check passed. `python -m deploy validate` runs them
all, and so do the tests, so CI and a person see the same verdict.

This module is the register of the checks, in the order they are reported; each lives in the module of its
subject (schemas, security, api_access, references, flink, tf_serving, tf_serving_tls, submissions, pubsub,
identities, versions, images, python_lock, gpu, network). The values they hold the manifests to are in
deploy/site.py; the tests that break each on purpose are tests/test_deploy_manifests.py, test_least_privilege.py,
test_identities.py, test_image_lock.py and test_python_lock.py.
"""

from __future__ import annotations

from collections.abc import Callable

from deploy.validation import (
    api_access,
    flink,
    gpu,
    identities,
    images,
    network,
    pubsub,
    python_lock,
    references,
    schemas,
    security,
    submissions,
    tf_serving,
    tf_serving_tls,
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
        "kubernetes api access": api_access.check_api_access,
        "no credentials": lambda docs: security.check_no_credentials(docs, render_yaml(overlay)),
        "references": references.check_references,
        "flink": flink.check_flink,
        "tf serving": tf_serving.check_tf_serving,
        "tf serving mtls": tf_serving_tls.check_tf_serving_tls,
        "pipelines": submissions.check_pipelines,
        "pub/sub": pubsub.check_pubsub,
        "identities": identities.check_identities,
        "versions": versions.check_versions,
        "images": lambda docs: images.check_images(docs, overlay),
        "python lock": python_lock.check_python_lock,
        "gpu": lambda docs: gpu.check_gpu(docs, overlay),
        "network policies": network.check_network_policies,
    }


def validate(overlay: str) -> dict[str, list[str]]:
    """All checks of one overlay: {check name: problems}."""
    from deploy.manifests import render

    docs = render(overlay)
    return {name: check(docs) for name, check in checks(overlay).items()}
