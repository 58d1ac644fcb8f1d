"""The pod runner's cluster DNS and kube-proxy emulation: which hosts are Service names, and
which ready endpoint each one reaches."""

from __future__ import annotations

from typing import Any

import pytest

from edgemodel_sandbox.runner import dns
from edgemodel_sandbox.runner.dns import ServiceRef


@pytest.mark.parametrize(
    ("text", "refs"),
    [
        ("http://store.edge.svc.cluster.local:8080/m", [ServiceRef("store", "edge", 8080, "http")]),
        ("http://store.edge.svc/m", [ServiceRef("store", "edge", None, "http")]),
        ("--server=store.edge.svc:9000", [ServiceRef("store", "edge", 9000, "")]),
        ("grpc://a-b.c-d.svc.cluster.local.:8001", [ServiceRef("a-b", "c-d", 8001, "grpc")]),
        ("http://store.edge:8080/m", []),  # the short form is not rewritten
        ("http://example.com/x.svc", []),
        ("store.edge.svcx", []),
        ("x.store.edge.svc", []),  # four labels: not a Service name
        (
            "a.b.svc,c.d.svc.cluster.local:1",
            [ServiceRef("a", "b", None, ""), ServiceRef("c", "d", 1, "")],
        ),
    ],
)
def test_find_services(text: str, refs: list[ServiceRef]) -> None:
    assert dns.find_services([text], "ns") == refs


def test_find_services_deduplicates_in_order() -> None:
    texts = ["http://a.b.svc:1", "x", "http://a.b.svc:1/again", "c.d.svc"]
    assert dns.find_services(texts, "ns") == [
        ServiceRef("a", "b", 1, "http"),
        ServiceRef("c", "d", None, ""),
    ]


def test_substitute_keeps_scheme_and_path_and_leaves_unresolved() -> None:
    resolved = {
        ServiceRef("store", "edge", 8080, "http"): "10.200.0.3:9000",
        ServiceRef("db", "edge", None, ""): "10.200.0.4:5432",
    }
    text = "--a=http://store.edge.svc.cluster.local:8080/m?x=1 --b=db.edge.svc --c=http://x.y.svc"
    assert dns.substitute(text, resolved) == (
        "--a=http://10.200.0.3:9000/m?x=1 --b=10.200.0.4:5432 --c=http://x.y.svc"
    )


def service(*ports: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"ports": list(ports)}}


def endpoint_slice(
    ports: list[dict[str, Any]], *endpoints: tuple[str, bool | None]
) -> dict[str, Any]:
    items = []
    for address, ready in endpoints:
        conditions = {} if ready is None else {"ready": ready}
        items.append({"addresses": [address], "conditions": conditions})
    return {"ports": ports, "endpoints": items}


HTTP = {"name": "http", "port": 80, "targetPort": "http"}
GRPC = {"name": "grpc", "port": 8001, "targetPort": 8001}
SLICE_PORTS = [{"name": "http", "port": 8000}, {"name": "grpc", "port": 8001}]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (ServiceRef("s", "n", 80, "http"), "10.200.0.2:8000"),
        (ServiceRef("s", "n", None, "http"), "10.200.0.2:8000"),  # http's default port
        (ServiceRef("s", "n", 8001, "grpc"), "10.200.0.2:8001"),
        (ServiceRef("s", "n", None, ""), "10.200.0.2:8000"),  # no port written: the first
        (ServiceRef("s", "n", 9999, "http"), None),  # not a port of the Service
    ],
)
def test_resolve_maps_service_port_to_endpoint_port(ref: ServiceRef, expected: str | None) -> None:
    slices = [endpoint_slice(SLICE_PORTS, ("10.200.0.5", False), ("10.200.0.2", True))]
    assert dns.resolve(service(HTTP, GRPC), slices, ref) == expected


def test_resolve_needs_a_ready_endpoint() -> None:
    ref = ServiceRef("s", "n", 80, "http")
    assert dns.resolve(service(HTTP), [], ref) is None
    assert (
        dns.resolve(service(HTTP), [endpoint_slice(SLICE_PORTS, ("10.0.0.1", False))], ref) is None
    )
    # A missing `ready` condition reads as ready, as the EndpointSlice API says.
    ready = [endpoint_slice(SLICE_PORTS, ("10.0.0.1", None))]
    assert dns.resolve(service(HTTP), ready, ref) == "10.0.0.1:8000"
    assert dns.resolve(service(), ready, ref) is None


def test_resolve_numeric_target_port_without_slice_ports() -> None:
    svc = service({"port": 80, "targetPort": 8080})
    slices = [endpoint_slice([], ("10.0.0.9", True))]
    assert dns.resolve(svc, slices, ServiceRef("s", "n", 80, "http")) == "10.0.0.9:8080"
