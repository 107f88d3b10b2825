#!/usr/bin/env bash
# Runs the same load through ponte (`ponte load`) and through rtpengine 10.5 in userspace
# (`ponte load-rtpengine`) on this machine, transcoded (WebRTC Opus <-> PCMU) and passthrough
# (DTLS-SRTP Opus <-> plain RTP Opus), and prints the ratios ponte/rtpengine: CPU per
# call-second, calls per core, loss, memory. Issue 7 item 2.
#
#   test/load/compare-rtpengine.sh                      # 20 transcoded + 50 passthrough calls, 30 s hold
#   CONC=10 PASS_CONC=20 HOLD=10s test/load/compare-rtpengine.sh
#
# Environment: CONC (transcoded concurrent calls, 20), PASS_CONC (passthrough, 50; 0 skips),
# HOLD (30s), RATE (new calls per second, 5), CODEC (PCMU), OUT (result dir, a new temp dir),
# PONTE (binary, bin/ponte, rebuilt from the tree), RTPENGINE (binary, rtpengine on PATH),
# TASKSET (a prefix for both runs, e.g. "taskset -c 0,1"; the gateway children inherit the
# affinity, so both gateways and their load generators get the same CPUs).
# On a fresh Debian machine run it as root: it installs rtpengine-daemon if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/local/go/bin:$PATH

CONC=${CONC:-20}
PASS_CONC=${PASS_CONC:-50}
HOLD=${HOLD:-30s}
RATE=${RATE:-5}
CODEC=${CODEC:-PCMU}
PONTE=${PONTE:-bin/ponte}
RTPENGINE=${RTPENGINE:-rtpengine}
TASKSET=${TASKSET:-}
OUT=${OUT:-$(mktemp -d /tmp/ponte-compare.XXXXXX)}
mkdir -p "$OUT"

if ! command -v "$RTPENGINE" >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing rtpengine-daemon (Debian)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rtpengine-daemon >/dev/null
  else
    echo "rtpengine not found: install Debian's rtpengine-daemon (as root: apt-get install rtpengine-daemon) or set RTPENGINE" >&2
    exit 1
  fi
fi
if [ "$PONTE" = bin/ponte ]; then
  echo "== building bin/ponte" >&2
  go build -tags nolibopusfile -o bin/ponte ./cmd/ponte
fi

# run NAME CONCURRENCY CODEC: both gateways with the same calls; JSON kept in $OUT. A failed
# call makes the commands exit 1 after printing their report, so the exit code is kept apart.
run() {
  local name=$1 n=$2 codec=$3
  local args=(-json -calls "$n" -concurrency "$n" -rate "$RATE" -hold "$HOLD" -codec "$codec")
  echo "== $name: ponte load ${args[*]}" >&2
  $TASKSET "$PONTE" load "${args[@]}" >"$OUT/ponte-$name.json" 2>"$OUT/ponte-$name.err" || echo "   (exit $?: see $OUT/ponte-$name.err)" >&2
  echo "== $name: ponte load-rtpengine ${args[*]}" >&2
  $TASKSET "$PONTE" load-rtpengine -rtpengine "$RTPENGINE" "${args[@]}" >"$OUT/rtpengine-$name.json" 2>"$OUT/rtpengine-$name.err" || echo "   (exit $?: see $OUT/rtpengine-$name.err)" >&2
}

modes=()
if [ "$CONC" -gt 0 ]; then run transcoding "$CONC" "$CODEC"; modes+=(transcoding); fi
if [ "$PASS_CONC" -gt 0 ]; then run passthrough "$PASS_CONC" opus; modes+=(passthrough); fi

python3 "$(dirname "$0")/ratios.py" "$OUT" "${modes[@]}"
echo "JSON reports: $OUT" >&2
