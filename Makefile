# Every install step lives here: a fresh machine needs python3.11, pip and apt (chromium, bubblewrap).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install lock browser sandbox lint test test-faults bench bench-quick demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# pyproject.toml holds ranges (the client and quantlib install into other environments);
# requirements.lock the exact versions everything here is built and tested with.
$(STAMP): $(PY) pyproject.toml requirements.lock quantlib/quant/_cpu_kernels.c
	$(PY) -m pip install --quiet -c requirements.lock -e '.[worker,test,bench]'
	touch $(STAMP)

install: $(STAMP)

# Rewrite requirements.lock from what is installed: after changing a range in pyproject.toml,
# `pip install -U` the package, run the tests, then `make lock`. Local version labels (+cpu)
# are dropped so the lock serves the CPU wheel here and the CUDA wheel in the worker image.
lock: $(STAMP)
	( echo "# Exact versions for make install and the images: make lock rewrites this file."; \
	  $(PY) -m pip freeze --exclude-editable --all | grep -vE '^(pip|setuptools|wheel)==' | sed -E 's/\+[A-Za-z0-9.]+$$//' ) > requirements.lock

# Debian's headless chromium: tests render report.html in it.
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

# Debian's bubblewrap: the operating-system sandbox every job's child runs in (workers/jail.py).
sandbox:
	command -v bwrap >/dev/null || (apt-get update && apt-get install -y --no-install-recommends bubblewrap)

# The lint and type gate: ruff's rules and formatting (pyproject's [tool.ruff]), mypy's
# checks on quantlib, the service and the workers ([tool.mypy]).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: $(STAMP) browser sandbox lint
	$(PY) -m pytest -q --ignore=tests/faults

# Servers killed and restarted under real jobs: minutes of wall time, so CI runs them as a
# second step (.ci/run) and `make test` stays quick.
test-faults: $(STAMP) sandbox
	$(PY) -m pytest -q tests/faults

bench: $(STAMP)
	$(PY) -m bench

bench-quick: $(STAMP)
	$(PY) -m bench --quick

demo: $(STAMP) sandbox
	$(VENV)/bin/qat demo

clean:
	rm -rf $(VENV) var build *.egg-info
