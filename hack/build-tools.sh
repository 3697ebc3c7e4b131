#!/usr/bin/env bash
# Build the tools the chart tests and `make lint` drive (helm, promtool, actionlint)
# from the Go module proxy into a cache keyed by version, and print the path of each requested
# binary on stdout, one per line, in the order asked. Progress goes to stderr:
# which binary, which phase, elapsed seconds and packages compiled, every ~15 s.
#
#   hack/build-tools.sh helm promtool      # build what is missing, print the paths
#   hack/build-tools.sh actionlint         # the GitHub Actions workflow linter (make lint)
#   HELM=/usr/local/bin/helm hack/...      # use a binary you already have
#
# Cold build measured on 2 cores, `nice -n 10`, while the control plane was being
# built on the same cores, Go module cache already filled (go get: 1 s each):
# helm 142 s + promtool 311 s = 7m35s wall; cold module downloads come on top.
# Warm (cached) it returns in 0.1 s.
#
# Environment:
#   HELM_VERSION     (default v3.21.4)    module helm.sh/helm/v3, package cmd/helm (the newest
#                                         v3 the module proxy here approves: v3.22.0 is served
#                                         but not approved, and a pin it does not stand behind
#                                         can vanish from under CI)
#   PROMTOOL_VERSION (default v0.316.0)   module github.com/prometheus/prometheus
#                                         (v0.316.0 is Prometheus 3.16.0; needs Go >= 1.26.7)
#   ACTIONLINT_VERSION (default v1.7.12)  module github.com/rhysd/actionlint, package cmd/actionlint
#   HELM, PROMTOOL, ACTIONLINT  paths of existing binaries: skip the build for that tool
#   EXTERNALAUTH_CACHE (default ~/.cache/externalauth)
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.21.4}
PROMTOOL_VERSION=${PROMTOOL_VERSION:-v0.316.0}
ACTIONLINT_VERSION=${ACTIONLINT_VERSION:-v1.7.12}
CACHE_ROOT=${EXTERNALAUTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/externalauth}
TOOLS="$CACHE_ROOT/tools"
TICK=${EXTERNALAUTH_PROGRESS_SECONDS:-15}

say() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] error: %s\n' "$*" >&2; exit 1; }

(( $# > 0 )) || die "usage: $0 helm|promtool|actionlint ..."

version_of() {
  case $1 in
    helm) echo "$HELM_VERSION" ;;
    promtool) echo "$PROMTOOL_VERSION" ;;
    actionlint) echo "$ACTIONLINT_VERSION" ;;
    *) die "unknown tool '$1' (known: helm, promtool, actionlint)" ;;
  esac
}

# The version string the built binary must report.
expected() {
  case $1 in
    helm) echo "$HELM_VERSION" ;;
    actionlint) echo "$ACTIONLINT_VERSION" ;;
    # Prometheus' Go module v0.X.Y is Prometheus 3.X... : v0.316.0 -> 3.16.0.
    promtool) local v=${PROMTOOL_VERSION#v0.}; echo "${v:0:1}.$((10#${v:1:2})).${v#*.}" ;;
  esac
}

bin_path() { echo "$TOOLS/$1-$(version_of "$1")/$1"; }

have() {
  local b v
  b=$(bin_path "$1")
  [[ -x "$b" ]] || return 1
  case $1 in
    helm) v=$("$b" version --template '{{.Version}}' 2>/dev/null) || return 1
          [[ "$v" == "$(expected helm)" ]] ;;
    promtool) v=$("$b" --version 2>&1) || return 1
              [[ "$v" == *"version $(expected promtool) "* ]] ;;
    actionlint) v=$("$b" -version 2>/dev/null | head -n1) || return 1
                [[ "$v" == "$(expected actionlint)" ]] ;;
  esac
}

# Run "$@" in the background (niced: the machine's cores are shared with test
# runs), logging to $log; every $TICK seconds say how long and how many packages
# `go build -v` has compiled so far. On failure show the log's tail.
with_progress() {
  local what=$1 log=$2; shift 2
  local start=$SECONDS pid next=$TICK
  nice -n 10 "$@" >"$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( SECONDS - start >= next )); then
      say "$what: $((SECONDS - start))s elapsed, $(grep -vc '^go: ' "$log" || true) packages so far"
      next=$((next + TICK))
    fi
  done
  if ! wait "$pid"; then
    tail -n 40 "$log" >&2
    die "$what failed after $((SECONDS - start))s (log above)"
  fi
  say "$what: done in $((SECONDS - start))s"
}

