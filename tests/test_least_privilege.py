"""Least privilege in the deployment, offline: each defect the checks exist for, put back into a freshly rendered
overlay, is reported. Kubernetes API tokens only in Flink's containers; the TaskManagers' account read-only;
the worker pool on loopback; TF Serving behind Envoy's mutual TLS with PredictionService alone; the network paths
narrowed to what each role uses.
"""

from __future__ import annotations

import pytest
import yaml

from deploy.manifests import find, one
from deploy.site import CLIENT_TLS_SECRET, ENVOY_CONTAINER, SERVER_TLS_SECRET
from deploy.validation.tf_serving_tls import ENVOY_CONFIG
from tests.test_deploy_manifests import assert_caught, cases, pipeline_args, pod, rendered, worker

pytestmark = pytest.mark.integration  # kubectl renders the overlays


def taskmanager(docs):
    return pod(docs, "[taskManager]")


def role(docs, name):
    return one(docs, "Role", name)


def token_mount():
    return {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}


@pytest.mark.parametrize(
    "mutate, expected",
    cases(
        (
            lambda d: taskmanager(d).spec.update(automountServiceAccountToken=True),
            "[taskManager] container 'beam-worker-pool': holds a Kubernetes API token it does not use",
        ),
        (
            lambda d: worker(d)["volumeMounts"].append(token_mount()),
            "[taskManager] container 'beam-worker-pool': holds a Kubernetes API token it does not use",
        ),
        (
            lambda d: role(d, "flink-taskmanager")["rules"].append(
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete"]}
            ),
            "ServiceAccount/flink-taskmanager: the TaskManagers may only get/list/watch ConfigMaps",
        ),
        (
            lambda d: role(d, "flink-taskmanager")["rules"][0]["verbs"].append("update"),
            "ServiceAccount/flink-taskmanager: the TaskManagers may only get/list/watch ConfigMaps",
        ),
        (
            lambda d: one(d, "FlinkDeployment")["spec"]["flinkConfiguration"].pop(
                "kubernetes.taskmanager.service-account"
            ),
            "the TaskManagers must run as 'flink-taskmanager'",
        ),
        (
            lambda d: role(d, "flink-jobmanager")["rules"].append(
                {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create"]}
            ),
            "ServiceAccount/flink-jobmanager: may ['create'] 'pods/portforward'; no account may",
        ),
        (
            lambda d: role(d, "flink-jobmanager")["rules"].append(
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
            ),
            "ServiceAccount/flink-jobmanager: may ['get'] 'secrets'; no account may",
        ),
        (
            lambda d: pod(d, "Job/submit-fraud-detection").spec.update(automountServiceAccountToken=True),
            "service account 'pipeline-submitter' has no Role, so no container may have its token",
        ),
        (
            lambda d: d.append(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": "tm-view"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                    "subjects": [{"kind": "ServiceAccount", "name": "flink-taskmanager", "namespace": "x"}],
                }
            ),
            "ClusterRoleBinding/tm-view: cluster-wide grants are not allowed",
        ),
    ),
)
def test_kubernetes_api_access_check_catches(mutate, expected):
    assert_caught("kubernetes api access", mutate, expected)


def envoy_config(docs) -> tuple[dict, dict]:
    """(the ConfigMap holding envoy.yaml, its parsed content)."""
    config_map = next(cm for cm in find(docs, "ConfigMap") if cm["metadata"]["name"].startswith("tf-serving-envoy"))
    return config_map, yaml.safe_load(config_map["data"][ENVOY_CONFIG.rsplit("/", 1)[1]])


def change_envoy(change):
    def mutate(docs):
        config_map, config = envoy_config(docs)
        change(config)
        config_map["data"]["envoy.yaml"] = yaml.safe_dump(config)

    return mutate


def grpc_chain(config) -> dict:
    listener = next(
        lst for lst in config["static_resources"]["listeners"] if lst["address"]["socket_address"]["port_value"] == 8443
    )
    return listener["filter_chains"][0]


def grpc_manager(config) -> dict:
    return grpc_chain(config)["filters"][0]["typed_config"]


def rbac_policy(config) -> dict:
    return grpc_manager(config)["http_filters"][0]["typed_config"]["rules"]["policies"]["taskmanagers_predict"]


