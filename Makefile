# The two commands of the README: `make demo` and `make test`. Everything else is set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# The versions the tests passed with (constraints.txt); `make upgrade-deps` refreshes them.
CONSTRAINTS ?= -c constraints.txt

.PHONY: demo test test-services lint format clean upgrade-deps screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installing is cheap to repeat (pip skips what is there); the stamp re-runs it when pyproject or
# the constraints change.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt $(VENV)/.installed
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/d2bench demo

# The MLflow UI screenshots of the README (docs/ui/*.png): a small study, its report, `d2bench ui`
# and headless Chromium (Debian: apt-get install chromium). Not part of `make test`.
screenshots: $(VENV)/.installed
	D2BENCH=$(BIN)/d2bench ./scripts/ui_screenshots.sh $(WORK)

# What the study tests run against: Debian's slurm-wlm and munge (installed with apt when root and
# missing; the test set-up starts and stops the one-node cluster of slurm/test-cluster/).
test-services:
	./slurm/test-cluster/install.sh

test: $(VENV)/.installed-test test-services
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Re-resolve the newest versions that pyproject.toml's ranges allow (torch stays at the pinned
# release: a new one is a deliberate change), run the whole test suite in a fresh environment, and
# rewrite constraints.txt only when it passes.
UPGRADE_VENV := .venv-upgrade
upgrade-deps:
	rm -rf $(UPGRADE_VENV)
	$(PYTHON) -m venv $(UPGRADE_VENV)
	$(UPGRADE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(UPGRADE_VENV)/bin/python -m pip install --quiet "$$(grep '^torch==' constraints.txt)"
	$(MAKE) test VENV=$(UPGRADE_VENV) CONSTRAINTS="$$(grep '^torch==' constraints.txt)"
	{ sed -n '/^#/p' constraints.txt; \
	  $(UPGRADE_VENV)/bin/python -m pip freeze --exclude-editable \
	    | sed -e 's/^torch==\([0-9.]*\)+[a-z0-9]*$$/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	@echo "constraints.txt rewritten; review with: git diff constraints.txt"

clean:
	rm -rf $(VENV) $(UPGRADE_VENV) build *.egg-info .pytest_cache .ruff_cache
