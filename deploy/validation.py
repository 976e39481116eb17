"""Offline checks of a rendered overlay: schemas, security, ports, versions, GPUs, pipeline options, Pub/Sub,
network paths.

Each check takes the rendered documents (deploy.manifests.render) and returns a list of problems, each saying
what was expected and what was found; an empty list means the check passed. `python -m deploy validate` runs them
all, and so do the tests (tests/test_deploy_manifests.py), so CI and a person see the same verdict.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Callable, Iterable

from deploy import MANIFESTS_DIR, REPO_ROOT, config_connector
from deploy.manifests import FLINK_API_VERSION, MAIN_CONTAINER, Pod, config_map_file, find, one, pods, ref

KUBERNETES_VERSION = "1.32"
NAMESPACE = "marketplace-inference"
GPU = "nvidia.com/gpu"

# Ports, each stated once here and checked against every place the manifests use it.
FLINK_REST_PORT = 8081
FLINK_INTERNAL_PORTS = {"taskmanager.data.port": 6121, "taskmanager.rpc.port": 6122, "jobmanager.rpc.port": 6123,
                        "blob.server.port": 6124}
FLINK_METRICS_PORT = 9249
BEAM_WORKER_POOL_PORT = 50000  # fixed by the SDK image's boot --worker_pool
TF_SERVING_GRPC_PORT = 8500
TF_SERVING_REST_PORT = 8501
TF_SERVING_METRICS_PATH = "/monitoring/prometheus/metrics"

WORKER_POOL_CONTAINER = "beam-worker-pool"
TF_SERVING_CONTAINER = "tf-serving"
LAUNCHER_CONTAINER = "launcher"
TF_SERVING_CLIENT_LABEL = "marketplace-inference/tf-serving-client"
MODELS_CONFIG_MAP = "tf-serving-models"
MODELS_CONFIG_KEY = "models.config"

# Pub/Sub's rules for a subscription: the deadline when none is set, and the bounds of a dead-letter policy.
PUBSUB_DEFAULT_ACK_DEADLINE_SECS = 10
MIN_DELIVERY_ATTEMPTS, MAX_DELIVERY_ATTEMPTS = 5, 100

# Flags the pipelines pass that Beam's Python SDK does not declare: they are the Java FlinkPipelineOptions, which
# the Python SDK forwards to the job server. Anything else unknown to Python is a typo that Beam would drop.
JAVA_FLINK_OPTIONS = frozenset({"checkpointing_interval"})

IMAGES_DIR = MANIFESTS_DIR / "images"
SETUP_PY = REPO_ROOT / "setup.py"


# --- schemas -----------------------------------------------------------------------------------------------------

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
            problems.append(f"{ref(doc)}: {doc['apiVersion']} {doc['kind']} is not a Kubernetes {KUBERNETES_VERSION} kind")
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
    return [f"{ref(doc)}: {problem}" for doc in docs if config_connector.is_config_connector(doc)
            for problem in config_connector.validate(doc)]


# --- security ----------------------------------------------------------------------------------------------------

def _effective(container: dict, pod: Pod, key: str):
    container_value = container.get("securityContext", {}).get(key)
    return container_value if container_value is not None else pod.spec.get("securityContext", {}).get(key)


def check_security(docs: list[dict]) -> list[str]:
    """Non-root, read-only root filesystem (with writable /tmp), no privilege, RuntimeDefault seccomp, bounded."""
    problems = []
    bound_accounts = {s["name"] for rb in find(docs, "RoleBinding") for s in rb.get("subjects", [])
                      if s["kind"] == "ServiceAccount"}
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
        # A token only where the account has a Role to use it with (Flink's pods set no field: default true).
        mounts_token = pod.spec.get("automountServiceAccountToken", True)
        if mounts_token and pod.service_account not in bound_accounts:
            problems.append(
                f"{where}: service account {pod.service_account!r} has no Role, so its pods must set "
                "automountServiceAccountToken: false"
            )
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
        if resources.get("limits", {}).get(extended) != resources.get("requests", {}).get(extended, resources.get("limits", {}).get(extended)):
            problems.append(f"{name}: {extended} requests must equal limits")
    return problems


SECRET_ENV = re.compile(r"(PASSWORD|SECRET|TOKEN|API_?KEY|PRIVATE_KEY|CREDENTIALS)", re.IGNORECASE)


def check_no_credentials(docs: list[dict], text: str) -> list[str]:
    """No secrets in the manifests: Google Cloud access is Workload Identity, by annotation."""
    problems = [f"{ref(d)}: no Secrets in the repository" for d in find(docs, "Secret")]
    for marker in ("PRIVATE KEY-----", '"private_key"', "client_secret"):
        if marker in text:
            problems.append(f"the rendered manifests contain {marker!r}")
    accounts = {d["metadata"]["name"]: d for d in find(docs, "ServiceAccount")}
    for pod in pods(docs):
        for volume in pod.spec.get("volumes", []):
            if "secret" in volume:
                problems.append(f"{pod.owner}: secret volume {volume['name']!r}; use Workload Identity")
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


# --- TF Serving ----------------------------------------------------------------------------------------------------

def args_dict(args: Iterable[str]) -> dict[str, str]:
    """`--name=value` arguments as {name: value}; a bare `--flag` maps to "true"."""
    found = {}
    for arg in args:
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            found[name] = value if _ else "true"
    return found


def tf_serving_pod(docs: list[dict]) -> Pod:
    return next(p for p in pods(docs) if p.owner == "Deployment/tf-serving")


def parse_models_config(text: str):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


BATCHING_WRAPPED = {"max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
                    "thread_pool_name", "max_execution_batch_size", "enable_large_batch_splitting"}
BATCHING_PLAIN = {"allowed_batch_sizes", "pad_variable_length_inputs"}


def parse_batching(text: str) -> dict[str, list[str]]:
    """BatchingParameters text proto (its message is not in the tensorflow-serving-api package): fields by name."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        wrapped = re.fullmatch(r"(\w+)\s*\{\s*value:\s*(\S+)\s*\}", line)
        plain = re.fullmatch(r"(\w+)\s*:\s*(\S+)", line)
        match = wrapped or plain
        if not match:
            raise ValueError(f"not a BatchingParameters field: {line!r}")
        name = match.group(1)
        if name not in (BATCHING_WRAPPED if wrapped else BATCHING_PLAIN):
            raise ValueError(f"unknown or mistyped BatchingParameters field {name!r} in {line!r}")
        fields.setdefault(name, []).append(match.group(2))
    return fields


