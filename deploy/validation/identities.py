"""The identities check: each job acts as its own Google service account, and holds exactly the grants it needs.

Workload Identity gives a Kubernetes service account the Google service account its annotation names
(base/serviceaccounts.yaml); Config Connector's IAMPolicyMembers (base/iam/, and each pipeline's Pub/Sub grants in
base/pubsub/pipeline/pubsub.yaml) say which Kubernetes account may act as it and what it may do. This check holds
them to GRANTS below: one Google account per Kubernetes account, each the one deploy/site.py's GOOGLE_ACCOUNTS
gives it; every grant in the table, every grant of the table present; only the JobManager able to delete or
overwrite Flink's state, the workers confined to their own prefixes of the state bucket.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from deploy import config_connector
from deploy.manifests import find, ref
from deploy.site import GOOGLE_ACCOUNTS, NAMESPACE, site_settings
from deploy.validation.submissions import submissions

ANNOTATION = "iam.gke.io/gcp-service-account"
WORKLOAD_IDENTITY_USER = "roles/iam.workloadIdentityUser"
PUBSUB_AGENT = "Pub/Sub's service agent"

# What a grant is on, as GRANTS names it; the pipelines' Pub/Sub resources by their part in a pipeline (its
# submission's options), so the table holds for every pipeline.
STATE_BUCKET = "the state bucket (FLINK_BUCKET)"
MODEL_BUCKET = "the model bucket (MODEL_BUCKET)"
INPUT_SUBSCRIPTION = "a pipeline's --input_subscription"
OUTPUT_TOPIC = "a pipeline's --output_topic"
DEAD_LETTER_TOPIC = "a pipeline's --dead_letter_topic"
UNDELIVERABLE_TOPIC = "a subscription's dead-letter (undeliverable) topic"

# Every grant the manifests may declare: (Google account's site.env key, role, on) and what it is for. Each is also
# required (the Pub/Sub ones on every pipeline's resources), except the service agent's, which the Pub/Sub check
# requires. Anything else fails: a broad role (roles/editor, roles/pubsub.editor), a grant on the project, a role
# on a resource the account does not use.
GRANTS = {
    ("JOBMANAGER_GSA", "roles/storage.objectAdmin", STATE_BUCKET): (
        "writes checkpoint, savepoint and HA metadata, deletes subsumed checkpoints"
    ),
    # The workers' two, each conditioned to the checkpoint and savepoint directories, never ha/.
    ("WORKER_GSA", "roles/storage.objectCreator", STATE_BUCKET): "uploads its checkpoint and savepoint files",
    ("WORKER_GSA", "roles/storage.objectViewer", STATE_BUCKET): "reads its state files back on a restore",
    ("WORKER_GSA", "roles/storage.objectViewer", MODEL_BUCKET): "loads the models it scores with in process",
    ("WORKER_GSA", "roles/pubsub.subscriber", INPUT_SUBSCRIPTION): "pulls and acknowledges the events",
    ("WORKER_GSA", "roles/pubsub.publisher", OUTPUT_TOPIC): "publishes the predictions",
    ("WORKER_GSA", "roles/pubsub.publisher", DEAD_LETTER_TOPIC): "publishes the dead letters",
    ("SUBMITTER_GSA", "roles/storage.objectViewer", MODEL_BUCKET): "resolves the model version to submit",
    ("SUBMITTER_GSA", "roles/pubsub.viewer", INPUT_SUBSCRIPTION): "checks the ack deadline before it submits",
    ("SUBMITTER_GSA", "roles/pubsub.viewer", OUTPUT_TOPIC): "checks the topic exists before it submits",
    ("SUBMITTER_GSA", "roles/pubsub.viewer", DEAD_LETTER_TOPIC): "checks the topic exists before it submits",
    ("TF_SERVING_GSA", "roles/storage.objectViewer", MODEL_BUCKET): "serves the models",
    (PUBSUB_AGENT, "roles/pubsub.publisher", UNDELIVERABLE_TOPIC): "moves undeliverable messages there",
    (PUBSUB_AGENT, "roles/pubsub.subscriber", INPUT_SUBSCRIPTION): "acknowledges the messages it moved",
}
# Flink's directories in the state bucket (base/flink-deployment.yaml): the workers' grants reach the first two only.
CHECKPOINTS, SAVEPOINTS, HA = "state.checkpoints.dir", "state.savepoints.dir", "high-availability.storageDir"

# Roles with storage.objects.delete, which overwriting an object needs too. On the state bucket, or above it
# (project, folder, organization), only the JobManager's account may hold one; a custom role's permissions are
# not in the manifests, so it counts as one.
DELETING_ROLES = frozenset(
    {
        "roles/storage.objectAdmin",
        "roles/storage.objectUser",
        "roles/storage.admin",
        "roles/storage.legacyBucketOwner",
        "roles/storage.legacyBucketWriter",
        "roles/owner",
        "roles/editor",
    }
)
ABOVE_BUCKETS = ("Project", "Folder", "Organization")

# The two forms a term of the workers' conditions may take: an object name under a prefix, and a listing of one.
_OBJECT_TERM = re.compile(r"""resource\.name\.startsWith\(["']projects/_/buckets/([^/"']+)/objects/([^"']*)["']\)""")
_LIST_TERM = re.compile(
    r"""api\.getAttribute\(["']storage\.googleapis\.com/objectListPrefix["'],\s*["']["']\)"""
    r"""\.startsWith\(["']([^"']*)["']\)"""
)


