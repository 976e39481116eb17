"""Rendering an overlay with `kubectl kustomize` (offline) and finding things in what it renders.

Everything else (validation, apply, status) works on the rendered documents, never on the source files, so it
sees exactly what the cluster would get: generated ConfigMap names, replacements from site.env, patched images.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from deploy import MANIFESTS_DIR, OVERLAYS

FLINK_API_VERSION = "flink.apache.org/v1beta1"
MAIN_CONTAINER = "flink-main-container"  # Flink's name for its own container in a pod template
FLINK_ROLES = ("jobManager", "taskManager")


class ToolMissing(RuntimeError):
    """A command-line tool the offline checks need is not installed: the checks fail, they are never skipped."""


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise ToolMissing(
            "kubectl is not on PATH: it renders the overlays (`kubectl kustomize`). Install kubectl 1.32 "
            "(Debian/Ubuntu: the kubernetes apt repository's `kubectl` package)."
        )
    return path


def overlay_dir(overlay: str):
    if overlay not in OVERLAYS:
        raise ValueError(f"unknown overlay {overlay!r}: expected one of {', '.join(OVERLAYS)}")
    return MANIFESTS_DIR / "overlays" / overlay


@functools.cache
def render_yaml(overlay: str) -> str:
    """The overlay as `kubectl kustomize` renders it: a multi-document YAML string."""
    completed = subprocess.run(
        [kubectl(), "kustomize", str(overlay_dir(overlay))], capture_output=True, text=True, timeout=120, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay_dir(overlay)} failed:\n{completed.stderr.strip()}")
    return completed.stdout


def render(overlay: str) -> list[dict]:
    """The rendered documents, parsed; a fresh copy each call, so callers may modify it."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(render_yaml(overlay), Loader=loader) if doc]


def ref(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(docs, kind, name)
    if len(found) != 1:
        raise LookupError(f"expected exactly one {kind}{' ' + name if name else ''}, found {len(found)}")
    return found[0]


@dataclass
class Pod:
    """A pod as some resource will create it: a Deployment's or Job's template, or a FlinkDeployment's role."""

    owner: str  # e.g. "Deployment/tf-serving", "FlinkDeployment/inference[taskManager]"
    metadata: dict
    spec: dict
    # For a Flink role: the FlinkDeployment's `resource` block, from which Flink sets the main container's
    # requests and limits (the pod template does not carry them).
    flink_resource: dict | None = None
    flink_service_account: str | None = None

    def containers(self) -> Iterator[dict]:
        yield from self.spec.get("initContainers", [])
        yield from self.spec.get("containers", [])

    def container(self, name: str) -> dict:
        for container in self.containers():
            if container["name"] == name:
                return container
        raise LookupError(f"{self.owner} has no container {name!r}")

    @property
    def labels(self) -> dict:
        return self.metadata.get("labels", {})

    @property
    def service_account(self) -> str | None:
        return self.flink_service_account or self.spec.get("serviceAccountName")


def flink_service_account(doc: dict, role: str) -> str | None:
    """The Kubernetes account a Flink role's pods run as: the TaskManagers' own when the configuration names one."""
    config = doc["spec"].get("flinkConfiguration", {})
    if role == "taskManager" and config.get("kubernetes.taskmanager.service-account"):
        return config["kubernetes.taskmanager.service-account"]
    return doc["spec"].get("serviceAccount")


def pods(docs: list[dict]) -> list[Pod]:
    found = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            template = doc["spec"]["template"]
            found.append(Pod(ref(doc), template.get("metadata", {}), template["spec"]))
        elif doc["kind"] == "FlinkDeployment":
            for role in FLINK_ROLES:
                spec = doc["spec"].get(role, {})
                template = spec.get("podTemplate", {})
                found.append(
                    Pod(
                        f"{ref(doc)}[{role}]",
                        template.get("metadata", {}),
                        template.get("spec", {}),
                        flink_resource=spec.get("resource", {}),
                        flink_service_account=flink_service_account(doc, role),
                    )
                )
    return found


def config_map_file(docs: list[dict], pod: Pod, container: dict, path: str) -> str | None:
    """The content a container sees at `path` when it comes from a mounted ConfigMap; None otherwise."""
    volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix) or "subPath" in mount:
            continue
        volume = volumes.get(mount["name"], {})
        if "configMap" not in volume:
            continue
        key = path[len(prefix) :]
        for config_map in find(docs, "ConfigMap", volume["configMap"]["name"]):
            return config_map.get("data", {}).get(key)
    return None


# Lookups several checks share (deploy/validation/): each names what the deployment is made of, once.


def flink_deployment(docs: list[dict]) -> dict:
    return one(docs, "FlinkDeployment")


def flink_role_pod(docs: list[dict], role: str) -> Pod:
    """The pod a FlinkDeployment role (one of FLINK_ROLES) runs in."""
    return next(p for p in pods(docs) if p.owner.endswith(f"[{role}]"))


def tf_serving_pod(docs: list[dict]) -> Pod:
    return next(p for p in pods(docs) if p.owner == "Deployment/tf-serving")


def args_dict(args: Iterable[str]) -> dict[str, str]:
    """`--name=value` arguments as {name: value}; a bare `--flag` maps to "true"."""
    found = {}
    for arg in args:
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            found[name] = value if _ else "true"
    return found


def mount_path(container: dict, volume: str) -> str | None:
    """Where `container` mounts `volume`; None where it does not."""
    for mount in container.get("volumeMounts", []):
        if mount["name"] == volume:
            return mount["mountPath"]
    return None
