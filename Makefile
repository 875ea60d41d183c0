# The two commands of the README:
#   make run    set up and run the daemon on its built-in defaults
#   make test   set up and run every check (ruff, mypy, import contracts, pytest)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test check lint typecheck pytest docker images test-tools bench clean

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "lightd needs Python 3.11 or newer")'
	@$(PYTHON) -m venv $(VENV) || { \
	  echo "python venv support missing; installing python3-venv" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && \
	  $(PYTHON) -m venv $(VENV); }

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

docker:
	@./deploy/ensure-docker.sh

images: docker
	@./tests/images/build.sh

# What the tests drive besides Python packages, from Debian's packages where missing:
# OpenSSH's sftp client and sftp-server (SFTP), restic and e2fsprogs (backups, loop file
# systems), Chromium (the web console's browser tests).
test-tools:
	@./deploy/ensure-test-tools.sh
	@./deploy/ensure-backup-tools.sh
	@./deploy/ensure-chromium.sh
	@./deploy/ensure-disk-tools.sh

run: $(STAMP) docker
	$(VENV)/bin/lightd serve $(if $(CONFIG),--config $(CONFIG),)

lint: $(STAMP)
	$(VENV)/bin/ruff check lightd tests bench
	$(VENV)/bin/ruff format --check lightd tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# make test includes the test that restarts dockerd (it runs last).
pytest: $(STAMP) images test-tools
	LIGHTD_TEST_RESTART_ENGINE=1 $(VENV)/bin/pytest $(PYTEST_ARGS)

test: $(STAMP) images test-tools lint typecheck pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
