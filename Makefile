# make demo  — set up .venv, get MNIST, train the default model, evaluate it, write everything into ./runs
# make test  — set up .venv with the test extras and run the whole test suite
# make bench — speed/accuracy benchmark of the training recipe
PYTHON ?= python3.11
VENV ?= .venv
WORKSPACE ?= runs
PIP_ARGS ?=
# extra `deepdive train` options for the demo, e.g. TRAIN_ARGS="--preset fast --limit-train 3000" for a quick try
TRAIN_ARGS ?=
BIN := $(VENV)/bin

.PHONY: demo test bench serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files: pip runs again only when pyproject.toml changes (torch is pinned there, CPU build).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(PIP_ARGS) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(PIP_ARGS) -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -c "import deepdive; s = deepdive.load_dataset('mnist').source; print('MNIST from', s['kind'] + ':', s['location'])"
	$(BIN)/deepdive train --dataset mnist --preset default --workspace $(WORKSPACE) --name demo $(TRAIN_ARGS)
	$(BIN)/deepdive analyze demo --workspace $(WORKSPACE)
	$(BIN)/deepdive report demo --workspace $(WORKSPACE) --out $(WORKSPACE)/demo-report.html
	@echo
	$(BIN)/deepdive runs --workspace $(WORKSPACE)
	@echo
	@echo "Results are in $(WORKSPACE)/: the database $(WORKSPACE)/deepdive.sqlite and one folder per run"
	@echo "($(WORKSPACE)/<run id>/: model_best.pt, config.json, analysis/test/, ...)."
	@echo "Static report (open from disk): $(WORKSPACE)/demo-report.html"
	@echo "Dashboard: run 'make serve' (or $(BIN)/deepdive serve $(WORKSPACE)), then open http://127.0.0.1:8765/"

# The browser tests need Debian's chromium, the Fashion-MNIST tests Debian's dataset package: apt-get installs
# whichever is missing (CI runs as root on Debian).
test: $(VENV)/.installed-test
	@missing=""; command -v chromium >/dev/null || missing="chromium"; \
	  [ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	  if [ -n "$$missing" ]; then echo "apt-get install $$missing"; apt-get update && apt-get install -y $$missing; fi
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/deepdive bench

serve: $(VENV)/.installed
	$(BIN)/deepdive serve $(WORKSPACE)
