"""Security checks: how every pod runs (non-root, read-only, unprivileged, bounded) and that no credential is in
the manifests, because Google Cloud access is Workload Identity, by annotation.
"""

from __future__ import annotations

import re

from deploy.manifests import MAIN_CONTAINER, Pod, find, pods, ref
from deploy.site import CLIENT_TLS_SECRET, ENVOY_CONTAINER, GPU, SERVER_TLS_SECRET, WORKER_POOL_CONTAINER


def _effective(container: dict, pod: Pod, key: str):
    container_value = container.get("securityContext", {}).get(key)
    return container_value if container_value is not None else pod.spec.get("securityContext", {}).get(key)


def check_security(docs: list[dict]) -> list[str]:
    """Non-root, read-only root filesystem (with writable /tmp), no privilege, RuntimeDefault seccomp, bounded."""
    problems = []
    for pod in pods(docs):
        where = pod.owner
        pod_security = pod.spec.get("securityContext", {})
        if pod_security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: pod securityContext.seccompProfile.type must be RuntimeDefault")
        if pod_security.get("runAsNonRoot") is not True:
            problems.append(f"{where}: pod securityContext.runAsNonRoot must be true")
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.spec.get(field):
                problems.append(f"{where}: {field} must not be set")
        if any("hostPath" in v for v in pod.spec.get("volumes", [])):
            problems.append(f"{where}: hostPath volumes are not allowed")
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        for container in pod.containers():
            name = f"{where} container {container['name']!r}"
            security = container.get("securityContext", {})
            if _effective(container, pod, "runAsNonRoot") is not True:
                problems.append(f"{name}: runAsNonRoot must be true")
            user = _effective(container, pod, "runAsUser")
            if not isinstance(user, int) or user == 0:
                problems.append(f"{name}: runAsUser must be a non-root uid, got {user!r}")
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}: readOnlyRootFilesystem must be true")
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: allowPrivilegeEscalation must be false")
            if security.get("privileged"):
                problems.append(f"{name}: privileged must not be set")
            capabilities = security.get("capabilities", {})
            if "ALL" not in capabilities.get("drop", []) or capabilities.get("add"):
                problems.append(f"{name}: capabilities must drop ALL and add none, got {capabilities}")
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
                problems.append(f"{name}: /tmp must be an emptyDir mount (the root filesystem is read-only)")
            problems += _check_resources(container, pod, name)
    return problems


def _check_resources(container: dict, pod: Pod, name: str) -> list[str]:
    if container["name"] == MAIN_CONTAINER and pod.flink_resource is not None:
        # Flink sets this container's requests and limits (equal) from the FlinkDeployment's role resource.
        missing = [k for k in ("cpu", "memory") if not pod.flink_resource.get(k)]
        if "resources" in container:
            return [f"{name}: leave resources to the FlinkDeployment's `resource` block (Flink overwrites them)"]
        return [f"{name}: the FlinkDeployment's `resource` needs {', '.join(missing)}"] if missing else []
    problems = []
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        missing = [k for k in ("cpu", "memory") if k not in resources.get(kind, {})]
        if missing:
            problems.append(f"{name}: resources.{kind} needs {', '.join(missing)}")
    for extended in (GPU,):
        if resources.get("limits", {}).get(extended) != resources.get("requests", {}).get(
            extended, resources.get("limits", {}).get(extended)
        ):
            problems.append(f"{name}: {extended} requests must equal limits")
    return problems


SECRET_ENV = re.compile(r"(PASSWORD|SECRET|TOKEN|API_?KEY|PRIVATE_KEY|CREDENTIALS)", re.IGNORECASE)


def _secret_owner(pod: Pod) -> dict[str, str]:
    """{secret: the one container of this pod that may mount it}: TF Serving's mTLS keys, nothing else."""
    if pod.owner == "Deployment/tf-serving":
        return {SERVER_TLS_SECRET: ENVOY_CONTAINER}
    if pod.owner.endswith("[taskManager]"):
        return {CLIENT_TLS_SECRET: WORKER_POOL_CONTAINER}
    return {}


def _check_secret_volumes(pod: Pod) -> list[str]:
    """Secrets only for TF Serving's mutual TLS, each read-only in the one container that uses it."""
    problems = []
    allowed = _secret_owner(pod)
    for volume in pod.spec.get("volumes", []):
        if "secret" not in volume:
            continue
        secret = volume["secret"].get("secretName")
        if secret not in allowed:
            problems.append(
                f"{pod.owner}: secret volume {volume['name']!r} ({secret}); Google Cloud access is Workload Identity, "
                f"and the only Secrets are TF Serving's TLS keys ({SERVER_TLS_SECRET}, {CLIENT_TLS_SECRET})"
            )
            continue
        for container in pod.containers():
            mount = next((m for m in container.get("volumeMounts", []) if m["name"] == volume["name"]), None)
            if mount is None:
                continue
            if container["name"] != allowed[secret]:
                problems.append(f"{pod.owner} container {container['name']!r}: must not mount {secret}")
            elif mount.get("readOnly") is not True:
                problems.append(f"{pod.owner} container {container['name']!r}: mount {secret} readOnly")
    return problems


def check_no_credentials(docs: list[dict], text: str) -> list[str]:
    """No secrets in the manifests: Google Cloud access is Workload Identity, by annotation; TF Serving's TLS keys
    are Secrets made outside the repository, mounted only where they are used."""
    problems = [f"{ref(d)}: no Secrets in the repository" for d in find(docs, "Secret")]
    for marker in ("PRIVATE KEY-----", '"private_key"', "client_secret"):
        if marker in text:
            problems.append(f"the rendered manifests contain {marker!r}")
    accounts = {d["metadata"]["name"]: d for d in find(docs, "ServiceAccount")}
    for pod in pods(docs):
        problems += _check_secret_volumes(pod)
        for container in pod.containers():
            for env in container.get("env", []):
                if "secretKeyRef" in env.get("valueFrom", {}) or SECRET_ENV.search(env["name"]):
                    problems.append(f"{pod.owner} container {container['name']!r}: credential-like env {env['name']!r}")
        account = accounts.get(pod.service_account)
        if account is None:
            problems.append(f"{pod.owner}: service account {pod.service_account!r} is not in the manifests")
            continue
        gsa = account["metadata"].get("annotations", {}).get("iam.gke.io/gcp-service-account", "")
        if not re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z][a-z0-9-]+\.iam\.gserviceaccount\.com", gsa):
            problems.append(
                f"ServiceAccount/{pod.service_account}: iam.gke.io/gcp-service-account must name a Google service "
                f"account (NAME@PROJECT.iam.gserviceaccount.com), got {gsa!r}"
            )
    return problems
