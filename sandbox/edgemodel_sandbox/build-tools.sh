#!/usr/bin/env bash
# Builds the sandbox's control-plane binaries from the Go module proxy at pinned
# versions and caches them under $EDGEMODEL_TOOLS_DIR (default: the user cache dir),
# one folder per version set, so only the first run pays. Idempotent: a complete
# folder is left alone; a partial build is redone in a temporary folder and renamed
# into place, so a killed build never leaves a half-filled cache.
set -euo pipefail

# The pinned versions live in tools.py, which runs this script with them set.
: "${K8S_VERSION:?set by edgemodel_sandbox.tools}" "${ETCD_VERSION:?}" "${KWOK_VERSION:?}" "${HELM_VERSION:?}"
: "${REGISTRY_VERSION:?set by edgemodel_sandbox.tools}"
CACHE="${EDGEMODEL_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgemodel/tools}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { printf '[build-tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Runs a build step in a background job and prints a heartbeat every 30 s, so a
# long cold build shows it is alive.
with_progress() {
  local what="$1"; shift
  local start=$SECONDS
  "$@" &
  local pid=$!
  local ticks=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    ticks=$((ticks + 1))
    if (( ticks % 30 == 0 )) && kill -0 "$pid" 2>/dev/null; then
      log "$what: still building ($((SECONDS - start)) s)"
    fi
  done
  wait "$pid"
  log "$what: done in $((SECONDS - start)) s"
}

build_k8s() {
  local dest="$CACHE/kubernetes-$K8S_VERSION"
  [[ -x "$dest/kube-apiserver" && -x "$dest/kubectl" && -x "$dest/kube-scheduler" && -x "$dest/kube-controller-manager" ]] && return 0
  local work; work="$(mktemp -d "$CACHE/.k8s-build.XXXXXX")"
  log "kubernetes $K8S_VERSION: resolving modules (first run downloads about 1 GB)"
  local minor="v0.${K8S_VERSION#v1.}"
  local gomod; gomod="$(cd "$work" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module edgemodel.local/k8sbuild"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    # Each staging module "k8s.io/X => ./staging/src/k8s.io/X" becomes its published version.
    grep -E '^\s*k8s\.io/[A-Za-z0-9._-]+ => \./staging/' "$gomod" \
      | awk -v v="$minor" '{print "replace " $1 " => " $1 " " v}'
  } >"$work/go.mod"
  log "kubernetes $K8S_VERSION: $(grep -c '^replace' "$work/go.mod") staging modules replaced"
  local pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
              k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  (cd "$work" && go get "${pkgs[@]/%/@$K8S_VERSION}" >/dev/null 2>&1 || (cd "$work" && go get "${pkgs[@]}"))
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
  done
  mkdir -p "$work/bin"
  with_progress "kubernetes $K8S_VERSION (4 binaries)" \
    bash -c "cd '$work' && go build -trimpath -ldflags '$ld' -o bin/ ${pkgs[*]}"
  rm -rf "$dest.tmp" && mv "$work/bin" "$dest.tmp" && rm -rf "$dest" && mv "$dest.tmp" "$dest"
  rm -rf "$work"
}

# The real node's kubelet and kube-proxy: the same Kubernetes tree and module setup as the
# control plane, built into a folder of their own so the control-plane cache stays valid.
build_k8s_node() {
  local dest="$CACHE/kubernetes-node-$K8S_VERSION"
  [[ -x "$dest/kubelet" && -x "$dest/kube-proxy" ]] && return 0
  local work; work="$(mktemp -d "$CACHE/.k8s-node-build.XXXXXX")"
  log "kubernetes node $K8S_VERSION: resolving modules"
  local minor="v0.${K8S_VERSION#v1.}"
  local gomod; gomod="$(cd "$work" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module edgemodel.local/k8snodebuild"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    grep -E '^\s*k8s\.io/[A-Za-z0-9._-]+ => \./staging/' "$gomod" \
      | awk -v v="$minor" '{print "replace " $1 " => " $1 " " v}'
  } >"$work/go.mod"
  grep -q 'k8s.io/cri-streaming' "$work/go.mod" \
    || echo "replace k8s.io/cri-streaming => k8s.io/cri-streaming $minor" >>"$work/go.mod"
  local pkgs=(k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
  (cd "$work" && go get "${pkgs[@]/%/@$K8S_VERSION}" >/dev/null 2>&1 || (cd "$work" && go get "${pkgs[@]}"))
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
  done
  mkdir -p "$work/bin"
  with_progress "kubernetes node $K8S_VERSION (kubelet, kube-proxy)" \
    bash -c "cd '$work' && go build -trimpath -ldflags '$ld' -o bin/ ${pkgs[*]}"
  rm -rf "$dest.tmp" && mv "$work/bin" "$dest.tmp" && rm -rf "$dest" && mv "$dest.tmp" "$dest"
  rm -rf "$work"
}

build_etcd() {
  local dest="$CACHE/etcd-$ETCD_VERSION"
  [[ -x "$dest/etcd" ]] && return 0
  local work; work="$(mktemp -d "$CACHE/.etcd-build.XXXXXX")"
  log "etcd $ETCD_VERSION: resolving modules"
  printf 'module edgemodel.local/etcdbuild\n\ngo 1.26\n' >"$work/go.mod"
  (cd "$work" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  mkdir -p "$work/bin"
  with_progress "etcd $ETCD_VERSION" \
    bash -c "cd '$work' && go build -trimpath -ldflags '-s -w' -o bin/etcd go.etcd.io/etcd/server/v3"
  rm -rf "$dest.tmp" && mv "$work/bin" "$dest.tmp" && rm -rf "$dest" && mv "$dest.tmp" "$dest"
  rm -rf "$work"
}

build_go_install() {  # name module-path version
  local name="$1" pkg="$2" version="$3"
  local dest="$CACHE/$name-$version"
  [[ -x "$dest/$name" ]] && return 0
  local tmp; tmp="$(mktemp -d "$CACHE/.$name-build.XXXXXX")"
  chmod 755 "$tmp"
  with_progress "$name $version" env GOBIN="$tmp" go install -trimpath -ldflags '-s -w' "$pkg@$version"
  rm -rf "$dest" && mv "$tmp" "$dest"
}

mkdir -p "$CACHE"
what="${1:-all}"
case "$what" in
  all)  build_etcd; build_go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"; build_k8s ;;
  k8s)  build_k8s ;;
  etcd) build_etcd ;;
  kwok) build_go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" ;;
  helm) build_go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" ;;
  # The real node (edgemodel_sandbox.realnode): kubelet + kube-proxy, and the OCI registry.
  node) build_k8s_node ;;
  registry) build_go_install registry github.com/distribution/distribution/v3/cmd/registry "$REGISTRY_VERSION" ;;
  *) echo "usage: build-tools.sh [all|k8s|etcd|kwok|helm|node|registry]" >&2; exit 2 ;;
esac
log "tools ready in $CACHE"
