# triggergate: `make run` serves the demo, `make test` sets up and runs the whole suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CONSTRAINTS := constraints.txt
SAM_VENV ?= .venv-sam
TOOLS_VENV ?= .venv-tools

.PHONY: run test check lint types setup system-deps node-deps tools bench sam-cli deploy-aws clean

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

# Tools whose pinned dependencies conflict with the project's get environments of their own.
tools: $(TOOLS_VENV)/.installed
$(TOOLS_VENV)/.installed: tools-constraints.txt
	python3 -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install -q --upgrade pip
	$(TOOLS_VENV)/bin/pip install -q -c tools-constraints.txt checkov
	touch $@

test: setup system-deps node-deps tools
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

types: setup
	$(VENV)/bin/mypy

check: lint types test

bench: setup system-deps node-deps
	$(PY) -m bench.run

# The AWS SAM CLI (a PyPI package) in its own environment, at the versions it was tried with.
sam-cli: $(SAM_VENV)/.installed
$(SAM_VENV)/.installed: deploy/aws/sam-cli-constraints.txt
	python3 -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q --upgrade pip
	$(SAM_VENV)/bin/pip install -q -c deploy/aws/sam-cli-constraints.txt aws-sam-cli
	touch $@

deploy-aws: sam-cli
	cd deploy/aws && PYTHON="$(CURDIR)/$(SAM_VENV)/bin/python" "$(CURDIR)/$(SAM_VENV)/bin/sam" build --build-in-source
	cd deploy/aws && "$(CURDIR)/$(SAM_VENV)/bin/sam" deploy --guided

clean:
	rm -rf $(VENV) $(SAM_VENV) $(TOOLS_VENV) node_modules triggergate.db* triggergate-state
