# The two commands of the README, and the rest of the workflow. Every target sets itself up:
# a virtual environment in .venv with a CPU build of torch, the package (editable) and its dev tools.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: run test bench docs readme export clean-venv

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,nlp]"
	touch $(STAMP)

## make run: the main job on a small default that finishes on a CPU, into the ignored runs/local/quick
## (a second call resumes or only redraws), its table beside the committed runs/quick reference
run: $(STAMP)
	$(BIN)/markov-laplace run

## make test: pytest on tests/, nbval on every notebook, and nbdev_export must leave the tree unchanged.
## One pytest worker per core (pytest-xdist; TEST_JOBS=1 for one process), each file whole on one worker (a notebook's
## cells share its kernel), one thread each: on 2 cores pytest took 7 min 42 s so, 14 min 28 s in one process
TEST_JOBS ?= auto
test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
	  -n $(TEST_JOBS) --dist loadfile tests nbs
	$(BIN)/nbdev_export
	@changed="$$(git status --porcelain --untracked-files=all -- markov_laplace)"; \
	if [ -n "$$changed" ]; then echo "nbdev_export changed the package; the notebooks and markov_laplace/ disagree:"; \
	  echo "$$changed"; git --no-pager diff --stat -- markov_laplace; exit 1; fi; \
	echo "nbdev_export: package in sync with the notebooks"

## make bench: the speed targets, as a table
bench: $(STAMP)
	$(BIN)/markov-laplace bench

export: $(STAMP)
	$(BIN)/nbdev_export

## make readme: README.md from nbs/index.ipynb (nbdev_readme with Quarto, our converter without)
readme: $(STAMP)
	@if command -v quarto >/dev/null; then $(BIN)/nbdev_readme; \
	else $(BIN)/python tools/readme.py nbs/index.ipynb README.md; fi

## make docs: the Quarto site in _docs/ (everything up to the render runs without Quarto)
docs: $(STAMP)
	$(BIN)/nbdev_export
	$(BIN)/python tools/prepare_docs.py
	@if command -v quarto >/dev/null; then $(BIN)/nbdev_docs; \
	else echo; echo "Quarto is not installed, so the site was prepared (_proc/) but not rendered."; \
	  echo "Install Quarto >= 1.4 from https://quarto.org/docs/get-started/ (or: $(BIN)/nbdev_install_quarto, which"; \
	  echo "downloads it), then run 'make docs' again: nbdev_docs renders _proc/ into _docs/."; fi

clean-venv:
	rm -rf $(VENV)

## make bench-gpu: on the GPU machine (no make or venv there: this target only runs the command;
## see GPU.md for the setup). Times the samplers, add-β and the training step per backend on CUDA; the
## function-class families at the papers' size (41 and 101 pairs, single and 3 runs batched, compiled with fused AdamW
## as issue 21's runs train) beside the anchors. Longer than one device call: the family and anchor rows go to
## runs/local/bench_gpu.csv as they come, and the same target again on the held machine (.commit carried, see GPU.md)
## does not time the family steps that file holds whole (the Markov rows are measured again).
bench-gpu:
	. tools/gpu_env.sh; python3 -m markov_laplace \
	  bench --device cuda --repeat 50 --backends torch mamba_ssm --runs 8 32 64 --compiled --anchors --fused-optimizer yes \
	  --rows runs/local/bench_gpu.csv --commit "$$(cat .commit 2>/dev/null)"
