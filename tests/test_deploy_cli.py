"""The deploy CLI's cluster commands: what they would send to the API server, and what they make of its answers.

No API server runs here, so the requests are checked where they are built (apply_plan, apply_kwargs,
patch_body, the rollout steps, the HTTP bytes), and the calls go to stand-ins (tests/deploy_fakes.py) that record
them and answer as the API server does, errors included.
"""

from __future__ import annotations

import pytest
from deploy_fakes import ApiError, FakeCore, FakeDynamic

from deploy import __main__ as cli
from deploy import cluster, manifests, rollout
from deploy.validation.tf_serving import check_models_config

NS = "marketplace-inference"


# --- apply -------------------------------------------------------------------------------------------------------


def test_apply_plan_puts_dependencies_first_and_jobs_last():
    steps = cluster.apply_plan(manifests.render("gpu"))
    kinds = [s.kind for s in steps]
    assert kinds[0] == "Namespace"
    first = {kind: kinds.index(kind) for kind in set(kinds)}
    last = {kind: len(kinds) - 1 - kinds[::-1].index(kind) for kind in set(kinds)}
    assert last["NetworkPolicy"] < first["Deployment"] and last["NetworkPolicy"] < first["FlinkDeployment"]
    assert last["ConfigMap"] < first["Deployment"] and last["ServiceAccount"] < first["FlinkDeployment"]
    assert last["FlinkDeployment"] < first["Job"] and kinds[-1] == "Job"
    # Config Connector starts creating the Google Cloud resources while the cluster comes up.
    assert first["ServiceIdentity"] == 1 and last["IAMPolicyMember"] < first["ServiceAccount"]
    assert last["PubSubTopic"] < first["PubSubSubscription"]
    assert {str(s) for s in steps if s.kind == "Job"} == {"Job/submit-fraud-detection", "Job/submit-price-suggestion"}