@dataclass
class _Grant:
    doc: dict
    who: str  # a site.env key (WORKER_GSA, ...), PUBSUB_AGENT, or the member as written
    role: str
    on: str  # what GRANTS calls the resource, or the resource as written
    resource: str  # the resource itself: gs://<bucket>, a topic or subscription path

    @property
    def condition(self) -> dict | None:
        return self.doc["spec"].get("condition")

    def __str__(self) -> str:
        return f"{ref(self.doc)} grants {self.who} {self.role} on {self.resource}"


def check_identities(docs: list[dict]) -> list[str]:
    """One Google service account per Kubernetes account, the one GOOGLE_ACCOUNTS gives it, bound by Workload
    Identity to that account alone; its grants exactly those of GRANTS; delete and overwrite on Flink's state for
    the JobManager alone."""
    site = site_settings()
    problems = _check_annotations(docs, site)
    bindings = [
        d
        for d in find(docs, "IAMPolicyMember")
        if d["spec"].get("role") == WORKLOAD_IDENTITY_USER
        and d["spec"].get("resourceRef", {}).get("kind") == "IAMServiceAccount"
    ]
    problems += _check_workload_identity(docs, bindings, site)
    parts = _pubsub_parts(docs)
    grants = _grants([d for d in find(docs, "IAMPolicyMember") if d not in bindings], docs, site, parts)
    state_dirs = _state_dirs(docs, site["FLINK_BUCKET"])
    for grant in grants:
        problems += _check_grant(grant, state_dirs)
    problems += _check_required(grants, site, parts, state_dirs)
    return problems


