# The course's commands. `make lab` to learn, `make test` to check everything (what CI runs).
PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
CHAPTERS := $(sort $(wildcard chapters/[0-9][0-9]_*.py))
NOTEBOOKS := $(CHAPTERS:.py=.ipynb)
STUDENT_OUT ?= student
# make test-browser runs the student notebooks from here, never from student/ (a learner's work)
STUDENT_CI := build/student-ci
WORKERS  ?= 2
LAB_ARGS ?=
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: help install data lab test test-browser sync bench clean student time hub hub-install hub-course hub-users test-hub

help:
	@echo "make lab    install the course into .venv, prepare the data, open JupyterLab on chapters/"
	@echo "            (headless: make lab LAB_ARGS=--no-browser)"
	@echo "make test   install if needed, then unit tests + every chapter under COURSE_PROFILE=ci, offline"
	@echo "make sync   regenerate chapters/*.ipynb (no outputs, cell ids kept) from the chapters/*.py sources"
	@echo "make bench  what each shipped model reaches and how long it took"
	@echo "make time   run each chapter top to bottom and record its time (PROFILE=ci|cpu, CHAPTERS=chapters/08_vae.ipynb)"
	@echo "make test-browser  every chapter run in JupyterLab in headless Chromium (screenshots in artifacts/browser/)"
	@echo "make hub    a JupyterHub for a study group on this machine (make hub-users USERS=\"ana ben\" LEADERS=lea first)"
	@echo "make test-hub  start the hub with two learners and check it (root; screenshots in artifacts/hub/)"
	@echo "make student  write student/NN_slug.ipynb: each chapter with its exercise solutions replaced by stubs"
	@echo "            (never overwrites a notebook you edited: it stops instead; STUDENT_OUT=my_work writes"
	@echo "            elsewhere, FORCE=1 replaces edited ones after copying each to NN_slug.ipynb.bak)"

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
		--nbval-lax --nbval-current-env --nbval-cell-timeout=300 --durations=10 --ignore=tests/browser --ignore=tests/hub tests $(NOTEBOOKS)

sync: install
	$(BIN)/jupytext --update --to ipynb $(CHAPTERS)
	$(BIN)/jupyter nbconvert --log-level=WARN --clear-output --inplace $(NOTEBOOKS)

# Every chapter in a real JupyterLab, driven by Playwright in Debian's Chromium (installed here when
# absent and we are root). Offline like `make test`; the server is started and stopped by the tests.
BROWSER_STAMP := $(VENV)/.browser-installed
CHROMIUM := /usr/bin/chromium

$(BROWSER_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[test,browser]'
	touch $(BROWSER_STAMP)

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "Chromium is missing: run 'sudo apt-get install chromium' (Debian/Ubuntu) and try again" >&2; exit 1; fi

test-browser: data $(BROWSER_STAMP) $(CHROMIUM)
	rm -rf $(STUDENT_CI)  # never a learner's work: a fresh copy each run
	$(BIN)/python -m course_lib.tools.student --quiet --out $(STUDENT_CI)
	COURSE_BROWSER_TESTS=1 COURSE_BROWSER_CHAPTERS=$(STUDENT_CI) COURSE_PROFILE=ci OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1 .ci/offline \
		$(BIN)/python -m pytest -n $(WORKERS) --dist load --durations=5 tests/browser

# A JupyterHub for a study group on one machine (README, "A shared JupyterHub"), installed where every learner's
# account can read it (HUB_HOME, like any server software: not in someone's checkout, and from a Python every account
# can run, where the course's .venv may live in root's home), with configurable-http-proxy from npm.
HUB_HOME    ?= /opt/course-hub
HUB_PYTHON  ?= /usr/bin/python3
HUB_VENV    := $(HUB_HOME)/venv
HUB_STAMP   := $(HUB_VENV)/.installed
CHP_VERSION := 5.3.0
USERS       ?=
LEADERS     ?=
HUB_ENV     := COURSE_HUB_HOME=$(HUB_HOME)

$(HUB_STAMP): pyproject.toml constraints-hub.txt
	test -x $(HUB_VENV)/bin/python || $(HUB_PYTHON) -m venv $(HUB_VENV)
	$(HUB_VENV)/bin/python -m pip install --quiet --upgrade 'pip>=24'
	$(HUB_VENV)/bin/python -m pip install --quiet --constraint constraints-hub.txt '.[hub]'
	npm install --prefix $(HUB_HOME) --no-audit --no-fund --silent configurable-http-proxy@$(CHP_VERSION)
	touch $@

hub-install: $(HUB_STAMP)

# The course as it is now: course_lib (with its data and checkpoints), the student notebooks each learner gets a
# copy of in ~/course (a learner's own copy is never replaced), the chapters, read-only (without the facilitator
# notes), nbgrader's source versions for a leader to copy (README, "Exercises through nbgrader"), nbgrader's settings
# and its exchange folder (mode 1777, never emptied here: it holds the learners' submissions).
hub-course: install $(HUB_STAMP)
	$(HUB_VENV)/bin/python -m pip install --quiet --no-deps --force-reinstall .
	rm -rf $(HUB_HOME)/student $(HUB_HOME)/chapters $(HUB_HOME)/nbgrader
	$(BIN)/python -m course_lib.tools.student --quiet --out $(HUB_HOME)/student --chapters-link chapters-read-only
	$(BIN)/python -m course_lib.tools.student --quiet --nbgrader-source $(HUB_HOME)/nbgrader --chapters-link ../chapters-read-only
	mkdir -p $(HUB_HOME)/chapters $(HUB_HOME)/state $(HUB_VENV)/etc/jupyter $(HUB_HOME)/exchange
	cp chapters/*.ipynb chapters/glossary.md $(HUB_HOME)/chapters/
	cp course_lib/tools/hub/nbgrader_config.py $(HUB_VENV)/etc/jupyter/nbgrader_config.py
	find $(HUB_HOME) -path $(HUB_HOME)/exchange -prune -o -exec chmod a+rX,go-w {} +
	chmod 700 $(HUB_HOME)/state && chmod 1777 $(HUB_HOME)/exchange

hub: data hub-course
	cd $(HUB_HOME)/state && $(HUB_ENV) $(HUB_VENV)/bin/jupyterhub -f $(CURDIR)/course_lib/tools/hub/jupyterhub_config.py

hub-users: install
	$(BIN)/python -m course_lib.tools.hub.users add $(USERS) $(if $(LEADERS),--leaders $(LEADERS))

test-hub: data hub-course $(BROWSER_STAMP) $(CHROMIUM)
	COURSE_HUB_TESTS=1 $(HUB_ENV) .ci/offline $(BIN)/python -m pytest -q --durations=5 tests/hub

bench: install
	$(BIN)/python -m course_lib.zoo bench
	$(BIN)/python -m course_lib.zoo bench --throughput

# How long each chapter takes under a profile; writes the chapter's table, its notebook metadata and the README row.
PROFILE ?= ci
time: install
	OMP_WAIT_POLICY=PASSIVE .ci/offline $(BIN)/python -m course_lib.tools.timing --profile $(PROFILE) $(if $(KEEP),--keep $(KEEP)) $(CHAPTERS)

student: install
	$(BIN)/python -m course_lib.tools.student --out $(STUDENT_OUT) $(if $(filter-out 0,$(FORCE)),--force,)

clean:
	rm -rf $(VENV) .pytest_cache artifacts
