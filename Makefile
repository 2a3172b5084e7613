# p11spy: `make demo` and `make test` are all the set-up a fresh Debian 12 machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHIM := spy/libp11spy.so
REPLAY := spy/libp11spy-replay.so
DECODER := decoder/formats/p11spy/libp11json.so

# Everything the shim build and the tests use: python3-venv makes .venv, python3-dev has Python.h
# for Python packages built from source, libpcsclite-dev has PCSC/ifdhandler.h for the bench's
# PIN-pad reader driver and pcsc-spy, libp11-kit-dev has p11-kit/pkcs11.h for the shim tests' C
# clients, build-essential the C compiler for the tests' small C programs (the shims are built
# with zig's, from the ziglang package in .venv), nodejs runs Perfetto's trace processor (its
# WebAssembly build) for tests/test_export.py, chromium is the browser the HTML report's tests
# drive (playwright, pointed at /usr/bin/chromium).
APT_PACKAGES := softhsm2 opensc opensc-pkcs11 pcscd pcsc-tools libpcsclite1 libpcsclite-dev \
	vsmartcard-vpcd python3-virtualsmartcard gnutls-bin libnss3-tools libengine-pkcs11-openssl \
	openssl openjdk-17-jdk-headless tmux build-essential python3-dev python3-venv \
	libp11-kit-dev qemu-user-static nodejs chromium
# The foreign architectures the shims are built and tested for (Debian's names in testbed/cross.py).
CROSS_ARCHES := s390x aarch64 ppc64le
CROSS_SHIMS := $(foreach a,$(CROSS_ARCHES),spy/$(a)/libp11spy.so)
# (facts/pkcs11/_layout.py is written by the build: shim_build/prebuilt.py)
SHIM_SOURCES := $(filter-out facts/pkcs11/_layout.py, $(wildcard shim_build/*.py facts/*.py \
	facts/pkcs11/*.py spy/*.c spy/*.h decoder/formats/p11spy/*.c decoder/formats/p11spy/*.h))

.PHONY: setup test test-cross bench demo lint clean shim

setup: .stamps/apt $(VENV)/.installed $(SHIM) $(REPLAY) $(DECODER) $(CROSS_SHIMS) .stamps/sysroots

# Install only what is missing, so a second run asks apt nothing. The stamp depends on this
# Makefile, so a package added to the list above is installed by the next make.
.stamps/apt: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@mkdir -p .stamps && echo $(APT_PACKAGES) > $@

$(VENV)/bin/python: | .stamps/apt
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

# The shims are C generated from the PKCS#11 fact tables, compiled as plain shared objects
# against glibc 2.17 with zig's C compiler (shim_build/build.py), with the replay module
# (`p11spy replay`) generated from the same tables, and the compiled decoder of binary traces.
$(SHIM) $(REPLAY) $(DECODER) &: $(VENV)/.installed $(SHIM_SOURCES)
	$(PY) -m shim_build.build

# The same shims for s390x, aarch64 and ppc64le, into spy/<arch>/.
spy/%/libp11spy.so: $(VENV)/.installed $(SHIM_SOURCES)
	$(PY) -m shim_build.build --arch $*

shim: $(SHIM) $(CROSS_SHIMS)

# Debian's SoftHSM2 and its libraries for each foreign architecture, unpacked under
# build/sysroot-<arch> for qemu-user (tests/test_cross.py).
.stamps/sysroots: testbed/cross.py | .stamps/apt $(VENV)/.installed
	@SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); have=$$(dpkg --print-foreign-architectures); \
	added=; for a in s390x arm64 ppc64el; do \
		echo "$$have" | grep -qx $$a || { $$SUDO dpkg --add-architecture $$a; added=1; }; done; \
	if [ -n "$$added" ] || ! apt-cache show libsofthsm2:s390x >/dev/null 2>&1; then \
		$$SUDO apt-get update -qq; fi
	$(PY) -m testbed.cross
	@mkdir -p .stamps && touch $@

test: setup
	$(PY) -m pytest -q

test-cross: setup
	$(PY) -m pytest -q tests/test_cross.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || true

bench: setup
	$(PY) tests/bench/run.py

demo: setup
	$(PY) -m demo

clean:
	rm -rf build dist p11spy.egg-info .stamps spy/libp11spy*.so spy/*/libp11spy*.so spy/_shim_build .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
