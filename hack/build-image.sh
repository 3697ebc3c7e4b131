#!/usr/bin/env bash
# Build the operator image from packages, with no registry and no base image:
#   1. a Debian bookworm rootfs made with debootstrap (--variant=minbase, python3 and
#      ca-certificates) from this machine's configured apt mirror, every Release file
#      checked against Debian's archive keyring (--keyring, --force-check-gpg), then
#      bookworm-security and bookworm-updates added and upgraded; cached per ISO week
#      (the cache key holds the week, so security updates arrive within 7 days);
#   2. the project wheel and its runtime dependencies installed into it with pip:
#      dependencies exactly as pinned and hashed in requirements/operator.lock
#      (--require-hashes; `make lock` regenerates it), binary wheels for CPython 3.11 /
#      glibc only (no compiler in the image); the provider simulator (sim/) is its own
#      distribution and is not installed;
#   3. stripped (docs, man pages, locales, apt caches) and byte-compiled (the root
#      filesystem is read-only in the pod, so .pyc files cannot be written later);
#   4. packed with umoci as an OCI image layout: user 65532 (non-root), entrypoint
#      /usr/local/bin/externalauth (kopf handles SIGTERM as PID 1), tag = the
#      package version (pyproject.toml; the chart's appVersion is the same).
# The result is cached by a content hash of its inputs; the last stdout line is the
# output directory, holding `oci/` (the layout), `image.tar` (an OCI archive for
# `ctr -n k8s.io images import --base-name localhost/externalauth-operator`) and
# `requirements.lock` (what pip installed).
#
#   sudo hack/build-image.sh         # root: debootstrap, chroot and umoci need it
#
# The Containerfile at the repository's root builds the same image with buildah/docker
# (same base suite, lock file, user, entrypoint and environment); the release workflow
# uses it (.github/workflows/release.yaml).
#
# Environment:
#   DEBIAN_MIRROR  (default: the first URI of /etc/apt/sources.list*, else deb.debian.org)
#   DEBIAN_SECURITY_MIRROR (default: the first .../debian-security URI there, else
#                  deb.debian.org/debian-security)
#   DEBIAN_KEYRING (default /usr/share/keyrings/debian-archive-keyring.gpg)
#   IMAGE_WEEK     (default: this ISO week, e.g. 2026-W49) the base's cache key
#   EXTERNALAUTH_CACHE (default ~/.cache/externalauth)
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
SUITE=bookworm
PY=3.11  # bookworm's python3
INCLUDE=python3,ca-certificates
KEYRING=${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
LOCK=requirements/operator.lock
WEEK=${IMAGE_WEEK:-$(date -u +%G-W%V)}
IMAGE_NAME=externalauth-operator
CACHE_ROOT=${EXTERNALAUTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/externalauth}
CACHE="$CACHE_ROOT/image"
VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')

say() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (debootstrap, chroot and umoci write files owned by other users)"
for tool in debootstrap umoci; do
  command -v "$tool" >/dev/null || {
    say "installing $tool (apt) ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null || die "cannot install $tool"
  }
done
if [[ ! -f "$KEYRING" ]]; then
  say "installing debian-archive-keyring (apt) ..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debian-archive-keyring >/dev/null \
    || die "no Debian archive keyring at $KEYRING"
fi
[[ -f "$LOCK" ]] || die "$LOCK is missing (make lock)"
grep -q -- '--hash=sha256:' "$LOCK" || die "$LOCK has no hashes"

mirror() {
  if [[ -n "${DEBIAN_MIRROR:-}" ]]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}')
  [[ -n "$uri" ]] || uri=$(grep -hE '^deb +(\[[^]]*\] +)?https?://' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '$1 ~ /debian\/?$/ {print $1; exit}')
  echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR=$(mirror)
security_mirror() {
  if [[ -n "${DEBIAN_SECURITY_MIRROR:-}" ]]; then echo "$DEBIAN_SECURITY_MIRROR"; return; fi
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 ~ /debian-security\/?$/ {print $2; exit}')
  [[ -n "$uri" ]] || uri=$(grep -hE '^deb +(\[[^]]*\] +)?https?://' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '$1 ~ /debian-security\/?$/ {print $1; exit}')
  echo "${uri:-http://deb.debian.org/debian-security}"
}
SECURITY_MIRROR=$(security_mirror)

# Content hash of every input: this script, the package metadata and its source.
inputs_hash() {
  { echo "$SUITE $INCLUDE $MIRROR $SECURITY_MIRROR $WEEK"
    find hack/build-image.sh pyproject.toml README.md "$LOCK" operator scripts -type f \
      -not -path '*/__pycache__/*' -not -name '*.pyc' -not -path '*.egg-info/*' -print0 \
      | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}
HASH=$(inputs_hash)
OUT="$CACHE/$IMAGE_NAME-$VERSION-$HASH"
if [[ -f "$OUT/image.tar" ]]; then
  say "cached: $OUT ($IMAGE_NAME:$VERSION)"
  echo "$OUT"
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
if ! flock -n 9; then
  say "another build is running; waiting for it ..."
  flock 9
fi
if [[ -f "$OUT/image.tar" ]]; then echo "$OUT"; exit 0; fi

start=$SECONDS
WORK=$(mktemp -d "$CACHE/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# 1. The base rootfs, cached as a tarball keyed by suite, packages, mirrors and the ISO
#    week: a new week builds a new base, with that week's security updates.
BASE="$CACHE/base-$SUITE-$WEEK-$(echo "$SUITE $INCLUDE $MIRROR $SECURITY_MIRROR" | sha256sum | cut -c1-12).tar"
ROOTFS="$WORK/rootfs"
if [[ ! -f "$BASE" ]]; then
  say "debootstrap $SUITE (minbase + $INCLUDE) from $MIRROR, signatures checked with $KEYRING (about a minute) ..."
  nice -n 10 debootstrap --variant=minbase --include="$INCLUDE" --keyring="$KEYRING" --force-check-gpg \
    "$SUITE" "$WORK/base" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  # The security and updates suites, checked against the archive keyring the base got
  # from debian-archive-keyring (apt's trusted.gpg.d), then everything upgraded.
  printf 'deb %s %s main\n' "$MIRROR" "$SUITE" "$MIRROR" "$SUITE-updates" "$SECURITY_MIRROR" "$SUITE-security" \
    >"$WORK/base/etc/apt/sources.list"
  say "apt-get upgrade from $SUITE-security and $SUITE-updates ..."
  cp /etc/resolv.conf "$WORK/base/etc/resolv.conf" 2>/dev/null || true
  upgraded=0
  { chroot "$WORK/base" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get update -q \
      && chroot "$WORK/base" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
        apt-get -y -q -o Dpkg::Options::=--force-confold upgrade; } >"$WORK/upgrade.log" 2>&1 || upgraded=$?
  (( upgraded == 0 )) || { tail -n 30 "$WORK/upgrade.log" >&2; die "apt-get upgrade in the base failed"; }
  grep -E '^[0-9]+ upgraded' "$WORK/upgrade.log" | sed 's/^/[image] /' >&2 || true
  chroot "$WORK/base" apt-get clean
  : >"$WORK/base/etc/resolv.conf"
  tar --numeric-owner -C "$WORK/base" -cf "$BASE.tmp" . && mv "$BASE.tmp" "$BASE"
  rm -rf "$WORK/base"
  say "base rootfs after $((SECONDS - start))s"
fi
mkdir "$ROOTFS" && tar --numeric-owner -C "$ROOTFS" -xf "$BASE"

# 2. The wheel and its runtime dependencies (binary wheels only: the image has no compiler).
say "building the externalauth-operator $VERSION wheel ..."
PIP=(python3 -m pip)
[[ -x .venv/bin/python ]] && PIP=(.venv/bin/python -m pip)
"${PIP[@]}" wheel --quiet --no-deps --wheel-dir "$WORK/wheels" . >"$WORK/wheel.log" 2>&1 \
  || { tail -n 30 "$WORK/wheel.log" >&2; die "pip wheel failed"; }
SITE="$ROOTFS/usr/local/lib/python$PY/dist-packages"
# glibc 2.36 (bookworm) runs every manylinux wheel up to manylinux_2_36; pip wants them listed.
PLATFORMS=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
for minor in $(seq 5 36); do PLATFORMS+=(--platform "manylinux_2_${minor}_x86_64"); done
say "installing its dependencies from $LOCK (--require-hashes) and it into the rootfs ..."
# The lock pins the base package's and the operator extra's dependencies (kopf,
# oauthlib, prometheus-client and theirs) with the hashes of every published file:
# pip refuses any file whose hash is not listed. The wheel itself, built here from
# this checkout, goes in after them with --no-deps.
WHEEL=$(ls "$WORK"/wheels/*.whl)
TARGET=(--quiet --no-compile --no-warn-script-location --disable-pip-version-check
  --only-binary=:all: --implementation cp --python-version "$PY" --abi "cp${PY/./}" "${PLATFORMS[@]}")
"${PIP[@]}" install "${TARGET[@]}" --target "$SITE" --require-hashes -r "$LOCK" >&2
"${PIP[@]}" install "${TARGET[@]}" --target "$WORK/project" --no-deps "$WHEEL" >&2
cp -a "$WORK/project/." "$SITE/"
[[ ! -e "$SITE/providersim" ]] || die "providersim (the test simulator) is in the image"
# pip's --target writes console scripts with this machine's interpreter in the shebang:
# drop them and write the image's own.
rm -rf "$SITE/bin"
python3 - "$SITE" >"$WORK/requirements.lock" <<'PY'
import pathlib, sys
for d in sorted(pathlib.Path(sys.argv[1]).glob("*.dist-info")):
    meta = dict(l.split(": ", 1) for l in (d / "METADATA").read_text().splitlines() if ": " in l)
    print(f"{meta['Name']}=={meta['Version']}")
PY
cat >"$ROOTFS/usr/local/bin/externalauth" <<'PY'
#!/usr/bin/python3
import sys

from externalauth.cli.main import main

sys.exit(main())
PY
chmod 0755 "$ROOTFS/usr/local/bin/externalauth"

# 3. Non-root user, strip, byte-compile.
echo "externalauth:x:65532:65532:externalauth operator:/nonexistent:/usr/sbin/nologin" >>"$ROOTFS/etc/passwd"
echo "externalauth:x:65532:" >>"$ROOTFS/etc/group"
rm -rf "$ROOTFS"/usr/share/{doc,man,info,lintian,linda,locale,bug}/* "$ROOTFS"/var/cache/apt/* \
  "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/* "$ROOTFS"/var/cache/debconf/*-old \
  "$ROOTFS"/usr/share/common-licenses
find "$ROOTFS" -xdev -path "$ROOTFS/proc" -prune -o -name '__pycache__' -type d -prune -exec rm -rf {} +
say "byte-compiling with the image's python3 ..."
chroot "$ROOTFS" /usr/bin/python3 -m compileall -q "/usr/lib/python$PY" "/usr/local/lib/python$PY/dist-packages" >&2 \
  || die "compileall failed"
chroot "$ROOTFS" /usr/bin/python3 -c 'import externalauth.cli.main, kopf' || die "the operator does not import in the image"
if chroot "$ROOTFS" /usr/bin/python3 -c 'import providersim' 2>/dev/null; then die "providersim imports in the image"; fi
rootfs_mb=$(du -sm "$ROOTFS" | cut -f1)

# 4. Pack: one layer, the config, the tag.
say "packing with umoci ($rootfs_mb MB rootfs) ..."
mkdir -p "$WORK/out"
OCI="$WORK/out/oci"
umoci init --layout "$OCI"
umoci new --image "$OCI:$VERSION"
umoci insert --image "$OCI:$VERSION" --history.created_by "hack/build-image.sh (debootstrap $SUITE + pip)" "$ROOTFS" /
umoci config --image "$OCI:$VERSION" \
  --config.user 65532:65532 \
  --config.entrypoint /usr/local/bin/externalauth \
  --config.cmd run \
  --config.workingdir / \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env PYTHONDONTWRITEBYTECODE=1 \
  --config.env PYTHONUNBUFFERED=1 \
  --config.stopsignal SIGTERM \
  --config.label "org.opencontainers.image.title=$IMAGE_NAME" \
  --config.label "org.opencontainers.image.version=$VERSION" \
  --config.label "io.externalauth.inputs-sha256=$HASH" \
  --history.created_by "hack/build-image.sh: user, entrypoint, env"
umoci gc --layout "$OCI"
tar -C "$OCI" -cf "$WORK/out/image.tar" .
cp "$WORK/requirements.lock" "$WORK/out/"
rm -rf "$OUT" && mv "$WORK/out" "$OUT"
layer_mb=$(find "$OUT/oci/blobs" -type f -size +1M -printf '%s\n' | awk '{s+=$1} END {printf "%.1f", s/1048576}')
say "done in $((SECONDS - start))s: $IMAGE_NAME:$VERSION, rootfs $rootfs_mb MB, compressed layer $layer_mb MiB, $(du -h "$OUT/image.tar" | cut -f1) image.tar"
echo "$OUT"
