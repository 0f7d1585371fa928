#!/usr/bin/env bash
# Installs the Debian packages the tests need, once; a no-op when they are there.
# `make test` runs it, so a fresh machine needs nothing by hand.
set -euo pipefail
need=()
for pair in ip:iproute2 nsenter:util-linux socat:socat curl:curl iptables:iptables nft:nftables conntrack:conntrack; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "test/prereqs.sh: missing packages ${need[*]} and not root to install them" >&2
  exit 1
fi
echo "test/prereqs.sh: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
