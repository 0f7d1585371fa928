#!/usr/bin/env bash
# Installs the Debian packages the VM test runner (test/vm) needs, once; a no-op when they are
# there: qemu (TCG), busybox-static for the guest's shell and modprobe, kmod for depmod, the
# decompressors for kernels and modules, and the tools the guest gets a copy of (ipvsadm here,
# the rest through test/prereqs.sh).
set -euo pipefail
"$(dirname "$0")/../prereqs.sh"
need=()
for pair in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static depmod:kmod dpkg-deb:dpkg \
  lz4:lz4 zstd:zstd xz:xz-utils ipvsadm:ipvsadm; do
  cmd=${pair%%:*} pkg=${pair#*:}
  PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "test/vm/prereqs.sh: missing packages ${need[*]} and not root to install them" >&2
  exit 1
fi
echo "test/vm/prereqs.sh: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
