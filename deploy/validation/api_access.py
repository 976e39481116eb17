"""The Kubernetes API access check: which containers hold a service account token, and what the token allows.

A token is mounted only where the Kubernetes API is used: Flink's own container in the JobManager and TaskManager
pods. Never in the Beam worker-pool sidecar, which parses untrusted events and runs TensorFlow graphs, nor in the
submission Jobs or TF Serving. The TaskManagers' account may only read ConfigMaps (Kubernetes HA's leader
addresses); only the JobManager's may create pods or write ConfigMaps. No account in the namespace may exec into
or port-forward to a pod, or read Secrets: port-forwarding is how the deploy CLI, with its user's own credentials,
reaches TF Serving's model management API, and that must stay the only way.
"""

from __future__ import annotations

from deploy.manifests import MAIN_CONTAINER, Pod, find, pods, ref
from deploy.site import JOBMANAGER_ACCOUNT, TASKMANAGER_ACCOUNT, TOKEN_PATH

# What the TaskManagers' account may do: read the HA ConfigMap to find the leaders. Nothing else.
TASKMANAGER_RULES = {("", "configmaps"): {"get", "list", "watch"}}
# Sub-resources and kinds no account of the namespace may touch, whatever its verbs.
FORBIDDEN_RESOURCES = {"pods/exec", "pods/attach", "pods/portforward", "secrets", "serviceaccounts/token"}


def _automounts(pod: Pod, accounts: dict[str, dict]) -> bool:
    """Whether every container of the pod gets the token: the pod's field, else its account's, else true."""
    if "automountServiceAccountToken" in pod.spec:
        return bool(pod.spec["automountServiceAccountToken"])
    return bool(accounts.get(pod.service_account, {}).get("automountServiceAccountToken", True))


def _token_volumes(pod: Pod) -> set[str]:
    return {
        v["name"]
        for v in pod.spec.get("volumes", [])
        if any("serviceAccountToken" in source for source in v.get("projected", {}).get("sources", []))
    }


def containers_with_token(pod: Pod, accounts: dict[str, dict]) -> list[str]:
    """The names of the pod's containers that can read a Kubernetes API token."""
    if _automounts(pod, accounts):
        return [c["name"] for c in pod.containers()]
    token_volumes = _token_volumes(pod)
    return [
        c["name"]
        for c in pod.containers()
        if any(m["name"] in token_volumes or m["mountPath"].startswith(TOKEN_PATH) for m in c.get("volumeMounts", []))
    ]


def _rules_by_account(docs: list[dict]) -> dict[str, list[dict]]:
    roles = {r["metadata"]["name"]: r for r in find(docs, "Role")}
    found: dict[str, list[dict]] = {}
    for binding in find(docs, "RoleBinding") + find(docs, "ClusterRoleBinding"):
        role = roles.get(binding["roleRef"]["name"]) if binding["roleRef"]["kind"] == "Role" else None
        rules = role.get("rules", []) if role else [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
        for subject in binding.get("subjects", []):
            if subject["kind"] == "ServiceAccount":
                found.setdefault(subject["name"], []).extend(rules)
    return found


def _grants(rules: list[dict]):
    """(api group, resource, verbs) for every resource a list of rules names."""
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                yield group, resource, set(rule.get("verbs", []))


def check_api_access(docs: list[dict]) -> list[str]:
    """Tokens only in the containers that call the API; each account's Role only what its job needs."""
    problems = []
    accounts = {a["metadata"]["name"]: a for a in find(docs, "ServiceAccount")}
    rules = _rules_by_account(docs)
    for binding in find(docs, "ClusterRoleBinding"):
        problems.append(f"{ref(binding)}: cluster-wide grants are not allowed; the namespace's Roles suffice")
    for pod in pods(docs):
        holders = containers_with_token(pod, accounts)
        if holders and pod.service_account not in rules:
            problems.append(
                f"{pod.owner}: service account {pod.service_account!r} has no Role, so no container may have its "
                f"token (automountServiceAccountToken: false); mounted in {holders}"
            )
            continue
        is_flink = pod.owner.startswith("FlinkDeployment/")
        for name in holders:
            if not (is_flink and name == MAIN_CONTAINER):
                problems.append(
                    f"{pod.owner} container {name!r}: holds a Kubernetes API token it does not use; only Flink's "
                    f"{MAIN_CONTAINER} may (set automountServiceAccountToken: false and project the token there)"
                )
    for account, account_rules in rules.items():
        for group, resource, verbs in _grants(account_rules):
            if resource in FORBIDDEN_RESOURCES or resource == "*" or group == "*":
                problems.append(f"ServiceAccount/{account}: may {sorted(verbs)} {resource!r}; no account may")
            if account == TASKMANAGER_ACCOUNT and not verbs <= TASKMANAGER_RULES.get((group, resource), set()):
                problems.append(
                    f"ServiceAccount/{account}: the TaskManagers may only get/list/watch ConfigMaps (HA leader "
                    f"addresses), got {sorted(verbs)} on {group or 'core'}/{resource}"
                )
            elif account not in (JOBMANAGER_ACCOUNT, TASKMANAGER_ACCOUNT) and verbs:
                problems.append(
                    f"ServiceAccount/{account}: only Flink's accounts may use the Kubernetes API, got "
                    f"{sorted(verbs)} on {group or 'core'}/{resource}"
                )
    if TASKMANAGER_ACCOUNT not in {p.service_account for p in pods(docs) if p.owner.endswith("[taskManager]")}:
        problems.append(
            f"the TaskManagers must run as {TASKMANAGER_ACCOUNT!r} (flinkConfiguration "
            "kubernetes.taskmanager.service-account), not as the JobManager's account"
        )
    return problems
