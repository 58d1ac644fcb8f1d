#!/usr/bin/env bash
# Installs what the sandbox needs from the machine's package manager: Prometheus (Debian's
# `prometheus` package, the real server) and openssl. Go >= 1.26 must already be on PATH: the
# control plane is built with it from the Go module proxy. Idempotent and quick when done.
set -euo pipefail

need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v openssl >/dev/null || need+=(openssl)
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
