"""Stand-ins for the two servers the deployment tools talk to that cannot run in CI.

- FakeFlink: the few endpoints of Flink's REST API (1.20) that `deploy.submit` calls (plumbing.flink_rest's client),
  served over real HTTP on 127.0.0.1 so that the real client code (requests, multipart upload, JSON) runs. A real
  session cluster would need the Beam job server jar, Java and an SDK worker pool for a job to ever reach RUNNING:
  minutes per test.
- FakeResource / FakeDynamic / FakeCore: the Kubernetes API server, recording what the CLI sends.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace


class FakeFlink:
    """An in-memory Flink session cluster's REST API. Jobs: {jid: {"name", "state", "savepoint_from"}}."""

    def __init__(self, *, savepoint_fails=False, new_job_state="RUNNING", savepoint_polls=1):
        self.jobs: dict[str, dict] = {}
        self.jars: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, object]] = []
        self.savepoint_fails = savepoint_fails
        self.new_job_state = new_job_state
        self.savepoint_polls = savepoint_polls
        self._triggers: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def add_job(self, name: str, state: str = "RUNNING") -> str:
        jid = uuid.uuid4().hex
        self.jobs[jid] = {"name": name, "state": state, "savepoint_from": None}
        return jid

    def paths(self, method: str | None = None) -> list[str]:
        return [path for m, path, _ in self.requests if method in (None, m)]

    # --- the REST API ---------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes, content_type: str):
        with self._lock:
            return self._handle(method, path, body, content_type)

    def _handle(self, method, path, body, content_type):
        record = (
            json.loads(body) if content_type.startswith("application/json") and body else (len(body) if body else None)
        )
        self.requests.append((method, path, record))
        if method == "GET" and path == "/jobs/overview":
            return 200, {"jobs": [{"jid": j, "name": v["name"], "state": v["state"]} for j, v in self.jobs.items()]}
        if match := re.fullmatch(r"/jobs/(\w+)/stop", path):
            jid = match.group(1)
            trigger = uuid.uuid4().hex
            self._triggers[trigger] = {"jid": jid, "polls": 0}
            return 202, {"request-id": trigger}
        if match := re.fullmatch(r"/jobs/(\w+)/savepoints/(\w+)", path):
            jid, trigger = match.groups()
            state = self._triggers[trigger]
            state["polls"] += 1
            if state["polls"] < self.savepoint_polls:
                return 200, {"status": {"id": "IN_PROGRESS"}}
            if self.savepoint_fails:
                return 200, {
                    "status": {"id": "COMPLETED"},
                    "operation": {"failure-cause": {"stack-trace": "disk full"}},
                }
            self.jobs[jid]["state"] = "FINISHED"
            return 200, {
                "status": {"id": "COMPLETED"},
                "operation": {"location": f"gs://state/savepoints/savepoint-{jid[:6]}"},
            }
        if method == "POST" and path == "/jars/upload":
            if not content_type.startswith("multipart/form-data") or b'name="jarfile"' not in body:
                return 400, {"errors": ["expected a multipart jarfile"]}
            jar_id = f"{uuid.uuid4().hex}_pipeline.jar"
            self.jars[jar_id] = body
            return 200, {"filename": f"/tmp/flink-web-upload/{jar_id}", "status": "success"}
        if match := re.fullmatch(r"/jars/([\w.-]+)/run", path):
            if match.group(1) not in self.jars:
                return 404, {"errors": ["jar not found"]}
            request = json.loads(body)
            jid = self.add_job(self._job_name_of(match.group(1)), self.new_job_state)
            self.jobs[jid]["savepoint_from"] = request.get("savepointPath")
            return 200, {"jobid": jid}
        if method == "GET" and (match := re.fullmatch(r"/jobs/(\w+)", path)):
            job = self.jobs[match.group(1)]
            return 200, {
                "jid": match.group(1),
                "name": job["name"],
                "state": job["state"],
                "vertices": [{"name": "Source", "status": job["state"]}, {"name": "Sink", "status": job["state"]}],
            }
        if method == "DELETE" and (match := re.fullmatch(r"/jars/([\w.-]+)", path)):
            self.jars.pop(match.group(1), None)
            return 200, {}
        return 404, {"errors": [f"no handler for {method} {path}"]}

    def _job_name_of(self, jar_id: str) -> str:
        # The fake pipeline writes its --job_name into the jar, as Beam bakes the options into the real one.
        found = re.search(rb"job_name=([\w-]+)", self.jars[jar_id])
        return found.group(1).decode() if found else "unnamed"

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, reply = fake.handle(self.command, self.path, body, self.headers.get("Content-Type", ""))
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args):
                pass

        return Handler


