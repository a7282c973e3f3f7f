# fxray: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv demo test test-unit test-integration lint format bench bench-cluster bench-ui clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> installing fxray and its dev tools into $(VENV) (first time: ~1 min)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@# PYTHONWARNINGS: setuptools' editable-install notice is not actionable here
	@PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: venv
	@$(BIN)/fxray demo

test: venv
	@scripts/test.sh

test-unit: venv
	@$(BIN)/pytest tests/unit -q

test-integration: venv
	@scripts/test.sh tests/integration

lint: venv
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

format: venv
	@$(BIN)/ruff check --fix .
	@$(BIN)/ruff format .

bench: venv
	@$(BIN)/python bench/run.py
	@$(BIN)/python bench/isolation.py

# these two need the test servers (Kafka, PostgreSQL, S3): started and stopped around the run
bench-cluster: venv
	@scripts/with-servers.sh $(BIN)/python bench/cluster.py

bench-ui: venv
	@scripts/with-servers.sh $(BIN)/python bench/ui.py

clean:
	rm -rf $(VENV) .fxray .infra .pytest_cache .ruff_cache
