"""What the CLI does against a cluster: server-side apply, status, and HTTP to pods through port-forwarding.

Requests are built by plain functions (apply_plan, build_http_request, ...) that the tests check directly; the
client objects (kubernetes' DynamicClient and CoreV1Api) are passed in, so a test can hand in a stand-in for
the API server, which does not exist offline.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from deploy.config_connector import is_config_connector
from plumbing.flink_rest import FlinkRest
from plumbing.polling import PollTimeout, poll_until

FIELD_MANAGER = "marketplace-deploy"
# Dependencies first: the namespace, identities and config before what uses them; NetworkPolicies before any pod,
# so that nothing ever runs unprotected; the submission Jobs last, once the cluster they submit to exists. The
# Google Cloud resources (Config Connector) come early, so that Config Connector creates them while the rest starts.
APPLY_ORDER = (
    "Namespace",
    "ServiceIdentity",
    "PubSubTopic",
    "PubSubSubscription",
    "IAMPolicyMember",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "NetworkPolicy",
    "ConfigMap",
    "Service",
    "PodDisruptionBudget",
    "Deployment",
    "HorizontalPodAutoscaler",
    "FlinkDeployment",
    "Job",
)


@dataclass(frozen=True)
class ApplyStep:
    api_version: str
    kind: str
    name: str
    namespace: str | None
    body: dict

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


def apply_plan(docs: list[dict]) -> list[ApplyStep]:
    """The rendered documents in apply order; an unknown kind is an error rather than a guess about its place."""
    unknown = sorted({d["kind"] for d in docs} - set(APPLY_ORDER))
    if unknown:
        raise ValueError(f"no apply order for kinds {unknown}: add them to deploy.cluster.APPLY_ORDER")
    ordered = sorted(docs, key=lambda d: APPLY_ORDER.index(d["kind"]))
    return [
        ApplyStep(d["apiVersion"], d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"), d) for d in ordered
    ]


def apply_kwargs(step: ApplyStep, dry_run: bool, force_conflicts: bool) -> dict:
    """Arguments of DynamicClient's server_side_apply for one step (a fresh query list: the client appends to it)."""
    return {
        "body": step.body,
        "name": step.name,
        "namespace": step.namespace,
        "field_manager": FIELD_MANAGER,
        "force_conflicts": force_conflicts,
        "dry_run": "All" if dry_run else None,
        # Unknown or duplicate fields are errors, not silently dropped (the server's side of `validate`).
        "query_params": [("fieldValidation", "Strict")],
    }


def _status(error: Exception) -> int | None:
    return getattr(error, "status", None)


