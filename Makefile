# ChaosAI: two commands do everything.
#   make run   installs what is missing, builds in release mode, serves http://127.0.0.1:3000
#   make test  installs what tests need and runs every check and test, Playwright included
# Everything is idempotent: a second run only rebuilds what changed.
#
# The site is built with cargo and the wasm-bindgen CLI directly (scripts/site.sh),
# not cargo-leptos: a fresh machine saves the 20+ minutes cargo-leptos takes to
# compile. `cargo leptos watch` still works for development if you install it.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := $(HOME)/.cargo/bin:$(PATH)

WASM_BINDGEN_VERSION := 0.2.130

.PHONY: run test check rust-test bench soak tools node models browser engines balancer loadgen cluster e2e-deps e2e site-debug site-release clean-data

run: tools models site-release
	LEPTOS_SITE_ROOT=target/site LEPTOS_OUTPUT_NAME=chaosai target/release/chaosai

test: tools models browser engines e2e-deps
	cargo fmt --check
	./scripts/site.sh debug
	cargo clippy --features ssr --all-targets -- -D warnings
	cargo clippy --lib --no-default-features --features hydrate --target wasm32-unknown-unknown -- -D warnings
	cargo test --features ssr
	./scripts/e2e.sh

# Every benchmark (release build): the gateway against direct calls (written to
# bench/RESULTS.md, with a wrk run at concurrency 64), cache, audit writer,
# resilience, criterion micro-benches, the cluster's cost of sharing
# (bench/CLUSTER.md) and instructions per request under callgrind
# (bench/INSTRUCTIONS.md).
# The soak has its own target.
bench: tools models engines balancer loadgen
	cargo bench --features ssr --bench load --bench cache --bench audit --bench resilience --bench micro --bench cluster --bench instructions

# Replicas: PostgreSQL, Redis, REPLICAS (default 2) gateways and nginx in front on
# http://127.0.0.1:3000, data in .cluster/ (scripts/cluster.sh).
REPLICAS ?= 2
cluster: tools models engines balancer site-release
	REPLICAS=$(REPLICAS) ./scripts/cluster.sh

# Chaos soak: SOAK_SECONDS (default 300) of steady traffic under random faults.
SOAK_SECONDS ?= 300
soak: tools models
	SOAK_SECONDS=$(SOAK_SECONDS) cargo bench --features ssr --bench soak

site-debug: tools
	./scripts/site.sh debug

site-release: tools
	./scripts/site.sh release

# Playwright against the debug build (server on a free loopback port).
e2e: browser e2e-deps site-debug
	./scripts/e2e.sh

# --- installs (each step is skipped when already done) ---

# wasm-bindgen-cli: only the `wasm-bindgen` binary, without its test runner's TLS
# stack (the default `rustls-tls` feature, ring's C included), in the dev profile:
# 84 s to install instead of 182 s (release, same features) on the Intel machine,
# and its output is byte for byte the same; it runs in 2.7 s instead of 0.6 s on the
# release bundle and 7.4 s instead of 1.2 s on the debug one.
tools: node
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	@wasm-bindgen --version 2>/dev/null | grep -q " $(WASM_BINDGEN_VERSION)" || \
		cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --no-default-features --debug --bin wasm-bindgen
	@[ -x node_modules/.bin/wasm-opt ] || npm ci --no-audit --no-fund

models:
	@./scripts/install-models.sh

# Node runs wasm-opt (npm), Playwright and the OpenAI SDK test; Debian's is enough.
node:
	@command -v npm >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm; }

browser:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

# PostgreSQL and Redis from Debian: the cluster tests start their own servers
# in temporary directories; `make cluster` runs them from .cluster/.
engines:
	@{ ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v redis-server >/dev/null; } || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql redis-server; }

balancer:
	@command -v nginx >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nginx-light; }

# wrk (the benches' load generator at concurrency 64) and valgrind (callgrind's
# instruction counts) from Debian.
loadgen:
	@{ command -v wrk >/dev/null && command -v valgrind >/dev/null; } || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk valgrind; }

e2e-deps:
	@[ -x end2end/node_modules/.bin/playwright ] || (cd end2end && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)

clean-data:
	rm -rf data target/e2e
