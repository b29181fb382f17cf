# triggergate: `make run` serves the demo, `make test` sets up and runs the whole suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CONSTRAINTS := constraints.txt

.PHONY: run test check lint types setup system-deps node-deps bench deploy-aws clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

run: $(VENV)/.installed
	TRIGGERGATE_CONFIG=examples/demo.toml \
	TRIGGERGATE_PIPELINE="command://$(CURDIR)/examples/demo-pipeline" \
	$(VENV)/bin/triggergate serve --host 127.0.0.1 --port 8080

system-deps:
	@bash scripts/system-deps.sh

node-deps: node_modules/.installed
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: setup system-deps node-deps
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

types: setup
	$(VENV)/bin/mypy

check: lint types test

bench: setup system-deps node-deps
	$(PY) -m bench.run

deploy-aws:
	cd deploy/aws && sam build --build-in-source && sam deploy --guided

clean:
	rm -rf $(VENV) node_modules triggergate.db* triggergate-state
