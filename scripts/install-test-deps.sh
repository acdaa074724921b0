#!/usr/bin/env bash
# Installs what the test suite needs from the distribution's packages, when it is missing:
# PostgreSQL, for the fleet tests (they start a private cluster of their own, as the
# `postgres` user, on a Unix socket in a temporary directory, and stop it).
set -euo pipefail

need=()
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null; then
  need+=(postgresql)
fi
if ! command -v runuser >/dev/null; then
  need+=(util-linux)
fi

if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "== installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
