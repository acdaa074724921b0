#!/usr/bin/env bash
# Issue 19's table: a store of N keys for each N given (default 10k 100k 1M), instruction
# counts per operation under callgrind (which do not move with the host's load), then the
# sizes and wall times of `scale report`. Needs valgrind (apt-get install -y valgrind).
#
#   cargo build --release --example scale
#   benches/scale.sh 10000 100000 1000000
#
# Fixtures go to $SCALE_DIR (default /tmp/credstore-scale), one directory per N, kept for
# the next run (`rm -rf` it to fill again).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-target}/release/examples/scale
DIR=${SCALE_DIR:-/tmp/credstore-scale}
OPS=${OPS:-2000}
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10000 100000 1000000)
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install -y valgrind" >&2; exit 1; }
[ -x "$BIN" ] || { echo "build it first: cargo build --release --example scale" >&2; exit 1; }

declare -A INSTR REPORT
for n in "${SIZES[@]}"; do
  d="$DIR/$n"
  if [ ! -f "$d/fill.json" ]; then
    rm -rf "$d"
    echo "fill $n: $("$BIN" fill "$d" "$n")" >&2
  fi
  REPORT[$n]=$("$BIN" report "$d")
  echo "report $n: ${REPORT[$n]}" >&2
  for p in floor cached unknown cold sqlite; do
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect='scale::measured' \
      "$BIN" probe "$d" "$p" "$OPS" >/dev/null 2>&1
    INSTR[$n,$p]=$(awk -v ops="$OPS" '/^totals:/ {printf "%.0f", $2 / ops}' "$out")
    rm -f "$out"
  done
done

row() { # label, then a jq expression or "instr:PROBE"
  local label=$1 what=$2
  local line="| $label |"
  for n in "${SIZES[@]}"; do
    if [[ $what == instr:* ]]; then
      line+=" ${INSTR[$n,${what#instr:}]} |"
    else
      line+=" $(jq -r "$what" <<<"${REPORT[$n]}") |"
    fi
  done
  echo "$line"
}
header="| |"; rule="|---|"
for n in "${SIZES[@]}"; do header+=" $n |"; rule+="---:|"; done
echo "$header"; echo "$rule"
row "floor (keyed BLAKE3 + HashMap lookup), instructions" instr:floor
row "cached verify, instructions" instr:cached
row "unknown well-formed key, instructions" instr:unknown
row "cold verify (key not in the live map), instructions" instr:cold
row "SQLite lookup by SHA-256 (rusqlite, indexed column), instructions" instr:sqlite
row "live map, bytes per cached key" '.live_map_bytes_per_key | floor'
row "index on disk, bytes per key" '.index_bytes_per_key | floor'
row "log on disk, bytes per key" '.log_bytes_per_key | floor'
row "cold verify p50 / p99, µs" '"\(.cold_verify_p50_us | floor) / \(.cold_verify_p99_us | floor)"'
row "open after SIGKILL, s" '.open_after_kill_seconds * 100 | round / 100'
row "rebuild, s" '.rebuild_seconds * 100 | round / 100'
row "close, s" '.close_seconds * 100 | round / 100'
row "clear_cache, s" '.clear_cache_seconds * 100 | round / 100'
row "idle CPU with every key cached, share of a core" '.idle_cpu_share * 1000 | round / 1000'
