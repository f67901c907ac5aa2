# `make dev` runs the gateway on the embedded default; `make test` runs every suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Suites mostly wait on sockets and subprocesses, so more pytest-xdist workers than cores still shortens the run.
TEST_WORKERS ?= 4
# The linters of deploy/ live in a venv of their own: checkov pins old versions of shared packages.
DEPLOY_VENV := .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed-$(shell cat deploy/requirements-lint.txt | cksum | cut -d' ' -f1)

.PHONY: dev test lint typecheck check schema bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

dev: $(STAMP)
	$(BIN)/opencsp-gateway dev

test: $(STAMP) $(DEPLOY_STAMP) tests/node/node_modules/.package-lock.json
	OPENCSP_DEPLOY_TOOLS_REQUIRED=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

$(DEPLOY_STAMP): deploy/requirements-lint.txt
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DEPLOY_VENV)/bin/python -m pip install --quiet -r deploy/requirements-lint.txt
	rm -f $(DEPLOY_VENV)/.installed-* && touch $(DEPLOY_STAMP)

tests/node/node_modules/.package-lock.json: tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports  # the layer contracts of pyproject.toml ([tool.importlinter])

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

schema: $(STAMP)
	$(BIN)/opencsp-gateway schema > schema/schema.graphql

bench: $(STAMP)
	$(BIN)/python -m benchmarks.query_list
	$(BIN)/python -m benchmarks.documents

# The README's dashboard screenshots (docs/dashboard.png, docs/dashboard-phone.png), from the browser test.
screenshots: $(STAMP) tests/node/node_modules/.package-lock.json
	DASHBOARD_SCREENSHOTS=docs $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_dashboard_browser.py

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) tests/node/node_modules .opencsp .pytest_cache .mypy_cache .ruff_cache
