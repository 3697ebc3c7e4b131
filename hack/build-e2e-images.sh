#!/usr/bin/env bash
# Build the two images the e2e node needs besides the operator's, with no registry
# and no base image, and print one output directory per requested image on stdout
# (in the order asked). Each directory holds `image.tar` (an OCI archive for
# `ctr -n k8s.io images import --base-name <name>`) and `ref` (the name:tag the
# import gives it). Progress goes to stderr.
#
#   sudo hack/build-e2e-images.sh pause workspace
#
#   pause      the pod sandbox process: hack/e2e/pause.c compiled static (gcc -Os
#              -static), alone in one layer; containerd's sandbox_image.
#   workspace  a Debian bookworm minbase rootfs (debootstrap from this machine's
#              apt mirror) with git and ca-certificates, user `workspace` (1000),
#              for the example workspace Deployment; its default command sleeps
#              and exits 0 on SIGTERM.
#
# Both are cached by a content hash of their inputs (this script, pause.c and the
# compiler's version; suite, packages and mirror), which is also their tag.
#
# Environment:
#   DEBIAN_MIRROR  (default: the first Debian URI of /etc/apt/sources.list*, else deb.debian.org)
#   EXTERNALAUTH_CACHE (default ~/.cache/externalauth)
set -euo pipefail

cd "$(dirname "$0")/.."
SUITE=bookworm
WORKSPACE_INCLUDE=git,ca-certificates
CACHE_ROOT=${EXTERNALAUTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/externalauth}
CACHE="$CACHE_ROOT/e2e-images"

say() { printf '[e2e-images] %s\n' "$*" >&2; }
die() { printf '[e2e-images] error: %s\n' "$*" >&2; exit 1; }

(( $# > 0 )) || die "usage: $0 pause|workspace ..."
[[ $(id -u) == 0 ]] || die "run as root (debootstrap and umoci write files owned by other users)"

need() {  # need <command> <apt package>
  command -v "$1" >/dev/null && return
  say "installing $2 (apt) ..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null || die "cannot install $2"
}
need umoci umoci

mirror() {
  if [[ -n "${DEBIAN_MIRROR:-}" ]]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}')
  [[ -n "$uri" ]] || uri=$(grep -hE '^deb +(\[[^]]*\] +)?https?://' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '$1 ~ /debian\/?$/ {print $1; exit}')
  echo "${uri:-http://deb.debian.org/debian}"
}

# pack <rootfs> <out dir> <name> <tag> <umoci config args...>: one layer, the config, the tag.
pack() {
  local rootfs=$1 out=$2 name=$3 tag=$4; shift 4
  local oci="$out/oci"
  umoci init --layout "$oci"
  umoci new --image "$oci:$tag"
  umoci insert --image "$oci:$tag" --history.created_by "hack/build-e2e-images.sh $name" "$rootfs" /
  umoci config --image "$oci:$tag" --config.workingdir / \
    --config.label "org.opencontainers.image.title=$name" "$@" \
    --history.created_by "hack/build-e2e-images.sh: config"
  umoci gc --layout "$oci"
  tar -C "$oci" -cf "$out/image.tar" .
  echo "localhost/$name:$tag" >"$out/ref"
}

# cached <name> <hash>: print the directory and succeed when it is already built.
cached() {
  local dir="$CACHE/$1-$2"
  [[ -f "$dir/image.tar" && -f "$dir/ref" ]] || return 1
  say "cached: $dir ($(cat "$dir/ref"))"
  echo "$dir"
}

build_pause() {
  need gcc gcc
  local hash dir work
  hash=$( { cat hack/build-e2e-images.sh hack/e2e/pause.c; gcc --version | head -n1; } | sha256sum | cut -c1-12)
  cached externalauth-e2e-pause "$hash" && return
  dir="$CACHE/externalauth-e2e-pause-$hash"
  work=$(mktemp -d "$CACHE/.work.XXXXXX")
  say "pause: gcc -Os -static hack/e2e/pause.c ..."
  mkdir -p "$work/rootfs" "$work/out"
  gcc -Os -static -Wall -Wextra -Werror -o "$work/rootfs/pause" hack/e2e/pause.c
  strip "$work/rootfs/pause"
  pack "$work/rootfs" "$work/out" externalauth-e2e-pause "$hash" \
    --config.user 65535:65535 --config.entrypoint /pause --config.stopsignal SIGTERM
  rm -rf "$dir" && mv "$work/out" "$dir" && rm -rf "$work"
  say "pause: $(cat "$dir/ref"), $(du -h "$dir/image.tar" | cut -f1) image.tar"
  echo "$dir"
}

build_workspace() {
  need debootstrap debootstrap
  local mirror hash dir work rootfs start=$SECONDS
  mirror=$(mirror)
  hash=$( { cat hack/build-e2e-images.sh; echo "$SUITE $WORKSPACE_INCLUDE $mirror"; } | sha256sum | cut -c1-12)
  cached externalauth-e2e-workspace "$hash" && return
  dir="$CACHE/externalauth-e2e-workspace-$hash"
  work=$(mktemp -d "$CACHE/.work.XXXXXX")
  rootfs="$work/rootfs"
  say "workspace: debootstrap $SUITE (minbase + $WORKSPACE_INCLUDE) from $mirror (about a minute) ..."
  nice -n 10 debootstrap --variant=minbase --include="$WORKSPACE_INCLUDE" "$SUITE" "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; rm -rf "$work"; die "debootstrap failed"; }
  say "workspace: rootfs after $((SECONDS - start))s; adding user workspace (1000), stripping ..."
  echo "workspace:x:1000:1000:workspace:/home/workspace:/bin/sh" >>"$rootfs/etc/passwd"
  echo "workspace:x:1000:" >>"$rootfs/etc/group"
  mkdir -p "$rootfs/home/workspace" && chown 1000:1000 "$rootfs/home/workspace"
  rm -rf "$rootfs"/usr/share/{doc,man,info,lintian,linda,locale,bug}/* "$rootfs"/var/cache/apt/* \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/var/cache/debconf/*-old
  chroot "$rootfs" git --version >/dev/null || die "git does not run in the workspace rootfs"
  mkdir -p "$work/out"
  say "workspace: packing with umoci ($(du -sm "$rootfs" | cut -f1) MB rootfs) ..."
  pack "$rootfs" "$work/out" externalauth-e2e-workspace "$hash" \
    --config.user 1000:1000 \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env HOME=/home/workspace \
    --config.cmd /bin/sh --config.cmd -c --config.cmd "trap 'exit 0' TERM INT; sleep infinity & wait" \
    --config.stopsignal SIGTERM
  rm -rf "$dir" && mv "$work/out" "$dir" && rm -rf "$work"
  say "workspace: $(cat "$dir/ref") in $((SECONDS - start))s, $(du -h "$dir/image.tar" | cut -f1) image.tar"
  echo "$dir"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
if ! flock -n 9; then
  say "another build is running; waiting for it ..."
  flock 9
fi
for image in "$@"; do
  case $image in
    pause) build_pause ;;
    workspace) build_workspace ;;
    *) die "unknown image '$image' (known: pause, workspace)" ;;
  esac
done
