"""A small NetworkPolicy evaluator (networking.k8s.io/v1 semantics) over rendered objects.

A flow is allowed when the source's egress and the destination's ingress both allow it. A pod
selected by no policy of a direction is open in that direction; once selected, only a rule of one
of its policies can allow (rules add up, never subtract). Peers: podSelector alone means pods in
the policy's namespace; namespaceSelector alone every pod of the matching namespaces; both, the
pods matching both; ipBlock matches addresses outside the cluster only (what it does to pod IPs
is left to the implementation, so it is never counted on here). A rule without `to`/`from`
matches every peer; without `ports`, every port.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

Policy = dict[str, Any]


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: tuple[tuple[str, str], ...]
    name: str = ""

    @classmethod
    def of(cls, namespace: str, labels: dict[str, str], name: str = "") -> Pod:
        return cls(namespace, tuple(sorted(labels.items())), name or str(labels))

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class External:
    ip: str
    name: str = field(default="")


Endpoint = Pod | External


def matches_selector(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if not isinstance(other, External):
            return False
        ip = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        if ip not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(ip in ipaddress.ip_network(e) for e in block.get("except") or [])
    if not isinstance(other, Pod):
        return False
    assert peer, "an empty peer is invalid"
    ns_selector = peer.get("namespaceSelector")
    if ns_selector is None:
        ns_ok = other.namespace == policy_ns
    else:
        ns_ok = matches_selector(ns_selector, {"kubernetes.io/metadata.name": other.namespace})
    return ns_ok and matches_selector(peer.get("podSelector"), other.label_map)


def _port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        assert isinstance(p["port"], int), f"named port {p['port']!r}: give numbers"
        if p["port"] == port or p["port"] <= port <= p.get("endPort", p["port"]):
            return True
    return False


def _types(policy: Policy) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])


def _selecting(policies: list[Policy], pod: Pod, direction: str) -> list[Policy]:
    return [
        p
        for p in policies
        if p["metadata"].get("namespace", pod.namespace) == pod.namespace
        and direction in _types(p)
        and matches_selector(p["spec"].get("podSelector") or {}, pod.label_map)
    ]


def _allowed_one_way(
    policies: list[Policy], pod: Pod, other: Endpoint, port: int, proto: str, direction: str
) -> bool:
    selecting = _selecting(policies, pod, direction)
    if not selecting:
        return True
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in selecting:
        ns = policy["metadata"].get("namespace", pod.namespace)
        for rule in policy["spec"].get(key) or []:
            if not _port_matches(rule.get("ports"), port, proto):
                continue
            peers = rule.get(peers_key)
            if not peers or any(_peer_matches(peer, ns, other) for peer in peers):
                return True
    return False


def allowed(policies: list[Policy], src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
    """Whether `src` may open a connection to `dst` on `port` under `policies`."""
    egress = not isinstance(src, Pod) or _allowed_one_way(policies, src, dst, port, protocol, "Egress")
    ingress = not isinstance(dst, Pod) or _allowed_one_way(policies, dst, src, port, protocol, "Ingress")
    return egress and ingress
