# kubesmith developer entry points. `make up` and `make test` are the two the README names.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
KS     := $(BIN)/kubesmith
STAMP  := $(VENV)/.installed
LINT_PATHS := src infra tests bench

.PHONY: help venv lint typecheck test test-fast e2e up lxd bench clean lock

help:
	@echo "make up         create the local cluster (kubesmith up -s local)"
	@echo "make test       lint, type check and every test tier (installs LXD and the node image)"
	@echo "make test-fast  lint, type check and the tests that need no LXD"
	@echo "make e2e        a real cluster on LXD + smoke test (KUBESMITH_ARTIFACTS_DIR=DIR or KUBESMITH_E2E_ONLINE=1)"
	@echo "make lxd        install/start LXD, create the local stack's bridge and profile, build the node image"
	@echo "make bench      benchmarks; results in bench/results/"
	@echo "make lock       refresh constraints.txt from the current venv"

# The venv is rebuilt when the dependency ranges or the pinned constraints change.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/yamllint -s .
	$(BIN)/ruff check playbooks
	$(BIN)/ruff format --check playbooks
	ANSIBLE_CONFIG=playbooks/ansible.cfg PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-lint --offline --profile production playbooks
	# GitHub Actions workflows: actionlint (syntax, expressions, reusable-workflow inputs) and
	# zizmor (security audits), both offline; tests/test_workflows.py checks the commands they run.
	$(BIN)/actionlint
	$(BIN)/zizmor --offline --persona pedantic .github

typecheck: $(STAMP)
	$(BIN)/mypy

test-fast: lint typecheck
	$(BIN)/pytest -m "not integration and not e2e"

test: lint typecheck lxd
	$(BIN)/pytest

# A real cluster on an LXD lab, then the smoke test. Skipped, with the reason printed, unless
# the Kubernetes binaries are reachable: KUBESMITH_ARTIFACTS_DIR=DIR (a directory filled by
# `kubesmith artifacts fetch -s local --source release --dest DIR`) or KUBESMITH_E2E_ONLINE=1.
e2e: $(STAMP)
	$(BIN)/pytest -m e2e -rs tests/e2e

# Idempotent: installs LXD when missing, starts it without systemd, skips an unchanged image.
lxd: $(STAMP)
	$(KS) lxd init -s local
	$(KS) image build -s local

up: $(STAMP) lxd
	$(KS) up -s local

bench: $(STAMP)
	$(BIN)/python -m bench

lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable | grep -v '^kubesmith' > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
