#!/usr/bin/env bash
# Installs what `make generate` needs to rebuild the bpf2go output (sock_bpfel.go, sock_bpfel.o):
# clang-14 and llvm-strip-14, and libbpf's headers (bpf_helpers.h, bpf_endian.h). A no-op when
# they are there. Building and testing Switchyard needs none of this: the output is committed.
set -euo pipefail
need=()
command -v clang-14 >/dev/null 2>&1 || need+=(clang-14)
command -v llvm-strip-14 >/dev/null 2>&1 || need+=(llvm-14)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
# linux/bpf.h (linux-libc-dev) includes asm/types.h from the multiarch directory.
[ -f /usr/include/x86_64-linux-gnu/asm/types.h ] || need+=(linux-libc-dev)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "bpf/prereqs.sh: missing packages ${need[*]} and not root to install them" >&2
  exit 1
fi
echo "bpf/prereqs.sh: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
