#!/usr/bin/env bash
# The HTTP layer under load (issue 7; figures in docs/PERFORMANCE.md, "The HTTP layer
# under load"): requests per second through `ApiKeyLayer` against the same server
# without it, measured with wrk over loopback.
#
#   cargo build --release --bin credstore --example axum_server --features http
#   benches/http_load.sh            # ROUNDS=30 DUR=1 by default
#
# Needs wrk, jq and taskset, and two CPUs: every server is pinned, with the store's
# threads, to CPU 0 and has one tokio worker; wrk runs on CPU 1. Runs are paired: each
# cell's run comes right after a run of the no-layer server and its ratio is taken against
# that one (a shared host's interference drifts over seconds); the cells are shuffled in
# every round. For each run it also reads the server's CPU time (user + system of all its
# threads, /proc/PID/stat), so requests per CPU-second can be compared too. Prints one line
# per run (cell, req/s, non-2xx answers, requests, CPU ticks), then each cell's median
# ratio and quartiles.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk jq taskset; do
  command -v "$tool" >/dev/null || { echo "http_load.sh: $tool is needed" >&2; exit 2; }
done
B=target/release
[ -x $B/credstore ] && [ -x $B/examples/axum_server ] || {
  echo "http_load.sh: build first: cargo build --release --bin credstore --example axum_server --features http" >&2
  exit 2
}
ROUNDS=${ROUNDS:-30}
DUR=${DUR:-1}
R=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$R"' EXIT

LIM="--rate-limit 1000000000/1s:bench --budget 1000000000000 --budget-period total"
key() { # store name [limits]: creates a key, prints it
  $B/credstore --data "$R/$1" create --name "$2" ${3:-} --json | jq -r .key
}
for store in off every; do $B/credstore --data "$R/$store" init >/dev/null; done
OFF_PLAIN=$(key off plain); OFF_LIM=$(key off lim "$LIM")
EV_PLAIN=$(key every plain); EV_LIM=$(key every lim "$LIM")

serve() { # port args...
  local port=$1
  shift
  taskset -c 0 $B/examples/axum_server "$@" --listen 127.0.0.1:"$port" --threads 1 >/dev/null &
  PIDS+=($!)
}
serve 18082 --no-auth
serve 18084 --no-auth --fixed-rate-fields
serve 18083 --data "$R/off" --use-log off
serve 18081 --data "$R/every"
sleep 2
declare -A PORT=([nolayer]=18082 [fields]=18084 [off_plain]=18083 [off_limited]=18083
  [every_plain]=18081 [every_limited]=18081)
declare -A KEY=([nolayer]=none [fields]=none [off_plain]=$OFF_PLAIN [off_limited]=$OFF_LIM
  [every_plain]=$EV_PLAIN [every_limited]=$EV_LIM)
declare -A PID=([nolayer]=${PIDS[0]} [fields]=${PIDS[1]} [off_plain]=${PIDS[2]} [off_limited]=${PIDS[2]}
  [every_plain]=${PIDS[3]} [every_limited]=${PIDS[3]})

ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
run() { # cell: prints "cell req/s non2xx requests ticks"
  local t0 t1 out
  t0=$(ticks "${PID[$1]}")
  out=$(taskset -c 1 wrk -t1 -c16 -d"${DUR}"s -H "Authorization: Bearer ${KEY[$1]}" \
    "http://127.0.0.1:${PORT[$1]}/v1/ping" 2>&1)
  t1=$(ticks "${PID[$1]}")
  echo "$out" | awk -v cell="$1" -v ticks=$((t1 - t0)) '
    /requests in/ { n = $1 } /Requests\/sec/ { rps = $2 } /Non-2xx/ { bad = $4 }
    END { print cell, rps, bad + 0, n, ticks }'
}

RAW=$R/raw
for _ in $(seq "$ROUNDS"); do
  for cell in $(shuf -e fields off_plain every_plain off_limited every_limited); do
    run nolayer
    run "$cell"
  done
done | tee "$RAW"

echo
echo "median (quartiles) over the rounds, against the paired no-layer run:"
ratios() { # 2: req/s, 3: requests per CPU-second
  awk '
    $1 == "nolayer" { base = $2; base_cpu = $4 / ($5 > 0 ? $5 : 1); next }
    { print $1, $2 / base - 1, ($4 / ($5 > 0 ? $5 : 1)) / base_cpu - 1 }
  ' "$RAW" | sort -k1,1 -k"$1","$1"g | awk -v col="$1" -v what="$2" '
    { n[$1]++; v[$1, n[$1]] = $col }
    END {
      for (k in n) {
        m = n[k]
        printf "%-14s %-22s %+6.1f%%  (%+.1f%% .. %+.1f%%)\n", k, what,
          100 * v[k, int(0.5 * (m - 1)) + 1], 100 * v[k, int(0.25 * (m - 1)) + 1], 100 * v[k, int(0.75 * (m - 1)) + 1]
      }
    }' | sort
}
ratios 2 "req/s"
ratios 3 "requests per CPU-second"
