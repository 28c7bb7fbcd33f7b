# Set-up and everyday commands. Everything runs from the project's own virtualenv.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EMULATOR_PORT ?= 8765
UI_PORT ?= 3000

export DAGSTER_DISABLE_TELEMETRY := 1
export DAGSTER_HOME := $(CURDIR)/.dagster_home

# Credentials of the local emulator (not secrets: they open only the emulator).
EMULATOR_ENV := GLADLY_BASE_URL=http://127.0.0.1:$(EMULATOR_PORT) \
	GLADLY_USERNAME=agent@example.com GLADLY_API_TOKEN=emulator-token

.PHONY: install home demo test dev emulator lint clean

install: $(STAMP) home

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c "import dagster, dagster_postgres, dagster_webserver"
	touch $(STAMP)

# The instance: SQLite under DAGSTER_HOME by default, PostgreSQL when DAGSTER_PG_URL is set.
home:
	mkdir -p $(DAGSTER_HOME)
	if [ -n "$$DAGSTER_PG_URL" ]; then config=dagster-postgres.yaml; else config=dagster.yaml; fi; \
	ln -sfn ../$$config $(DAGSTER_HOME)/dagster.yaml

demo: install
	$(PY) -m gladly_pipeline.demo

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check gladly_pipeline gladly_pipeline_tests

emulator: install
	$(PY) -m gladly_pipeline.emulator --port $(EMULATOR_PORT) --seed 1

# The emulator in the background, then the Dagster UI and daemon against it.
dev: install
	$(PY) -m gladly_pipeline.emulator --port $(EMULATOR_PORT) --seed 1 & emu=$$!; \
	trap 'kill $$emu 2>/dev/null' EXIT INT TERM; \
	env $(EMULATOR_ENV) $(VENV)/bin/dagster dev -h 127.0.0.1 -p $(UI_PORT)

clean:
	rm -rf $(VENV) $(DAGSTER_HOME) data
