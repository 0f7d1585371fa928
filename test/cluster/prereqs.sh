#!/usr/bin/env bash
# Installs the Debian packages test/cluster's nodes need, once: containerd (1.6 on bookworm, with
# ctr and containerd-shim-runc-v2), runc and containernetworking-plugins (/usr/lib/cni). A no-op when
# they are there. The rest (iproute2, util-linux, socat) comes from test/prereqs.sh, and the
# Kubernetes binaries from test/k8s/build.sh (`make controlplane`).
#
# The nodes run their own containerd; the package's system service must not run beside them: the
# install keeps it from starting (policy-rc.d) and, on systemd hosts, disables the unit it added.
set -euo pipefail
need=()
for pair in containerd:containerd ctr:containerd containerd-shim-runc-v2:containerd runc:runc; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
for p in bridge host-local loopback; do
  [ -x "/usr/lib/cni/$p" ] || { need+=(containernetworking-plugins); break; }
done
[ ${#need[@]} -eq 0 ] && exit 0
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" != 0 ]; then
  echo "test/cluster/prereqs.sh: missing packages ${need[*]} and not root to install them" >&2
  exit 1
fi
echo "test/cluster/prereqs.sh: installing ${need[*]}"
had_containerd=$(command -v containerd >/dev/null 2>&1 && echo yes || echo no)
policy=/usr/sbin/policy-rc.d
made_policy=no
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=yes
fi
trap '[ "$made_policy" = yes ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
if [ "$had_containerd" = no ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now containerd.service >/dev/null 2>&1 || true
fi
