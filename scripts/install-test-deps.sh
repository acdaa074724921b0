#!/usr/bin/env bash
# Installs what the test suite needs from the distribution's packages, when it is missing:
# - PostgreSQL, for the fleet tests (they start a private cluster of their own, as the
#   `postgres` user, on a Unix socket in a temporary directory, and stop it);
# - nginx, for tests/gateway_nginx.rs (it starts its own nginx with a generated
#   configuration on free loopback ports, in the foreground, and kills it);
# - python3, for tests/python_client.rs (the Python client's unittest suite, standard
#   library only: no pip packages);
# - chromium and chromium-driver, for tests/dashboard_browser.rs (it starts chromedriver
#   on a free loopback port and drives headless Chromium through the customers' dashboard).
# Idempotent: what is installed is skipped. Nothing is started as a system service.
set -euo pipefail

need=()
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null; then
  need+=(postgresql)
fi
if ! command -v runuser >/dev/null; then
  need+=(util-linux)
fi
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  # The package of that name is nginx itself on Debian 12 and later (with auth_request).
  need+=(nginx)
fi
if ! command -v python3 >/dev/null; then
  need+=(python3)
fi
if ! command -v chromium >/dev/null; then
  need+=(chromium)
fi
if ! command -v chromedriver >/dev/null; then
  need+=(chromium-driver)
fi

if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  # The packages' maintainer scripts start their services unless policy-rc.d says no
  # (exit 101). Ours is put there only when there is none, and removed afterwards.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# credstore install-test-deps.sh: no service starts during the install.\nexit 101\n' |
      $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    trap '$sudo rm -f "$policy"' EXIT
  fi
  echo "== installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
