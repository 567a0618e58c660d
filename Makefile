# Two commands do all set-up on a fresh machine with Python 3.11+:
#   make run   - the default analysis (config/config.yaml) into results/;
#                make run CONFIG=my_study.yaml runs another config (through glmm-steps)
#   make test  - the test suite
# Both create .venv from the pinned dependency tree (requirements.lock) when it is
# missing or older than the pins.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
CONFIG ?= config/config.yaml

.PHONY: run test lock clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	# pip byte-compiles what it installs, not an editable package: without this, where
	# PYTHONDONTWRITEBYTECODE is set (CI), every job would compile glmm_steps again.
	$(BIN)/python -m compileall -q glmm_steps
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/glmm-steps run $(CONFIG) --cores $(CORES)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Re-pin the whole tree after changing a version in pyproject.toml (and environment.yml).
lock:
	rm -rf /tmp/glmm-lock-venv && $(PYTHON) -m venv /tmp/glmm-lock-venv
	/tmp/glmm-lock-venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	/tmp/glmm-lock-venv/bin/pip freeze --exclude-editable | grep -v '^glmm-steps' > requirements.lock

clean:
	rm -rf $(VENV) .snakemake
