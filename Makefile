# Surat — quick start: `make run` (dev server with a demo domain) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEVDIR := var

.PHONY: run test lint typecheck unit venv dev bench fuzz clean

$(BIN)/surat: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.dev-installed: pyproject.toml $(BIN)/surat
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/surat
dev: $(VENV)/.dev-installed

# First run writes a dev setup (loopback, unprivileged ports, self-signed CA) into var/.
run: $(BIN)/surat
	@if [ ! -f $(DEVDIR)/surat.toml ]; then \
		SURAT_MAKE_RUN=1 $(BIN)/surat quickstart --dev --domain example.test --dir $(DEVDIR); \
	fi
	exec $(BIN)/surat --config $(DEVDIR)/surat.toml serve

lint: dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: dev
	$(BIN)/mypy

unit: dev
	$(BIN)/pytest -q tests/unit

test: dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -ra

# Property-based fuzzing with a long budget: FUZZ_SECONDS per fuzz test file (default 600), rounds of
# fresh random inputs until the time is up. Failing inputs land in tests/fuzz_regressions/.
FUZZ_SECONDS ?= 600
fuzz: dev
	@set -e; for target in $(or $(FUZZ_TARGETS),$$(grep -l "pytest.mark.fuzz" tests/unit/*.py)); do \
		end=$$(( $$(date +%s) + $(FUZZ_SECONDS) )); round=0; \
		while [ $$(date +%s) -lt $$end ]; do \
			round=$$((round + 1)); echo "fuzz $$target round $$round"; \
			SURAT_FUZZ=1 $(BIN)/pytest -q -m fuzz --timeout=0 $$target; \
		done; \
	done

bench: $(BIN)/surat
	$(BIN)/python bench/smtp_accept.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
