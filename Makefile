# make run    install into .venv and run chatd in the foreground on 127.0.0.1:5555 (state in .state/)
# make test   install into .venv with the test extra, lint with ruff and run the test suite (the
#             soak runs its short CI profile there: CI_SOAK_SECONDS, 15)
# make fuzz   the fuzz targets, long and randomised (not in CI)
# make soak   the soak test for CHATD_SOAK_SECONDS (default 600; not in CI)
# make bench  benchmark chatd against ngircd and a naive server (bench/README.md; about 25 min)
# make bench-quick  the same with small counts, one run (a smoke test, ~2 min)
# make clean  remove .venv and caches
#
# The stamps live inside .venv, so deleting .venv forgets them; they depend on pyproject.toml,
# so changing the dependencies re-installs on the next run.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check
PYTEST_ARGS ?=
# make test runs the suite in this many pytest-xdist workers, a test file to a worker (each
# test starts its own chatd on its own ports and state directory, so files do not share
# anything): pytest 261-328 s on two cores against 553 s in one process, measured the same
# day on the same machine (README, Development).
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

CHATD_SOAK_SECONDS ?= 600
# The soak inside make test: long enough to churn ~30,000 connections, short enough for CI.
CI_SOAK_SECONDS ?= 15
BENCH_ARGS ?=

.PHONY: run test fuzz soak clean tools bench bench-quick

# Its state (bans, history) stays in the checkout (.state/, git-ignored): never the user's
# default state directory, whose history a chatd run before (as root, say) would replay.
run: $(VENV)/.stamp-run
	$(BIN)/chatd --host 127.0.0.1 --port 5555 --state-dir $(CURDIR)/.state

test: $(VENV)/.stamp-test tools
	$(BIN)/ruff check chatd chatctl chat tests bench
	CHATD_SOAK_SECONDS=$(CI_SOAK_SECONDS) $(BIN)/python -m pytest -n $(TEST_WORKERS) \
	    --dist loadfile $(PYTEST_ARGS)

# CHATD_FUZZ=long: thousands of inputs per target instead of hundreds, and a different random
# sequence each run (make test is derandomized, so CI always tries the same inputs).
fuzz: $(VENV)/.stamp-test
	CHATD_FUZZ=long $(BIN)/python -m pytest tests/live/test_fuzz.py \
	    --hypothesis-show-statistics --timeout=0 $(PYTEST_ARGS)

soak: $(VENV)/.stamp-test
	CHATD_SOAK_SECONDS=$(CHATD_SOAK_SECONDS) $(BIN)/python -m pytest tests/live/test_soak.py \
	    -m slow $(PYTEST_ARGS)

# Debian's own python3 needs the python3-venv package for `-m venv`; install it when we can.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { \
	    [ "$$(id -u)" = 0 ] && rm -rf $(VENV) && \
	    export DEBIAN_FRONTEND=noninteractive && \
	    { apt-get install -y -qq python3-venv >/dev/null || \
	      { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }; } && \
	    $(PYTHON) -m venv $(VENV); }

$(VENV)/.stamp-run: pyproject.toml | $(BIN)/python
	$(PIP) -e .
	touch $@

# The test install is a superset of the run install, so it satisfies `make run` too.
$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test]'
	touch $@ $(VENV)/.stamp-run

# The end-to-end tests drive chatd with the clients a user would: netcat (nc), telnet, and ncat
# and openssl for TLS; the unit-file tests need systemd-analyze; the cluster tests start their
# own redis-server processes; the metrics tests check etc/prometheus/ with promtool. As root, the
# missing ones are installed (command:Debian package); otherwise, or if that fails, a test that
# needs one skips and names the package. A policy-rc.d that answers 101 keeps apt from starting
# (or enabling) a system redis-server on port 6379 or prometheus on 9090 while installing: the
# tests never use the system services.
TOOLS := nc:netcat-openbsd ncat:ncat openssl:openssl systemd-analyze:systemd telnet:telnet socat:socat \
    redis-server:redis-server promtool:prometheus ii:ii sic:sic \
    weechat-headless:weechat-headless irssi:irssi tmux:tmux

tools:
	@missing=""; for pair in $(TOOLS); do \
	    command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
	    echo "make: installing$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    policy=/usr/sbin/policy-rc.d; made_policy=; \
	    if [ ! -e $$policy ]; then \
	        printf '#!/bin/sh\nexit 101\n' > $$policy && chmod 755 $$policy && made_policy=1; \
	    fi; \
	    apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null && apt-get install -y -qq $$missing >/dev/null; } || \
	    echo "make: warning: could not install$$missing" >&2; \
	    [ -z "$$made_policy" ] || rm -f $$policy; \
	    case "$$missing" in *redis-server*) [ ! -d /run/systemd/system ] || \
	        systemctl disable --now redis-server >/dev/null 2>&1 || true;; esac; \
	    case "$$missing" in *prometheus*) [ ! -d /run/systemd/system ] || \
	        systemctl disable --now prometheus >/dev/null 2>&1 || true;; esac; \
	fi

# The benchmark needs ngircd (Debian's package, installed as root without starting a service);
# pass options with e.g. make bench BENCH_ARGS='--servers chatd,ngircd --workloads fanout'.
bench: $(VENV)/.stamp-run
	@sh bench/install-deb.sh ngircd ngircd "the benchmark will skip it"
	@sh bench/install-deb.sh redis-server redis-server "chatd-cluster will be skipped"
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(VENV)/.stamp-run
	@sh bench/install-deb.sh ngircd ngircd "the benchmark will skip it"
	@sh bench/install-deb.sh redis-server redis-server "chatd-cluster will be skipped"
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