def apply(
    dyn,
    steps: list[ApplyStep],
    *,
    dry_run: bool,
    force_conflicts: bool = False,
    log=print,
    wait_deleted: Callable[[object, ApplyStep], None] | None = None,
    wait_ready: Callable[[object, list[ApplyStep]], list[str]] | None = None,
) -> list[str]:
    """Server-side applies every step in order; returns the problems (empty when all went through).

    A submission Job whose pod template changed (its options ConfigMap has a new hashed name) cannot be updated:
    Jobs are immutable. It is deleted and created anew, which is how a changed pipeline is re-submitted (and
    upgraded by savepoint); an unchanged Job is left alone, so re-applying submits nothing.

    Config Connector creates the Google Cloud resources behind its objects after the apply. The Jobs wait until
    every one is Ready: a pipeline submitted before its subscription exists (or has its dead-letter policy and
    deadline) would fail, and a failed Job is not retried (backoffLimit: 0).
    """
    problems = []
    cloud = [s for s in steps if is_config_connector(s.body)]
    for step in steps:
        if step.kind == "Job" and cloud and not dry_run:
            log(f"waiting until Config Connector has made the {len(cloud)} Google Cloud resources Ready")
            not_ready = (wait_ready or _wait_ready)(dyn, cloud)
            cloud = []
            if not_ready:
                problems += [*not_ready, "not submitting the pipelines: their Google Cloud resources are not Ready"]
                break
        resource = dyn.resources.get(api_version=step.api_version, kind=step.kind)
        try:
            resource.server_side_apply(**apply_kwargs(step, dry_run, force_conflicts))
            log(f"{'checked' if dry_run else 'applied'} {step}")
        except Exception as error:  # the client raises one exception class per HTTP status
            status = _status(error)
            if status == 422 and step.kind == "Job":
                if dry_run:
                    log(f"would replace {step} (its pod template changed: the pipeline would be re-submitted)")
                    continue
                log(f"replacing {step}: its pod template changed, so the pipeline is re-submitted")
                resource.delete(name=step.name, namespace=step.namespace, propagation_policy="Background")
                (wait_deleted or _wait_deleted)(resource, step)
                resource.server_side_apply(**apply_kwargs(step, dry_run, force_conflicts))
                log(f"applied {step}")
            elif status == 404 and dry_run and step.namespace:
                log(f"skipped {step}: namespace {step.namespace} does not exist yet, so it cannot be dry-run")
            elif status == 409:
                problems.append(
                    f"{step}: another field manager owns fields this apply would change (e.g. models.config after "
                    f"`rollout-model`): commit that change to the manifests, or re-run with --force-conflicts. "
                    f"{_summary(error)}"
                )
            else:
                problems.append(f"{step}: {_summary(error)}")
    return problems


def _summary(error: Exception) -> str:
    summary = getattr(error, "summary", None)
    return summary() if callable(summary) else str(error)


def ready_condition(obj: dict) -> dict:
    """A Config Connector object's Ready condition ({} until it has one): status "True" once its resource is in
    place."""
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})


def _wait_ready(dyn, steps: list[ApplyStep], timeout_s: float = 600, interval_s: float = 5) -> list[str]:
    """Waits until every step's object reports Ready; returns one problem for each that did not, with its reason."""
    pending = [(step, {}) for step in steps]

    def all_ready() -> bool | None:
        nonlocal pending
        pending = [(step, condition) for step, _ in pending if (condition := _ready(dyn, step)).get("status") != "True"]
        return True if not pending else None

    with contextlib.suppress(PollTimeout):
        poll_until(all_ready, timeout=timeout_s, interval=interval_s, what="Config Connector's resources")
    return [
        f"{step}: not Ready after {timeout_s:.0f} s ({condition.get('reason', 'no status yet')}"
        f"{': ' + condition['message'] if condition.get('message') else ''})"
        for step, condition in pending
    ]


def _ready(dyn, step: ApplyStep) -> dict:
    """The step's object's Ready condition; reason NotFound when there is no such object."""
    resource = dyn.resources.get(api_version=step.api_version, kind=step.kind)
    try:
        return ready_condition(resource.get(name=step.name, namespace=step.namespace).to_dict())
    except Exception as error:  # its apply failed: reported already, and it cannot become Ready
        if _status(error) != 404:
            raise
        return {"reason": "NotFound"}


def _wait_deleted(resource, step: ApplyStep, timeout_s: float = 120) -> None:
    def deleted() -> bool | None:
        try:
            resource.get(name=step.name, namespace=step.namespace)
        except Exception as error:
            if _status(error) == 404:
                return True
            raise
        return None

    try:
        poll_until(deleted, timeout=timeout_s, interval=2, what=f"{step} to be deleted")
    except PollTimeout:
        raise TimeoutError(f"{step} was not deleted within {timeout_s:.0f} s") from None


# --- HTTP to a pod, through the API server's port-forward ----------------------------------------------------------
# Port-forwarding enters the pod's own network namespace, so it works under the default-deny NetworkPolicies
# without opening TF Serving or Flink's REST API to anyone else.


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes

    def json(self):
        return json.loads(self.body)