FAKE_PIPELINE = '''
"""Plays a pipeline entry point: with --output_executable_path it writes a "jar" holding its arguments."""
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_PIPELINE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_PIPELINE_FAIL"):
    sys.exit(3)
path = next(a.split("=", 1)[1] for a in args if a.startswith("--output_executable_path="))
with open(path, "w") as jar:
    jar.write("\\n".join(args))
'''


class ApiError(Exception):
    """What the kubernetes client raises for an HTTP error: the status is what the CLI looks at."""

    def __init__(self, status: int, message: str = ""):
        super().__init__(f"{status} {message}")
        self.status = status

    def summary(self):
        return str(self)


class FakeResource:
    def __init__(self, api, api_version: str, kind: str):
        self.api, self.api_version, self.kind = api, api_version, kind

    def server_side_apply(self, **kwargs):
        self.api.calls.append(("apply", self.kind, kwargs))
        error = self.api.apply_errors.get((self.kind, kwargs["name"]))
        if error:
            self.api.apply_errors.pop((self.kind, kwargs["name"]))  # once: the retry after a delete goes through
            raise error
        return SimpleNamespace(to_dict=lambda: kwargs["body"])

    def delete(self, **kwargs):
        self.api.calls.append(("delete", self.kind, kwargs))

    def get(self, **kwargs):
        self.api.calls.append(("get", self.kind, kwargs))
        if (self.kind, kwargs.get("name")) in self.api.objects:
            obj = self.api.objects[(self.kind, kwargs["name"])]
            return SimpleNamespace(to_dict=lambda: obj)
        raise ApiError(404, "not found")


class FakeDynamic:
    """Stands in for kubernetes.dynamic.DynamicClient: resources.get(api_version=, kind=) -> a resource."""

    def __init__(self, objects=None, apply_errors=None):
        self.calls: list = []
        self.objects = objects or {}
        self.apply_errors = apply_errors or {}
        self.resources = SimpleNamespace(get=lambda api_version, kind: FakeResource(self, api_version, kind))


class FakeCore:
    """Stands in for CoreV1Api: one ConfigMap, pods to list, and patches recorded."""

    def __init__(self, config_maps=None, pods=None, conflict_on_patch=False):
        self.config_maps = config_maps or {}  # name -> (data, resourceVersion)
        self.pods = pods or []
        self.patches: list = []
        self.conflict_on_patch = conflict_on_patch

    def read_namespaced_config_map(self, name, namespace):
        data, version = self.config_maps[name]
        return SimpleNamespace(data=dict(data), metadata=SimpleNamespace(resource_version=version))

    def patch_namespaced_config_map(self, name, namespace, body, **kwargs):
        self.patches.append((name, namespace, body, kwargs))
        if self.conflict_on_patch:
            raise ApiError(409, "the object has been modified")
        data, version = self.config_maps[name]
        if body["metadata"]["resourceVersion"] != version:
            raise ApiError(409, "stale resourceVersion")
        new_version = str(int(version) + 1)
        self.config_maps[name] = ({**data, **body["data"]}, new_version)
        return SimpleNamespace(metadata=SimpleNamespace(resource_version=new_version))

    def list_namespaced_pod(self, namespace, label_selector):
        key, _, value = label_selector.partition("=")
        items = []
        for name, labels, ready in self.pods:
            if labels.get(key) == value:
                items.append(
                    SimpleNamespace(
                        metadata=SimpleNamespace(name=name),
                        status=SimpleNamespace(
                            phase="Running",
                            conditions=[SimpleNamespace(type="Ready", status="True" if ready else "False")],
                        ),
                    )
                )
        return SimpleNamespace(items=items)