def tf_serving_args(docs, *extra):
    data = pipeline_args(docs)["data"]
    text = data["pipeline.args"].replace("--model_dir=/models\n--inference=in_process", "--inference=tf_serving")
    data["pipeline.args"] = text + "\n" + "\n".join(extra) + "\n"


MTLS_ARGS = (
    "--tf_serving_target=tf-serving:8443",
    "--tf_serving_tls",
    "--tf_serving_root_certificates=/etc/tf-serving-client/ca.crt",
    "--tf_serving_client_certificate=/etc/tf-serving-client/tls.crt",
    "--tf_serving_client_key=/etc/tf-serving-client/tls.key",
)


@pytest.mark.parametrize(
    "mutate, expected",
    cases(
        (
            change_envoy(
                lambda c: grpc_chain(c)["transport_socket"]["typed_config"].update(require_client_certificate=False)
            ),
            "envoy 8443: TLS with require_client_certificate: true is required",
        ),
        (
            change_envoy(lambda c: grpc_manager(c).update(codec_typ="HTTP2")),
            'HttpConnectionManager" has no field named "codec_typ" at "Bootstrap.static_resources.listeners[0]',
        ),
        (
            change_envoy(lambda c: grpc_manager(c).update(codec_type="HTTP9")),
            "envoy: not a valid Envoy Bootstrap",
        ),
        (
            change_envoy(lambda c: grpc_chain(c).pop("transport_socket")),
            "envoy 8443: TLS with require_client_certificate: true is required",
        ),
        (
            change_envoy(
                lambda c: rbac_policy(c)["permissions"].append(
                    {"url_path": {"path": {"prefix": "/tensorflow.serving.ModelService/"}}}
                )
            ),
            "envoy RBAC taskmanagers_predict: may only permit the prefix /tensorflow.serving.PredictionService/",
        ),
        (
            change_envoy(lambda c: rbac_policy(c).update(principals=[{"any": True}])),
            "envoy RBAC taskmanagers_predict: only the TaskManagers' certificate",
        ),
        (
            change_envoy(lambda c: grpc_manager(c)["http_filters"].pop(0)),
            "envoy 8443: the first HTTP filter must be RBAC",
        ),
        (
            change_envoy(
                lambda c: grpc_manager(c)["route_config"]["virtual_hosts"][0]["routes"].append(
                    {"match": {"prefix": "/"}, "route": {"cluster": "tf_serving_grpc"}}
                )
            ),
            "envoy 8443: routes may only send /tensorflow.serving.PredictionService/ to 127.0.0.1:8500",
        ),
        (
            change_envoy(
                lambda c: c.update(admin={"address": {"socket_address": {"address": "0.0.0.0", "port_value": 9901}}})
            ),
            "envoy: no admin interface",
        ),
        (
            change_envoy(
                lambda c: c["static_resources"]["listeners"][1]["filter_chains"][0]["filters"][0]["typed_config"][
                    "route_config"
                ]["virtual_hosts"][0]["routes"][0].update(match={"prefix": "/"})
            ),
            "envoy 8502: may only serve exactly /monitoring/prometheus/metrics",
        ),
        (
            lambda d: worker(d).update(
                volumeMounts=[m for m in worker(d)["volumeMounts"] if m["name"] != "tf-serving-client-tls"]
            ),
            f"beam-worker-pool: must mount the {CLIENT_TLS_SECRET} Secret at /etc/tf-serving-client",
        ),
        (
            lambda d: tf_serving_args(d, *MTLS_ARGS[:3]),
            "--inference=tf_serving needs --tf_serving_client_certificate=/etc/tf-serving-client/tls.crt",
        ),
    ),
)
def test_tf_serving_mtls_check_catches(mutate, expected):
    assert_caught("tf serving mtls", mutate, expected)


def test_a_pipeline_scoring_over_tf_serving_with_its_client_certificate_passes():
    from deploy.validation import checks

    docs = rendered("cpu")
    tf_serving_args(docs, *MTLS_ARGS)
    assert checks("cpu")["tf serving mtls"](docs) == []
    assert checks("cpu")["pipelines"](docs) == []  # the options parse, and the target is Envoy's port


