# source bench/device_env.sh -- on the GPU machine, in the repository root, once every part of
# bench/device_bundle.sh has been carried there (.devsite/KofN): unpacks them into /tmp/site once and puts that
# and this checkout on PYTHONPATH.
parts=(.devsite/*of*/part)
want=${parts[0]#.devsite/*of}; want=${want%%/*}
if [ "${#parts[@]}" != "$want" ]; then
  echo "device_env: ${#parts[@]} of $want parts here (${parts[*]}): carry the others first" >&2
  return 1
fi
if [ ! -f /tmp/site/.unpacked ]; then
  mkdir -p /tmp/site && cat $(ls .devsite/*of*/part | sort -V) | xz -d | tar -x -C /tmp/site && touch /tmp/site/.unpacked || return 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
