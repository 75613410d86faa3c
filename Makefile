# Two commands do everything on a fresh clone (Python 3.11 is the only prerequisite):
#   make demo   install, build the embedded dataset, train + evaluate configs/digits_fusion.py
#   make test   install (or refresh), run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
export CROSSJAX_DATA_DIR ?= $(CURDIR)/data
# uv (below) does not byte-compile what it installs (compiling all of it takes longer than
# the install), so Python writes the bytecode of what is imported, once, even where
# PYTHONDONTWRITEBYTECODE is set; each process would otherwise compile JAX's source again.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test lint clean

install: $(STAMP)

# uv installs the same version ranges as pip does, downloading and unpacking in parallel:
# about 20 s on a fresh clone where pip takes about 60 s. pip does it if uv cannot.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	{ $(VENV)/bin/python -m pip install --quiet 'uv>=0.5,<1' && \
	  $(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python -e '.[dev]'; } || \
	  $(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python scripts/train.py --config configs/digits_fusion.py --workdir runs/demo
	$(VENV)/bin/python scripts/evaluate.py --workdir runs/demo

# Test files run in parallel (each file on one worker, so module fixtures are built once),
# the slowest first (tests/conftest.py orders them; xdist's own reorder would undo it).
# One worker more than the cores (at most 8): a worker waiting on a subprocess, a checkpoint
# write or a sleep leaves its core to the others (3 workers beat 2 on 2 cores: README).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 8 ? n + 1 : 8 )))

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(VENV)/bin/ruff check crossjax scripts configs tests examples
	$(VENV)/bin/ruff format --check crossjax scripts configs tests examples

clean:
	rm -rf runs .pytest_cache
