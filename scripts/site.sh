#!/usr/bin/env bash
# Builds what cargo-leptos would build, with cargo and the wasm-bindgen CLI directly,
# so a fresh machine need not compile cargo-leptos (20+ minutes on 2 cores) first:
#   - the browser half: the lib for wasm32 with `hydrate`, bound by wasm-bindgen into
#     target/site/pkg/chaosai.js + chaosai_bg.wasm (release: shrunk by wasm-opt);
#   - the stylesheet and static assets into target/site;
#   - the server binary with `ssr`.
# `cargo leptos watch` keeps working for development: the metadata in Cargo.toml and
# Leptos.toml is unchanged, and the server finds the site where cargo-leptos puts it.
#
# usage: scripts/site.sh debug|release
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mode="${1:-debug}"
site=target/site
pkg="$site/pkg"

case "$mode" in
  debug)
    wasm_profile=(--profile dev)
    wasm_dir=debug
    server_profile=()
    ;;
  release)
    wasm_profile=(--profile wasm-release)
    wasm_dir=wasm-release
    server_profile=(--release)
    ;;
  *)
    echo "usage: $0 debug|release" >&2
    exit 2
    ;;
esac

# LEPTOS_OUTPUT_NAME must not be set at compile time: with it, Leptos expects the
# renamed `chaosai.wasm` cargo-leptos writes; without it, wasm-bindgen's own
# `chaosai_bg.wasm`, which is what this script produces.
unset LEPTOS_OUTPUT_NAME

cargo build --lib --target wasm32-unknown-unknown --no-default-features --features hydrate "${wasm_profile[@]}"
mkdir -p "$pkg"
wasm="target/wasm32-unknown-unknown/$wasm_dir/chaosai.wasm"
# The bundle is bound (and shrunk) again only when cargo wrote a new .wasm or the
# mode changed: wasm-opt alone takes about 40 s, which every `make run` paid even
# when nothing had changed.
stamp="$pkg/.built-from"
source_id="$mode $(stat -c '%Y %s' "$wasm")"
opt=
trap '[ -z "$opt" ] || kill "$opt" 2>/dev/null || true' EXIT
if [ "$(cat "$stamp" 2>/dev/null)" != "$source_id" ]; then
  rm -f "$stamp"
  wasm-bindgen --target web --no-typescript --out-dir "$pkg" --out-name chaosai "$wasm"
  if [ "$mode" = release ]; then
    # Binaryen from npm (Debian's is too old and breaks hydration). The features are
    # the ones rustc enables for wasm32 by default. It runs beside the server's build
    # below instead of before it: it keeps one core busy for about 40 s, and the
    # build's own crate leaves a core idle for part of its time.
    (
      node_modules/.bin/wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
        --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
        -o "$pkg/chaosai_bg.wasm.opt" "$pkg/chaosai_bg.wasm"
      mv "$pkg/chaosai_bg.wasm.opt" "$pkg/chaosai_bg.wasm"
      echo "$source_id" >"$stamp"
    ) &
    opt=$!
  else
    echo "$source_id" >"$stamp"
  fi
fi
cp style/main.css "$pkg/chaosai.css"
cp -r public/. "$site/"

cargo build --bin chaosai --no-default-features --features ssr "${server_profile[@]}"
if [ -n "$opt" ]; then
  wait "$opt"
  opt=
fi
