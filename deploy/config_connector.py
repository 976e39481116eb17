"""Config Connector's resources in the manifests (base/pubsub/, base/iam/): the fields they may use, and what they
declare.

Config Connector turns Kubernetes objects into Google Cloud resources; the manifests use it for the pipelines'
Pub/Sub topics and subscriptions, the IAM grants dead-lettering needs, and the IAM grants of the deployment's own
Google service accounts (Workload Identity, the buckets, Pub/Sub). Its CRDs are published in its GitHub
repository and releases (GoogleCloudPlatform/k8s-config-connector, config/crds/resources/), not on Maven Central or
PyPI, so the offline checks cannot fetch them as they fetch the Flink operator's (deploy/crd.py). Instead the
fields the manifests may use are stated here, as the v1beta1 CRDs define them, and any other field is an error: the
API server would prune a misspelt one without a word. A field the manifests start to use is added here first,
after a look at its CRD.

`PubSub` answers what the validation asks of the rendered documents: which topic and subscription paths
(projects/<project>/topics/<id>) they declare, and where a reference by name leads.
"""

from __future__ import annotations

import re

GROUP_SUFFIX = ".cnrm.cloud.google.com"
PROJECT_ANNOTATION = "cnrm.cloud.google.com/project-id"
# Pub/Sub's service agent, the account that moves undeliverable messages to a dead-letter topic.
PUBSUB_SERVICE = "pubsub.googleapis.com"
PUBSUB_AGENT_MEMBER = re.compile(r"serviceAccount:service-\d+@gcp-sa-pubsub\.iam\.gserviceaccount\.com")

STRING, INTEGER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
DURATION = {"type": "string", "pattern": r"^\d+(\.\d{1,9})?s$"}  # e.g. 604800s, as the CRDs describe durations


def _object(required=(), **properties) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


