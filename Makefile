# SMPP gateway platform: entry points. `make demo` and `make test` are the two that matter;
# the rest are steps of them. Scripts live in e2e/scripts/ (see README.md, "Development").
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The cargo target dir: outside the clone and one per clone, kept between runs of the same
# clone (e2e/scripts/cargo-target-dir.sh says why). .ci/run shares one across CI's fresh clones.
ifeq ($(origin CARGO_TARGET_DIR),undefined)
export CARGO_TARGET_DIR := $(shell $(CURDIR)/e2e/scripts/cargo-target-dir.sh)
endif

.PHONY: help demo test bench env-up env-down build fmt lint crds controlplane prereqs images

help:
	@echo "make demo      bring up the whole stack locally and show it working"
	@echo "make test      everything CI runs (fmt, clippy, build, real-parts tests)"
	@echo "make bench     the benchmarks"
	@echo "make env-up    start control plane, PostgreSQL, Redis, SMSC simulator; writes target/env.sh"
	@echo "make env-down  stop everything env-up started"
	@echo "make images    build the smpp-gateway and smpp-operator container images (buildah, FROM scratch)"
	@echo "make build | fmt | lint | crds | controlplane | prereqs"

demo:
	@e2e/scripts/demo.sh

test:
	@e2e/scripts/test.sh

bench:
	@e2e/scripts/bench.sh

env-up:
	@e2e/scripts/env-up.sh

env-down:
	@e2e/scripts/env-down.sh

prereqs:
	@e2e/scripts/prereqs.sh

controlplane:
	@e2e/controlplane/build.sh

images:
	@deploy/images/build.sh

build:
	cargo build --workspace --bins

fmt:
	cargo fmt --all

lint:
	cargo fmt --all --check
	shellcheck -x -P SCRIPTDIR -S warning e2e/scripts/*.sh e2e/controlplane/*.sh deploy/images/*.sh .ci/run
	cargo clippy --workspace --all-targets -- -D warnings

# Regenerates the checked-in CRD YAML from the Rust types, its copy in the chart and
# crds/rbac.yaml from the chart (tests fail when any is stale).
crds:
	@e2e/scripts/crds.sh
