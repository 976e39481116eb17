"""The deployment's Google identities, offline: each job's own Google service account (Workload Identity) and the
IAM grants base/iam/ and base/pubsub/ declare for it, held to deploy/validation/identities.py's table.

Both overlays pass; then each defect the check exists for is put back into a freshly rendered overlay, one at a
time, and must be reported: a shared or wrong Google account, a grant that lets anything but the JobManager delete
or overwrite Flink's state, a worker grant on the state bucket that is not confined to the checkpoint and
savepoint directories, a grant outside the table, a Workload Identity binding for the wrong Kubernetes account, a
required grant missing.
"""

from __future__ import annotations

import pytest
from test_deploy_manifests import assert_caught, cases, problems_of, rendered

from deploy import OVERLAYS
from deploy.manifests import find, one
from deploy.site import NAMESPACE, site_settings
from deploy.validation.identities import ANNOTATION, GRANTS

# kubectl renders the overlays.
pytestmark = pytest.mark.integration

SITE = site_settings()
STATE, MODELS, PROJECT = SITE["FLINK_BUCKET"], SITE["MODEL_BUCKET"], SITE["GCP_PROJECT"]
WORKER, SUBMITTER, JOBMANAGER = SITE["WORKER_GSA"], SITE["SUBMITTER_GSA"], SITE["JOBMANAGER_GSA"]


def grant(docs, name: str) -> dict:
    return one(docs, "IAMPolicyMember", name)["spec"]


def annotate(docs, account: str, email: str) -> None:
    one(docs, "ServiceAccount", account)["metadata"]["annotations"][ANNOTATION] = email


def add_grant(docs, name: str, member: str, role: str, resource_ref: dict) -> None:
    docs.append(
        {
            "apiVersion": "iam.cnrm.cloud.google.com/v1beta1",
            "kind": "IAMPolicyMember",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"member": member, "role": role, "resourceRef": resource_ref},
        }
    )


def bucket(name: str) -> dict:
    return {"kind": "StorageBucket", "external": name}


