# Every target installs what it needs first, so each works as the first command on a fresh clone.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= experiments/configs/tiny.py
WORKDIR ?= workdirs/tiny

.PHONY: install test test-slow train corpus bench lint clean

install: $(STAMP)

$(STAMP): setup.py
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[data,curation,convert,tpu,dev]'
	touch $@

test: install
	$(PY) -m pytest -q -m "not slow" tests

test-slow: install
	$(PY) -m pytest -q -m slow tests

corpus: install
	$(PY) -m data_pipeline.corpus

train: corpus
	$(PY) -m llama_jax.train --config=$(CONFIG) --workdir=$(WORKDIR)

bench: install
	$(PY) -m llama_jax.bench --config=$(CONFIG)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) workdirs .cache
