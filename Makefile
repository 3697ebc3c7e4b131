# externalauth-operator developer entry points. See docs/development.md.
#
#   make test      venv + control plane + unit, simulator, integration, reliability and e2e tests
#   make unit      fast tier only (no control plane)
#   make e2e       the e2e tier alone: a real node (root; skipped, loudly, without)
#   make lint      ruff + mypy + import-linter + CRD copies + actionlint (the workflows)
#   make mutate    mutation testing of the §9 modules by the unit tier (slow; not in CI)
#   make demo      hack/demo.py against a real control plane
#   make image     the operator image (OCI layout + archive) with hack/build-image.sh (root)
#   make lock      requirements/operator.lock: the image's dependencies, pinned and hashed
#
# Works on a fresh clone with only Go and Python >= 3.11 installed: Python
# packages come from PyPI, kube-apiserver/etcd/kubectl are built from the Go
# module proxy into ~/.cache/externalauth (once; see hack/build-control-plane.sh).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

# The first python >= 3.11 on PATH (override: make PYTHON=/usr/bin/python3.12).
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  && { echo $$p; break; }; done)
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
# Test tiers that exist in this checkout (an empty folder is not tracked by git).
# tests/e2e runs a real node when the machine allows it (root, cgroups) and is
# skipped with the reason otherwise; it builds what it needs at collection.
TEST_DIRS := $(wildcard tests/unit tests/simulator tests/integration tests/reliability tests/e2e)
PYTEST_ARGS ?=

say = @printf '\n==> %s\n' "$(1)"

.PHONY: venv
venv: $(STAMP)

$(STAMP): pyproject.toml sim/pyproject.toml
	$(call say,creating $(VENV) and installing '.[dev]' and the provider simulator ./sim (first time: 1-3 min))
	@test -n "$(PYTHON)" || { echo "error: need python >= 3.11 on PATH (or make PYTHON=...)" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./sim
	@touch $@

.PHONY: control-plane
control-plane:
	$(call say,kube-apiserver + etcd + kubectl (cached; a cold build took 11 min on 2 cores))
	@dir=$$(hack/build-control-plane.sh | tail -n1); echo "binaries: $$dir"

# Tools the tests drive for real: git (credential helper), the GitHub CLI (reads
# gh-hosts.yml), zsh and fish (shell completion; bash is always there). Installed
# from Debian's packages when we may (root with apt-get, as on CI); otherwise the
# tests that need them say they were skipped.
.PHONY: tools
tools:
	@if ! command -v gh >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    printf '\n==> installing the GitHub CLI (apt package gh) for the output-format tests\n'; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gh >/dev/null; \
	  else \
	    echo "note: gh (GitHub CLI) is not installed; its output-format test will be skipped"; \
	  fi; \
	fi
	@for sh in zsh fish; do \
	  if ! command -v $$sh >/dev/null 2>&1; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      printf '\n==> installing %s for the shell completion tests\n' $$sh; \
	      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$sh >/dev/null; \
	    else \
	      echo "note: $$sh is not installed; its completion test will be skipped"; \
	    fi; \
	  fi; \
	done
	@command -v git >/dev/null 2>&1 || { echo "error: git is required by the tests" >&2; exit 1; }

# helm and promtool for the chart tests (tests/integration/test_chart.py), built from
# the Go module proxy into ~/.cache/externalauth/tools (once; see hack/build-tools.sh).
.PHONY: chart-tools
chart-tools:
	$(call say,helm + promtool (cached; a cold build took 7.5 min on 2 cores))
	@hack/build-tools.sh helm promtool | sed "s/^/binary: /"

.PHONY: test
test: venv control-plane tools chart-tools
	$(call say,pytest $(TEST_DIRS))
	$(BIN)/pytest $(TEST_DIRS) $(PYTEST_ARGS)

.PHONY: e2e
e2e: venv control-plane
	$(call say,pytest tests/e2e (a real node: kubelet + containerd + runc; root))
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

# kubelet, kube-scheduler and kube-controller-manager for the e2e node, built from the
# Go module proxy into ~/.cache/externalauth/node (once; see hack/build-node.sh).
.PHONY: node
node:
	$(call say,kubelet + kube-scheduler + kube-controller-manager (cached; cold: ~1.5 min after the control plane))
	@dir=$$(hack/build-node.sh | tail -n1); echo "binaries: $$dir"

.PHONY: unit
unit: venv
	$(call say,pytest tests/unit)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: lint
lint: venv
	$(call say,ruff)
	$(BIN)/ruff check operator sim tests hack bench
	$(call say,mypy)
	$(BIN)/mypy
	$(call say,import-linter)
	$(BIN)/lint-imports
	$(call say,chart CRDs match crds/)
	@hack/check-crds.sh
	$(call say,actionlint .github/workflows (built once by hack/build-tools.sh))
	@al=$$(hack/build-tools.sh actionlint | tail -n1); "$$al" .github/workflows/*.yaml

# Mutation testing (docs/mutation.md): one module at a time, MUTATE_JOBS worker processes.
#   make mutate MUTATE=engine/writing.py MUTATE_JOBS=2
MUTATE ?=
MUTATE_JOBS ?= 1
.PHONY: mutate
mutate: venv
	$(call say,mutmut over the §9 modules$(if $(MUTATE), ($(MUTATE)),), killed by tests/unit only)
	@$(BIN)/python -c 'import mutmut' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[mutate]'
	$(BIN)/python hack/mutate.py --jobs $(MUTATE_JOBS) $(MUTATE)
	$(BIN)/python hack/mutate.py --summary

# requirements/operator.lock: the image's Python dependencies (the base package's and the
# `operator` extra's), pinned with the sha256 of every published file; the image build
# and the Containerfile install it with pip --require-hashes. Re-run after changing the
# dependencies in pyproject.toml (tests/unit/test_release_files.py says when it is stale).
# requirements/build.lock: the build backend (setuptools, wheel) the Containerfile uses.
.PHONY: lock
lock: venv
	$(call say,requirements/operator.lock (uv pip compile --generate-hashes))
	$(BIN)/uv pip compile pyproject.toml --quiet --extra operator --generate-hashes \
	  --python-version 3.11 --python-platform linux --no-emit-package externalauth-operator \
	  --custom-compile-command 'make lock' --output-file requirements/operator.lock
	$(BIN)/uv pip compile requirements/build.in --quiet --generate-hashes --python-version 3.11 \
	  --python-platform linux --custom-compile-command 'make lock' --output-file requirements/build.lock

.PHONY: image
image:
	$(call say,operator image: debootstrap bookworm + the wheel packed with umoci (cached by content hash))
	@dir=$$(hack/build-image.sh | tail -n1); echo "image: $$dir"

.PHONY: demo
demo: venv control-plane
	$(call say,hack/demo.py)
	$(BIN)/python hack/demo.py

.PHONY: clean
clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist operator/*.egg-info sim/build sim/*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Also drop the virtualenv (the control-plane cache in ~/.cache/externalauth stays).
.PHONY: distclean
distclean: clean
	rm -rf $(VENV)