def test_apply_plan_refuses_a_kind_it_has_no_place_for():
    with pytest.raises(ValueError, match=r"no apply order for kinds \['CronJob'\]"):
        cluster.apply_plan([{"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "x"}}])


def test_server_side_apply_request_uses_the_field_manager_strict_validation_and_dry_run_all():
    step = cluster.apply_plan(manifests.render("cpu"))[0]
    dry = cluster.apply_kwargs(step, dry_run=True, force_conflicts=False)
    assert dry == {
        "body": step.body,
        "name": "marketplace-inference",
        "namespace": None,
        "field_manager": "marketplace-deploy",
        "force_conflicts": False,
        "dry_run": "All",
        "query_params": [("fieldValidation", "Strict")],
    }
    real = cluster.apply_kwargs(step, dry_run=False, force_conflicts=True)
    assert real["dry_run"] is None and real["force_conflicts"] is True
    # The client appends to query_params: every call gets its own list.
    assert real["query_params"] is not dry["query_params"]


def test_apply_sends_every_resource_to_its_api_in_order():
    dyn = FakeDynamic()
    steps = cluster.apply_plan(manifests.render("gpu"))
    assert cluster.apply(dyn, steps, dry_run=True, log=lambda _: None) == []
    sent = [(kind, kwargs["name"], kwargs["dry_run"]) for action, kind, kwargs in dyn.calls]
    assert sent == [(s.kind, s.name, "All") for s in steps]


def _ready(status: str, reason: str = "UpToDate", message: str = "") -> dict:
    return {"status": {"conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message}]}}


def test_pipelines_are_submitted_only_once_their_google_cloud_resources_are_ready():
    steps = [s for s in cluster.apply_plan(manifests.render("cpu")) if s.kind in ("PubSubSubscription", "Job")]
    waited = []
    dyn = FakeDynamic()
    assert (
        cluster.apply(
            dyn,
            steps,
            dry_run=False,
            log=lambda _: None,
            wait_ready=lambda d, cloud: waited.append([str(s) for s in cloud]) or [],
        )
        == []
    )
    assert waited == [[str(s) for s in steps if s.kind == "PubSubSubscription"]]
    assert [kind for _, kind, _ in dyn.calls][-2:] == ["Job", "Job"]

    dyn = FakeDynamic()
    problems = cluster.apply(
        dyn,
        steps,
        dry_run=False,
        log=lambda _: None,
        wait_ready=lambda d, cloud: ["PubSubSubscription/fraud-events: not Ready"],
    )
    assert problems == [
        "PubSubSubscription/fraud-events: not Ready",
        "not submitting the pipelines: their Google Cloud resources are not Ready",
    ]
    assert "Job" not in [kind for _, kind, _ in dyn.calls]


def test_waiting_for_config_connector_reports_what_is_not_ready_and_why():
    steps = [s for s in cluster.apply_plan(manifests.render("cpu")) if s.kind == "PubSubSubscription"][:2]
    dyn = FakeDynamic(
        objects={
            ("PubSubSubscription", steps[0].name): _ready("True"),
            ("PubSubSubscription", steps[1].name): _ready("False", "UpdateFailed", "Error 403: permission denied"),
        }
    )
    assert cluster._wait_ready(dyn, steps, timeout_s=0) == [
        f"{steps[1]}: not Ready after 0 s (UpdateFailed: Error 403: permission denied)"
    ]
    dyn.objects[("PubSubSubscription", steps[1].name)] = {}
    assert cluster._wait_ready(dyn, steps, timeout_s=0) == [f"{steps[1]}: not Ready after 0 s (no status yet)"]
    del dyn.objects[("PubSubSubscription", steps[1].name)]  # its apply failed
    assert cluster._wait_ready(dyn, steps, timeout_s=0) == [f"{steps[1]}: not Ready after 0 s (NotFound)"]
    dyn.objects[("PubSubSubscription", steps[1].name)] = _ready("True")
    assert cluster._wait_ready(dyn, steps, timeout_s=0) == []


def test_changed_submission_job_is_replaced_so_the_pipeline_is_resubmitted():
    job = [s for s in cluster.apply_plan(manifests.render("cpu")) if s.kind == "Job"][:1]
    dyn = FakeDynamic(apply_errors={("Job", job[0].name): ApiError(422, "field is immutable")})
    waited = []
    problems = cluster.apply(
        dyn, job, dry_run=False, log=lambda _: None, wait_deleted=lambda r, s: waited.append(str(s))
    )
    assert problems == []
    assert [(action, kwargs["name"]) for action, kind, kwargs in dyn.calls] == [
        ("apply", job[0].name),
        ("delete", job[0].name),
        ("apply", job[0].name),
    ]
    assert dyn.calls[1][2]["propagation_policy"] == "Background" and waited == [str(job[0])]


def test_dry_run_only_reports_a_job_it_would_replace():
    job = [s for s in cluster.apply_plan(manifests.render("cpu")) if s.kind == "Job"][:1]
    dyn = FakeDynamic(apply_errors={("Job", job[0].name): ApiError(422, "field is immutable")})
    logged = []
    assert cluster.apply(dyn, job, dry_run=True, log=logged.append) == []
    assert [action for action, _, _ in dyn.calls] == ["apply"]
    assert logged == [f"would replace {job[0]} (its pod template changed: the pipeline would be re-submitted)"]


def test_conflicting_field_owner_is_reported_with_what_to_do():
    steps = [s for s in cluster.apply_plan(manifests.render("cpu")) if s.name == "tf-serving-models"]
    dyn = FakeDynamic(
        apply_errors={("ConfigMap", "tf-serving-models"): ApiError(409, "conflict with marketplace-deploy-rollout")}
    )
    problems = cluster.apply(dyn, steps, dry_run=False, log=lambda _: None)
    assert len(problems) == 1 and "commit that change to the manifests, or re-run with --force-conflicts" in problems[0]


def test_dry_run_before_the_namespace_exists_skips_namespaced_objects():
    steps = cluster.apply_plan(manifests.render("cpu"))[:2]  # the Namespace, then a namespaced object
    dyn = FakeDynamic(apply_errors={(steps[1].kind, steps[1].name): ApiError(404, "namespaces not found")})
    logged = []
    assert cluster.apply(dyn, steps, dry_run=True, log=logged.append) == []
    assert logged[1].startswith(f"skipped {steps[1]}: namespace marketplace-inference does not exist yet")


def test_apply_command_refuses_manifests_that_do_not_validate(monkeypatch, capsys):
    monkeypatch.setattr(cli, "run_validation", lambda overlays: 1)
    monkeypatch.setattr(cli, "_kube", lambda context: pytest.fail("must not reach the cluster"))
    assert cli.main(["apply", "--overlay", "gpu", "--dry-run"]) == 1
    assert "not applying: the manifests do not validate" in capsys.readouterr().err


# --- HTTP through port-forward, and status ------------------------------------------------------------------------


def test_http_request_bytes_for_get_and_post():
    assert cluster.build_http_request("GET", "/v1/models/fraud") == (
        b"GET /v1/models/fraud HTTP/1.0\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    post = cluster.build_http_request("POST", "/jobs/1/stop", {"drain": False})
    assert post.endswith(b'Content-Type: application/json\r\nContent-Length: 16\r\n\r\n{"drain": false}')


def test_http_response_is_parsed_and_garbage_is_refused():
    response = cluster.parse_http_response(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"jobs": []}')
    assert (response.status, response.json()) == (200, {"jobs": []})
    with pytest.raises(ValueError, match="not an HTTP"):
        cluster.parse_http_response(b"SSH-2.0-OpenSSH\r\n\r\n")


def _http(responses: dict, sent: list | None = None):
    def call(pod, port, method, path, body=None):
        if sent is not None:
            sent.append((method, path, body))
        status, reply = responses[(pod, port, path)]
        return cluster.HttpResponse(status, reply.encode())

    return call


def test_status_reads_the_flinkdeployment_status_and_the_session_jobs():
    dyn = FakeDynamic(
        objects={
            ("FlinkDeployment", "inference"): {
                "status": {
                    "lifecycleState": "STABLE",
                    "jobManagerDeploymentStatus": "READY",
                    "clusterInfo": {"flink-version": "1.20.3"},
                }
            }
        }
    )
    assert cluster.flink_status(dyn, NS, "inference") == {
        "lifecycleState": "STABLE",
        "jobManagerDeploymentStatus": "READY",
        "flinkVersion": "1.20.3",
        "error": None,
        "jobStatus": None,
    }
    http = _http(
        {
            ("jm-0", 8081, "/jobs/overview"): (
                200,
                '{"jobs": [{"jid": "b", "name": "price-suggestion", "state": "RUNNING"},'
                ' {"jid": "a", "name": "fraud-detection", "state": "RESTARTING"}]}',
            )
        }
    )
    assert cluster.flink_jobs(http, "jm-0", 8081) == [
        {"name": "fraud-detection", "id": "a", "state": "RESTARTING"},
        {"name": "price-suggestion", "id": "b", "state": "RUNNING"},
    ]


def test_model_status_comes_from_tf_servings_rest_getmodelstatus():
    http = _http(
        {
            ("tfs-0", 8501, "/v1/models/fraud"): (
                200,
                '{"model_version_status": [{"version": "2", "state": "AVAILABLE", '
                '"status": {"error_code": "OK"}}, {"version": "1", "state": "END"}]}',
            ),
            ("tfs-0", 8501, "/v1/models/price"): (404, '{"error": "Servable not found for request: Latest(price)"}'),
        }
    )
    assert cluster.model_status(http, "tfs-0", 8501, "fraud") == [
        {"version": 2, "state": "AVAILABLE"},
        {"version": 1, "state": "END"},
    ]
    assert cluster.model_status(http, "tfs-0", 8501, "price")[0]["state"].startswith(
        'HTTP 404: {"error": "Servable not found'
    )


def test_status_command_is_healthy_only_when_cluster_jobs_and_models_are(monkeypatch, capsys):
    dyn = FakeDynamic(
        objects={
            ("FlinkDeployment", "inference"): {
                "status": {"lifecycleState": "STABLE", "jobManagerDeploymentStatus": "READY"}
            }
        }
    )
    core = FakeCore(
        pods=[
            ("jm-0", {"app.kubernetes.io/component": "jobmanager"}, True),
            ("tfs-0", {"app.kubernetes.io/name": "tf-serving"}, True),
            ("tfs-1", {"app.kubernetes.io/name": "tf-serving"}, False),
        ]
    )
    models = '{"model_version_status": [{"version": "1", "state": "AVAILABLE"}]}'
    responses = {
        ("jm-0", 8081, "/jobs/overview"): (
            200,
            '{"jobs": [{"jid": "a", "name": "fraud-detection", "state": "RUNNING"}]}',
        ),
        ("tfs-0", 8501, "/v1/models/fraud"): (200, models),
        ("tfs-0", 8501, "/v1/models/price"): (200, models),
    }
    monkeypatch.setattr(cli, "_kube", lambda context: (dyn, core))
    monkeypatch.setattr(cli, "_http", lambda core, namespace: _http(responses))
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "FlinkDeployment inference: lifecycle STABLE, JobManager READY" in out
    assert (
        "job fraud-detection: RUNNING (a)" in out
        and "TF Serving: 1 ready pod(s)" in out
        and "tfs-0 price: v1 AVAILABLE" in out
    )
    responses[("jm-0", 8081, "/jobs/overview")] = (
        200,
        '{"jobs": [{"jid": "a", "name": "fraud-detection", "state": "FAILING"}]}',
    )
    assert cli.main(["status"]) == 1


# --- rollout ------------------------------------------------------------------------------------------------------

SOURCE = rollout.SOURCE_FILE.read_text()


def labels(config, model="fraud"):
    entry = next(m for m in config.model_config_list.config if m.name == model)
    return dict(entry.version_labels), sorted(entry.model_version_policy.specific.versions)


def test_rollout_loads_the_new_version_before_moving_stable_and_keeps_the_old_as_previous():
    config = rollout.parse(SOURCE)
    loaded = rollout.with_version_loaded(config, "fraud", 2)
    assert labels(loaded) == ({"stable": 1}, [1, 2])
    switched = rollout.with_label(loaded, "fraud", "stable", 2)
    assert labels(switched) == ({"stable": 2, "previous": 1}, [1, 2])
    assert labels(switched, "price") == ({"stable": 1}, [1])  # the other model is untouched
    third = rollout.with_label(rollout.with_version_loaded(switched, "fraud", 3), "fraud", "stable", 3)
    assert labels(third) == ({"stable": 3, "previous": 2}, [2, 3])  # version 1 is no longer labelled: it unloads


def test_rollback_moves_stable_back_to_the_still_loaded_previous_version():
    rolled_out = rollout.with_label(
        rollout.with_version_loaded(rollout.parse(SOURCE), "fraud", 2), "fraud", "stable", 2
    )
    back = rollout.rolled_back(rolled_out, "fraud")
    assert labels(back) == ({"stable": 1}, [1])
    with pytest.raises(rollout.RolloutError, match="no previous version is recorded"):
        rollout.rolled_back(back, "fraud")


def test_canary_runs_beside_stable_then_is_promoted_or_withdrawn():
    canary = rollout.with_label(rollout.with_version_loaded(rollout.parse(SOURCE), "fraud", 2), "fraud", "canary", 2)
    assert labels(canary) == ({"stable": 1, "canary": 2}, [1, 2])
    assert labels(rollout.with_label(canary, "fraud", "stable", 2)) == ({"stable": 2, "previous": 1}, [1, 2])
    assert labels(rollout.rolled_back(canary, "fraud", "canary")) == ({"stable": 1}, [1])


@pytest.mark.parametrize(
    "step, message",
    [
        (lambda c: rollout.with_label(c, "fraud", "stable", 2), "version 2 of fraud is not loaded"),
        (lambda c: rollout.with_label(c, "fraud", "stable", 1), "stable is already version 1"),
        (lambda c: rollout.with_version_loaded(c, "churn", 2), "serves no model 'churn'"),
        (lambda c: rollout.with_version_loaded(c, "fraud", 0), "positive integers"),
        (lambda c: rollout.rolled_back(c, "fraud", "canary"), "no canary to withdraw"),
    ],
)
def test_impossible_rollouts_are_refused_with_the_reason(step, message):
    with pytest.raises(rollout.RolloutError, match=message):
        step(rollout.parse(SOURCE))


def test_every_rollout_state_is_a_models_config_the_manifest_checks_accept():
    config = rollout.parse(SOURCE)
    states = [rollout.with_version_loaded(config, "fraud", 2)]
    states.append(rollout.with_label(states[-1], "fraud", "canary", 2))
    states.append(rollout.with_label(states[-1], "fraud", "stable", 2))
    states.append(rollout.rolled_back(states[-1], "fraud"))
    for state in states[1:]:
        text = rollout.render(state, rollout.header_of(SOURCE))
        assert text.startswith("# TF Serving's model server config")
        assert check_models_config(text, {"fraud", "price"}, "/models") == []
    # The first step serves a version no label names yet: only a transient state, which the checks would flag.
    assert check_models_config(rollout.render(states[0], ""), {"fraud", "price"}, "/models") == [
        "models.config fraud: versions [2] are loaded but no label points at them"
    ]


def test_rollout_patches_the_live_configmap_twice_and_waits_for_the_version_in_between():
    core = FakeCore(config_maps={"tf-serving-models": ({"models.config": SOURCE}, "41")})
    seen_when_waiting = []

    def states(model, version):
        live = rollout.parse(core.config_maps["tf-serving-models"][0]["models.config"])
        seen_when_waiting.append(labels(live))
        return (
            {"tfs-0": "AVAILABLE", "tfs-1": "LOADING"}
            if len(seen_when_waiting) == 1
            else {"tfs-0": "AVAILABLE", "tfs-1": "AVAILABLE"}
        )

    final = rollout.rollout(core, NS, "fraud", 2, states=states, interval_s=0, sleep=lambda s: None, log=lambda m: None)
    assert seen_when_waiting == [({"stable": 1}, [1, 2])] * 2  # loaded, not yet labelled, while waiting
    assert [p[2]["metadata"]["resourceVersion"] for p in core.patches] == ["41", "42"]
    assert all(
        p[3] == {"field_manager": "marketplace-deploy-rollout", "_content_type": "application/merge-patch+json"}
        for p in core.patches
    )
    assert core.patches[0][2] == rollout.patch_body(core.patches[0][2]["data"]["models.config"], "41")
    assert labels(rollout.parse(final)) == ({"stable": 2, "previous": 1}, [1, 2])
    assert core.config_maps["tf-serving-models"] == ({"models.config": final}, "43")


def test_rollout_gives_up_without_labelling_a_version_that_never_loads():
    core = FakeCore(config_maps={"tf-serving-models": ({"models.config": SOURCE}, "7")})
    with pytest.raises(rollout.RolloutError, match="fraud version 2 is not AVAILABLE everywhere after 0 s"):
        rollout.rollout(
            core,
            NS,
            "fraud",
            2,
            states=lambda m, v: {"tfs-0": "LOADING"},
            timeout_s=0,
            sleep=lambda s: None,
            log=lambda m: None,
        )
    assert len(core.patches) == 1  # loaded, never labelled


def test_rollback_is_one_patch_and_a_concurrent_edit_is_not_overwritten():
    rolled_out = rollout.render(
        rollout.with_label(rollout.with_version_loaded(rollout.parse(SOURCE), "fraud", 2), "fraud", "stable", 2), ""
    )
    core = FakeCore(config_maps={"tf-serving-models": ({"models.config": rolled_out}, "9")})
    final = rollout.rollout(core, NS, "fraud", None, rollback=True, log=lambda m: None)
    assert len(core.patches) == 1 and labels(rollout.parse(final)) == ({"stable": 1}, [1])
    busy = FakeCore(config_maps={"tf-serving-models": ({"models.config": rolled_out}, "9")}, conflict_on_patch=True)
    with pytest.raises(rollout.RolloutError, match="changed while this rollout ran"):
        rollout.rollout(busy, NS, "fraud", None, rollback=True, log=lambda m: None)


def test_rollout_command_needs_a_version_or_rollback_and_writes_the_result_back(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "_kube", lambda context: pytest.fail("must not reach the cluster"))
    assert cli.main(["rollout-model", "--model", "fraud"]) == 2
    assert cli.main(["rollout-model", "--model", "fraud", "--version", "2", "--rollback"]) == 2

    core = FakeCore(config_maps={"tf-serving-models": ({"models.config": SOURCE}, "1")})
    target = tmp_path / "models.config"
    monkeypatch.setattr(cli, "_kube", lambda context: (None, core))
    monkeypatch.setattr(rollout, "SOURCE_FILE", target)
    assert cli.main(["rollout-model", "--model", "price", "--version", "3", "--label", "canary", "--no-wait"]) == 0
    assert labels(rollout.parse(target.read_text()), "price") == ({"stable": 1, "canary": 3}, [1, 3])
    assert "commit it" in capsys.readouterr().out


def test_stop_pipeline_takes_a_savepoint_through_the_jobmanager_and_says_how_to_restore(monkeypatch, capsys):
    core = FakeCore(pods=[("jm-0", {"app.kubernetes.io/component": "jobmanager"}, True)])
    responses = {
        ("jm-0", 8081, "/jobs/overview"): (
            200,
            '{"jobs": [{"jid": "a1", "name": "fraud-detection", "state": "RUNNING"},'
            '{"jid": "b2", "name": "price-suggestion", "state": "RUNNING"}]}',
        ),
        ("jm-0", 8081, "/jobs/a1/stop"): (202, '{"request-id": "t9"}'),
        ("jm-0", 8081, "/jobs/a1/savepoints/t9"): (
            200,
            '{"status": {"id": "COMPLETED"}, "operation": {"location": "gs://b/savepoints/savepoint-a1"}}',
        ),
    }
    sent = []
    monkeypatch.setattr(cli, "_kube", lambda context: (None, core))
    monkeypatch.setattr(cli, "_http", lambda core, namespace: _http(responses, sent))
    assert cli.main(["stop-pipeline", "--job-name", "fraud-detection"]) == 0
    assert ("POST", "/jobs/a1/stop", {"drain": False}) in sent
    assert (
        "RESTORE_FROM=gs://b/savepoints/savepoint-a1 in base/pipelines/<pipeline>/restore.env"
        in capsys.readouterr().out
    )
    assert cli.main(["stop-pipeline", "--job-name", "churn"]) == 1
    assert "expected one running job named 'churn', found 0" in capsys.readouterr().err
