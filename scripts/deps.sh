#!/usr/bin/env bash
# Installs what building, testing and the demo need on a fresh Debian machine,
# only when missing. Idempotent; uses sudo when not root.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in libopus-dev pkg-config gcc; do have_pkg "$p" || need+=("$p"); done
if [ "${1:-}" = "test" ]; then
  # Real SIP peers for interop tests, and sox for G.711 golden checks.
  for p in sip-tester baresip baresip-core sox netcat-openbsd prometheus; do have_pkg "$p" || need+=("$p"); done
  # NAT test (test/nat_test.go): network namespaces, veths and MASQUERADE.
  # Route-set test (test/kamailio_test.go): kamailio as a record-routing proxy.
  for p in iproute2 nftables kamailio; do have_pkg "$p" || need+=("$p"); done
  # Performance comparison peer (internal/rtpeng, test/load/compare-rtpengine.sh):
  # rtpengine in userspace (--table=-1), started by the tests themselves.
  have_pkg rtpengine-daemon || need+=(rtpengine-daemon)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The tests start their own kamailio and only use promtool: the packages'
  # services (SIP on 5060, Prometheus on 9090, ponte's admin default) stay off.
  if command -v systemctl >/dev/null 2>&1; then
    for svc in kamailio prometheus rtpengine-daemon ngcp-rtpengine-daemon; do $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true; done
  fi
fi
if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then
    echo "deps: go is at /usr/local/go/bin; add it to PATH" >&2
  else
    echo "deps: Go 1.26 is required (https://go.dev/dl/); on Debian: install it to /usr/local/go" >&2
    exit 1
  fi
fi
