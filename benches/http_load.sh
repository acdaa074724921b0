#!/usr/bin/env bash
# The HTTP layer under load (issue 7; issue 16 item 6 for the tower_governor peer; figures
# in docs/PERFORMANCE.md, "The HTTP layer under load"): requests per second and CPU per
# request through `ApiKeyLayer` against the same server without it, and against the same
# server behind tower_governor's `GovernorLayer`, measured with wrk over loopback.
#
#   cargo build --release --bin credstore --example axum_server --features http
#   benches/http_load.sh            # ROUNDS=30 DUR=1 by default
#   CELLS="gov_ip gov_key every_limited every_limited_x" benches/http_load.sh
#
# Needs wrk, jq and taskset (scripts/install-bench-deps.sh), and two CPUs: every server is
# pinned, with the store's threads, to CPU 0 and has one tokio worker; wrk runs on CPU 1.
# The binaries are taken from $CARGO_TARGET_DIR (default target/). Runs are paired: each
# cell's run comes right after a run of the no-layer server and its ratio is taken against
# that one (a shared host's interference drifts over seconds); the cells are shuffled in
# every round. For each run it also reads the server's CPU time: user + system of all its
# threads in clock ticks (/proc/PID/stat) and, in nanoseconds, the sum of its threads' run
# time (/proc/PID/task/*/schedstat; the server's threads live for the whole run).
#
# Cells (CELLS, default: the issue-7 set):
#   fields           no layer, five rate-limit fields of fixed values (--fixed-rate-fields)
#   off_plain        credstore, key without limits, use log off
#   every_plain      credstore, key without limits, every use logged
#   off_limited      credstore, rate limit + budget, use log off
#   every_limited    credstore, rate limit + budget, every use logged (the default)
#   every_limited_x  the same with --rate-limit-fields x-ratelimit (three fields)
#   gov_key          tower_governor, counted by the Authorization header, its two fields
#   gov_ip           tower_governor, counted by peer address (its default), its two fields
#
# Prints the load average, one line per run (round, cell, req/s, non-2xx answers, requests,
# CPU ticks, CPU ns, the 1-minute load average after it), then for each cell the median and quartiles of: req/s against the
# paired no-layer run; requests per CPU-second against it; CPU per request (ns); CPU per
# request added to the paired no-layer run's (ns); and, when a gov_* cell ran, each
# cell's CPU per request against that cell's run in the same round.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk jq taskset; do
  command -v "$tool" >/dev/null || { echo "http_load.sh: $tool is needed (scripts/install-bench-deps.sh)" >&2; exit 2; }
done
B=${CARGO_TARGET_DIR:-target}/release
[ -x "$B"/credstore ] && [ -x "$B"/examples/axum_server ] || {
  echo "http_load.sh: build first: cargo build --release --bin credstore --example axum_server --features http" >&2
  exit 2
}
ROUNDS=${ROUNDS:-30}
DUR=${DUR:-1}
CELLS=${CELLS:-fields off_plain every_plain off_limited every_limited}
R=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$R"' EXIT

LIM="--rate-limit 1000000000/1s:bench --budget 1000000000000 --budget-period total"
key() { # store name [limits]: creates a key, prints it
  "$B"/credstore --data "$R/$1" create --name "$2" ${3:-} --json | jq -r .key
}
for store in off every every_x; do "$B"/credstore --data "$R/$store" init >/dev/null; done
OFF_PLAIN=$(key off plain); OFF_LIM=$(key off lim "$LIM")
EV_PLAIN=$(key every plain); EV_LIM=$(key every lim "$LIM"); EVX_LIM=$(key every_x lim "$LIM")

serve() { # port args...: starts a pinned server, sets SERVED to its pid
  local port=$1
  shift
  taskset -c 0 "$B"/examples/axum_server "$@" --listen 127.0.0.1:"$port" --threads 1 >/dev/null &
  SERVED=$!
  PIDS+=("$SERVED")
}
declare -A PORT PID KEY
cell() { # name port key pid
  PORT[$1]=$2 KEY[$1]=$3 PID[$1]=$4
}
serve 18082 --no-auth && cell nolayer 18082 none $SERVED
serve 18084 --no-auth --fixed-rate-fields && cell fields 18084 none $SERVED
serve 18083 --data "$R/off" --use-log off
cell off_plain 18083 "$OFF_PLAIN" $SERVED && cell off_limited 18083 "$OFF_LIM" $SERVED
serve 18081 --data "$R/every"
cell every_plain 18081 "$EV_PLAIN" $SERVED && cell every_limited 18081 "$EV_LIM" $SERVED
serve 18085 --data "$R/every_x" --rate-limit-fields x-ratelimit
cell every_limited_x 18085 "$EVX_LIM" $SERVED
# tower_governor needs no store: any header value is a key to it. It is sent the limited
# key, so that its requests are the credstore cells' byte for byte.
serve 18086 --governor --governor-key authorization && cell gov_key 18086 "$EV_LIM" $SERVED
serve 18087 --governor --governor-key peer-ip && cell gov_ip 18087 "$EV_LIM" $SERVED
sleep 2
for c in $CELLS; do
  [ -n "${PORT[$c]:-}" ] || { echo "http_load.sh: no cell $c" >&2; exit 2; }
