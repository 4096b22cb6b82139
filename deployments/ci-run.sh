#!/usr/bin/env bash
# Run a deployment from CI: a throwaway Prefect server with the deployments and a worker (`ltx2 server`),
# `prefect deployment run ... --watch`, then everything stopped. Exits with the run's status (0 = Completed).
#
#   deployments/ci-run.sh ltx2-pipeline/pipeline --param storage=s3://bucket/ltx2 --param 'stages=["train"]'
#
# Run it from the repository root after `make setup`. PORT (default 4200) and PREFECT_HOME (default: a
# temporary folder, removed afterwards) can be set; LTX2_CI_TIMEOUT bounds the run (seconds, default 7200).
# The server takes only requests that carry its auth string (other jobs on a CI host share its loopback):
# PREFECT_SERVER_API_AUTH_STRING if set, else a random one made for this run; it is never printed.
set -euo pipefail

deployment=${1:?usage: deployments/ci-run.sh DEPLOYMENT [prefect deployment run options...]}
shift
bin=${LTX2_BIN:-.venv/bin}
port=${PORT:-4200}
home_made=""
if [ -z "${PREFECT_HOME:-}" ]; then
  PREFECT_HOME=$(mktemp -d)
  home_made=$PREFECT_HOME
fi
mkdir -p "$PREFECT_HOME"
export PREFECT_HOME
log=$PREFECT_HOME/ltx2-server.log
if [ -z "${PREFECT_SERVER_API_AUTH_STRING:-}" ]; then
  PREFECT_SERVER_API_AUTH_STRING=ci:$("$bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')
fi
export PREFECT_SERVER_API_AUTH_STRING

"$bin/ltx2" server --port "$port" >"$log" 2>&1 &
server=$!
stop() {
  local status=$?  # the run's: what this script exits with, whatever the cleanup returns
  kill "$server" 2>/dev/null && wait "$server" || true  # SIGTERM: ltx2 server stops its worker and server
  if [ -n "$home_made" ]; then rm -rf "$home_made"; fi
  exit "$status"
}
trap stop EXIT

until grep -q "Prefect UI:" "$log"; do  # printed once the deployments and the worker are up
  if ! kill -0 "$server" 2>/dev/null; then cat "$log" >&2; echo "ltx2 server did not start" >&2; exit 1; fi
  sleep 1
done

PREFECT_API_URL=http://127.0.0.1:$port/api PREFECT_API_AUTH_STRING=$PREFECT_SERVER_API_AUTH_STRING \
  "$bin/prefect" deployment run "$deployment" "$@" \
  --watch --watch-interval 5 --watch-timeout "${LTX2_CI_TIMEOUT:-7200}"
