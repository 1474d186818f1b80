# vidbench: the two commands a newcomer needs are `make demo` and `make test`; both set up .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

DATASETS := msrvtt msvd vatex lsmdc activitynet didemo

.PHONY: setup test lint demo synth leaderboard clean rehearse-grad-cache bench-memory rehearsal serve-rehearsal $(addprefix reproduce-,$(DATASETS))

setup: $(STAMP)

# torch first, from the CPU build (torch==2.13.0), so pip never resolves a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

# Two workers (pytest-xdist, one file per worker) for most tests; the real-SLURM clusters (one node, then two
# nodes in network namespaces) run afterwards on their own, since their jobs time their signals and share 2 cores.
SERIAL_TESTS := tests/test_slurm_real.py tests/test_multinode.py

test: setup
	$(BIN)/ruff check vidbench tests benchmarks
	$(BIN)/pytest -m "not rehearsal" -n 2 --dist loadfile $(SERIAL_TESTS:%=--ignore=%) $(PYTEST_ARGS)
	$(BIN)/pytest -m "not rehearsal" $(SERIAL_TESTS) $(PYTEST_ARGS)

# One training step of every paper recipe at its real shapes (random ViT-B CLIP; minutes on CPU, not in `make test`).
# VIDBENCH_REHEARSAL_BATCH=8 forces the batch (a GPU box); see tests/test_rehearsal.py.
rehearsal: setup
	$(BIN)/pytest -m rehearsal tests/test_rehearsal.py $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check vidbench tests benchmarks
	$(BIN)/ruff format --check vidbench tests benchmarks

synth: setup
	$(BIN)/vidbench synth --out data/synth --seed 0

# The main job, offline: the synthetic benchmark, every method's tiny recipe x 3 seeds on CPU, then the leaderboard.
demo: setup
	@test -f data/synth/README.txt || $(BIN)/vidbench synth --out data/synth --seed 0
	$(BIN)/vidbench reproduce demo --in-process --runs runs --out results

# make reproduce-msrvtt DATA_ROOT=/datasets [CLIP=/weights|tiny] [SEEDS="0 1 2"] [GPUS=4] [ARGS="key=value ..."]
$(addprefix reproduce-,$(DATASETS)): reproduce-%: setup
	$(BIN)/vidbench reproduce $* $(ARGS) --data-root "$(DATA_ROOT)" $(if $(CLIP),--clip $(CLIP)) \
		$(if $(SEEDS),--seeds $(SEEDS)) $(if $(GPUS),--gpus $(GPUS)) --runs $(or $(RUNS),runs) --out $(or $(OUT),results)

# Gradient caching (trainer.contrastive_chunk): every method's exactness under DDP and a chunked run resumed.
rehearse-grad-cache: setup
	$(BIN)/pytest -m rehearsal tests/test_grad_cache.py tests/test_grad_cache_train.py

# Peak memory and step time per contrastive_chunk (CPU, reduced width; add ARGS="--gpu" on a GPU box).
bench-memory: setup
	$(BIN)/python benchmarks/bench_memory.py $(ARGS)

# Re-aggregate whatever is in runs/ into results/.
leaderboard: setup
	$(BIN)/vidbench aggregate --runs $(or $(RUNS),runs) --out $(or $(OUT),results)

clean:
	rm -rf runs data/synth

# make slurm-msrvtt DATA_ROOT=/datasets [CLIP=/weights] [SEEDS="0 1 2"] SLURM_ARGS="--partition gpu --gpus-per-node 4"
# Submits the dataset's reproduce suite as a SLURM array job (see `vidbench submit --help`; add --dry-run to
# SLURM_ARGS to print the script only). Re-running it skips the runs that already have result.json.
SLURM_DATASETS := msrvtt msvd vatex lsmdc activitynet didemo
SLURM_ARGS ?=
.PHONY: $(addprefix slurm-,$(SLURM_DATASETS))
$(addprefix slurm-,$(SLURM_DATASETS)): slurm-%: setup
	$(BIN)/vidbench submit --suite $* $(if $(DATA_ROOT),--data-root "$(DATA_ROOT)") $(if $(CLIP),--clip $(CLIP)) \
		$(if $(SEEDS),--seeds "$(SEEDS)") $(SLURM_ARGS)

# Issue 22's rehearsal: a tiny model memorises its test videos; its shuffled-caption control must fall to chance.
.PHONY: rehearsal-controls
rehearsal-controls: setup
	$(BIN)/pytest -m rehearsal tests/test_reporting_e2e.py

# Issue 19: the two-process DDP encode (each video once across the ranks' shards); a rehearsal, not in make test.
serve-rehearsal: setup
	$(BIN)/pytest -m rehearsal tests/test_serve.py
