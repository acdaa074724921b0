#!/usr/bin/env bash
# Installs what benches/http_load.sh needs from the distribution's packages, when it is
# missing: wrk (the load generator), jq (reads the keys `credstore create --json` prints)
# and taskset (util-linux; pins the servers and wrk to their CPUs). Not part of the test
# suite's dependencies (scripts/install-test-deps.sh): only the load figures of
# docs/PERFORMANCE.md need them. Idempotent: what is installed is skipped.
set -euo pipefail

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v jq >/dev/null || need+=(jq)
command -v taskset >/dev/null || need+=(util-linux)

if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "== installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
