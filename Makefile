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

.PHONY: dev test test-deploy lint typecheck check schema bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

dev: $(STAMP)
	$(BIN)/opencsp-gateway dev

# The deploy files' linters and renderers (tests/deploy: checkov, ansible-lint, hadolint, kubectl in a venv of
# their own) run with the rest of the deploy proof in `make test-deploy`, which CI runs too.
test: $(STAMP) tests/node/node_modules/.package-lock.json
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --ignore=tests/deploy $(PYTEST_ARGS)

# The deploy files, linted and rendered (tests/deploy), and the deploy path on real software
# (tests/deploy_live, docs/DEPLOY.md "Proven on this machine"): builds
# the image with buildah and runs it with podman, boots a Debian host with systemd-nspawn and runs the
# playbook on it twice, the two files side by side. Needs root and Debian's packages below (installed
# when missing); the Debian roots are cached in $(DEPLOY_CACHE).
DEPLOY_CACHE ?= /var/cache/opencsp-deploy-test
LIVE_DEPLOY_PACKAGES := buildah podman runc mmdebstrap systemd-container iproute2 openssh-client
test-deploy: $(STAMP) $(DEPLOY_STAMP)
	@for tool in buildah podman runc mmdebstrap systemd-nspawn ip ssh; do \
	  command -v $$tool > /dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(LIVE_DEPLOY_PACKAGES) > /dev/null; \
	fi
	OPENCSP_LIVE_DEPLOY=1 OPENCSP_DEPLOY_TOOLS_REQUIRED=1 OPENCSP_DEPLOY_CACHE=$(DEPLOY_CACHE) \
	  $(BIN)/python -m pytest -p no:cacheprovider -n 2 --dist loadfile tests/deploy tests/deploy_live $(PYTEST_ARGS)

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

bench: $(STAMP) tests/node/node_modules/.package-lock.json
	$(BIN)/python -m benchmarks.query_list
	$(BIN)/python -m benchmarks.query_list --database postgresql
	$(BIN)/python -m benchmarks.documents
	$(BIN)/python -m benchmarks.fanout
	$(BIN)/python -m benchmarks.fanout_workers

# The README's dashboard screenshots (docs/dashboard.png, docs/dashboard-phone.png), from the browser test.
screenshots: $(STAMP) tests/node/node_modules/.package-lock.json
	DASHBOARD_SCREENSHOTS=docs $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_dashboard_browser.py

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) tests/node/node_modules .opencsp .pytest_cache .mypy_cache .ruff_cache