def check_tf_serving(docs: list[dict]) -> list[str]:
    """Ports, probes, metrics, and the three config files: models (with labels), batching, monitoring."""
    from model_handlers.interface import MODELS

    problems = []
    pod = tf_serving_pod(docs)
    container = pod.container(TF_SERVING_CONTAINER)
    args = args_dict(container.get("args", []))
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    expected = {"port": TF_SERVING_GRPC_PORT, "rest_api_port": TF_SERVING_REST_PORT}
    for flag, port in expected.items():
        if args.get(flag) != str(port):
            problems.append(f"tf-serving: --{flag} must be {port}, got {args.get(flag)!r}")
    if ports != {"grpc": TF_SERVING_GRPC_PORT, "http": TF_SERVING_REST_PORT}:
        problems.append(f"tf-serving: container ports must be grpc {TF_SERVING_GRPC_PORT}, http {TF_SERVING_REST_PORT}, got {ports}")
    for service in find(docs, "Service"):
        if service["spec"].get("selector", {}).get("app.kubernetes.io/name") != "tf-serving":
            continue
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            target = ports.get(target, target)
            if target != port["port"] or port["port"] not in ports.values():
                problems.append(f"{ref(service)}: port {port['port']} must reach container port {port['port']}, got {target}")
    for probe in ("readinessProbe", "startupProbe"):
        get = container.get(probe, {}).get("httpGet", {})
        path = get.get("path", "")
        if ports.get(get.get("port"), get.get("port")) != TF_SERVING_REST_PORT or not re.fullmatch(
            r"/v1/models/[a-z]+(/labels/stable)?", path
        ):
            problems.append(f"tf-serving: {probe} must GET /v1/models/<name>[/labels/stable] on {TF_SERVING_REST_PORT}, got {get}")
    annotations = pod.metadata.get("annotations", {})
    if annotations.get("prometheus.io/port") != str(TF_SERVING_REST_PORT) or annotations.get("prometheus.io/path") != TF_SERVING_METRICS_PATH:
        problems.append(f"tf-serving: prometheus.io annotations must point at {TF_SERVING_REST_PORT}{TF_SERVING_METRICS_PATH}")

    def file_flag(flag: str) -> str | None:
        path = args.get(flag)
        content = config_map_file(docs, pod, container, path) if path else None
        if content is None:
            problems.append(f"tf-serving: --{flag}={path} is not a file of a mounted ConfigMap")
        return content

    for flag in ("enable_batching",):
        if args.get(flag) != "true":
            problems.append(f"tf-serving: --{flag}=true is required")
    models_text = file_flag("model_config_file")
    batching_text = file_flag("batching_parameters_file")
    monitoring_text = file_flag("monitoring_config_file")
    if not args.get("model_config_file_poll_wait_seconds", "0").isdigit() or int(args.get("model_config_file_poll_wait_seconds", "0")) < 1:
        problems.append("tf-serving: --model_config_file_poll_wait_seconds must be set, or rollouts never reach the server")
    models_mount = next((m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] == "models"), None)
    if models_text is not None:
        problems += check_models_config(models_text, set(MODELS), models_mount)
    if batching_text is not None:
        try:
            batching = parse_batching(batching_text)
            if "max_batch_size" not in batching:
                problems.append("tf-serving batching: max_batch_size is required")
            allowed = batching.get("allowed_batch_sizes")
            if allowed and allowed[-1] != batching.get("max_batch_size", [None])[0]:
                problems.append("tf-serving batching: the last allowed_batch_sizes must equal max_batch_size")
        except ValueError as error:
            problems.append(f"tf-serving batching: {error}")
    if monitoring_text is not None:
        compact = re.sub(r"\s+", " ", re.sub(r"#.*", "", monitoring_text)).strip()
        if compact != f'prometheus_config {{ enable: true path: "{TF_SERVING_METRICS_PATH}" }}':
            problems.append(f"tf-serving monitoring: expected prometheus_config enabled at {TF_SERVING_METRICS_PATH}, got {compact!r}")
    return problems


def check_models_config(text: str, model_names: set[str], models_mount: str | None) -> list[str]:
    try:
        config = parse_models_config(text)
    except Exception as error:  # text_format.ParseError and friends: report, do not crash the other checks
        return [f"models.config does not parse as ModelServerConfig: {error}"]
    problems = []
    configs = {c.name: c for c in config.model_config_list.config}
    if set(configs) != model_names:
        problems.append(f"models.config must serve exactly {sorted(model_names)}, got {sorted(configs)}")
    for name, model in configs.items():
        if models_mount is None or model.base_path != f"{models_mount}/{name}":
            problems.append(f"models.config {name}: base_path must be <models mount>/{name}, got {model.base_path!r}")
        if model.model_platform != "tensorflow":
            problems.append(f"models.config {name}: model_platform must be tensorflow")
        if model.model_version_policy.WhichOneof("policy_choice") != "specific":
            problems.append(f"models.config {name}: the version policy must be `specific` (labels need pinned versions)")
        versions = set(model.model_version_policy.specific.versions)
        labels = dict(model.version_labels)
        if "stable" not in labels:
            problems.append(f"models.config {name}: a `stable` version label is required")
        for label, version in labels.items():
            if version not in versions:
                problems.append(f"models.config {name}: label {label} -> {version} is not among the served versions {sorted(versions)}")
        unlabelled = versions - set(labels.values())
        if unlabelled:
            problems.append(f"models.config {name}: versions {sorted(unlabelled)} are loaded but no label points at them")
    return problems