def _check_annotations(docs: list[dict], site: dict) -> list[str]:
    problems = []
    key_of = {site.get(key): key for key in GOOGLE_ACCOUNTS.values()}
    accounts = {d["metadata"]["name"]: d for d in find(docs, "ServiceAccount")}
    for name in sorted(set(GOOGLE_ACCOUNTS) - set(accounts)):
        problems.append(f"ServiceAccount/{name} (deploy/site.py's GOOGLE_ACCOUNTS) is not in the manifests")
    acting_as = defaultdict(list)
    for name, account in sorted(accounts.items()):
        email = account["metadata"].get("annotations", {}).get(ANNOTATION)
        expected = GOOGLE_ACCOUNTS.get(name)
        if email:
            acting_as[email].append(name)
        if expected is None:
            if email:
                problems.append(
                    f"{ref(account)}: acts as the Google service account {email}, but deploy/site.py's "
                    "GOOGLE_ACCOUNTS gives it none: add it there, with a site.env setting of its own"
                )
        elif email != site.get(expected):
            found = (
                f"it is annotated with {key_of.get(email) or 'no site.env setting'} ({email})"
                if email
                else "it has none"
            )
            problems.append(
                f"{ref(account)}: the annotation {ANNOTATION} must be {expected}'s account ({site.get(expected)}), "
                f"as deploy/site.py's GOOGLE_ACCOUNTS says; {found}"
            )
    for email, names in sorted(acting_as.items()):
        if len(names) > 1:
            problems.append(
                f"{' and '.join('ServiceAccount/' + n for n in names)} {'both' if len(names) == 2 else 'all'} act "
                f"as the Google service account {email}: each job needs its own, or each holds the others' grants"
            )
    return problems


def _check_workload_identity(docs: list[dict], bindings: list[dict], site: dict) -> list[str]:
    """Each annotated account may act as its Google account (roles/iam.workloadIdentityUser on it, granted to the
    Kubernetes account in the workload pool), and no other Kubernetes account may."""
    problems = []
    project = site["GCP_PROJECT"]
    annotated = {
        d["metadata"].get("annotations", {}).get(ANNOTATION): d["metadata"]["name"]
        for d in find(docs, "ServiceAccount")
    }
    bound = set()
    for binding in bindings:
        spec = binding["spec"]
        external = spec["resourceRef"].get("external", "")
        match = re.fullmatch(r"projects/([^/]+)/serviceAccounts/([^/]+)", external)
        email = match.group(2) if match else external
        if email not in annotated:
            problems.append(
                f"{ref(binding)}: lets {spec.get('member')} act as {email}, which no Kubernetes service account "
                f"is annotated with ({ANNOTATION})"
            )
            continue
        expected = _workload_member(project, annotated[email])
        if match and match.group(1) != project:
            problems.append(f"{ref(binding)}: {external} must name the site's project, {project}")
        if spec.get("member") != expected:
            problems.append(
                f"{ref(binding)}: {email} is the Google account of ServiceAccount/{annotated[email]} (its "
                f"annotation), so the Workload Identity member must be {expected}, got {spec.get('member')}"
            )
            continue
        bound.add(email)
    for email, name in sorted(annotated.items(), key=lambda item: item[1]):
        if email and name in GOOGLE_ACCOUNTS and email not in bound:
            problems.append(
                f"ServiceAccount/{name} acts as {email}, but no IAMPolicyMember grants {WORKLOAD_IDENTITY_USER} on "
                f"it to {_workload_member(project, name)}: its pods would get no Google credentials (base/iam/)"
            )
    return problems


def _workload_member(project: str, account: str) -> str:
    return f"serviceAccount:{project}.svc.id.goog[{NAMESPACE}/{account}]"


