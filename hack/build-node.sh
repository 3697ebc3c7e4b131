#!/usr/bin/env bash
# Build the node binaries of the e2e tier (kubelet, kube-scheduler,
# kube-controller-manager) from the Go module proxy into a cache keyed by version,
# and print the directory holding them on the last line of stdout. Progress goes to
# stderr: which binary, which phase, elapsed seconds and packages compiled, every
# ~15 s. kube-apiserver, etcd and kubectl come from hack/build-control-plane.sh.
#
#   hack/build-node.sh                      # build what is missing, print the dir
#   NODE_BIN_DIR=/path hack/build-node.sh   # use binaries you already have
#
# The wrapper module is made the same way as kube-apiserver's in
# hack/build-control-plane.sh (require k8s.io/kubernetes, replace every staging
# module by its published v0.N.P), so the Go build cache it filled is reused.
#
# Measured on 2 cores shared with other test runs: 92 s right after a cold
# control-plane build (kubelet 51 s, kube-scheduler 7 s, kube-controller-manager
# 30 s); 22 min with an empty Go build cache under load 7-14 (13 CPU minutes);
# 241 MB of binaries. Warm (cached) it returns in 0.5 s.
#
# Environment:
#   K8S_VERSION   (default v1.36.3; the same as the control plane's)
#   NODE_BIN_DIR  a directory with kubelet, kube-scheduler, kube-controller-manager
#   EXTERNALAUTH_CACHE (default ~/.cache/externalauth)
#   EXTERNALAUTH_PROGRESS_SECONDS (default 15)
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
CACHE_ROOT=${EXTERNALAUTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/externalauth}
OUT="$CACHE_ROOT/node/k8s-$K8S_VERSION"
TICK=${EXTERNALAUTH_PROGRESS_SECONDS:-15}
BINARIES=(kubelet kube-scheduler kube-controller-manager)

say() { printf '[node] %s\n' "$*" >&2; }
die() { printf '[node] error: %s\n' "$*" >&2; exit 1; }

reports_version() {
  local v
  # Capture first: `cmd | grep -q` can fail under pipefail when grep exits early.
  v=$("$1" --version 2>/dev/null) || return 1
  [[ "$v" == "Kubernetes $K8S_VERSION" ]]
}

if [[ -n "${NODE_BIN_DIR:-}" ]]; then
  for b in "${BINARIES[@]}"; do
    [[ -x "$NODE_BIN_DIR/$b" ]] || die "NODE_BIN_DIR=$NODE_BIN_DIR has no executable '$b'"
  done
  say "using NODE_BIN_DIR=$NODE_BIN_DIR"
  echo "$NODE_BIN_DIR"
  exit 0
fi

have() { reports_version "$OUT/$1"; }
missing() {
  local b
  for b in "${BINARIES[@]}"; do have "$b" || echo "$b"; done
}

todo=$(missing)
if [[ -z "$todo" ]]; then
  say "cached: $OUT"
  echo "$OUT"
  exit 0
fi

# Serialise builds: pytest, make and a second checkout may all ask at once; the
# first builds, the others wait and then find the cache.
mkdir -p "$CACHE_ROOT/node"
exec 9>"$CACHE_ROOT/node/.build.lock"
if ! flock -n 9; then
  say "another build is running; waiting for it (lock $CACHE_ROOT/node/.build.lock) ..."
  flock 9
fi
todo=$(missing)
if [[ -z "$todo" ]]; then
  say "cached (built by the other run): $OUT"
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || die "Go is not installed: install Go 1.26+ or set NODE_BIN_DIR"
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOPROXY=${GOPROXY:-https://proxy.golang.org,direct}
start=$SECONDS

# Run "$@" niced in the background (the machine's cores are shared with test runs),
# logging to $log; every $TICK seconds say how long it has run and how many packages
# `go build -v` has compiled. On failure show the log's tail.
with_progress() {
  local what=$1 log=$2; shift 2
  local began=$SECONDS pid next=$TICK
  nice -n 10 "$@" >"$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( SECONDS - began >= next )); then
      say "$what: $((SECONDS - began))s elapsed, $(grep -vc '^go: ' "$log" || true) packages so far"
      next=$((next + TICK))
    fi
  done
  if ! wait "$pid"; then
    tail -n 40 "$log" >&2
    die "$what failed after $((SECONDS - began))s (log above)"
  fi
  say "$what: done in $((SECONDS - began))s"
}

say "building $(echo $todo) $K8S_VERSION (cold: ~1.5 min after a control-plane build, far longer with an empty Go build cache) ..."
mkdir -p "$WORK/k8s" && cd "$WORK/k8s"
say "downloading k8s.io/kubernetes@$K8S_VERSION ..."
go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >"$WORK/download.json" 2>"$WORK/download.log" \
  || { tail -n 20 "$WORK/download.log" >&2; die "go mod download k8s.io/kubernetes@$K8S_VERSION failed"; }
moddir=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Dir"])' "$WORK/download.json")
gover=$(awk '/^go /{print $2; exit}' "$moddir/go.mod")
staging_minor="v0.${K8S_VERSION#v1.}"
{
  echo "module externalauth.local/k8s-node"
  echo
  echo "go $gover"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  grep -E '=> \./staging/src/' "$moddir/go.mod" | awk -v v="$staging_minor" '{print "replace " $1 " => " $1 " " v}'
} > go.mod
say "wrapper module replaces $(grep -c '^replace' go.mod) staging modules with $staging_minor"
{
  echo "//go:build tools"
  echo
  echo "package tools"
  echo
  echo "import ("
  for b in "${BINARIES[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$b\""; done
  echo ")"
} > tools.go
with_progress "resolving dependencies" "$WORK/tidy.log" go mod tidy

major=$(echo "$K8S_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')
minor=$(echo "$K8S_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
# One binary at a time, so that the progress says which; the packages they share
# are compiled once (the Go build cache).
for b in $todo; do
  with_progress "$b $K8S_VERSION: compiling" "$WORK/build-$b.log" \
    go build -v -trimpath -tags selinux,notest -ldflags "$ld" -o "$OUT/$b.tmp" "k8s.io/kubernetes/cmd/$b"
  mv "$OUT/$b.tmp" "$OUT/$b"
  have "$b" || die "$OUT/$b does not report Kubernetes $K8S_VERSION"
done
say "done in $((SECONDS - start))s: $OUT ($(du -sh "$OUT" | cut -f1))"
echo "$OUT"