# --- Flink ---------------------------------------------------------------------------------------------------------

def flink_deployment(docs: list[dict]) -> dict:
    return one(docs, "FlinkDeployment")


def check_flink(docs: list[dict]) -> list[str]:
    """Session mode, HA, state in a bucket, restart strategy, metrics, ports; the worker-pool sidecar."""
    problems = []
    fd = flink_deployment(docs)
    spec = fd["spec"]
    config = spec.get("flinkConfiguration", {})
    if "job" in spec:
        problems.append("FlinkDeployment: session mode (no spec.job): the pipelines are submitted by their Jobs")
    if spec.get("flinkVersion") != "v1_20":
        problems.append(f"FlinkDeployment: flinkVersion must be v1_20, got {spec.get('flinkVersion')!r}")
    expected = {
        "rest.port": str(FLINK_REST_PORT),
        **{k: str(v) for k, v in FLINK_INTERNAL_PORTS.items()},
        "high-availability.type": "kubernetes",
        "metrics.reporter.prom.factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
        "metrics.reporter.prom.port": str(FLINK_METRICS_PORT),
    }
    for key, value in expected.items():
        if config.get(key) != value:
            problems.append(f"FlinkDeployment: flinkConfiguration {key} must be {value!r}, got {config.get(key)!r}")
    for key in ("high-availability.storageDir", "state.checkpoints.dir", "state.savepoints.dir"):
        if not re.fullmatch(r"gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]/\S+", config.get(key, "")):
            problems.append(f"FlinkDeployment: {key} must be a gs:// path in the bucket, got {config.get(key)!r}")
    if not config.get("restart-strategy.type"):
        problems.append("FlinkDeployment: a restart strategy (restart-strategy.type) is required")
    for pod in pods([fd]):
        annotations = pod.metadata.get("annotations", {})
        if annotations.get("prometheus.io/port") != str(FLINK_METRICS_PORT):
            problems.append(f"{pod.owner}: prometheus.io/port must be {FLINK_METRICS_PORT}")
        main_ports = {p["containerPort"] for p in pod.container(MAIN_CONTAINER).get("ports", [])}
        if FLINK_METRICS_PORT not in main_ports:
            problems.append(f"{pod.owner}: {MAIN_CONTAINER} must declare port {FLINK_METRICS_PORT} (metrics)")
    taskmanager = next(p for p in pods([fd]) if p.owner.endswith("[taskManager]"))
    try:
        sidecar = taskmanager.container(WORKER_POOL_CONTAINER)
    except LookupError as error:
        return problems + [str(error)]
    if sidecar.get("args") != ["--worker_pool"]:
        problems.append(f"{WORKER_POOL_CONTAINER}: args must be ['--worker_pool'], got {sidecar.get('args')}")
    if [p["containerPort"] for p in sidecar.get("ports", [])] != [BEAM_WORKER_POOL_PORT]:
        problems.append(f"{WORKER_POOL_CONTAINER}: must expose {BEAM_WORKER_POOL_PORT}, got {sidecar.get('ports')}")
    if taskmanager.labels.get(TF_SERVING_CLIENT_LABEL) != "true":
        problems.append(f"TaskManagers run the pipelines' code and must carry {TF_SERVING_CLIENT_LABEL}=true")
    return problems


# --- pipelines -----------------------------------------------------------------------------------------------------

@dataclass
class Submission:
    job: dict
    module: str
    argv: list[str]  # the pipeline's arguments, as deploy.submit assembles them
    pod: Pod

    def options(self):
        """The PipelineOptions the pipeline runs with. Its module is imported first: it declares its own flags."""
        from apache_beam.options.pipeline_options import PipelineOptions

        importlib.import_module(self.module)
        return PipelineOptions(self.argv)


def submissions(docs: list[dict]) -> list[Submission]:
    from deploy.submit import read_args_file

    found = []
    for job in find(docs, "Job"):
        pod = next(p for p in pods([job]))
        container = pod.container(LAUNCHER_CONTAINER)
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        args = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in container["args"]]
        wrapper = args_dict(args[: args.index("--")])
        runner_args = args[args.index("--") + 1:]
        file_text = config_map_file(docs, pod, container, wrapper.get("args-file", ""))
        if file_text is None:
            raise LookupError(f"{ref(job)}: --args-file={wrapper.get('args-file')} is not in a mounted ConfigMap")
        found.append(Submission(job, wrapper["module"], [*runner_args, *read_args_file(file_text)], pod))
    return found