def build_http_request(method: str, path: str, body: dict | None = None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = [f"{method} {path} HTTP/1.0", "Host: localhost", "Accept: application/json", "Connection: close"]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def parse_http_response(raw: bytes) -> HttpResponse:
    head, separator, body = raw.partition(b"\r\n\r\n")
    if not separator:
        raise ValueError(f"not an HTTP response: {raw[:200]!r}")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP status line: {status_line!r}")
    return HttpResponse(int(parts[1]), body)


def http_via_portforward(
    core, namespace: str, pod: str, port: int, method: str, path: str, body: dict | None = None, timeout_s: float = 30
) -> HttpResponse:
    from kubernetes.stream import portforward

    forward = portforward(core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
    try:
        sock = forward.socket(port)
        sock.settimeout(timeout_s)
        sock.sendall(build_http_request(method, path, body))
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        sock.close()
        return parse_http_response(b"".join(chunks))
    finally:
        forward.close()


# --- status ----------------------------------------------------------------------------------------------------------

FLINK_DEPLOYMENT = ("flink.apache.org/v1beta1", "FlinkDeployment")
HttpCall = Callable[..., HttpResponse]  # (pod, port, method, path, body=None) -> response


class PortForwardedFlink(FlinkRest):
    """plumbing's Flink REST client with its requests sent to the JobManager pod through port-forwarding (JSON
    bodies only: the deploy CLI takes savepoints and lists jobs, it uploads no jars)."""

    def __init__(self, http: HttpCall, jobmanager: str, port: int):
        super().__init__(f"http://{jobmanager}:{port}")
        self._http, self._pod, self._port = http, jobmanager, port

    def _send(self, method: str, path: str, timeout: float, **kwargs) -> tuple[int, bytes]:
        # `timeout` is the port-forward's own (http_via_portforward's timeout_s).
        body = kwargs.pop("json", None)
        if kwargs:
            raise TypeError(f"{method} {path}: a port-forwarded call carries a JSON body only, not {sorted(kwargs)}")
        response = self._http(self._pod, self._port, method, path, body)
        return response.status, response.body


def ready_pods(core, namespace: str, selector: str) -> list[str]:
    found = []
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        conditions = pod.status.conditions or []
        if pod.status.phase == "Running" and any(c.type == "Ready" and c.status == "True" for c in conditions):
            found.append(pod.metadata.name)
    return sorted(found)


def flink_status(dyn, namespace: str, name: str) -> dict:
    resource = dyn.resources.get(api_version=FLINK_DEPLOYMENT[0], kind=FLINK_DEPLOYMENT[1])
    status = resource.get(name=name, namespace=namespace).to_dict().get("status") or {}
    return {
        "lifecycleState": status.get("lifecycleState"),
        "jobManagerDeploymentStatus": status.get("jobManagerDeploymentStatus"),
        "flinkVersion": (status.get("clusterInfo") or {}).get("flink-version"),
        "error": status.get("error"),
        # Set in application mode only; a session cluster's jobs are listed from its REST API below.
        "jobStatus": (status.get("jobStatus") or {}).get("state"),
    }


def flink_jobs(http: HttpCall, jobmanager: str, rest_port: int) -> list[dict]:
    jobs = PortForwardedFlink(http, jobmanager, rest_port).jobs()
    return sorted(({"name": j["name"], "id": j["jid"], "state": j["state"]} for j in jobs), key=lambda j: j["name"])


def model_status(http: HttpCall, pod: str, port: int, model: str) -> list[dict]:
    """TF Serving's GetModelStatus over REST: each version's state (AVAILABLE, LOADING, ...)."""
    response = http(pod, port, "GET", f"/v1/models/{model}")
    if response.status != 200:
        return [{"version": None, "state": f"HTTP {response.status}: {response.body[:200].decode(errors='replace')}"}]
    return [
        {"version": int(v["version"]), "state": v["state"]} for v in response.json().get("model_version_status", [])
    ]
