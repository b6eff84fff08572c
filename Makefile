# The course's commands. `make lab` to learn, `make test` to check everything (what CI runs).
PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
CHAPTERS := $(sort $(wildcard chapters/[0-9][0-9]_*.py))
NOTEBOOKS := $(CHAPTERS:.py=.ipynb)
WORKERS  ?= 2
LAB_ARGS ?=
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: help install data lab test sync bench clean

help:
	@echo "make lab    install the course into .venv, prepare the data, open JupyterLab on chapters/"
	@echo "            (headless: make lab LAB_ARGS=--no-browser)"
	@echo "make test   install if needed, then unit tests + every chapter under COURSE_PROFILE=ci, offline"
	@echo "make sync   regenerate chapters/*.ipynb (no outputs, cell ids kept) from the chapters/*.py sources"
	@echo "make bench  what each shipped model reaches and how long it took"

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[test]'
	touch $(STAMP)

data: install
	-@.ci/install-fashion-mnist
	$(BIN)/python -m course_lib.data

lab: data
	$(BIN)/jupyter lab --ServerApp.root_dir=chapters $(ROOT_FLAG) $(LAB_ARGS)

test: data
	COURSE_PROFILE=ci OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1 .ci/offline $(BIN)/python -m pytest -n $(WORKERS) --dist loadfile \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=300 --durations=10 tests $(NOTEBOOKS)

sync: install
	$(BIN)/jupytext --update --to ipynb $(CHAPTERS)
	$(BIN)/jupyter nbconvert --log-level=WARN --clear-output --inplace $(NOTEBOOKS)

bench: install
	$(BIN)/python -m course_lib.bench

clean:
	rm -rf $(VENV) .pytest_cache artifacts
