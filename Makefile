# ChaosAI: two commands do everything.
#   make run   installs what is missing, builds in release mode, serves http://127.0.0.1:3000
#   make test  installs what tests need and runs every check and test, Playwright included
# Everything is idempotent: a second run only rebuilds what changed.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := $(HOME)/.cargo/bin:$(PATH)

CARGO_LEPTOS_VERSION := 0.3.10
WASM_BINDGEN_VERSION := 0.2.130
# cargo-leptos builds debug artifacts with this cfg; tests and lints use the same
# flags so they reuse those artifacts instead of compiling everything twice.
DEBUG_RUSTFLAGS := --cfg erase_components
# Tests never reach real providers, whatever keys the environment holds.
E2E_DB := $(CURDIR)/target/e2e/chaosai.db

.PHONY: run test bench soak tools models browser e2e-deps e2e clean-data

run: tools models
	cargo leptos serve --release

test: tools models browser e2e-deps
	cargo fmt --check
	cargo leptos build
	RUSTFLAGS="$(DEBUG_RUSTFLAGS)" cargo clippy --features ssr --all-targets -- -D warnings
	RUSTFLAGS="$(DEBUG_RUSTFLAGS)" cargo clippy --lib --no-default-features --features hydrate --target wasm32-unknown-unknown -- -D warnings
	RUSTFLAGS="$(DEBUG_RUSTFLAGS)" cargo test --features ssr
	$(MAKE) --no-print-directory e2e

# Every benchmark (release build): the gateway against direct calls (written to
# bench/RESULTS.md), cache, audit writer, resilience and criterion micro-benches.
# The soak has its own target.
bench: tools models
	cargo bench --features ssr --bench load --bench cache --bench audit --bench resilience --bench micro

# Chaos soak: SOAK_SECONDS (default 300) of steady traffic under random faults.
SOAK_SECONDS ?= 300
soak: tools models
	SOAK_SECONDS=$(SOAK_SECONDS) cargo bench --features ssr --bench soak

# Playwright against the debug build; cargo-leptos starts the server on 127.0.0.1:3000.
e2e: browser e2e-deps
	rm -rf target/e2e && mkdir -p target/e2e
	CHAOSAI_SIMULATE=always CHAOSAI_DATABASE_URL="sqlite://$(E2E_DB)" CHAOSAI_SIM_CHUNK_DELAY_MS=25 \
		CHAOSAI_ADMIN_TOKEN=e2e-admin-token CHAOSAI_BREAKER_OPEN_FOR_MS=2000 \
		cargo leptos end-to-end

# --- installs (each step is skipped when already done) ---

tools:
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	@cargo leptos --version 2>/dev/null | grep -q " $(CARGO_LEPTOS_VERSION)" || \
		cargo install cargo-leptos --locked --version $(CARGO_LEPTOS_VERSION)
	@wasm-bindgen --version 2>/dev/null | grep -q " $(WASM_BINDGEN_VERSION)" || \
		cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION)
	@[ -x node_modules/.bin/wasm-opt ] || npm ci --no-audit --no-fund

models:
	@./scripts/install-models.sh

browser:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

e2e-deps:
	@[ -x end2end/node_modules/.bin/playwright ] || (cd end2end && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)

clean-data:
	rm -rf data target/e2e