@pytest.mark.parametrize(
    "mutate, expected",
    cases(
        (
            lambda d: next(
                v for v in pod(d, "Job/submit-fraud-detection").spec["volumes"] if v["name"] == "models"
            ).update({"secret": {"secretName": "gcp-key"}}),
            "secret volume 'models' (gcp-key); Google Cloud access is Workload Identity",
        ),
        (
            lambda d: (
                pod(d, "[taskManager]")
                .container("flink-main-container")["volumeMounts"]
                .append({"name": "tf-serving-client-tls", "mountPath": "/etc/tls", "readOnly": True})
            ),
            f"container 'flink-main-container': must not mount {CLIENT_TLS_SECRET}",
        ),
        (
            lambda d: next(
                m
                for m in pod(d, "Deployment/tf-serving").container(ENVOY_CONTAINER)["volumeMounts"]
                if "tls" in m["name"]
            ).update(readOnly=False),
            f"container 'envoy': mount {SERVER_TLS_SECRET} readOnly",
        ),
    ),
)
def test_secret_mounts_outside_the_mtls_keys_are_caught(mutate, expected):
    assert_caught("no credentials", mutate, expected)


def policy(docs, name):
    return one(docs, "NetworkPolicy", name)["spec"]


@pytest.mark.parametrize(
    "mutate, expected",
    cases(
        (
            # The old flink-internal: every Flink pod to every Flink port, REST included.
            lambda d: (
                policy(d, "flink-jobmanager-ingress")["ingress"].append(
                    {
                        "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "flink"}}}],
                        "ports": [{"protocol": "TCP", "port": 8081}],
                    }
                )
                or policy(d, "flink-taskmanager-egress")["egress"].append(
                    {"to": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 8081}]}
                )
            ),
            "TaskManager -> JobManager REST (port 8081/TCP) must be denied",
        ),
        (
            lambda d: policy(d, "flink-rest-ingress")["ingress"][0]["from"][1].pop("podSelector"),
            "another pod of the operator's namespace -> JobManager REST (port 8081/TCP) must be denied",
        ),
        (
            lambda d: policy(d, "allow-google-apis-egress")["egress"][0]["to"].append(
                {"ipBlock": {"cidr": "0.0.0.0/0"}}
            ),
            "TaskManager -> a public address on 443 (port 443/TCP) must be denied",
        ),
        (
            lambda d: (
                policy(d, "tf-serving-ingress")["ingress"][0]["ports"].append({"protocol": "TCP", "port": 8500})
                or policy(d, "tf-serving-clients-egress")["egress"][0]["ports"].append(
                    {"protocol": "TCP", "port": 8500}
                )
            ),
            "TaskManager -> TF Serving's plaintext gRPC (port 8500/TCP) must be denied",
        ),
        (
            lambda d: policy(d, "allow-metrics-scrape")["ingress"][0]["ports"].append(
                {"protocol": "TCP", "port": 8501}
            ),
            "Prometheus -> TF Serving's REST API (port 8501/TCP) must be denied",
        ),
        (
            lambda d: policy(d, "flink-kubernetes-api-egress").update(podSelector={}),
            "TF Serving -> Kubernetes API (port 443/TCP) must be denied",
        ),
        (
            lambda d: d.remove(one(d, "NetworkPolicy", "flink-kubernetes-api-egress")),
            "TaskManager -> Kubernetes API (HA ConfigMap) (port 443/TCP) must be allowed",
        ),
        (
            lambda d: (
                policy(d, "flink-taskmanager-ingress")["ingress"][0]["ports"].append({"protocol": "TCP", "port": 6122})
                or policy(d, "flink-taskmanager-ingress")["ingress"][1]["ports"].append(
                    {"protocol": "TCP", "port": 6122}
                )
                or policy(d, "flink-taskmanager-egress")["egress"][1]["ports"].append({"protocol": "TCP", "port": 6122})
            ),
            "TaskManager -> TaskManager RPC (port 6122/TCP) must be denied",
        ),
    ),
)
def test_network_policy_check_catches_wider_paths(mutate, expected):
    assert_caught("network policies", mutate, expected)
