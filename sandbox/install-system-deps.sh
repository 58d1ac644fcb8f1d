#!/usr/bin/env bash
# Installs what the sandbox needs from the machine's package manager: Prometheus (Debian's
# `prometheus` package, the real server) and openssl; for the runtime image and the real node
# (docs/architecture.md, "Images without Docker" and "A real node"): mmdebstrap + arch-test (Debian base
# filesystems), skopeo and umoci (OCI tooling), containerd + runc, the CNI plugins, iptables and
# conntrack (kube-proxy), qemu-user-static + binfmt-support (arm64 images on amd64); espeak-ng and
# sox make the speech the compression zoo feeds its VAD model, fonts-dejavu-core the text lines its
# OCR models read. Go >= 1.26 must already be on PATH:
# the control plane is built with it from the Go module proxy. Idempotent and quick when done.
set -euo pipefail

need=()
# command  package
wanted=(
  "prometheus prometheus" "openssl openssl"
  "mmdebstrap mmdebstrap" "arch-test arch-test" "skopeo skopeo" "umoci umoci"
  "containerd containerd" "runc runc" "/usr/lib/cni/bridge containernetworking-plugins"
  "iptables iptables" "conntrack conntrack"
  "qemu-aarch64-static qemu-user-static" "update-binfmts binfmt-support"
  "espeak-ng espeak-ng" "sox sox" "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf fonts-dejavu-core"
)
for entry in "${wanted[@]}"; do
  cmd=${entry% *} pkg=${entry#* }
  if [[ $cmd == /* ]]; then [[ -e $cmd ]] || need+=("$pkg"); else command -v "$cmd" >/dev/null || need+=("$pkg"); fi
done
if ((${#need[@]})); then
  echo "installing ${need[*]} from Debian's packages" >&2
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v go >/dev/null; then
  echo "Go >= 1.26 is needed to build the sandbox's control plane: install it and re-run" >&2
  exit 1
fi
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
if ((go_minor < 26)); then
  echo "Go >= 1.26 is needed (Kubernetes v1.36 requires it); found $(go env GOVERSION)" >&2
  exit 1
fi
