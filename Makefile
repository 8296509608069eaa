# ferry: make demo | make test | make bench   (run as root on Debian)
SHELL := /bin/bash
NODE := $(shell if [ -x /opt/ferry/node/bin/node ]; then echo /opt/ferry/node/bin/node; else echo node; fi)
NODE_TEST := $(NODE) --no-warnings --test --test-reporter=spec
export PATH := /opt/ferry/node/bin:$(PATH)

.PHONY: all setup qemu deps test unit integration typecheck lint demo bench bench-archive conformance clean-testbeds proto dist fmt

all: setup

setup: node_modules/.ferry-stamp
	@bash scripts/setup.sh all
	@ln -sf $(CURDIR)/bin/ferry /usr/local/bin/ferry

node_modules/.ferry-stamp: package.json package-lock.json
	@bash scripts/setup.sh node
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# src/web/ is the browser's code (DOM types, JSX): its own project, checked beside the rest
typecheck: setup
	$(NODE) node_modules/typescript/bin/tsc --noEmit -p .
	$(NODE) node_modules/typescript/bin/tsc --noEmit -p src/web

lint: setup
	node_modules/.bin/biome check src test $(wildcard bench)

# The layering of src/ (.dependency-cruiser.cjs): imports only from the own folder or a lower layer, no cycles.
# There are no exceptions: an import that breaks the rule is fixed, not listed.
DEPCRUISE := node_modules/.bin/depcruise --config .dependency-cruiser.cjs src test bench

deps: setup
	$(DEPCRUISE) --output-type err

unit: setup
	$(NODE_TEST) 'src/**/*.test.ts' 'test/*.test.ts'

integration: setup qemu
	$(NODE_TEST) --test-concurrency=2 --test-timeout=600000 'test/integration/*.test.ts'

test: setup qemu
	$(NODE) node_modules/typescript/bin/tsc --noEmit -p .
	$(NODE) node_modules/typescript/bin/tsc --noEmit -p src/web
	node_modules/.bin/biome check src test $(wildcard bench)
	$(DEPCRUISE) --output-type err
	# two test files at a time: unit tests mostly wait on child processes; each integration file brings up its own
	# testbed (its own name and subnet, so two never meet) and mostly waits on migrations, so one file alone keeps
	# the two cores about half busy. No test asserts a timing, so the other file's load changes no outcome.
	$(NODE_TEST) --test-concurrency=2 --test-timeout=600000 'src/**/*.test.ts' 'test/*.test.ts'
	$(NODE_TEST) --test-concurrency=2 --test-timeout=600000 'test/integration/*.test.ts'

demo: setup
	bin/ferry demo

# QEMU and a Debian kernel for the vm suite: `ferry bench vm` needs them, and so does its smoke run in the
# integration tests (about 85 MB to download; a check that finds them costs nothing). After setup: QEMU's libnl
# must be the version CRIU's install brought in.
qemu: setup
	@bash scripts/setup.sh qemu

# the switchover suite measures Podman beside ferry: Podman 5 is installed for it
bench: setup qemu
	@bash scripts/setup.sh podman
	bin/ferry bench all

# checkpoint archives, ferry against Podman 5 (make test never needs Podman)
bench-archive: setup
	@bash scripts/setup.sh podman
	bin/ferry bench archive

# CRIU's zdtm static tests in ferry containers, every strategy; rewrites docs/conformance.md
conformance: setup
	bin/ferry bench zdtm

clean-testbeds:
	bin/ferry testbed down --all

fmt:
	node_modules/.bin/biome check --write src test $(wildcard bench)

# One executable file with Node and ferry inside, for hosts without Node (Node's single executable applications).
dist: node_modules/.ferry-stamp
	bash scripts/dist.sh dist/ferry-linux-x64

# The decoders of CRIU's images (src/images/gen/), generated from CRIU's .proto files in src/images/proto/.
proto: setup
	bash scripts/gen-criu-proto.sh
