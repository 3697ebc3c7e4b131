#!/usr/bin/env bash
# crds/ is the one source of truth for the CRDs; the Helm chart renders byte-for-byte
# copies of them from charts/externalauth-operator/files/crds/ (Helm reads only
# files inside the chart). Exit 1 when the copies have drifted.
#
#   hack/check-crds.sh          # check (make lint, tests/integration/test_chart.py)
#   hack/check-crds.sh --fix    # copy crds/*.yaml into the chart
set -euo pipefail
cd "$(dirname "$0")/.."
src=crds
dst=charts/externalauth-operator/files/crds

if [[ "${1:-}" == "--fix" ]]; then
  rm -f "$dst"/*.yaml
  cp "$src"/*.yaml "$dst"/
  echo "copied $(ls "$src"/*.yaml | wc -l) CRDs from $src/ into $dst/"
  exit 0
fi

if ! diff -r -u "$src" "$dst" >&2; then
  echo "error: the chart's CRDs ($dst) differ from $src/; run hack/check-crds.sh --fix" >&2
  exit 1
fi
echo "chart CRDs match $src/ ($(ls "$src"/*.yaml | wc -l) files)"
