# Two entry points the README promises; both set up .venv on first use.
#   make run    start the local stack (Redis, API, 2 workers), submit examples/eight_schools.yaml,
#               watch it, print its summary, shut down
#   make test   lint, type-check and run the whole test suite (what CI runs)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-quick lint bench generated

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/chainyard up --workers 2 --port 8765 --data-dir .chainyard --submit examples/eight_schools.yaml

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -n 2 --dist loadfile --durations=40

test-quick: $(BIN)/.installed
	$(BIN)/pytest -m "not slow"

bench: $(BIN)/.installed
	$(BIN)/python bench/engine.py

# files generated from others (tests check each is current): dashboard JSON, k8s/ manifests, chart README table
generated: $(BIN)/.installed
	$(BIN)/python tools/dashboard.py
	$(BIN)/python tools/deploy/render_k8s.py
	$(BIN)/python tools/deploy/chart_readme.py
