# Two commands set everything up: `make train` and `make test` (both install on first use).
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: install train test test-fast bench bench-gpu docs docs-serve lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[dev]' $(TORCH)
	touch $(STAMP)

train: install
	$(PY) train.py $(ARGS)

# two pytest-xdist workers, one thread each (tests/conftest.py); xdist_group marks keep tests that
# share a module fixture or a DDP port on one worker
test: install
	$(PY) -m pytest -q -n 2 --dist loadgroup $(ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(ARGS)

# vitrain against plain PyTorch, side by side in one process, one module per measure under
# benchmarks/ (benchmarks/run.py lists them); writes docs/benchmarks.md. ARGS=--quick: toy sizes
bench: install
	$(PY) -m benchmarks $(ARGS)

# the GPU numbers (ViT-B/16, GPT-2 124M eager and compiled, DETR-R50, SAM ViT-B) in under 8 minutes
# on one H100/H200; writes the "bench-gpu: <GPU>" section of docs/benchmarks.md
bench-gpu: install
	$(PY) -m benchmarks.gpu $(ARGS)

# the manual (mkdocs.yml, docs/) into site/; --strict: a broken link or a missing page fails
docs: install
	$(VENV)/bin/mkdocs build --strict

docs-serve: install
	$(VENV)/bin/mkdocs serve

lint: install
	$(VENV)/bin/ruff check vitrain tests train.py benchmarks docs/hooks
	$(VENV)/bin/ruff format --check vitrain tests train.py benchmarks docs/hooks

format: install
	$(VENV)/bin/ruff check --fix vitrain tests train.py benchmarks docs/hooks
	$(VENV)/bin/ruff format vitrain tests train.py benchmarks docs/hooks

clean:
	rm -rf $(VENV) logs outputs multirun wandb site .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