build() {
  local tool=$1 version module pkg ld tags
  version=$(version_of "$tool")
  case $tool in
    helm)
      module=helm.sh/helm/v3; pkg=helm.sh/helm/v3/cmd/helm; tags=""
      ld="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
      ld="$ld -X helm.sh/helm/v3/internal/version.gitTreeState=clean" ;;
    promtool)
      module=github.com/prometheus/prometheus; pkg=github.com/prometheus/prometheus/cmd/promtool; tags=netgo
      ld="-s -w -X github.com/prometheus/common/version.Version=$(expected promtool)"
      ld="$ld -X github.com/prometheus/common/version.Branch=HEAD" ;;
    actionlint)
      module=github.com/rhysd/actionlint; pkg=github.com/rhysd/actionlint/cmd/actionlint; tags=""
      ld="-s -w -X github.com/rhysd/actionlint.version=$version" ;;
  esac
  local work out
  work=$(mktemp -d)
  out=$(dirname "$(bin_path "$tool")")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  cd "$work"
  go mod init "externalauth.local/$tool" >/dev/null 2>&1
  with_progress "$tool $version: downloading modules" "$work/get.log" go get "$module@$version"
  if [[ $tool == helm ]]; then
    # helm's Makefile sets the Kubernetes version `helm template` assumes from the
    # client-go it is built with (v0.N -> 1.N).
    local kminor
    kminor=$(go list -m -f '{{.Version}}' k8s.io/client-go | sed -E 's/^v0\.([0-9]+)\..*/\1/')
    for p in pkg/lint/rules pkg/chartutil; do
      ld="$ld -X helm.sh/helm/v3/$p.k8sVersionMajor=1 -X helm.sh/helm/v3/$p.k8sVersionMinor=$kminor"
    done
  fi
  mkdir -p "$out"
  with_progress "$tool $version: compiling" "$work/build.log" \
    go build -v -trimpath -tags "$tags" -ldflags "$ld" -o "$out/$tool.tmp" "$pkg"
  mv "$out/$tool.tmp" "$out/$tool"
  cd - >/dev/null
}

want=("$@")
paths=()
missing=()
for tool in "${want[@]}"; do
  version_of "$tool" >/dev/null
  override=$(echo "$tool" | tr '[:lower:]' '[:upper:]')
  if [[ -n "${!override:-}" ]]; then
    [[ -x "${!override}" ]] || die "$override=${!override} is not an executable"
    say "using $override=${!override}"
  elif have "$tool"; then
    say "cached: $(bin_path "$tool")"
  else
    missing+=("$tool")
  fi
done

if (( ${#missing[@]} > 0 )); then
  # Serialise builds: pytest, make and a second checkout may all ask at once; the
  # first builds, the others wait and then find the cache.
  mkdir -p "$TOOLS"
  if command -v flock >/dev/null; then
    exec 9>"$TOOLS/.build.lock"
    if ! flock -n 9; then
      say "another build is running; waiting for it (lock $TOOLS/.build.lock) ..."
      flock 9
    fi
  fi
  command -v go >/dev/null || die "Go is not installed: install Go 1.26.7+ or set ${missing[*]^^} to existing binaries"
  export CGO_ENABLED=0 GOFLAGS=-mod=mod GOPROXY=${GOPROXY:-https://proxy.golang.org,direct}
  start=$SECONDS
  for tool in "${missing[@]}"; do
    if have "$tool"; then
      say "cached (built by the other run): $(bin_path "$tool")"
      continue
    fi
    say "building $tool $(version_of "$tool") from the Go module proxy (cold: minutes) ..."
    build "$tool"
    have "$tool" || die "$(bin_path "$tool") does not report version $(expected "$tool")"
  done
  say "all built in $((SECONDS - start))s"
fi

for tool in "${want[@]}"; do
  override=$(echo "$tool" | tr '[:lower:]' '[:upper:]')
  if [[ -n "${!override:-}" ]]; then echo "${!override}"; else bin_path "$tool"; fi
done
