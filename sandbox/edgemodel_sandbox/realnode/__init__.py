"""A real node for the sandbox: `edgemodel sandbox up --real-node` adds edge-real-amd64-0, a
real kubelet (Kubernetes v1.36.3, the control plane's tree) over the sandbox's containerd and
runc with bridge CNI, kube-proxy, a local OCI registry with authentication and cluster DNS.

`plan` decides (pure), `node` drives the lifecycle, `runtime` the containerd, `registry` the
registry, `gateway` the host-side DNS and API forward, `sweep` what `down` must remove.
See docs/architecture.md, "A real node".
"""
