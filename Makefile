# `make test` and `make lab` work on a fresh machine with only python3 and make: the first use builds .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: venv test test-faults bench lab experts clean

FASHION_MNIST := /usr/share/datasets/fashion-mnist

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip -c constraints.txt
	$(PIP) install -c constraints.txt "torch==2.13.0"
	$(PIP) install -c constraints.txt -e ".[test,lab]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# The slow fault tests: sweeps killed at random moments and resumed, two sweeps on one store, workers outliving a
# killed sweep, the same configs in separate processes (minutes: every case starts dropkit processes).
test-faults: $(STAMP)
	$(PY) -m pytest -m slow tests/lab/test_faults.py

# Speed: every activation method against nn.Dropout2d and a 3x3 conv, the stateful methods' training steps, then
# Gating Dropout's all-to-all bytes and step time on 2 gloo ranks (a license text as a small always-present corpus).
# glibc hands large buffers (above its dynamic mmap threshold) straight from the OS and back, so a fresh 4 MiB
# activation can cost ~1000 page faults a call depending on what ran before; fixed thresholds keep every row, the
# yardsticks included, measuring the same allocator (jemalloc/tcmalloc users see the same effect).
BENCH_MALLOC := MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=134217728
bench: $(STAMP)
	$(BENCH_MALLOC) $(VENV)/bin/dropkit bench --steps --csv bench/results.csv
	$(VENV)/bin/torchrun --standalone --nproc_per_node 2 -m dropkit.cli experts moe-lm --steps 150 --p 0 0.3 \
	  --decision shared_generator --corpus /usr/share/common-licenses/GPL-3

# The advisor on the default testbed (docs/advisor.md): which regularizer, where and how strong for the lab CNN on
# 1 000 Fashion-MNIST images, searched and confirmed within 10 minutes; `dropkit lab --fixed` is the old
# fixed-strength comparison. Fashion-MNIST comes from Debian's dataset-fashion-mnist package (never downloaded
# at run time); as root the package is installed when missing, otherwise we say how to get the files.
lab: $(STAMP)
	@if [ -z "$$DROPKIT_DATA" ] && [ ! -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST not found: install Debian's dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist)"; \
	    echo "or set DROPKIT_DATA to a folder holding the four standard *-idx?-ubyte.gz files."; exit 1; \
	  fi; \
	fi
	$(VENV)/bin/dropkit lab $(LAB_ARGS)

# The expert-level experiments: Gating Dropout in a 2-rank expert-parallel MoE language model on the fortune texts
# (Debian's fortunes-min, installed as root when missing), then the soft decision tree with and without dropout.
FORTUNES := /usr/share/games/fortunes
experts: $(STAMP)
	@if [ ! -d $(FORTUNES) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fortunes-min; \
	  else echo "the fortune texts are missing: sudo apt-get install fortunes-min (or pass --corpus)"; exit 1; fi; \
	fi
	$(VENV)/bin/torchrun --standalone --nproc_per_node 2 -m dropkit.cli experts moe-lm --steps 150 --p 0 0.1 0.3
	$(VENV)/bin/dropkit experts soft-tree regression --depths 3 6 9 --p 0 0.05 0.1 --seeds 0 1

clean:
	rm -rf $(VENV) build src/*.egg-info
