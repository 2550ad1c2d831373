# The two commands a newcomer needs: `make demo` and `make test`.
# Everything else is here for developers; `make help` lists it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXCHANGE := $(VENV)/bin/exchange
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

# `make demo` resumes the cluster in .demo; `rm -rf .demo` starts afresh.
.PHONY: help install demo system-deps test lint fmt sim soak bench image clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its test extras

# `make demo` installs only what the demo runs (the package, no test extras), showing
# pip's progress; an up-to-date full install (make install/test) already covers it.
DEMO_STAMP := $(VENV)/.installed-demo
$(DEMO_STAMP): pyproject.toml constraints.txt
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ] && [ $(STAMP) -nt constraints.txt ]; then \
	  echo "demo: the full install in $(VENV) is up to date"; \
	else \
	  echo "demo: installing the exchange into $(VENV) (no test toolchain; make test adds it)"; \
	  { test -x $(PY) || $(PYTHON) -m venv $(VENV); } && \
	  $(PY) -m pip install --progress-bar on --upgrade pip && \
	  $(PY) -m pip install --progress-bar on -c constraints.txt -e . ; \
	fi
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)  ## a local 3-node cluster with trading agents; prints where to look; Ctrl-C stops
	$(EXCHANGE) demo --data-root .demo

system-deps:  ## as root: apt-install promtool, Docker, debootstrap, Chromium; start dockerd
	scripts/system-deps.sh
	scripts/dockerd.sh

# The slowest tests and the seconds per test directory end the output, so that each run
# (CI's included) shows where the suite's time budget goes.
test: install system-deps  ## run the whole suite (pytest's "no tests ran" fails the target)
	$(PY) -m pytest -m 'not soak and not e2e and not chaos' --durations=30 --dir-durations $(PYTEST_ARGS)

lint: install  ## ruff (lint + format check), mypy (strict on the consensus core and operator), manifest drift
	$(VENV)/bin/ruff check node tests operator scripts client
	$(VENV)/bin/ruff format --check node tests operator scripts client
	$(VENV)/bin/mypy node/exchange_node/raft
	$(VENV)/bin/mypy --strict --follow-imports=silent node/exchange_node/server
	$(VENV)/bin/mypy --strict operator/exchange_operator
	$(VENV)/bin/mypy --strict client/exchange_client
	$(VENV)/bin/mypy --strict node/exchange_node/engine node/exchange_node/limits.py
	$(PY) scripts/k8s/generate.py --check

fmt: install  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix node tests operator scripts client
	$(VENV)/bin/ruff format node tests operator scripts client

sim: install  ## a batch of deterministic simulation seeds
	$(EXCHANGE) sim --seeds 300 --steps 5000 --nodes mixed

soak: install  ## the crash soak (pytest -m soak: SIGKILL of a writing WAL), then simulation seeds until Ctrl-C
	$(PY) -m pytest -m soak -rs tests $(PYTEST_ARGS)
	$(EXCHANGE) sim --soak --steps 5000 --nodes mixed

# A 3-node cluster of real processes at sustained load (SOAK_RATE requests/s, a deep book,
# 2 MiB snapshots so that a run sees several): RSS per node over time, snapshots taken,
# leader changes, client p99 during and between snapshots (docs/snapshots.md).
SOAK_MINUTES ?= 30
SOAK_RATE ?= 350
.PHONY: soak-load
soak-load: install  ## 3-node cluster at sustained load for SOAK_MINUTES (30): memory, snapshots, p99
	$(EXCHANGE) bench snapshot --soak-minutes $(SOAK_MINUTES) --rate $(SOAK_RATE) --report-seconds 30

bench: install  ## every benchmark, one JSON object each (docs/performance.md)
	$(EXCHANGE) bench raft --json
	$(EXCHANGE) bench storage --json
	$(EXCHANGE) bench engine --json
	$(EXCHANGE) bench transport --json
	$(EXCHANGE) bench cluster --json
	$(EXCHANGE) bench fairness --json
	$(EXCHANGE) bench snapshot --json

# The harness's real-fault tests (marker chaos: network namespaces, netem, link proxies,
# FUSE disk errors and stalls on real nodes), then every scenario for several seeds,
# longer runs; reports under build/chaos/SCENARIO-sSEED/. Not part of `make test` (that
# runs the short suite, tests/chaos/test_run_short.py, and the power-cut tests).
CHAOS_SEEDS ?= 1 2 3
CHAOS_DURATION ?= 60
.PHONY: chaos
chaos: install system-deps  ## real-fault tests, then every chaos scenario for CHAOS_SEEDS (1 2 3), CHAOS_DURATION (60) s each
	$(PY) -m pytest -m chaos -rs tests/chaos $(PYTEST_ARGS)
	@failed=0; for scenario in $$($(EXCHANGE) chaos list | cut -d' ' -f1); do \
	  for seed in $(CHAOS_SEEDS); do \
	    $(EXCHANGE) chaos run $$scenario --target local --duration $(CHAOS_DURATION) --seed $$seed \
	      --report build/chaos/$$scenario-s$$seed || { echo "FAILED: $$scenario seed $$seed"; failed=1; }; \
	  done; \
	done; exit $$failed

image: install system-deps  ## build the container image raft-exchange:dev (see scripts/build-image.sh)
	scripts/build-image.sh

.PHONY: lock
lock:  ## re-resolve pyproject.toml's floors in a fresh virtualenv and pin the result in constraints.txt
	rm -rf build/lock-venv
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/pip install -q --upgrade pip
	build/lock-venv/bin/pip install -q '.[test]'
	{ sed -n '/^#/p' constraints.txt; build/lock-venv/bin/pip freeze --exclude-editable | grep -v -i '^raft-exchange'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf build/lock-venv

.PHONY: proto
proto: install  ## regenerate the gRPC peer protocol code from node/exchange_node/transport/peer.proto
	cd node && ../$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. exchange_node/transport/peer.proto

.PHONY: mutate
mutate: install  ## mutation testing of raft/ and server/driver.py (mutmut; not in make test, about an hour on 2 cores): score and survivors
	$(PY) scripts/mutate.py $(MUTATE_ARGS)

clean:  ## remove caches (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist

# The e2e suite (tests/e2e, marker e2e) on kind where Docker, kind, kubectl, Helm and a
# registry are at hand (each test skips naming what is missing). make test runs the same
# scenario (install, trade, scale 3->5->3, rolling upgrade, delete) on the emulated cluster.
.PHONY: e2e
e2e: install  ## the e2e suite on kind (or one skip line naming what is missing); make test runs the scenario emulated
	$(PY) -m pytest -m e2e -rs tests/e2e $(PYTEST_ARGS)
