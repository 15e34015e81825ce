# Varsling: `make run` serves on http://127.0.0.1:8000, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format migrate browser-deps deploy-deps screenshots bench bench-http bench-load clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Plain http on this machine: development, unless the environment says otherwise
# (in production the session cookie is Secure and pages send HSTS).
run: $(STAMP)
	mkdir -p var
	$(BIN)/varsling migrate
	VARSLING_ENVIRONMENT=$${VARSLING_ENVIRONMENT:-development} \
		$(BIN)/varsling serve --host 127.0.0.1 --port 8000

migrate: $(STAMP)
	mkdir -p var
	$(BIN)/varsling migrate

lint: $(STAMP)
	$(BIN)/ruff check src tests bench migrations
	$(BIN)/ruff format --check src tests bench migrations
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format src tests bench migrations
	$(BIN)/ruff check --fix src tests bench migrations

# Three pytest workers (pytest-xdist), each with its own databases: on two cores a
# third keeps them busy while the others wait on PostgreSQL, subprocesses and
# chromium (with two, a CI run used 1.2 cores of 2). `TEST_WORKERS=0` runs the
# suite in one process, as plain `pytest` does.
TEST_WORKERS ?= 3

test: lint browser-deps deploy-deps
	$(BIN)/pytest -n $(TEST_WORKERS)

# Debian's chromium and axe-core for the browser tests; quick when both are present.
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "Installing Debian's chromium"; \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			chromium fonts-dejavu-core; \
	fi
	@if [ ! -f node_modules/axe-core/axe.min.js ]; then \
		if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; \
		else npm install --no-audit --no-fund; fi; \
	fi

# Debian's caddy for the two-replica test (tests/deploy/): quick when present.
deploy-deps:
	@if ! command -v caddy >/dev/null; then \
		echo "Installing Debian's caddy"; \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends caddy; \
	fi

# Extract the reporter pages' text into the template and update the nb, nn and en
# catalogs; then translate the new or changed entries (marked fuzzy or empty).
.PHONY: messages
messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k N_ --project=Varsling --copyright-holder=Varsling \
		--no-wrap -o src/varsling/locale/messages.pot src/varsling
	$(BIN)/pybabel update -i src/varsling/locale/messages.pot -d src/varsling/locale -D messages \
		--no-wrap --ignore-obsolete

bench: $(STAMP)
	$(BIN)/python bench/latency.py

# A submission and a case-code login over real HTTP (uvicorn) next to a stock Argon2id call;
# VARSLING_BENCH_DATABASE_URL=postgresql+psycopg://... for a fresh PostgreSQL database.
bench-http: $(STAMP)
	cd bench && ../$(BIN)/python argon2_http.py

# 50 reporters and 10 handlers for 60 s against two workers; needs VARSLING_BENCH_DATABASE_URL.
bench-load: $(STAMP)
	cd bench && ../$(BIN)/python load.py
.PHONY: bench-cases bench-audit
bench-cases: $(STAMP)
	$(BIN)/python bench/case_list.py

bench-audit: $(STAMP)
	$(BIN)/python bench/audit_scale.py

# Full-page PNGs of every reporter and staff page (bokmål, 1280 and 375 px) in ./screenshots.
screenshots: $(STAMP) browser-deps
	VARSLING_SCREENSHOT_DIR=screenshots $(BIN)/pytest -q tests/browser/test_screenshots.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