def _beam_parser():
    """A parser for every option Beam and the project declare (what PipelineOptions would accept)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    seen, stack = set(), list(PipelineOptions.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def check_pipelines(docs: list[dict]) -> list[str]:
    """Each Job's arguments parse with the pipelines' own options and Beam's, and agree with the cluster."""
    from apache_beam.options.pipeline_options import FlinkRunnerOptions, PortableOptions, StandardOptions

    from pipelines.options import InferenceOptions

    problems = []
    fd = flink_deployment(docs)
    found = submissions(docs)
    expected_modules = {"pipelines.fraud_detection", "pipelines.price_suggestion"}
    if {s.module for s in found} != expected_modules:
        problems.append(f"expected one submission Job per pipeline {sorted(expected_modules)}, got {sorted(s.module for s in found)}")
    job_names = [args_dict(s.argv).get("job_name") for s in found]
    if len(set(job_names)) != len(job_names) or None in job_names:
        problems.append(f"each pipeline needs its own --job_name (how an upgrade finds it), got {job_names}")
    taskmanager = next(p for p in pods([fd]) if p.owner.endswith("[taskManager]"))
    worker_models = _mount_path(taskmanager.container(WORKER_POOL_CONTAINER), taskmanager, "models")
    for submission in found:
        where = f"{ref(submission.job)} ({submission.module})"
        try:
            options = submission.options()
        except ImportError as error:
            problems.append(f"{where}: the module does not import: {error}")
            continue
        duplicates = sorted({a.split("=")[0] for a in submission.argv if sum(
            b.split("=")[0] == a.split("=")[0] for b in submission.argv) > 1})
        if duplicates:
            problems.append(f"{where}: flags given twice (Job and options file): {duplicates}")
        _, unknown = _beam_parser().parse_known_args(submission.argv)
        unknown_names = sorted({u.split("=")[0].lstrip("-") for u in unknown if u.startswith("--")} - JAVA_FLINK_OPTIONS)
        if unknown_names:
            flags = [f"--{name}" for name in unknown_names]
            problems.append(f"{where}: flags neither Beam nor the pipeline declares (Beam would drop them): {flags}")
        try:
            options.view_as(InferenceOptions).validate()
        except ValueError as error:
            problems.append(f"{where}: {error}")
        inference = options.view_as(InferenceOptions)
        if inference.mode() != "streaming":
            problems.append(f"{where}: the Flink deployment runs the streaming pipelines, got {inference.mode()}")
        if inference.inference == "tf_serving":
            problems += _check_tf_serving_target(where, docs, getattr(inference, "tf_serving_target", None))
        else:
            if worker_models is None or inference.model_dir != worker_models:
                problems.append(f"{where}: --model_dir must be where the workers mount the models ({worker_models}), got {inference.model_dir!r}")
            launcher_models = _mount_path(submission.pod.container(LAUNCHER_CONTAINER), submission.pod, "models")
            if launcher_models != inference.model_dir:
                problems.append(f"{where}: the launcher resolves the model version, so it must mount the models at {inference.model_dir}")
        standard = options.view_as(StandardOptions)
        if standard.runner != "FlinkRunner" or not standard.streaming:
            problems.append(f"{where}: expected --runner=FlinkRunner --streaming, got {standard.runner!r} streaming={standard.streaming}")
        flink = options.view_as(FlinkRunnerOptions)
        rest_host, _, rest_port = (flink.flink_master or "").rpartition(":")
        if rest_host != f"{fd['metadata']['name']}-rest" or rest_port != fd["spec"]["flinkConfiguration"].get("rest.port"):
            problems.append(f"{where}: --flink_master must be the session cluster's REST service "
                            f"{fd['metadata']['name']}-rest:{fd['spec']['flinkConfiguration'].get('rest.port')}, got {flink.flink_master!r}")
        portable = options.view_as(PortableOptions)
        if portable.environment_type != "EXTERNAL" or portable.environment_config != f"localhost:{BEAM_WORKER_POOL_PORT}":
            problems.append(f"{where}: the SDK harness is the worker-pool sidecar: expected --environment_type=EXTERNAL "
                            f"--environment_config=localhost:{BEAM_WORKER_POOL_PORT}, got {portable.environment_type} {portable.environment_config}")
        if portable.output_executable_path:
            problems.append(f"{where}: --output_executable_path is deploy.submit's to set")
        checkpointing = args_dict(submission.argv).get("checkpointing_interval", "")
        if not checkpointing.isdigit() or int(checkpointing) < 1000:
            problems.append(f"{where}: --checkpointing_interval (ms) must be set for a streaming job, got {checkpointing!r}")
        problems += _check_pipeline_project(where, inference, fd)
    return problems


def _check_tf_serving_target(where: str, docs: list[dict], target: str | None) -> list[str]:
    """--inference=tf_serving must name one of TF Serving's Services, at its gRPC port."""
    services = {s["metadata"]["name"] for s in find(docs, "Service")
                if s["spec"].get("selector", {}).get("app.kubernetes.io/name") == "tf-serving"}
    host, _, port = (target or "").rpartition(":")
    if host not in services or port != str(TF_SERVING_GRPC_PORT):
        return [f"{where}: --tf_serving_target must be a TF Serving Service ({', '.join(sorted(services))}) at port "
                f"{TF_SERVING_GRPC_PORT}, got {target!r}"]
    return []


def _check_pipeline_project(where: str, inference, fd) -> list[str]:
    site = site_settings()
    problems = []
    for name in ("input_subscription", "output_topic", "dead_letter_topic"):
        project = (getattr(inference, name) or "").split("/")[1:2]
        if project != [site["GCP_PROJECT"]]:
            problems.append(f"{where}: --{name} must be in project {site['GCP_PROJECT']} (site.env), got {getattr(inference, name)!r}")
    return problems


def _mount_path(container: dict, pod: Pod, volume: str) -> str | None:
    for mount in container.get("volumeMounts", []):
        if mount["name"] == volume:
            return mount["mountPath"]
    return None


def site_settings() -> dict[str, str]:
    text = (MANIFESTS_DIR / "base" / "site.env").read_text(encoding="utf-8")
    return dict(line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))


# --- Pub/Sub -------------------------------------------------------------------------------------------------------

@dataclass
class _Reader:
    """A pipeline as the Pub/Sub check sees it: its options and the subscription it reads, if declared."""

    where: str
    options: object  # PipelineOptions
    inference: object  # their InferenceOptions view
    subscription: dict | None