def edit_expression(docs, name: str, edit) -> None:
    condition = grant(docs, name)["condition"]
    condition["expression"] = edit(condition["expression"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_the_identities_check(overlay):
    assert problems_of("identities", rendered(overlay), overlay) == []


def test_every_grant_of_the_table_is_declared_and_only_those():
    docs = rendered("cpu")
    declared = {(g["spec"]["role"], g["spec"].get("member")) for g in find(docs, "IAMPolicyMember")}
    assert ("roles/storage.objectAdmin", f"serviceAccount:{JOBMANAGER}") in declared
    # Nothing but the JobManager's account holds a role on the state bucket that can delete.
    state_grants = [
        g["spec"] for g in find(docs, "IAMPolicyMember") if g["spec"]["resourceRef"].get("external") == STATE
    ]
    assert {(g["member"], g["role"]) for g in state_grants if "condition" not in g} == {
        (f"serviceAccount:{JOBMANAGER}", "roles/storage.objectAdmin")
    }
    assert {g["role"] for g in state_grants if g["member"] == f"serviceAccount:{WORKER}"} == {
        "roles/storage.objectCreator",
        "roles/storage.objectViewer",
    }
    assert {who for who, _, _ in GRANTS} >= {"JOBMANAGER_GSA", "WORKER_GSA", "SUBMITTER_GSA", "TF_SERVING_GSA"}


@pytest.mark.parametrize(
    "mutate, expected",
    cases(
        # One Google account per Kubernetes account, the one GOOGLE_ACCOUNTS gives it.
        (
            lambda d: annotate(d, "pipeline-submitter", WORKER),
            f"ServiceAccount/flink-taskmanager and ServiceAccount/pipeline-submitter both act as the Google service "
            f"account {WORKER}",
        ),
        (
            lambda d: annotate(d, "flink-taskmanager", JOBMANAGER),
            f"ServiceAccount/flink-taskmanager: the annotation {ANNOTATION} must be WORKER_GSA's account ({WORKER}), "
            f"as deploy/site.py's GOOGLE_ACCOUNTS says; it is annotated with JOBMANAGER_GSA ({JOBMANAGER})",
        ),
        (
            lambda d: annotate(d, "tf-serving", f"someone@{PROJECT}.iam.gserviceaccount.com"),
            "it is annotated with no site.env setting",
        ),
        (
            lambda d: d.append(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "debug", "namespace": NAMESPACE, "annotations": {ANNOTATION: SUBMITTER}},
                }
            ),
            "ServiceAccount/debug: acts as the Google service account",
        ),
        # Only the JobManager may delete or overwrite anything in the state bucket.
        (
            lambda d: grant(d, "worker-checkpoints-object-creator").update(role="roles/storage.objectAdmin"),
            f"IAMPolicyMember/worker-checkpoints-object-creator grants WORKER_GSA roles/storage.objectAdmin on "
            f"gs://{STATE}, which can delete or overwrite objects in the state bucket",
        ),
        (
            lambda d: add_grant(
                d, "submitter-state", f"serviceAccount:{SUBMITTER}", "roles/storage.legacyBucketWriter", bucket(STATE)
            ),
            f"grants SUBMITTER_GSA roles/storage.legacyBucketWriter on gs://{STATE}, which can delete or overwrite",
        ),
        (
            lambda d: add_grant(
                d,
                "worker-project",
                f"serviceAccount:{WORKER}",
                "roles/storage.admin",
                {"kind": "Project", "external": f"projects/{PROJECT}"},
            ),
            f"grants WORKER_GSA roles/storage.admin on Project projects/{PROJECT}, which can delete or overwrite",
        ),
        (
            lambda d: add_grant(
                d, "worker-custom", f"serviceAccount:{WORKER}", f"projects/{PROJECT}/roles/checkpointer", bucket(STATE)
            ),
            f"grants WORKER_GSA projects/{PROJECT}/roles/checkpointer on gs://{STATE}, which can delete or overwrite",
        ),
        # The workers' state grants, confined to the checkpoint and savepoint directories, never ha/.
        (
            lambda d: grant(d, "worker-checkpoints-object-viewer").pop("condition"),
            "IAMPolicyMember/worker-checkpoints-object-viewer grants WORKER_GSA roles/storage.objectViewer on "
            f"gs://{STATE} without a condition",
        ),
        (
            lambda d: edit_expression(
                d, "worker-checkpoints-object-creator", lambda e: e.replace("checkpoints/", "ha/")
            ),
            "IAMPolicyMember/worker-checkpoints-object-creator grants WORKER_GSA roles/storage.objectCreator on "
            f"gs://{STATE}: its condition reaches the HA metadata (ha/)",
        ),
        (
            lambda d: edit_expression(
                d, "worker-savepoints-object-viewer", lambda e: e.replace('startsWith("savepoints/")', 'startsWith("")')
            ),
            "worker-savepoints-object-viewer grants WORKER_GSA roles/storage.objectViewer on "
            f"gs://{STATE}: its condition reaches the HA metadata (ha/)",
        ),
        (
            lambda d: edit_expression(d, "worker-savepoints-object-creator", lambda e: e + " || true"),
            f"each term of its condition must confine it to checkpoints/ or savepoints/ of gs://{STATE}, got 'true'",
        ),
        (
            lambda d: edit_expression(
                d, "worker-savepoints-object-creator", lambda e: e.replace("savepoints/", "save")
            ),
            "each term of its condition must confine it to checkpoints/ or savepoints/",
        ),
        (
            lambda d: edit_expression(d, "worker-checkpoints-object-creator", lambda e: e.replace(STATE, MODELS)),
            "each term of its condition must confine it to checkpoints/ or savepoints/",
        ),
        # Grants outside the table.
        (
            lambda d: grant(d, "fraud-events-worker-subscriber").update(role="roles/pubsub.editor"),
            "IAMPolicyMember/fraud-events-worker-subscriber grants WORKER_GSA roles/pubsub.editor on "
            f"projects/{PROJECT}/subscriptions/fraud-events (a pipeline's --input_subscription): not a grant the "
            "deployment needs",
        ),
        (
            lambda d: add_grant(
                d, "tf-serving-editor", f"serviceAccount:{SITE['TF_SERVING_GSA']}", "roles/editor", bucket(MODELS)
            ),
            f"grants TF_SERVING_GSA roles/editor on gs://{MODELS} (the model bucket (MODEL_BUCKET)): not a grant",
        ),
        (
            lambda d: add_grant(
                d,
                "submitter-publishes",
                f"serviceAccount:{SUBMITTER}",
                "roles/pubsub.publisher",
                {"kind": "PubSubTopic", "name": "fraud-predictions"},
            ),
            f"grants SUBMITTER_GSA roles/pubsub.publisher on projects/{PROJECT}/topics/fraud-predictions "
            "(a pipeline's --output_topic): not a grant",
        ),
        (
            lambda d: add_grant(
                d,
                "worker-undeliverable",
                f"serviceAccount:{WORKER}",
                "roles/pubsub.publisher",
                {"kind": "PubSubTopic", "name": "price-events-undeliverable"},
            ),
            "grants WORKER_GSA roles/pubsub.publisher on "
            f"projects/{PROJECT}/topics/price-events-undeliverable (a subscription's dead-letter (undeliverable) "
            "topic): not a grant",
        ),
        (
            lambda d: grant(d, "price-events-submitter-viewer").update(member="user:someone@example.com"),
            "grants user:someone@example.com roles/pubsub.viewer",
        ),
        # Workload Identity: each Google account usable by the Kubernetes account annotated with it, and no other.
        (
            lambda d: grant(d, "worker-workload-identity").update(
                member=f"serviceAccount:{PROJECT}.svc.id.goog[{NAMESPACE}/pipeline-submitter]"
            ),
            f"IAMPolicyMember/worker-workload-identity: {WORKER} is the Google account of "
            "ServiceAccount/flink-taskmanager (its annotation), so the Workload Identity member must be "
            f"serviceAccount:{PROJECT}.svc.id.goog[{NAMESPACE}/flink-taskmanager], got "
            f"serviceAccount:{PROJECT}.svc.id.goog[{NAMESPACE}/pipeline-submitter]",
        ),
        (
            lambda d: grant(d, "submitter-workload-identity")["resourceRef"].update(
                external=f"projects/{PROJECT}/serviceAccounts/{JOBMANAGER}"
            ),
            f"IAMPolicyMember/submitter-workload-identity: {JOBMANAGER} is the Google account of "
            "ServiceAccount/flink-jobmanager",
        ),
        (
            lambda d: grant(d, "tf-serving-workload-identity")["resourceRef"].update(
                external=f"projects/{PROJECT}/serviceAccounts/admin@{PROJECT}.iam.gserviceaccount.com"
            ),
            f"which no Kubernetes service account is annotated with ({ANNOTATION})",
        ),
        # Every required grant is there.
        (
            lambda d: d.remove(one(d, "IAMPolicyMember", "jobmanager-workload-identity")),
            f"ServiceAccount/flink-jobmanager acts as {JOBMANAGER}, but no IAMPolicyMember grants "
            "roles/iam.workloadIdentityUser on it",
        ),
        (
            lambda d: d.remove(one(d, "IAMPolicyMember", "fraud-events-worker-subscriber")),
            f"WORKER_GSA needs roles/pubsub.subscriber on projects/{PROJECT}/subscriptions/fraud-events",
        ),
        (
            lambda d: d.remove(one(d, "IAMPolicyMember", "price-predictions-worker-publisher")),
            f"WORKER_GSA needs roles/pubsub.publisher on projects/{PROJECT}/topics/price-predictions",
        ),
        (
            lambda d: d.remove(one(d, "IAMPolicyMember", "price-dead-letters-submitter-viewer")),
            f"SUBMITTER_GSA needs roles/pubsub.viewer on projects/{PROJECT}/topics/price-dead-letters",
        ),
        (
            lambda d: d.remove(one(d, "IAMPolicyMember", "tf-serving-models-object-viewer")),
            f"TF_SERVING_GSA needs roles/storage.objectViewer on gs://{MODELS}",
        ),
        (
            lambda d: d.remove(one(d, "IAMPolicyMember", "jobmanager-state-object-admin")),
            f"JOBMANAGER_GSA needs roles/storage.objectAdmin on gs://{STATE}",
        ),
        (
            lambda d: d.remove(one(d, "IAMPolicyMember", "worker-savepoints-object-creator")),
            f"WORKER_GSA needs roles/storage.objectCreator on gs://{STATE} confined to savepoints/",
        ),
        (
            # A condition on a required grant narrows it: it no longer counts as granted.
            lambda d: grant(d, "worker-models-object-viewer").update(
                condition={
                    "title": "fraud-only",
                    "expression": f'resource.name.startsWith("projects/_/buckets/{MODELS}/objects/fraud/")',
                }
            ),
            f"WORKER_GSA needs roles/storage.objectViewer on gs://{MODELS}",
        ),
    ),
)
def test_identities_check_catches(mutate, expected):
    assert_caught("identities", mutate, expected)


