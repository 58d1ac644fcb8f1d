"""Owns the sandbox's pod runner: the kubelet for EdgeModel's pods on kwok's simulated nodes.

Pods on kwok nodes run no containers. The runner takes every pod labelled
`app.kubernetes.io/part-of: edgemodel` that is scheduled to a node annotated
`kwok.x-k8s.io/node: fake`, runs its containers' real command lines as local processes bound
to the pod's own IP, and reports their status back as the kubelet would. It also provisions
hostPath PersistentVolumes for the `local-path` StorageClass.

Pod IPs come from a private /16 made local to this machine with one AnyIP route (the API
server refuses loopback addresses in EndpointSlices); 127.1.0.0/16 is the fallback where
routes cannot be added. See `network`.

Modules: `plan` (pure: pod spec -> launch plan), `lifecycle` (pure: records -> actions,
status), `records` (pure: record transitions), `dns` (pure: Service host rewriting), `ipam`
(pod IPs), `network` (the pod range), `provisioner` (PVC -> PV), `kube` (the project's one
API client, `edgemodel_operator.kube.Kube`, behind blocking calls for the runner's threads),
`main` (watches, dispatch), `supervisor` (one pod's coordinator) and its units `credentials`,
`volumes`, `processes`, `probes`, `services` and `statuswriter` (docs/architecture.md,
"The pod runner").
"""

from __future__ import annotations

from edgemodel_sandbox.fleet import FAKE_NODE_ANNOTATION

__all__ = ["FAKE_NODE_ANNOTATION", "PROVISIONER_NAME", "STORAGE_CLASS"]

STORAGE_CLASS = "local-path"
PROVISIONER_NAME = "rancher.io/local-path"