done

ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
ns() { { cat /proc/"$1"/task/*/schedstat 2>/dev/null || true; } | awk '{s += $1} END {printf "%.0f\n", s}'; }
run() { # round cell: prints "round cell req/s non2xx requests ticks ns load"
  local t0 t1 n0 n1 out
  t0=$(ticks "${PID[$2]}") n0=$(ns "${PID[$2]}")
  out=$(taskset -c 1 wrk -t1 -c16 -d"${DUR}"s -H "Authorization: Bearer ${KEY[$2]}" \
    "http://127.0.0.1:${PORT[$2]}/v1/ping" 2>&1)
  t1=$(ticks "${PID[$2]}") n1=$(ns "${PID[$2]}")
  echo "$out" | awk -v round="$1" -v cell="$2" -v ticks=$((t1 - t0)) -v ns=$((n1 - n0)) \
    -v load="$(cut -d' ' -f1 /proc/loadavg)" '
    /requests in/ { n = $1 } /Requests\/sec/ { rps = $2 } /Non-2xx/ { bad = $4 }
    END { print round, cell, rps, bad + 0, n, ticks, ns, load }'
}

echo "start $(date -u +%H:%M:%S) UTC, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
RAW=$R/raw
for round in $(seq "$ROUNDS"); do
  for c in $(shuf -e $CELLS); do
    run "$round" nolayer
    run "$round" "$c"
  done
done | tee "$RAW"
echo "end $(date -u +%H:%M:%S) UTC, load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# One line per cell run: round cell req/s-ratio per-CPU-second-ratio ns-per-request
# added-ns-per-request (against the no-layer run just before it).
awk '
  $2 == "nolayer" { base = $3; base_ns = $7 / $5; print $1, "nolayer", 0, 0, base_ns, 0; next }
  { c = $7 / $5; print $1, $2, $3 / base - 1, base_ns / c - 1, c, c - base_ns }
' "$RAW" >"$R/pairs"
GOV=$(echo " $CELLS " | grep -o ' gov_[a-z]* ' | tr -d ' ' || true)

quartiles() { # label format: reads "cell value" lines, prints each cell's median and quartiles
  sort -k1,1 -k2,2g | awk -v what="$1" -v fmt="$2" '
    { n[$1]++; v[$1, n[$1]] = $2 }
    END {
      for (k in n) {
        m = n[k]
        printf "%-16s %-32s " fmt "  (" fmt " .. " fmt ")\n", k, what,
          v[k, int(0.5 * (m - 1)) + 1], v[k, int(0.25 * (m - 1)) + 1], v[k, int(0.75 * (m - 1)) + 1]
      }
    }' | sort
}
echo
echo "median (quartiles) over the runs; ratios against the paired no-layer run:"
awk '$2 != "nolayer" { print $2, 100 * $3 }' "$R/pairs" | quartiles "req/s" "%+6.1f%%"
awk '$2 != "nolayer" { print $2, 100 * $4 }' "$R/pairs" | quartiles "requests per CPU-second" "%+6.1f%%"
awk '{ print $2, $5 }' "$R/pairs" | quartiles "CPU ns per request" "%6.0f"
awk '$2 != "nolayer" { print $2, $6 }' "$R/pairs" | quartiles "CPU ns added to no layer's" "%+6.0f"
for g in $GOV; do
  echo
  echo "CPU per request against $g's run in the same round:"
  awk -v g="$g" '
    { c[$1, $2] = $5; cells[$2] = 1; rounds[$1] = 1 }
    END {
      for (r in rounds) for (k in cells)
        if (k != g && k != "nolayer" && (r, g) in c && (r, k) in c) print k, 100 * (c[r, k] / c[r, g] - 1)
    }' "$R/pairs" | quartiles "CPU per request vs $g" "%+6.1f%%"
done