def check_pubsub(docs: list[dict]) -> list[str]:
    """Each pipeline's Pub/Sub resources are declared (Config Connector, base/pubsub/): its input subscription with
    an ack deadline that covers the pipeline's in-flight budget and a dead-letter policy to a topic of its own,
    which Pub/Sub's service agent may use; and nothing that leaves the normal path is published where no
    subscription keeps it."""
    from pipelines.delivery import in_flight_budget
    from pipelines.options import InferenceOptions

    declared = config_connector.PubSub(docs)
    readers = []
    for submission in submissions(docs):
        try:
            options = submission.options()
        except ImportError:
            continue  # the pipelines check reports it
        inference = options.view_as(InferenceOptions)
        readers.append(_Reader(f"{ref(submission.job)} ({submission.module})", options, inference,
                               declared.subscriptions.get(inference.input_subscription)))
    subscriptions = [r.subscription.get("spec", {}) for r in readers if r.subscription]
    # A subscription's undeliverable messages must not go where a pipeline reads or publishes.
    pipeline_topics = {t for r in readers for t in (r.inference.output_topic, r.inference.dead_letter_topic)}
    pipeline_topics |= {declared.topic(spec.get("topicRef")) for spec in subscriptions}

    problems = []
    for reader in readers:
        for flag in ("output_topic", "dead_letter_topic"):
            if getattr(reader.inference, flag) not in declared.topics:
                problems.append(f"{reader.where}: --{flag}={getattr(reader.inference, flag)} is not declared as a "
                                "PubSubTopic (base/pubsub/)")
        if reader.subscription is None:
            problems.append(f"{reader.where}: --input_subscription={reader.inference.input_subscription} is not "
                            f"declared as a PubSubSubscription (base/pubsub/); declared: {sorted(declared.subscriptions)}")
            continue
        where = f"{reader.where}: {ref(reader.subscription)}"
        problems += _check_ack_deadline(where, reader.subscription, reader.inference.input_subscription,
                                        in_flight_budget(reader.options))
        problems += _check_dead_letter_policy(where, reader.subscription, declared, pipeline_topics)
    # What left the normal path (the pipelines' dead letters, the undeliverable messages) must be kept somewhere.
    set_aside = {r.inference.dead_letter_topic for r in readers}
    set_aside |= {declared.topic(spec.get("deadLetterPolicy", {}).get("deadLetterTopicRef")) for spec in subscriptions}
    for topic in sorted(set_aside & set(declared.topics)):
        if not declared.subscribers(topic):
            problems.append(f"PubSubTopic {topic}: no subscription keeps what is published to it (Pub/Sub drops a "
                            "message published to a topic without subscriptions)")
    for subscription in declared.subscriptions.values():
        if subscription.get("spec", {}).get("expirationPolicy", {}).get("ttl") != "":
            problems.append(f"{ref(subscription)}: expirationPolicy.ttl must be \"\" (never): by default Pub/Sub deletes "
                            "a subscription nobody pulls from for 31 days, with its backlog")
    return problems


def _check_ack_deadline(where: str, subscription: dict, path: str, budget) -> list[str]:
    from pipelines.delivery import MAX_ACK_DEADLINE_SECS, MIN_ACK_DEADLINE_SECS, ack_deadline_problem

    deadline = subscription.get("spec", {}).get("ackDeadlineSeconds", PUBSUB_DEFAULT_ACK_DEADLINE_SECS)
    if not isinstance(deadline, int) or not MIN_ACK_DEADLINE_SECS <= deadline <= MAX_ACK_DEADLINE_SECS:
        return [f"{where}: ackDeadlineSeconds must be {MIN_ACK_DEADLINE_SECS} to {MAX_ACK_DEADLINE_SECS} (Pub/Sub's "
                f"bounds), got {deadline}"]
    fix = f"Set spec.ackDeadlineSeconds to at least {budget.ack_deadline_needed()}"
    problem = ack_deadline_problem(deadline, budget, path, fix=fix)
    return [f"{where}: {problem}"] if problem else []


def _check_dead_letter_policy(where: str, subscription: dict, declared, pipeline_topics: set) -> list[str]:
    policy = subscription.get("spec", {}).get("deadLetterPolicy")
    if not policy:
        return [f"{where}: a deadLetterPolicy is required: without one, a message the pipeline can never acknowledge "
                "(e.g. its dead letter could not be published) is delivered again for as long as it is retained"]
    problems = []
    attempts = policy.get("maxDeliveryAttempts")
    if not isinstance(attempts, int) or not MIN_DELIVERY_ATTEMPTS <= attempts <= MAX_DELIVERY_ATTEMPTS:
        problems.append(f"{where}: deadLetterPolicy.maxDeliveryAttempts must be {MIN_DELIVERY_ATTEMPTS} to "
                        f"{MAX_DELIVERY_ATTEMPTS} (Pub/Sub's bounds), got {attempts!r}")
    topic = declared.topic(policy.get("deadLetterTopicRef"))
    if topic not in declared.topics:
        return problems + [f"{where}: deadLetterPolicy.deadLetterTopicRef must name a PubSubTopic declared in the "
                           f"manifests, got {policy.get('deadLetterTopicRef')}"]
    if topic in pipeline_topics:
        problems.append(f"{where}: the dead-letter topic {topic} must be the subscription's own, not a topic a "
                        "pipeline reads from or publishes to")
    # Pub/Sub's service agent does the dead-lettering: it publishes the message, then acknowledges it here.
    for role, target in (("roles/pubsub.publisher", declared.topics[topic]), ("roles/pubsub.subscriber", subscription)):
        if not declared.agent_granted(role, target):
            problems.append(f"{where}: Pub/Sub's service agent needs {role} on {ref(target)} (an IAMPolicyMember "
                            "with memberFrom.serviceIdentityRef to the pubsub.googleapis.com ServiceIdentity), or "
                            "dead-lettering fails and the message is delivered again")
    return problems