def _grants(members: list[dict], docs: list[dict], site: dict, parts: dict) -> list[_Grant]:
    """The IAMPolicyMembers other than the Workload Identity bindings, each with who it is for and what it is on."""
    who_by_email = {site.get(key): key for key in GOOGLE_ACCOUNTS.values()}
    agents = {
        d["metadata"]["name"]
        for d in find(docs, "ServiceIdentity")
        if d.get("spec", {}).get("resourceID") == config_connector.PUBSUB_SERVICE
    }
    declared = config_connector.PubSub(docs)
    buckets = {site["FLINK_BUCKET"]: STATE_BUCKET, site["MODEL_BUCKET"]: MODEL_BUCKET}
    grants = []
    for doc in members:
        spec = doc["spec"]
        member = spec.get("member", "")
        identity = spec.get("memberFrom", {}).get("serviceIdentityRef", {}).get("name")
        if identity in agents or config_connector.PUBSUB_AGENT_MEMBER.fullmatch(member):
            who = PUBSUB_AGENT
        else:
            who = who_by_email.get(member.removeprefix("serviceAccount:"), member or str(spec.get("memberFrom")))
        target = spec.get("resourceRef", {})
        kind = target.get("kind")
        if kind == "StorageBucket":
            bucket = target.get("external") or target.get("name")
            resource = f"gs://{bucket}"
            on = buckets.get(bucket, resource)
        elif kind in ("PubSubTopic", "PubSubSubscription"):
            resource = (declared.topic if kind == "PubSubTopic" else declared.subscription)(target) or str(target)
            on = parts.get((kind, resource), resource)
        else:
            resource = on = f"{kind} {target.get('external') or target.get('name')}"
        grants.append(_Grant(doc, who, spec.get("role", ""), on, resource))
    return grants


def _pubsub_parts(docs: list[dict]) -> dict[tuple[str, str], str]:
    """{(kind, path): its part in GRANTS} for the pipelines' Pub/Sub resources, from their submissions' options."""
    from pipelines.options import InferenceOptions

    declared = config_connector.PubSub(docs)
    parts = {}
    for spec in (d.get("spec", {}) for d in declared.subscriptions.values()):
        undeliverable = declared.topic(spec.get("deadLetterPolicy", {}).get("deadLetterTopicRef"))
        if undeliverable:
            parts[("PubSubTopic", undeliverable)] = UNDELIVERABLE_TOPIC
    for submission in submissions(docs):
        try:
            inference = submission.options().view_as(InferenceOptions)
        except ImportError:
            continue  # the pipelines check reports it
        parts[("PubSubSubscription", inference.input_subscription)] = INPUT_SUBSCRIPTION
        parts[("PubSubTopic", inference.output_topic)] = OUTPUT_TOPIC
        parts[("PubSubTopic", inference.dead_letter_topic)] = DEAD_LETTER_TOPIC
    return parts


def _state_dirs(docs: list[dict], bucket: str) -> dict[str, str]:
    """{Flink option: object-name prefix} of the FlinkDeployment's state directories in the state bucket, e.g.
    {"state.checkpoints.dir": "checkpoints/"}. The prefixes end in "/": "checkpoints" would match "checkpoints2/"."""
    found = {}
    for deployment in find(docs, "FlinkDeployment"):
        config = deployment["spec"].get("flinkConfiguration", {})
        for option in (CHECKPOINTS, SAVEPOINTS, HA):
            match = re.fullmatch(rf"gs://{re.escape(bucket)}/(.+?)/*", str(config.get(option, "")))
            if match:
                found[option] = match.group(1) + "/"
    return found


def _check_grant(grant: _Grant, state_dirs: dict[str, str]) -> list[str]:
    reaches_state = grant.on == STATE_BUCKET or grant.on.split(" ")[0] in ABOVE_BUCKETS
    deletes = grant.role in DELETING_ROLES or not grant.role.startswith("roles/")
    if reaches_state and deletes and grant.who != "JOBMANAGER_GSA":
        return [
            f"{grant}, which can delete or overwrite objects in the state bucket: only the JobManager's account "
            "(JOBMANAGER_GSA) may, so that nothing else can destroy or rewrite checkpoints, savepoints and HA metadata"
        ]
    if (grant.who, grant.role, grant.on) not in GRANTS:
        return [
            f"{grant} ({grant.on}): not a grant the deployment needs. The allowed grants are the table GRANTS in "
            "deploy/validation/identities.py; each account holds only what its job uses"
        ]
    if grant.who == "WORKER_GSA" and grant.on == STATE_BUCKET:
        return _check_worker_condition(grant, state_dirs)[1]
    return []