# A reference is to an object in the manifests (name) or to a resource by its path (external), never both.
REF = {"oneOf": [_object(["name"], name=STRING, namespace=STRING), _object(["external"], external=STRING)]}
# What an IAMPolicyMember grants a role on. The CRD takes any kind; these are the ones the manifests use, each on
# Config Connector's list of kinds IAMPolicyMember supports (StorageBucket and IAMServiceAccount also with
# conditions), the external ones in the formats that list gives: a bucket by its name, a service account as
# projects/<project>/serviceAccounts/<email>. The buckets and service accounts are not the namespace's to create
# (README, prerequisites), so they are referred to by external name.
RESOURCE_REF = {
    "oneOf": [
        _object(
            ["kind", "name"],
            apiVersion=STRING,
            kind={"enum": ["PubSubTopic", "PubSubSubscription"]},
            name=STRING,
            namespace=STRING,
        ),
        _object(
            ["kind", "external"],
            apiVersion=STRING,
            kind={"enum": ["StorageBucket"]},
            external={"type": "string", "pattern": r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$"},
        ),
        _object(
            ["kind", "external"],
            apiVersion=STRING,
            kind={"enum": ["IAMServiceAccount"]},
            external={"type": "string", "pattern": r"^projects/[^/]+/serviceAccounts/[^/@]+@[^/@]+$"},
        ),
    ]
}

SPECS = {
    ("pubsub.cnrm.cloud.google.com/v1beta1", "PubSubTopic"): _object(
        resourceID=STRING,
        messageRetentionDuration=DURATION,
        kmsKeyRef=REF,
    ),
    ("pubsub.cnrm.cloud.google.com/v1beta1", "PubSubSubscription"): _object(
        ["topicRef"],
        resourceID=STRING,
        topicRef=REF,
        ackDeadlineSeconds=INTEGER,
        deadLetterPolicy=_object(deadLetterTopicRef=REF, maxDeliveryAttempts=INTEGER),
        retryPolicy=_object(minimumBackoff=DURATION, maximumBackoff=DURATION),
        # "" is Pub/Sub's "never expires".
        expirationPolicy=_object(["ttl"], ttl={"type": "string", "pattern": r"^$|^\d+(\.\d{1,9})?s$"}),
        messageRetentionDuration=DURATION,
        retainAckedMessages=BOOLEAN,
        enableExactlyOnceDelivery=BOOLEAN,
        enableMessageOrdering=BOOLEAN,
        filter=STRING,
    ),
    ("iam.cnrm.cloud.google.com/v1beta1", "IAMPolicyMember"): {
        **_object(
            ["resourceRef", "role"],
            member=STRING,
            memberFrom=_object(serviceIdentityRef=_object(["name"], name=STRING, namespace=STRING)),
            role={"type": "string", "pattern": r"^((projects|organizations)/[^/]+/)?roles/[\w_\.]+$"},
            resourceRef=RESOURCE_REF,
            # An IAM Condition (CEL); the binding applies only where it holds.
            condition=_object(["title", "expression"], title=STRING, description=STRING, expression=STRING),
        ),
        "oneOf": [{"required": ["member"]}, {"required": ["memberFrom"]}],
    },
    ("serviceusage.cnrm.cloud.google.com/v1beta1", "ServiceIdentity"): _object(
        ["projectRef"],
        resourceID=STRING,
        projectRef={
            "oneOf": [
                _object(["name"], name=STRING, namespace=STRING, kind={"enum": ["Project"]}),
                _object(["external"], external=STRING),
            ]
        },
    ),
}


def is_config_connector(doc: dict) -> bool:
    return doc["apiVersion"].split("/")[0].endswith(GROUP_SUFFIX)


def validate(doc: dict) -> list[str]:
    """Problems of one Config Connector object against the fields stated above, each with the path to the field."""
    import jsonschema

    spec_schema = SPECS.get((doc["apiVersion"], doc["kind"]))
    if spec_schema is None:
        known = ", ".join(f"{kind} ({api})" for api, kind in SPECS)
        return [
            f"{doc['apiVersion']} {doc['kind']} is not a Config Connector kind these checks know: {known}; add "
            "its fields to deploy/config_connector.py from its CRD"
        ]
    # A kind whose spec has required fields requires the spec itself (a PubSubTopic may have none).
    required = ["apiVersion", "kind", "metadata"] + (["spec"] if spec_schema["required"] else [])
    schema = _object(required, apiVersion=STRING, kind=STRING, metadata={"type": "object"}, spec=spec_schema)
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def name_references(doc: dict) -> list[tuple[str, str]]:
    """(kind, name) of every object in the manifests this one refers to by name."""
    spec = doc.get("spec", {})
    found = [
        ("PubSubTopic", spec.get("topicRef", {}).get("name")),
        ("PubSubTopic", spec.get("deadLetterPolicy", {}).get("deadLetterTopicRef", {}).get("name")),
        ("ServiceIdentity", spec.get("memberFrom", {}).get("serviceIdentityRef", {}).get("name")),
        (spec.get("resourceRef", {}).get("kind"), spec.get("resourceRef", {}).get("name")),
    ]
    return [(kind, name) for kind, name in found if kind and name]


class PubSub:
    """The Pub/Sub resources the rendered documents declare, by their paths in Pub/Sub."""

    def __init__(self, docs: list[dict]):
        self._docs = docs
        self._namespaces = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Namespace"}
        self.topics = {self.path(d): d for d in docs if d["kind"] == "PubSubTopic"}
        self.subscriptions = {self.path(d): d for d in docs if d["kind"] == "PubSubSubscription"}

    def project(self, doc: dict) -> str:
        """Config Connector's project of an object: its own annotation, else its namespace's, else the namespace's
        name."""
        namespace = doc["metadata"].get("namespace", "")
        for metadata in (doc["metadata"], self._namespaces.get(namespace, {}).get("metadata", {})):
            if metadata.get("annotations", {}).get(PROJECT_ANNOTATION):
                return metadata["annotations"][PROJECT_ANNOTATION]
        return namespace

    def path(self, doc: dict) -> str:
        collection = "topics" if doc["kind"] == "PubSubTopic" else "subscriptions"
        resource_id = doc.get("spec", {}).get("resourceID") or doc["metadata"]["name"]  # Config Connector's default
        return f"projects/{self.project(doc)}/{collection}/{resource_id}"

    def topic(self, ref: dict | None) -> str | None:
        """The topic path a topic reference leads to; None when it names no PubSubTopic in the manifests."""
        if not ref:
            return None
        if "external" in ref:
            return ref["external"]
        return next((path for path, d in self.topics.items() if d["metadata"]["name"] == ref.get("name")), None)

    def subscription(self, ref: dict | None) -> str | None:
        """The subscription path a subscription reference leads to; None when it names no PubSubSubscription in the
        manifests."""
        if not ref:
            return None
        if "external" in ref:
            return ref["external"]
        return next((path for path, d in self.subscriptions.items() if d["metadata"]["name"] == ref.get("name")), None)

    def subscribers(self, topic: str) -> list[dict]:
        return [d for d in self.subscriptions.values() if self.topic(d.get("spec", {}).get("topicRef")) == topic]

    def agent_granted(self, role: str, target: dict) -> bool:
        """Whether Pub/Sub's service agent holds `role` on `target` (a PubSubTopic or PubSubSubscription)."""
        identities = {
            d["metadata"]["name"]
            for d in self._docs
            if d["kind"] == "ServiceIdentity" and d.get("spec", {}).get("resourceID") == PUBSUB_SERVICE
        }
        for grant in (d for d in self._docs if d["kind"] == "IAMPolicyMember"):
            spec = grant.get("spec", {})
            on = spec.get("resourceRef", {})
            agent = spec.get("memberFrom", {}).get("serviceIdentityRef", {}).get(
                "name"
            ) in identities or PUBSUB_AGENT_MEMBER.fullmatch(spec.get("member", ""))
            same_target = (on.get("kind"), on.get("name")) == (target["kind"], target["metadata"]["name"])
            if agent and spec.get("role") == role and same_target:
                return True
        return False
