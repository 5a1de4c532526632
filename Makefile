# Every target does its own set-up, so both commands work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit integration bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[pipeline,otel,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/evalstream demo

# pytest exits 5 when it collected nothing: a suite that runs no test is a broken suite.
# TEST_WORKERS test processes (pytest-xdist; 0 runs in one process). Each test starts its own broker. Three on two
# cores: integration tests mostly wait (group joins, quiet periods), and two left the cores half idle.
TEST_WORKERS ?= 3
test: $(STAMP)
	@$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

bench: $(STAMP)
	$(PY) bench/e2e_throughput.py

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline scorers tests bench

clean:
	rm -rf $(VENV) .evalstream
