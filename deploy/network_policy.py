"""Evaluates the rendered NetworkPolicies offline: may one peer open a connection to another on a port?

The network check (deploy/validation/network.py) asks this of the paths the system needs and of the ones it must
not have. It follows Kubernetes' semantics for the parts the manifests use: a pod no policy selects in a direction
is open in that direction; one that is selected takes the union of the rules that select it; a connection needs
the source's egress and the destination's ingress. Only this namespace's policies are known: pods elsewhere are
taken to have none.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from deploy.manifests import find
from deploy.site import NAMESPACE


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
    return all(_expression_holds(expression, labels) for expression in selector.get("matchExpressions", []))


def _expression_holds(expression: dict, labels: dict) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
    if operator in ("In", "NotIn"):
        return (labels.get(key) in values) == (operator == "In")
    if operator in ("Exists", "DoesNotExist"):
        return (key in labels) == (operator == "Exists")
    raise KeyError(operator)


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


def _allowed_one_way(
    policies: list[dict], subject: Peer, other: Peer, port: int, protocol: str, direction: str
) -> bool:
    """Whether `subject` (a pod in the namespace) may send (Egress) to / receive (Ingress) from `other`."""
    selecting = [
        p
        for p in policies
        if direction in p["spec"].get("policyTypes", ["Ingress"])
        and _selects(p["spec"]["podSelector"], subject.label_dict)
    ]
    if not selecting:
        return True
    key, peers = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            rule_peers = rule.get(peers)
            if (
                not rule_peers or any(_peer_matches(rp, policy["metadata"]["namespace"], other) for rp in rule_peers)
            ) and _port_matches(rule, port, protocol):
                return True
    return False


def allowed(docs: list[dict], source: Peer, destination: Peer, port: int, protocol: str = "TCP") -> bool:
    """Whether the NetworkPolicies let `source` open a connection to `destination`:`port` (both sides' policies
    apply to pods of this namespace; the other namespaces are taken to have none)."""
    policies = find(docs, "NetworkPolicy")
    if source.namespace == NAMESPACE and not _allowed_one_way(policies, source, destination, port, protocol, "Egress"):
        return False
    if destination.namespace == NAMESPACE and not _allowed_one_way(
        policies, destination, source, port, protocol, "Ingress"
    ):
        return False
    return True