# --- versions ------------------------------------------------------------------------------------------------------

def setup_py_facts(text: str) -> dict[str, str]:
    facts = {}
    beam = re.search(r'^BEAM_VERSION\s*=\s*"([^"]+)"', text, re.M)
    if beam:
        facts["beam"] = beam.group(1)
    pinned = re.search(r'"apache-beam\[gcp\]==(\{BEAM_VERSION\}|[\d.]+)"', text)
    if pinned:
        facts["beam_requirement"] = facts.get("beam", "") if pinned.group(1) == "{BEAM_VERSION}" else pinned.group(1)
    serving = re.search(r'"tensorflow-serving-api==([\d.]+)"', text)
    if serving:
        facts["tf_serving_api"] = serving.group(1)
    python = re.search(r'python_requires\s*=\s*">=(\d+\.\d+)', text)
    if python:
        facts["python"] = python.group(1)
    packages = re.search(r"find_packages\(include=\[([^\]]*)\]", text)
    if packages:
        facts["packages"] = " ".join(re.findall(r'"([\w.]+)"', packages.group(1)))
    return facts


def dockerfile_args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))


def check_versions(docs: list[dict]) -> list[str]:
    """One Beam version everywhere (setup.py, installed SDK, both images, the job server jar); one Flink minor; TF
    Serving's image at the version of the serving API the project pins."""
    import apache_beam

    problems = []
    setup = setup_py_facts(SETUP_PY.read_text(encoding="utf-8"))
    beam = setup.get("beam")
    if not beam or setup.get("beam_requirement") != beam:
        return [f"setup.py must define BEAM_VERSION and require apache-beam[gcp]=={{BEAM_VERSION}}, found {setup}"]
    if apache_beam.__version__ != beam:
        problems.append(f"installed apache-beam is {apache_beam.__version__}, setup.py pins {beam}")
    worker = (IMAGES_DIR / "worker" / "Dockerfile").read_text(encoding="utf-8")
    launcher = (IMAGES_DIR / "launcher" / "Dockerfile").read_text(encoding="utf-8")
    flink_image = (IMAGES_DIR / "flink" / "Dockerfile").read_text(encoding="utf-8")
    for name, text in (("worker", worker), ("launcher", launcher)):
        if dockerfile_args(text).get("BEAM_VERSION") != beam:
            problems.append(f"images/{name}/Dockerfile: ARG BEAM_VERSION must be {beam}, got {dockerfile_args(text).get('BEAM_VERSION')}")
    python = setup.get("python")
    if not re.search(rf"^FROM apache/beam_python{re.escape(python or '?')}_sdk:\$\{{BEAM_VERSION\}}$", worker, re.M):
        problems.append(f"images/worker/Dockerfile must be FROM apache/beam_python{python}_sdk:${{BEAM_VERSION}}")
    if len(re.findall(rf"^FROM python:{re.escape(python or '?')}-slim\b", launcher, re.M)) < 1:
        problems.append(f"images/launcher/Dockerfile must run on python:{python}-slim")

    fd = flink_deployment(docs)
    flink_minor = fd["spec"]["flinkVersion"].removeprefix("v").replace("_", ".")
    if dockerfile_args(launcher).get("FLINK_MINOR") != flink_minor:
        problems.append(f"images/launcher/Dockerfile: ARG FLINK_MINOR must be {flink_minor} (flinkVersion), got {dockerfile_args(launcher).get('FLINK_MINOR')}")
    flink_version = dockerfile_args(flink_image).get("FLINK_VERSION", "")
    if not flink_version.startswith(flink_minor + "."):
        problems.append(f"images/flink/Dockerfile: FLINK_VERSION {flink_version} is not a {flink_minor}.x release")
    image_tag = fd["spec"]["image"].rsplit(":", 1)[-1]
    if image_tag != flink_version:
        problems.append(f"FlinkDeployment image tag {image_tag} must be the Flink image's version {flink_version}")
    jar = f"/opt/beam/jars/beam-runners-flink-{flink_minor}-job-server-{beam}.jar"
    for submission in submissions(docs):
        argv = args_dict(submission.argv)
        if argv.get("flink_job_server_jar") != jar:
            problems.append(f"{ref(submission.job)}: --flink_job_server_jar must be {jar} (launcher image), got {argv.get('flink_job_server_jar')!r}")
        if argv.get("flink_version") != flink_minor:
            problems.append(f"{ref(submission.job)}: --flink_version must be {flink_minor}, got {argv.get('flink_version')!r}")
    serving_image = tf_serving_pod(docs).container(TF_SERVING_CONTAINER)["image"]
    serving_version = serving_image.rsplit(":", 1)[-1].removesuffix("-gpu")
    if serving_version != setup.get("tf_serving_api"):
        problems.append(f"TF Serving image {serving_image} must be the version of tensorflow-serving-api in setup.py ({setup.get('tf_serving_api')})")
    # The images install the project from setup.py's packages: the build context must send every one of them.
    for name in ("worker", "launcher"):
        ignore = (IMAGES_DIR / name / "Dockerfile.dockerignore").read_text(encoding="utf-8")
        for package in setup.get("packages", "").split():
            if f"!{package}/" not in ignore.splitlines():
                problems.append(f"images/{name}/Dockerfile.dockerignore must let package {package}/ (setup.py) into the build")
    return problems


# --- GPUs ----------------------------------------------------------------------------------------------------------

