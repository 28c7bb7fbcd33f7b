# Set-up and everyday commands. Everything runs from the project's own virtualenv.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EMULATOR_PORT ?= 8765
UI_PORT ?= 3000

export DAGSTER_DISABLE_TELEMETRY := 1

# Your own account: the Dagster instance in .dagster_home/, tables in $GLADLY_DATA_ROOT
# (default ./data). The demo and `make dev` use .demo/ instead, so emulator data never
# mixes with yours.
HOME_DIR := $(CURDIR)/.dagster_home
DEMO_DIR := $(CURDIR)/.demo

# Credentials of the local emulator (not secrets: they open only the emulator).
EMULATOR_ENV := GLADLY_BASE_URL=http://127.0.0.1:$(EMULATOR_PORT) \
	GLADLY_USERNAME=agent@example.com GLADLY_API_TOKEN=emulator-token \
	GLADLY_DATA_ROOT=$(DEMO_DIR)/data DAGSTER_HOME=$(DEMO_DIR)/dagster_home

.PHONY: install homes demo test bench dev ui emulator lint clean

install: $(STAMP) homes

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c "import dagster, dagster_postgres, dagster_webserver"
	touch $(STAMP)

# The instance: SQLite by default, PostgreSQL when DAGSTER_PG_URL is set (your account only;
# the demo always uses SQLite).
# DAGSTER_PG_URL may come from the environment or from .env (which Dagster reads too).
homes:
	mkdir -p $(HOME_DIR) $(DEMO_DIR)/dagster_home
	url="$${DAGSTER_PG_URL:-$$(sed -n 's/^DAGSTER_PG_URL=//p' .env 2>/dev/null | tail -n 1)}"; \
	case "$$url" in \
	  "") config=dagster.yaml ;; \
	  postgresql+psycopg2://*) config=dagster-postgres.yaml ;; \
	  *) echo "DAGSTER_PG_URL must start with postgresql+psycopg2:// (psycopg2 is the" \
	          "driver installed; a bare postgresql:// means psycopg 3 to SQLAlchemy)" >&2; \
	     exit 1 ;; \
	esac; \
	ln -sfn ../$$config $(HOME_DIR)/dagster.yaml
	ln -sfn ../../dagster.yaml $(DEMO_DIR)/dagster_home/dagster.yaml

demo: install
	env DAGSTER_HOME=$(DEMO_DIR)/dagster_home $(PY) -m gladly_pipeline.demo \
		--data-root $(DEMO_DIR)/data

test: install
	$(PY) -m pytest

# Requests, pacing, parse speed, memory and rebuild time against the emulator, each size
# in a fresh process (benchmarks/bench.py); 100k takes ~5 minutes and ~4 GB of RAM.
SIZES ?= 10000 100000
bench: install
	$(PY) -m benchmarks.bench --sizes $(SIZES)

lint: install
	$(VENV)/bin/ruff check gladly_pipeline gladly_pipeline_tests benchmarks

emulator: install
	$(PY) -m gladly_pipeline.emulator --port $(EMULATOR_PORT) --seed 1

# The emulator in the background, then the Dagster UI and daemon against it.
dev: install
	$(PY) -m gladly_pipeline.emulator --port $(EMULATOR_PORT) --seed 1 --quiet & emu=$$!; \
	trap 'kill $$emu 2>/dev/null' EXIT INT TERM; \
	env $(EMULATOR_ENV) $(VENV)/bin/dagster dev -h 127.0.0.1 -p $(UI_PORT)

# The Dagster UI and daemon against your account (settings from .env).
ui: install
	env DAGSTER_HOME=$(HOME_DIR) $(VENV)/bin/dagster dev -h 127.0.0.1 -p $(UI_PORT)

# Removes the virtualenv and the demo's files; never your instance or your tables.
clean:
	rm -rf $(VENV) $(DEMO_DIR)
