# The README's two commands: `make demo` and `make test`. Each builds or updates .venv by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.svp-installed
PYTEST_ARGS ?=
DEMO_OUT ?= demo_out

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv eval-venv test test-fast demo bench lint clean

venv: $(STAMP)

# EvalScope in its own venv: a client of the served model whose pins do not fit ours
# (requirements/eval-constraints.txt says why); python -m svp.evaluation finds it there
EVAL_VENV ?= .venv-eval
EVAL_STAMP := $(EVAL_VENV)/.svp-installed
eval-venv: $(EVAL_STAMP)

$(EVAL_STAMP): requirements/eval.txt requirements/eval-constraints.txt
	@test -x $(EVAL_VENV)/bin/python || { echo "creating $(EVAL_VENV) ..."; $(PYTHON) -m venv $(EVAL_VENV); }
	@echo "installing EvalScope into $(EVAL_VENV) (first time: ~1 min, ~1.2 GB) ..."
	@$(EVAL_VENV)/bin/python -m pip install -q --upgrade pip > $(EVAL_VENV)/install.log 2>&1 || { tail -30 $(EVAL_VENV)/install.log; exit 1; }
	@$(EVAL_VENV)/bin/python -m pip install -c requirements/eval-constraints.txt -r requirements/eval.txt \
		>> $(EVAL_VENV)/install.log 2>&1 || { tail -40 $(EVAL_VENV)/install.log; exit 1; }
	@$(EVAL_VENV)/bin/evalscope --version > /dev/null 2>&1 || $(EVAL_VENV)/bin/python -c "import evalscope; print('evalscope', evalscope.__version__)"
	@touch $(EVAL_STAMP)

# Re-installs only when the pins or the package metadata change. torch is pinned with `===`
# through the constraints file (see requirements/constraints.txt for why).
$(STAMP): requirements/constraints.txt setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 required, found " + sys.version' 
	@test -x $(PY) || { echo "creating $(VENV) ..."; $(PYTHON) -m venv $(VENV); }
	@echo "installing pinned dependencies into $(VENV) (first time: ~5 min, ~6 GB) ..."
	@$(PY) -m pip install -q --upgrade pip > $(VENV)/install.log 2>&1 || { tail -30 $(VENV)/install.log; exit 1; }
	@$(PY) -m pip install -c requirements/constraints.txt -e ".[dev]" >> $(VENV)/install.log 2>&1 \
		|| { grep -v "is ignored: it is neither" $(VENV)/install.log | tail -40; exit 1; }
	@SAM2_BUILD_CUDA=0 $(PY) -m pip install --no-build-isolation -c requirements/constraints.txt \
		sam2 >> $(VENV)/install.log 2>&1 || { tail -40 $(VENV)/install.log; exit 1; }
	@# DeepSpeed's sdist imports torch to build; no ops are compiled ahead (CPU: JIT on first use)
	@DS_BUILD_OPS=0 $(PY) -m pip install --no-build-isolation -c requirements/constraints.txt \
		deepspeed >> $(VENV)/install.log 2>&1 || { tail -40 $(VENV)/install.log; exit 1; }
	@# controlnet-aux comes --no-deps: only PIDINet's network file is used, not the detectors
	@# that need its other dependencies (timm, scikit-image); the check ignores just those
	@$(PY) -m pip check > $(VENV)/check.log 2>&1 || ! grep -v "^controlnet-aux " $(VENV)/check.log
	@$(PY) -m pip install --no-deps -c requirements/constraints.txt controlnet-aux \
		>> $(VENV)/install.log 2>&1 || { tail -40 $(VENV)/install.log; exit 1; }
	@$(PY) -c "import torch, torchvision, swift, msgspec, qwen_vl_utils, deepspeed; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| ms-swift', swift.__version__, '| deepspeed', deepspeed.__version__)"
	@touch $(STAMP)

test: $(STAMP) $(EVAL_STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not distributed" $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) data_tools/demo.py --out $(DEMO_OUT)

# every benchmark in a quick setting: one table, also written to bench/results.md
bench: $(STAMP)
	$(PY) bench/run_all.py

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(DEMO_OUT) .cache .pytest_cache .ruff_cache
