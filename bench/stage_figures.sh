#!/usr/bin/env bash
# Stage figures on the GPU machine (issue #18): `ltx2 rehearse` of bench/rehearsal/config.json (768x512x121,
# selective recompute + compiled blocks, no LoRA dropout: train_bench's rows have none) for each flavour, and in
# the same call the library benchmarks the stages are compared with (train_bench's row of the same options,
# cache_bench's VAE and text parts). Writes JSON to $OUT.
#
#   source bench/device_env.sh && bash bench/stage_figures.sh [CLIPS] [STEPS] [FLAVOURS]   (default 64 40 "2.0 2.3")
#
# The dependencies come as bench/device_bundle.sh's parts, one `run` call each while the machine stays warm: carry
# .devsite/1of3 with the command `source bench/device_env.sh`, then 2of3, then .devsite/s3 (for the S3 split:
# bench/s3_rehearsal.py runs when LTX2_WEED is set), then 3of3 with the line above. Mind the call's 10 minutes.
#
# CLIPS synthetic clips per flavour (the same clips serve both: they are written once under /tmp/rehearsal-clips),
# STEPS train steps (s/step is their median after the first 2). A flavour's run takes ~4-6 min on an H100.
# TINY=1: the tiny-random model and the benchmarks' --tiny, on the CPU (a smoke test of this script). DASK=1: then
# bench/dask_bench.py with 1, 2 and 4 workers, 3 rounds (FLAVOURS="" for the Dask rows alone). PARTS (default
# "rehearse s3 bench"; "row" is bench's train row alone, "loop" bench/text_encode_loop_bench.py) picks what runs
# per flavour, to fit one part in a call's 10 minutes. SHAPE (default 768x512x121, or 512x512x49) picks the clips'
# shape, the train row of the same shape and the files' suffix.
set -uo pipefail
clips=${1:-64}
steps=${2:-40}
flavours=${3-"2.0 2.3"}  # "" for none (the Dask rows alone)
parts=" ${PARTS:-rehearse s3 bench} "
out=${OUT:-/tmp/stage-figures}
# The train stage expands captions once, parks the audio stream of a video-only run and trains a float32 LoRA: the
# row that does the same (without the first two 2.3's row is out of memory on an 80 GB H100: 2026-12-07).
shape=${SHAPE:-768x512x121}
case $shape in
  768x512x121) backend=bench/rehearsal/multidatabackend.json aspect=3:2 size=768 tag="" ;;
  512x512x49) backend=bench/rehearsal/multidatabackend-512x512x49.json aspect=1:1 size=512 tag=-512x512x49 ;;
  *) echo "stage_figures.sh: SHAPE is 768x512x121 or 512x512x49, not $shape" >&2; exit 2 ;;
esac
row=${TRAIN_ROW:-ours-sac-compile-park-precap-$size}
model=random tiny=()
if [ "${TINY:-0}" = 1 ]; then model=tiny-random tiny=(--tiny); fi
mkdir -p "$out"
for flavour in $flavours; do
  config=/tmp/rehearsal-config-$flavour.json
  sed "s/\"model_flavour\": \"2.0\"/\"model_flavour\": \"$flavour\"/" bench/rehearsal/config.json >"$config"
  if [[ $parts == *" rehearse "* ]]; then
    python3 -m flows.cli rehearse --config "$config" --databackend "$backend" --aspect "$aspect" \
      --model "$model" --clips "$clips" --steps "$steps" --keep "/tmp/rehearsal-$flavour$tag" \
      --json "$out/rehearse-$flavour$tag.json" -v 2>&1 | tee "$out/rehearse-$flavour$tag.log"  # -v: shard timelines
  fi
  # the cache-on-A / train-on-B split: the same rehearsal with its store on S3
  if [[ $parts == *" s3 "* ]] && [ -n "${LTX2_WEED:-}" ]; then
    python3 bench/s3_rehearsal.py --config "$config" --databackend "$backend" --aspect "$aspect" \
      --model "$model" --clips "$clips" --steps "$steps" --json "$out/rehearse-s3-$flavour$tag.json" \
      2>&1 | tee "$out/rehearse-s3-$flavour$tag.log"
  fi
  if [[ $parts == *" bench "* || $parts == *" row "* ]]; then
    python3 bench/train_bench.py "${tiny[@]}" --flavour "$flavour" --rows "$row" --steps 10 --no-flops \
      >"$out/train-bench-$flavour$tag.log" 2>&1  # its JSON goes to $OUT itself
  fi
  if [[ $parts == *" bench "* ]]; then
    python3 bench/cache_bench.py "${tiny[@]}" --flavour "$flavour" --parts vae,text \
      >"$out/cache-bench-$flavour.log" 2>&1
  fi
  if [[ $parts == *" loop "* ]]; then  # the text-embeds stage's loop in a bare process, KV cache off and on
    python3 bench/text_encode_loop_bench.py "${tiny[@]}" --flavour "$flavour" \
      --out "$out/text-encode-loop-$flavour.json" >"$out/text-encode-loop-$flavour.log" 2>&1
  fi
done
if [ "${DASK:-0}" = 1 ]; then  # the cache stages over 1, 2 and 4 local CPU workers (issue #18's Dask rows)
  python3 bench/dask_bench.py --workers 1,2,4 --repeats 3 --out "$out/dask-$(nproc)cpu.json" 2>&1 \
    | tee "$out/dask.log"
fi
ls -la "$out"
