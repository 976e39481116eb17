"""The TF Serving mTLS check: Envoy in front of TF Serving requires a client certificate, lets only the
TaskManagers' identity call PredictionService, serves nothing else but the metrics path, and the pipelines that
use TF Serving present that certificate.

TF Serving has no per-method authorisation: a client that reaches its gRPC port may reload its config and move
the version labels. So its own ports stay inside the pod and Envoy (base/tf-serving/envoy.yaml) is the door.
"""

from __future__ import annotations

from deploy.manifests import args_dict, config_map_file, flink_role_pod, mount_path, tf_serving_pod
from deploy.site import (
    CLIENT_TLS_DIR,
    CLIENT_TLS_SECRET,
    ENVOY_CONTAINER,
    PREDICTION_SERVICE,
    SERVER_TLS_SECRET,
    TF_SERVING_CLIENT_IDENTITY,
    TF_SERVING_GRPC_PORT,
    TF_SERVING_METRICS_PATH,
    TF_SERVING_METRICS_PORT,
    TF_SERVING_REST_PORT,
    TF_SERVING_TLS_PORT,
    WORKER_POOL_CONTAINER,
)

ENVOY_CONFIG = "/etc/envoy/envoy.yaml"
TLS_CONTEXT = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"


def _http_manager(chain: dict) -> dict:
    for network_filter in chain.get("filters", []):
        if network_filter.get("name") == "envoy.filters.network.http_connection_manager":
            return network_filter.get("typed_config", {})
    return {}


def _routes(manager: dict) -> list[dict]:
    return [
        route for host in manager.get("route_config", {}).get("virtual_hosts", []) for route in host.get("routes", [])
    ]


def _upstreams(config: dict) -> dict[str, tuple[str, int]]:
    """{cluster name: (address, port)} of Envoy's static clusters (one endpoint each here)."""
    found = {}
    for cluster in config.get("static_resources", {}).get("clusters", []):
        for group in cluster.get("load_assignment", {}).get("endpoints", []):
            for endpoint in group.get("lb_endpoints", []):
                address = endpoint["endpoint"]["address"]["socket_address"]
                found[cluster["name"]] = (address["address"], address["port_value"])
    return found


# The extension messages the config's typed_configs name: importing a module registers its messages, so that the
# parser can resolve "@type". A config that starts to use another extension adds its module here.
ENVOY_EXTENSIONS = (
    "envoy.extensions.filters.http.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
)


def envoy_schema_problems(config: dict) -> list[str]:
    """The config against Envoy's own API, its Bootstrap message (Envoy's protos as gRPC publishes them, the
    xds-protos package): a misspelt field or a wrong type is an error here, as Envoy would refuse to start."""
    import importlib

    from envoy.config.bootstrap.v3 import bootstrap_pb2
    from google.protobuf import json_format

    for module in ENVOY_EXTENSIONS:
        importlib.import_module(module)
    try:
        json_format.ParseDict(config, bootstrap_pb2.Bootstrap())
    except json_format.ParseError as error:
        # The parser appends every field the message has: the first line says what is wrong and where.
        return [f"envoy: not a valid Envoy Bootstrap: {str(error).splitlines()[0]}"]
    return []


