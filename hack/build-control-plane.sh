#!/usr/bin/env bash
# Build kube-apiserver, kubectl and etcd from the Go module proxy into a cache
# keyed by version, and print the directory holding them (KUBEBUILDER_ASSETS
# style) on the last line of stdout. Progress goes to stderr.
#
#   hack/build-control-plane.sh            # build if needed, print the dir
#   KUBEBUILDER_ASSETS=/path hack/...      # use existing envtest binaries
#
# Cold build measured on 2 cores / 24 GB: 11m06s wall (etcd ~2 min,
# kube-apiserver + kubectl ~9 min); ~1 GB module cache + ~2.6 GB build cache.
# Warm (cached) it returns in well under a second.
#
# Environment:
#   K8S_VERSION   (default v1.36.3)   ETCD_VERSION (default v3.6.16)
#   EXTERNALAUTH_CACHE (default ~/.cache/externalauth)
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CACHE_ROOT=${EXTERNALAUTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/externalauth}
OUT="$CACHE_ROOT/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"

say() { printf '[control-plane] %s\n' "$*" >&2; }
die() { printf '[control-plane] error: %s\n' "$*" >&2; exit 1; }

# 1. Binaries the user already has (envtest conventions).
if [[ -n "${TEST_ASSET_KUBE_APISERVER:-}" && -n "${TEST_ASSET_ETCD:-}" && -n "${TEST_ASSET_KUBECTL:-}" ]]; then
  for b in "$TEST_ASSET_KUBE_APISERVER" "$TEST_ASSET_ETCD" "$TEST_ASSET_KUBECTL"; do
    [[ -x "$b" ]] || die "TEST_ASSET_* points at $b, which is not an executable"
  done
  say "using TEST_ASSET_* binaries"
  echo "TEST_ASSET"
  exit 0
fi
if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for b in kube-apiserver etcd kubectl; do
    [[ -x "$KUBEBUILDER_ASSETS/$b" ]] || die "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable '$b'"
  done
  say "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

# 2. The cache, when it already holds the right versions.
have() {
  [[ -x "$OUT/kube-apiserver" && -x "$OUT/kubectl" && -x "$OUT/etcd" ]] || return 1
  # Capture first: `cmd | grep -q` can fail under pipefail when grep exits early (SIGPIPE).
  local v
  v=$("$OUT/kube-apiserver" --version 2>/dev/null) || return 1
  [[ "$v" == "Kubernetes $K8S_VERSION" ]] || return 1
  v=$("$OUT/etcd" --version 2>/dev/null) || return 1
  [[ "$v" == *"etcd Version: ${ETCD_VERSION#v}"* ]] || return 1
}
if have; then
  say "cached: $OUT"
  echo "$OUT"
  exit 0
fi

# Serialise builds: `make control-plane`, pytest and a second checkout may all
# ask at once; the first builds, the others wait and then find the cache.
mkdir -p "$CACHE_ROOT/control-plane"
if command -v flock >/dev/null; then
  exec 9>"$CACHE_ROOT/control-plane/.build.lock"
  if ! flock -n 9; then
    say "another build is running; waiting for it (lock $CACHE_ROOT/control-plane/.build.lock) ..."
    flock 9
  fi
  if have; then
    say "cached (built by the other run): $OUT"
    echo "$OUT"
    exit 0
  fi
fi

command -v go >/dev/null || die "Go is not installed: install Go 1.25+ or set KUBEBUILDER_ASSETS to a directory with kube-apiserver, etcd and kubectl"
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOPROXY=${GOPROXY:-https://proxy.golang.org,direct}
start=$(date +%s)

# 3. etcd: a wrapper module that requires the server module.
say "building etcd $ETCD_VERSION (1-3 min cold) ..."
mkdir -p "$WORK/etcd" && cd "$WORK/etcd"
go mod init externalauth.local/etcd >/dev/null 2>&1
go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3 >&2
say "etcd built after $(( $(date +%s) - start ))s"

# 4. kube-apiserver + kubectl: a wrapper module replacing every staging module
#    with its published version (generated from the real go.mod).
say "building kube-apiserver and kubectl $K8S_VERSION (5-15 min cold) ..."
mkdir -p "$WORK/k8s" && cd "$WORK/k8s"
go mod init externalauth.local/k8s >/dev/null 2>&1
say "downloading k8s.io/kubernetes@$K8S_VERSION ..."
modjson=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION")
moddir=$(printf '%s' "$modjson" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
gover=$(awk '/^go /{print $2; exit}' "$moddir/go.mod")
staging_minor="v0.${K8S_VERSION#v1.}"
{
  echo "module externalauth.local/k8s"
  echo
  echo "go $gover"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  grep -E '=> \./staging/src/' "$moddir/go.mod" | awk -v v="$staging_minor" '{print "replace " $1 " => " $1 " " v}'
} > go.mod
n=$(grep -c '^replace' go.mod)
say "wrapper module replaces $n staging modules with $staging_minor"
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
say "resolving dependencies ..."
go mod tidy >&2 || go get "k8s.io/kubernetes@$K8S_VERSION" >&2
major=$(echo "$K8S_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')
minor=$(echo "$K8S_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
say "compiling (this is the long step) ..."
go build -trimpath -tags selinux,notest -ldflags "$ld" -o "$OUT/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl >&2
have || die "built binaries in $OUT do not report the expected versions"
say "done in $(( $(date +%s) - start ))s: $OUT"
echo "$OUT"
