# Every install step lives here: a fresh machine needs only python3.11 and pip.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install browser test test-faults bench bench-quick demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml quantlib/quant/_cpu_kernels.c
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

# Debian's headless chromium: tests render report.html in it (the one step beyond pip).
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

test: $(STAMP) browser
	$(PY) -m pytest -q --ignore=tests/faults

# Servers killed and restarted under real jobs: minutes of wall time, so CI runs them as a
# second step (.ci/run) and `make test` stays quick.
test-faults: $(STAMP)
	$(PY) -m pytest -q tests/faults

bench: $(STAMP)
	$(PY) -m bench

bench-quick: $(STAMP)
	$(PY) -m bench --quick

demo: $(STAMP)
	$(VENV)/bin/qat demo

clean:
	rm -rf $(VENV) var build *.egg-info
