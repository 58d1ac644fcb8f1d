"""A local Kubernetes control plane with kwok-simulated K3s edge nodes, for dev and tests."""