def gpu_limit(container: dict) -> str | None:
    return container.get("resources", {}).get("limits", {}).get(GPU)


def check_gpu(docs: list[dict], overlay: str) -> list[str]:
    """gpu: a GPU for the worker-pool sidecar (where TensorFlow runs) and TF Serving, on GPU nodes, GPU images;
    never for Flink's own container. cpu: no GPU anywhere."""
    problems = []
    fd = flink_deployment(docs)
    if any(k.startswith("external-resource") for k in fd["spec"]["flinkConfiguration"]):
        problems.append("FlinkDeployment: no Flink external resources: the GPU belongs to the worker-pool sidecar, not Flink")
    all_pods = pods(docs)
    with_gpu = {(p.owner, c["name"]) for p in all_pods for c in p.containers() if gpu_limit(c)}
    taskmanager = next(p for p in all_pods if p.owner.endswith("[taskManager]"))
    serving = tf_serving_pod(docs)
    gpu_images = {c["image"] for p in all_pods for c in p.containers() if c.get("image", "").endswith("-gpu")}
    if overlay == "cpu":
        if with_gpu:
            problems.append(f"cpu overlay: no GPU anywhere, found {sorted(with_gpu)}")
        if gpu_images:
            problems.append(f"cpu overlay: no GPU images, found {sorted(gpu_images)}")
        return problems
    expected = {(taskmanager.owner, WORKER_POOL_CONTAINER), (serving.owner, TF_SERVING_CONTAINER)}
    if with_gpu != expected:
        problems.append(f"gpu overlay: GPUs exactly on {sorted(expected)}, found {sorted(with_gpu)}")
    for pod, container in ((taskmanager, WORKER_POOL_CONTAINER), (serving, TF_SERVING_CONTAINER)):
        if not pod.spec.get("nodeSelector"):
            problems.append(f"gpu overlay: {pod.owner} needs a nodeSelector for GPU nodes")
        if not any(t.get("key") == GPU for t in pod.spec.get("tolerations", [])):
            problems.append(f"gpu overlay: {pod.owner} must tolerate the {GPU} taint")
        if not pod.container(container)["image"].endswith("-gpu"):
            problems.append(f"gpu overlay: {pod.owner} {container} must run a GPU image, got {pod.container(container)['image']}")
    return problems


# --- references ----------------------------------------------------------------------------------------------------

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
                problems.append(f"{pod.owner}: volume {volume['name']} names a missing ConfigMap {volume['configMap']['name']}")
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
            problems.append(f"{ref(hpa)}: leave {target['kind']}/{target['name']}.spec.replicas unset; the autoscaler owns it")
    for doc in docs:
        for path in _placeholders(doc):
            problems.append(f"{ref(doc)}: {path} still holds a site placeholder (set it in base/site.env)")
    return problems


PLACEHOLDER = re.compile(r"\b(FLINK_BUCKET|MODEL_BUCKET|PIPELINE_GSA|TF_SERVING_GSA|GCP_PROJECT)\b")