def check_envoy(config: dict, server_tls_dir: str | None) -> list[str]:
    """Envoy's config against its API and the rules above; server_tls_dir is where the server secret is mounted."""
    problems = envoy_schema_problems(config)
    if "admin" in config:
        problems.append("envoy: no admin interface (it can change Envoy's state); remove `admin:`")
    upstreams = _upstreams(config)
    listeners = {
        lst["address"]["socket_address"]["port_value"]: lst
        for lst in config.get("static_resources", {}).get("listeners", [])
    }
    if set(listeners) != {TF_SERVING_TLS_PORT, TF_SERVING_METRICS_PORT}:
        problems.append(
            f"envoy: listeners must be {TF_SERVING_TLS_PORT} (mTLS gRPC) and {TF_SERVING_METRICS_PORT} (metrics), "
            f"got {sorted(listeners)}"
        )
    grpc = listeners.get(TF_SERVING_TLS_PORT, {})
    for chain in grpc.get("filter_chains", [{}]):
        tls = chain.get("transport_socket", {}).get("typed_config", {})
        if tls.get("@type") != TLS_CONTEXT or tls.get("require_client_certificate") is not True:
            problems.append(f"envoy {TF_SERVING_TLS_PORT}: TLS with require_client_certificate: true is required")
        ca = tls.get("common_tls_context", {}).get("validation_context", {}).get("trusted_ca", {}).get("filename", "")
        if not server_tls_dir or not ca.startswith(server_tls_dir + "/"):
            problems.append(
                f"envoy {TF_SERVING_TLS_PORT}: client certificates must be verified against the CA of the "
                f"{SERVER_TLS_SECRET} Secret (mounted at {server_tls_dir}), got trusted_ca {ca!r}"
            )
        manager = _http_manager(chain)
        filters = manager.get("http_filters", [])
        rbac = filters[0].get("typed_config", {}) if filters else {}
        if rbac.get("@type") != RBAC:
            problems.append(f"envoy {TF_SERVING_TLS_PORT}: the first HTTP filter must be RBAC")
        rules = rbac.get("rules", {})
        if rules.get("action") != "ALLOW" or not rules.get("policies"):
            problems.append(f"envoy {TF_SERVING_TLS_PORT}: RBAC must ALLOW named policies (and so deny the rest)")
        for name, policy in rules.get("policies", {}).items():
            paths = [p.get("url_path", {}).get("path", {}).get("prefix") for p in policy.get("permissions", [])]
            names = [
                p.get("authenticated", {}).get("principal_name", {}).get("exact") for p in policy.get("principals", [])
            ]
            if not paths or any(path != PREDICTION_SERVICE for path in paths):
                problems.append(f"envoy RBAC {name}: may only permit the prefix {PREDICTION_SERVICE}, got {paths}")
            if not names or any(n != TF_SERVING_CLIENT_IDENTITY for n in names):
                problems.append(
                    f"envoy RBAC {name}: only the TaskManagers' certificate ({TF_SERVING_CLIENT_IDENTITY}) may call, "
                    f"got principals {policy.get('principals')}"
                )
        for route in _routes(manager):
            target = upstreams.get(route.get("route", {}).get("cluster"))
            if route.get("match") != {"prefix": PREDICTION_SERVICE} or target != ("127.0.0.1", TF_SERVING_GRPC_PORT):
                problems.append(
                    f"envoy {TF_SERVING_TLS_PORT}: routes may only send {PREDICTION_SERVICE} to 127.0.0.1:"
                    f"{TF_SERVING_GRPC_PORT}, got {route.get('match')} -> {target}"
                )
    for chain in listeners.get(TF_SERVING_METRICS_PORT, {}).get("filter_chains", []):
        for route in _routes(_http_manager(chain)):
            target = upstreams.get(route.get("route", {}).get("cluster"))
            if route.get("match") != {"path": TF_SERVING_METRICS_PATH} or target != ("127.0.0.1", TF_SERVING_REST_PORT):
                problems.append(
                    f"envoy {TF_SERVING_METRICS_PORT}: may only serve exactly {TF_SERVING_METRICS_PATH} from "
                    f"127.0.0.1:{TF_SERVING_REST_PORT}, got {route.get('match')} -> {target}"
                )
    return problems


def check_tf_serving_tls(docs: list[dict]) -> list[str]:
    """Envoy's mTLS and per-method rules, the client certificate in the worker pool, and the pipelines' TLS flags."""
    import yaml

    from deploy.validation.submissions import submissions

    problems = []
    pod = tf_serving_pod(docs)
    try:
        envoy = pod.container(ENVOY_CONTAINER)
    except LookupError:
        return [f"tf-serving: the {ENVOY_CONTAINER} container (mTLS in front of TF Serving) is missing"]
    text = config_map_file(docs, pod, envoy, ENVOY_CONFIG)
    if text is None:
        return [f"envoy: {ENVOY_CONFIG} is not a file of a mounted ConfigMap"]
    volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
    server_tls = next(
        (n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == SERVER_TLS_SECRET), None
    )
    problems += check_envoy(yaml.safe_load(text), mount_path(envoy, server_tls) if server_tls else None)

    worker = flink_role_pod(docs, "taskManager")
    client_volume = next(
        (
            v["name"]
            for v in worker.spec.get("volumes", [])
            if v.get("secret", {}).get("secretName") == CLIENT_TLS_SECRET
        ),
        None,
    )
    if client_volume is None or mount_path(worker.container(WORKER_POOL_CONTAINER), client_volume) != CLIENT_TLS_DIR:
        problems.append(f"{WORKER_POOL_CONTAINER}: must mount the {CLIENT_TLS_SECRET} Secret at {CLIENT_TLS_DIR}")

    expected = {
        "tf_serving_tls": "true",
        "tf_serving_root_certificates": f"{CLIENT_TLS_DIR}/ca.crt",
        "tf_serving_client_certificate": f"{CLIENT_TLS_DIR}/tls.crt",
        "tf_serving_client_key": f"{CLIENT_TLS_DIR}/tls.key",
    }
    for submission in submissions(docs):
        args = args_dict(submission.argv)
        if args.get("inference") != "tf_serving":
            continue
        # The target itself, a TF Serving Service at Envoy's port, is the pipelines check's (submissions.py).
        for flag, value in expected.items():
            if args.get(flag) != value:
                problems.append(
                    f"Job/{submission.job['metadata']['name']}: --inference=tf_serving needs --{flag}={value}, got {args.get(flag)!r}"
                )
    return problems
