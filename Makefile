# onelora: `make run` and `make test` install into .venv on first use.
PYTHON_SYS ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RESULTS ?= results
REPORTS ?= reports
source ?= files        # make reproduce-tables source=wandb [project=onelora entity=<team>]
project ?= onelora
entity ?=

.PHONY: install run test test-e2e test-slow test-slurm test-all lint bench reproduce-tables reproduce-mini reproduce-s1 analysis count-paper plan clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install onelora with its dev extra

run: $(STAMP)  ## the embedded default experiment (digits, 1LoRA) on the CPU
	$(PY) run.py

test: $(STAMP)  ## the default tier: units, adapters, counts, in-process runs (< 6 min on 2 cores)
	$(PY) -m pytest -q

test-e2e: $(STAMP)  ## run.py in subprocesses: every experiment grid on its tiny twin, resume, DDP, wandb, SIGTERM
	$(PY) -m pytest -q -m e2e

test-slow: $(STAMP)  ## longer runs (real-width measurements); "no tests" is not a failure
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]

test-all: test test-e2e test-slow  ## every tier but SLURM (CI runs SLURM too: .ci/run)

lint: $(STAMP)  ## pyflakes-level checks (unused imports, undefined names)
	$(PY) -m ruff check --select F,E9 src tests run.py

test-slurm: $(STAMP)  ## a real one-node SLURM on localhost (root, Debian packages), then the SLURM sweep tests
	slurm/local_cluster.sh install
	slurm/local_cluster.sh start
	SLURM_CONF=$$(pwd)/slurm/.state/etc/slurm.conf $(PY) -m pytest -q -m slurm -p no:cacheprovider

# the laptop-sized transfer of every task family: (experiment, launcher) pairs, run in this order
# (the experiments that set `reproduce: {target: mini, launcher: ...}`, by file name)
MINI_GRIDS ?= $(shell $(PY) -m onelora.experiments mini)

reproduce-mini: $(STAMP)  ## every family's laptop transfer (digits, depth, generation, language), then the tables and analyses
	@test -n "$(MINI_GRIDS)" || { echo "make reproduce-mini: no grids (python -m onelora.experiments mini)"; exit 1; }
	@status=0; for grid in $(MINI_GRIDS); do \
	  name=$${grid%%:*}; launcher=$${grid##*:}; \
	  echo "== make reproduce-mini: experiment=$$name"; \
	  $(PY) run.py -m experiment=$$name hydra/launcher=$$launcher || status=1; \
	done; \
	$(PY) -m onelora.reporting --results $(RESULTS) --out $(REPORTS) || status=1; \
	$(MAKE) --no-print-directory analysis || status=1; \
	exit $$status

bench: $(STAMP)  ## speed and memory of every method, side by side with peft
	$(PY) -m onelora.bench --out $(REPORTS)

reproduce-tables: $(STAMP)  ## the paper's tables and bubble plots from every results.json (or wandb)
	$(PY) -m onelora.reporting --results $(RESULTS) --out $(REPORTS) --source $(strip $(source)) \
	  --wandb-project $(project) $(if $(entity),--wandb-entity $(entity))

ANALYSIS_RUNS ?= $(RESULTS)/digits/digits_vit
ANALYSIS_NAME ?= digits
analysis: $(STAMP)  ## Fig. 9 (PCA alignment) and Fig. 11 (calibration) on the digits runs (after make reproduce-mini)
	$(PY) -m onelora.analysis pca_alignment --full $(ANALYSIS_RUNS)/full/seed0 --lora $(ANALYSIS_RUNS)/lora/seed0 \
	  --out $(REPORTS) --name pca_alignment_$(ANALYSIS_NAME) $(if $(BASE),--base $(BASE))
	$(PY) -m onelora.analysis calibration $(foreach m,full lora onelora,$(foreach s,0 1 2,$(ANALYSIS_RUNS)/$(m)/seed$(s))) \
	  --pool --bins 15 --out $(REPORTS) --name calibration_$(ANALYSIS_NAME)

reproduce-s1: $(STAMP)  ## Table S1: 1LoRA vs a random compression vector, then the tables
	$(PY) run.py -m experiment=table_s1; status=$$?; $(MAKE) reproduce-tables && exit $$status

# the paper's full-size models, each on its own task: (model, task) pairs (every model the paper
# prints counts of, with the model and task of the first experiment that runs it)
PAPER_MODELS ?= $(shell $(PY) -m onelora.experiments paper-models)
# the paper's compared methods (describe.compared in conf/method/*.yaml), comma-separated
COUNT_METHODS ?= $(shell $(PY) -m onelora.methods compared)
count-paper: $(STAMP)  ## parameter counts of the paper's models for every method (meta device, one JSON line each)
	@test -n "$(PAPER_MODELS)" -a -n "$(COUNT_METHODS)" || { echo "make count-paper: no models or methods"; exit 1; }
	@for pair in $(PAPER_MODELS); do \
	  $(PY) run.py -m mode=count model=$${pair%%:*} task=$${pair##*:} method=$(COUNT_METHODS) \
	    hydra/job_logging=none hydra/hydra_logging=none 2>&1 | grep '^{' || exit 1; \
	done

PLAN_JOBS ?= 2
plan: $(STAMP)  ## every paper grid planned on fake tensors (memory per GPU, FLOPs, GPU-hours; no GPU, weights or data) -> reports/plan.md
	$(PY) -m onelora.plan --out $(REPORTS) --jobs $(PLAN_JOBS)

clean:
	rm -rf .pytest_cache build src/*.egg-info
