"""Owns the sandbox's cluster DNS and kube-proxy emulation, as pure functions.

Processes here resolve names with the host's resolver, which knows nothing of Services. So
at container start a host of the form `<svc>.<ns>.svc[.cluster.local][:port]` in the
container's args or env is replaced by one ready endpoint of that Service (`IP:targetPort`,
from its EndpointSlices), which is where kube-proxy would have sent the connection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_HOST = re.compile(
    r"(?<![-a-zA-Z0-9.])"
    r"(?:(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://)?"
    rf"(?P<svc>{_LABEL})\.(?P<ns>{_LABEL})\.svc(?:\.cluster\.local)?\.?"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?![-a-zA-Z0-9.:])"
)
_DEFAULT_PORTS = {"http": 80, "https": 443, "grpc": 80, "grpcs": 443}


@dataclass(frozen=True)
class ServiceRef:
    """A Service a container addresses, and the port it uses (None: not written)."""

    name: str
    namespace: str
    port: int | None
    scheme: str = ""


def find_services(texts: Iterable[str], namespace: str) -> list[ServiceRef]:
    """Distinct Services named in `texts`, in order of first appearance."""
    del namespace  # the form requires the namespace; kept for the short forms to come
    found: list[ServiceRef] = []
    for text in texts:
        for match in _HOST.finditer(text):
            ref = _ref(match)
            if ref not in found:
                found.append(ref)
    return found


def _ref(match: re.Match[str]) -> ServiceRef:
    port = match.group("port")
    return ServiceRef(
        name=match.group("svc"),
        namespace=match.group("ns"),
        port=int(port) if port else None,
        scheme=(match.group("scheme") or "").lower(),
    )


def substitute(text: str, resolved: Mapping[ServiceRef, str]) -> str:
    """`text` with every resolved Service host replaced by its `IP:port` (scheme kept)."""

    def replace(match: re.Match[str]) -> str:
        ref = _ref(match)
        target = resolved.get(ref)
        if target is None:
            return match.group(0)
        scheme = match.group("scheme")
        return f"{scheme}://{target}" if scheme else target

    return _HOST.sub(replace, text)


def service_port(service: Mapping[str, Any], ref: ServiceRef) -> Mapping[str, Any] | None:
    """The Service port `ref` reaches: by number, else the scheme's default, else the first."""
    ports: Sequence[Mapping[str, Any]] = (service.get("spec") or {}).get("ports") or []
    if not ports:
        return None
    wanted = ref.port if ref.port is not None else _DEFAULT_PORTS.get(ref.scheme)
    for port in ports:
        if wanted is not None and int(port.get("port", 0)) == wanted:
            return port
    if ref.port is None:
        return ports[0]
    return None


def resolve(
    service: Mapping[str, Any], slices: Sequence[Mapping[str, Any]], ref: ServiceRef
) -> str | None:
    """`IP:port` of the first ready endpoint behind `ref`, or None while there is none."""
    port = service_port(service, ref)
    if port is None:
        return None
    name = str(port.get("name") or "")
    target = port.get("targetPort", port.get("port"))
    candidates: list[tuple[str, int]] = []
    for endpoint_slice in slices:
        number: int | None = None
        for slice_port in endpoint_slice.get("ports") or []:
            if str(slice_port.get("name") or "") == name and slice_port.get("port") is not None:
                number = int(slice_port["port"])
        if number is None and isinstance(target, int):
            number = target
        if number is None:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            # The EndpointSlice API reads a missing `ready` as ready.
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                candidates.append((str(address), number))
    if not candidates:
        return None
    address, number = sorted(candidates)[0]
    return f"{address}:{number}"