def _placeholders(node, path="") -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _placeholders(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _placeholders(value, f"{path}[{i}]")
    elif isinstance(node, str) and PLACEHOLDER.search(node) and not path.endswith(".data.site.env"):
        yield path


# --- network policies ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (namespace and labels) or an address outside the cluster."""

    namespace: str | None = None
    labels: tuple = ()
    ip: str | None = None

    @property
    def label_dict(self) -> dict:
        return dict(self.labels)


def peer(namespace: str, labels: dict) -> Peer:
    return Peer(namespace, tuple(sorted(labels.items())))


def external(ip: str) -> Peer:
    return Peer(ip=ip)


def _selects(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return True
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        ok = {
            "In": lambda: labels.get(key) in values,
            "NotIn": lambda: labels.get(key) not in values,
            "Exists": lambda: key in labels,
            "DoesNotExist": lambda: key not in labels,
        }[operator]()
        if not ok:
            return False
    return True


def _namespace_labels(namespace: str) -> dict:
    return {"kubernetes.io/metadata.name": namespace}


def _peer_matches(rule_peer: dict, policy_namespace: str, other: Peer) -> bool:
    if "ipBlock" in rule_peer:
        if other.ip is None:
            return False  # pod addresses are not matched by ipBlocks here: a rule for pods must say so
        block = rule_peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if other.ip is not None:
        return False
    if "namespaceSelector" in rule_peer:
        if not _selects(rule_peer["namespaceSelector"], _namespace_labels(other.namespace)):
            return False
    elif other.namespace != policy_namespace:
        return False
    return _selects(rule_peer.get("podSelector"), other.label_dict)


def _port_matches(rule: dict, port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") == protocol and (
            "port" not in entry or entry["port"] <= port <= entry.get("endPort", entry["port"])
        ):
            return True
    return False


def _allowed_one_way(policies: list[dict], subject: Peer, other: Peer, port: int, protocol: str, direction: str) -> bool:
    """Whether `subject` (a pod in the namespace) may send (Egress) to / receive (Ingress) from `other`."""
    selecting = [
        p for p in policies
        if direction in p["spec"].get("policyTypes", ["Ingress"]) and _selects(p["spec"]["podSelector"], subject.label_dict)
    ]
    if not selecting:
        return True
    key, peers = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            rule_peers = rule.get(peers)
            if (not rule_peers or any(_peer_matches(rp, policy["metadata"]["namespace"], other) for rp in rule_peers)) \
                    and _port_matches(rule, port, protocol):
                return True
    return False


def allowed(docs: list[dict], source: Peer, destination: Peer, port: int, protocol: str = "TCP") -> bool:
    """Whether the NetworkPolicies let `source` open a connection to `destination`:`port` (both sides' policies
    apply to pods of this namespace; the other namespaces are taken to have none)."""
    policies = find(docs, "NetworkPolicy")
    if source.namespace == NAMESPACE and not _allowed_one_way(policies, source, destination, port, protocol, "Egress"):
        return False
    if destination.namespace == NAMESPACE and not _allowed_one_way(policies, destination, source, port, protocol, "Ingress"):
        return False
    return True


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
    google = external("142.250.74.42")
    operator = peer("flink-operator", {"app.kubernetes.io/name": "flink-kubernetes-operator"})
    prometheus = peer("monitoring", {"app.kubernetes.io/name": "prometheus"})
    other_namespace = peer("default", {"app": "curious"})
    metadata_server = external("169.254.169.254")

    must: list[tuple[str, Peer, Peer, int, str]] = [
        ("TaskManager -> TF Serving gRPC", taskmanager, serving, TF_SERVING_GRPC_PORT, "TCP"),
        ("TaskManager -> TF Serving REST", taskmanager, serving, TF_SERVING_REST_PORT, "TCP"),
        ("TaskManager -> JobManager RPC", taskmanager, jobmanager, FLINK_INTERNAL_PORTS["jobmanager.rpc.port"], "TCP"),
        ("TaskManager -> JobManager blobs", taskmanager, jobmanager, FLINK_INTERNAL_PORTS["blob.server.port"], "TCP"),
        ("JobManager -> TaskManager RPC", jobmanager, taskmanager, FLINK_INTERNAL_PORTS["taskmanager.rpc.port"], "TCP"),
        ("TaskManager -> TaskManager data", taskmanager, taskmanager, FLINK_INTERNAL_PORTS["taskmanager.data.port"], "TCP"),
        ("operator -> JobManager REST", operator, jobmanager, FLINK_REST_PORT, "TCP"),
        ("Prometheus -> Flink metrics", prometheus, taskmanager, FLINK_METRICS_PORT, "TCP"),
        ("Prometheus -> TF Serving metrics", prometheus, serving, TF_SERVING_REST_PORT, "TCP"),
        ("TaskManager -> Google APIs", taskmanager, google, 443, "TCP"),
        ("JobManager -> Google APIs / API server", jobmanager, google, 443, "TCP"),
        ("TF Serving -> Google APIs (model bucket)", serving, google, 443, "TCP"),
        ("TaskManager -> metadata server (Workload Identity)", taskmanager, metadata_server, 80, "TCP"),
        ("TF Serving -> DNS", serving, dns, 53, "UDP"),
        ("TaskManager -> DNS", taskmanager, dns, 53, "UDP"),
    ]
    must += [(f"submitter {i} -> JobManager REST", s, jobmanager, FLINK_REST_PORT, "TCP") for i, s in enumerate(submitters)]
    must += [(f"submitter {i} -> DNS", s, dns, 53, "UDP") for i, s in enumerate(submitters)]
    must_not: list[tuple[str, Peer, Peer, int, str]] = [
        ("another pod -> TF Serving", stranger, serving, TF_SERVING_GRPC_PORT, "TCP"),
        ("another namespace -> TF Serving", other_namespace, serving, TF_SERVING_GRPC_PORT, "TCP"),
        ("JobManager -> TF Serving", jobmanager, serving, TF_SERVING_GRPC_PORT, "TCP"),
        ("another pod -> JobManager REST", stranger, jobmanager, FLINK_REST_PORT, "TCP"),
        ("another namespace -> JobManager REST", other_namespace, jobmanager, FLINK_REST_PORT, "TCP"),
        ("TaskManager -> the internet on 80", taskmanager, external("93.184.216.34"), 80, "TCP"),
        ("TF Serving -> JobManager REST", serving, jobmanager, FLINK_REST_PORT, "TCP"),
    ]
    must_not += [(f"submitter {i} -> TF Serving", s, serving, TF_SERVING_GRPC_PORT, "TCP") for i, s in enumerate(submitters)]
    must_not += [(f"submitter {i} -> TaskManager RPC", s, taskmanager, FLINK_INTERNAL_PORTS["taskmanager.rpc.port"], "TCP")
                 for i, s in enumerate(submitters)]
    problems = [f"network: {name} (port {port}/{proto}) must be allowed" for name, src, dst, port, proto in must
                if not allowed(docs, src, dst, port, proto)]
    problems += [f"network: {name} (port {port}/{proto}) must be denied" for name, src, dst, port, proto in must_not
                 if allowed(docs, src, dst, port, proto)]
    if not any(p["spec"]["podSelector"] == {} and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in find(docs, "NetworkPolicy")):
        problems.append("network: a default-deny policy (all pods, Ingress and Egress, no rules) is required")
    return problems


# --- all -----------------------------------------------------------------------------------------------------------

def checks(overlay: str) -> dict[str, Callable[[list[dict]], list[str]]]:
    """Every check by name, for one overlay (the GPU check depends on which)."""
    from deploy.manifests import render_yaml

    return {
        "kubernetes schemas": check_builtin_schemas,
        "FlinkDeployment schema": check_flink_deployment_schema,
        "Config Connector schemas": check_config_connector_schemas,
        "security": check_security,
        "no credentials": lambda docs: check_no_credentials(docs, render_yaml(overlay)),
        "references": check_references,
        "flink": check_flink,
        "tf serving": check_tf_serving,
        "pipelines": check_pipelines,
        "pub/sub": check_pubsub,
        "versions": check_versions,
        "gpu": lambda docs: check_gpu(docs, overlay),
        "network policies": check_network_policies,
    }


def validate(overlay: str) -> dict[str, list[str]]:
    """All checks of one overlay: {check name: problems}."""
    from deploy.manifests import render

    docs = render(overlay)
    return {name: check(docs) for name, check in checks(overlay).items()}