def test_the_workers_state_grants_follow_flinks_directories():
    docs = rendered("cpu")
    config = one(docs, "FlinkDeployment")["spec"]["flinkConfiguration"]
    config["state.checkpoints.dir"] = f"gs://{STATE}/state/checkpoints"
    found = problems_of("identities", docs)
    assert any(
        f"WORKER_GSA needs roles/storage.objectCreator on gs://{STATE} confined to state/checkpoints/" in p
        for p in found
    ), found
    assert any("must confine it to savepoints/ or state/checkpoints/" in p for p in found), found


def test_iam_fields_are_checked_against_the_config_connector_crd():
    docs = rendered("cpu")
    grant(docs, "worker-checkpoints-object-creator")["condition"].pop("title")
    grant(docs, "worker-savepoints-object-creator")["condition"]["expresion"] = "true"
    grant(docs, "worker-models-object-viewer")["resourceRef"] = {"kind": "Project", "external": f"projects/{PROJECT}"}
    grant(docs, "worker-workload-identity")["resourceRef"]["external"] = WORKER  # not projects/<p>/serviceAccounts/
    found = problems_of("Config Connector schemas", docs)
    assert any(
        "IAMPolicyMember/worker-checkpoints-object-creator: spec.condition: 'title' is a required property" in p
        for p in found
    ), found
    assert any(
        "IAMPolicyMember/worker-savepoints-object-creator: spec.condition: Additional properties are not allowed "
        "('expresion' was unexpected)" in p
        for p in found
    ), found
    assert any(
        p.startswith("IAMPolicyMember/worker-models-object-viewer: spec.resourceRef:")
        and "is not valid under any of the given schemas" in p
        for p in found
    ), found
    assert any(p.startswith("IAMPolicyMember/worker-workload-identity: spec.resourceRef:") for p in found), found
