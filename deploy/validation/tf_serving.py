"""The TF Serving check: the server's ports, probes and metrics agree with deploy/site.py, and its three config
files (models with version labels, batching, monitoring) are mounted and say what the rollouts and the
dashboards rely on.
"""

from __future__ import annotations

import re

from deploy.manifests import args_dict, config_map_file, find, mount_path, ref, tf_serving_pod
from deploy.site import (
    TF_SERVING_CONTAINER,
    TF_SERVING_GRPC_PORT,
    TF_SERVING_METRICS_PATH,
    TF_SERVING_METRICS_PORT,
    TF_SERVING_REST_PORT,
    TF_SERVING_TLS_PORT,
)


def parse_models_config(text: str):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


BATCHING_WRAPPED = {
    "max_batch_size",
    "batch_timeout_micros",
    "max_enqueued_batches",
    "num_batch_threads",
    "thread_pool_name",
    "max_execution_batch_size",
    "enable_large_batch_splitting",
}
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
        problems.append(
            f"tf-serving: container ports must be grpc {TF_SERVING_GRPC_PORT}, http {TF_SERVING_REST_PORT}, got {ports}"
        )
    # The Services lead to Envoy's mTLS port alone (tf_serving_tls.py checks what Envoy lets through).
    pod_ports = {p["name"]: p["containerPort"] for c in pod.containers() for p in c.get("ports", [])}
    for service in find(docs, "Service"):
        if service["spec"].get("selector", {}).get("app.kubernetes.io/name") != "tf-serving":
            continue
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            target = pod_ports.get(target, target)
            if port["port"] != TF_SERVING_TLS_PORT or target != TF_SERVING_TLS_PORT:
                problems.append(
                    f"{ref(service)}: may only expose Envoy's mTLS port {TF_SERVING_TLS_PORT}, got port "
                    f"{port['port']} -> {target} (TF Serving's own ports take anyone's ModelService calls)"
                )
    for probe in ("readinessProbe", "startupProbe"):
        get = container.get(probe, {}).get("httpGet", {})
        path = get.get("path", "")
        if ports.get(get.get("port"), get.get("port")) != TF_SERVING_REST_PORT or not re.fullmatch(
            r"/v1/models/[a-z]+(/labels/stable)?", path
        ):
            problems.append(
                f"tf-serving: {probe} must GET /v1/models/<name>[/labels/stable] on {TF_SERVING_REST_PORT}, got {get}"
            )
    annotations = pod.metadata.get("annotations", {})
    if (
        annotations.get("prometheus.io/port") != str(TF_SERVING_METRICS_PORT)
        or annotations.get("prometheus.io/path") != TF_SERVING_METRICS_PATH
    ):
        problems.append(
            f"tf-serving: prometheus.io annotations must point at Envoy's {TF_SERVING_METRICS_PORT}{TF_SERVING_METRICS_PATH}"
        )

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
    if (
        not args.get("model_config_file_poll_wait_seconds", "0").isdigit()
        or int(args.get("model_config_file_poll_wait_seconds", "0")) < 1
    ):
        problems.append(
            "tf-serving: --model_config_file_poll_wait_seconds must be set, or rollouts never reach the server"
        )
    if models_text is not None:
        problems += check_models_config(models_text, set(MODELS), mount_path(container, "models"))
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
            problems.append(
                f"tf-serving monitoring: expected prometheus_config enabled at {TF_SERVING_METRICS_PATH}, got {compact!r}"
            )
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
            problems.append(
                f"models.config {name}: the version policy must be `specific` (labels need pinned versions)"
            )
        versions = set(model.model_version_policy.specific.versions)
        labels = dict(model.version_labels)
        if "stable" not in labels:
            problems.append(f"models.config {name}: a `stable` version label is required")
        for label, version in labels.items():
            if version not in versions:
                problems.append(
                    f"models.config {name}: label {label} -> {version} is not among the served versions {sorted(versions)}"
                )
        unlabelled = versions - set(labels.values())
        if unlabelled:
            problems.append(
                f"models.config {name}: versions {sorted(unlabelled)} are loaded but no label points at them"
            )
    return problems