def _check_worker_condition(grant: _Grant, state_dirs: dict[str, str]) -> tuple[set[str], list[str]]:
    """The directories a worker's grant on the state bucket covers, and what is wrong with its condition. Its
    expression must be terms joined by ||, each an object name or a listing under the checkpoint or savepoint
    directory: anything else could reach further (the HA metadata, the whole bucket)."""
    allowed = {state_dirs[o] for o in (CHECKPOINTS, SAVEPOINTS) if o in state_dirs}
    ha = state_dirs.get(HA)
    expected = " or ".join(sorted(allowed)) or "the checkpoint and savepoint directories"
    if not grant.condition:
        return set(), [
            f"{grant} without a condition: it must be confined to {expected} (resource.name.startsWith("
            f'"projects/_/buckets/<bucket>/objects/<prefix>")), or the workers reach the whole bucket, HA metadata '
            "included"
        ]
    bucket = grant.resource.removeprefix("gs://")
    prefixes, problems = set(), []
    for term in (t.strip() for t in grant.condition.get("expression", "").split("||")):
        object_term, list_term = _OBJECT_TERM.fullmatch(term), _LIST_TERM.fullmatch(term)
        prefix = object_term.group(2) if object_term else list_term.group(1) if list_term else None
        if prefix is not None and ha and (ha.startswith(prefix) or prefix.startswith(ha)):
            problems.append(f"{grant}: its condition reaches the HA metadata ({ha}): {term}")
        elif (
            prefix is None
            or not any(prefix.startswith(directory) for directory in allowed)
            or (object_term and object_term.group(1) != bucket)
        ):
            problems.append(
                f"{grant}: each term of its condition must confine it to {expected} of {grant.resource}, got {term!r}"
            )
        elif prefix in allowed:
            prefixes.add(prefix)  # a narrower prefix is confined too, but does not cover the directory
    return (set() if problems else prefixes), problems


def _check_required(grants: list[_Grant], site: dict, parts: dict, state_dirs: dict[str, str]) -> list[str]:
    """Every grant of GRANTS for the four accounts is declared: on the buckets once, on each pipeline's resources,
    and the workers' state grants for both the checkpoint and the savepoint directory."""
    resources = {
        STATE_BUCKET: [f"gs://{site['FLINK_BUCKET']}"],
        MODEL_BUCKET: [f"gs://{site['MODEL_BUCKET']}"],
    }
    for (_, path), part in sorted(parts.items()):
        resources.setdefault(part, []).append(path)
    unconditioned = {(g.who, g.role, g.resource) for g in grants if not g.condition}
    problems = []
    for (who, role, on), why in GRANTS.items():
        if who == PUBSUB_AGENT:
            continue  # the Pub/Sub check requires the service agent's grants
        for resource in resources.get(on, []):
            if who == "WORKER_GSA" and on == STATE_BUCKET:
                problems += _check_worker_state_covered(grants, role, resource, why, state_dirs)
            elif (who, role, resource) not in unconditioned:
                where = "base/iam/storage.yaml" if on in (STATE_BUCKET, MODEL_BUCKET) else "base/pubsub/pipeline/"
                problems.append(f"{who} needs {role} on {resource} ({on}): it {why} ({where})")
    return problems


def _check_worker_state_covered(grants, role: str, resource: str, why: str, state_dirs: dict[str, str]) -> list[str]:
    covered = set()
    for grant in grants:
        if (grant.who, grant.role, grant.resource) == ("WORKER_GSA", role, resource):
            covered |= _check_worker_condition(grant, state_dirs)[0]
    return [
        f"WORKER_GSA needs {role} on {resource} confined to {state_dirs[option]} (a condition "
        f'resource.name.startsWith("projects/_/buckets/{resource.removeprefix("gs://")}/objects/{state_dirs[option]}")'
        f"): it {why}"
        for option in (CHECKPOINTS, SAVEPOINTS)
        if option in state_dirs and state_dirs[option] not in covered
    ]
