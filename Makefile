# Two commands on a fresh machine:  `make up`  (install, start the whole stack, run a sample
# diagnosis, keep serving until Ctrl-C)  and  `make test`  (install, run the test suite CI runs).
PYTHON ?= python3.11
VENV   := .venv
SERVICES := common deid preprocess explain gateway receiver
STAMP  := $(VENV)/.installed-$(shell sha256sum requirements.lock pyproject.toml services/*/pyproject.toml 2>/dev/null | sha256sum | cut -c1-12)

.PHONY: install up down status test lint tools clean

$(STAMP):
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	# One resolve of the locked set (torch CPU, nvidia-pytriton, kserve, ray[serve], tritonclient...).
	$(VENV)/bin/python -m pip install -r requirements.lock
	$(VENV)/bin/python -m pip install -q --no-deps -e services/common -e services/deid -e services/preprocess \
	  -e services/explain -e services/gateway -e services/receiver -e .
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

up: install
	@bash scripts/get-tesseract.sh  # deid reads burned-in text with it: not ready without it
	$(VENV)/bin/sightline up --demo

down:
	$(VENV)/bin/sightline down

status:
	$(VENV)/bin/sightline status

tools:  # every scripts/get-*.sh: helm, checkov, promtool, chromium, dcmtk/orthanc, dicom3tools, axe-core, CRD validators, tesseract
	@for s in scripts/get-*.sh; do bash $$s || exit 1; done

test: install tools lint
	$(VENV)/bin/python -m pytest

# Static checks, before any test: lint, types (mypy --strict, [tool.mypy]), the layering
# ([tool.importlinter]), and each service's pyproject declaring exactly what it imports (deptry).
lint: install
	$(VENV)/bin/ruff check services src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	@for s in $(SERVICES); do (cd services/$$s && ../../$(VENV)/bin/deptry . -nb) || exit 1; done

clean:
	-$(VENV)/bin/sightline down
	rm -rf var .cache
