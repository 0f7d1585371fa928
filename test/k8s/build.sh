#!/usr/bin/env bash
# Builds the real control plane the tests run against (kube-apiserver, kube-proxy,
# etcd, and for test/cluster's nodes kubelet, kube-controller-manager, kube-scheduler) once, into ${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/k8s-v1.37.2/.
# A no-op when the binaries are there and run. `make controlplane` runs it.
#
# Cold, this takes ~9 minutes on 2 cores (0.6 GB of modules, ~3 GB of build cache).
# The binaries are built into a temporary directory and renamed into place, so a
# killed build never leaves a half-written binary behind.
set -euo pipefail

K8S_VERSION=v1.37.2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/k8s-${K8S_VERSION}

components=(kube-apiserver kube-proxy kubelet kube-controller-manager kube-scheduler)

# ok reports whether the binaries are in $out and answer --version.
ok() {
  for c in "${components[@]}"; do
    [ -x "$out/$c" ] && "$out/$c" --version 2>/dev/null | grep -qF "$K8S_VERSION" || return 1
  done
  [ -x "$out/etcd" ] || return 1
  "$out/etcd" --version >/dev/null 2>&1 || return 1
}

ok && exit 0

mkdir -p "$out"
# One build at a time (two `make test` at once would otherwise build twice).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$out/.build.lock"
  flock 9
  ok && exit 0 # built by whoever held the lock
  rm -rf "$out"/.tmp-build.* # left by a killed build
fi

tmp=$(mktemp -d "$out/.tmp-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "test/k8s/build.sh: building ${components[*]} and etcd ${K8S_VERSION} into $out (cold: ~9 min)" >&2
start=$(date +%s)
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=37 -X $pkg.gitTreeState=clean"
# etcd needs no version flags: its version is a constant in its own module.
(
  cd "$here"
  export CGO_ENABLED=0 GOWORK=off
  for c in "${components[@]}"; do
    [ -x "$out/$c" ] && "$out/$c" --version 2>/dev/null | grep -qF "$K8S_VERSION" && continue
    "${GO:-go}" build -trimpath -ldflags "$ldflags" -o "$tmp/$c" "k8s.io/kubernetes/cmd/$c"
  done
  "$out/etcd" --version >/dev/null 2>&1 || "${GO:-go}" build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
)
for b in "${components[@]}" etcd; do
  [ -e "$tmp/$b" ] && mv -f "$tmp/$b" "$out/$b"
done
if ! ok; then
  echo "test/k8s/build.sh: the binaries in $out were built but do not answer --version" >&2
  exit 1
fi
echo "test/k8s/build.sh: built in $(($(date +%s) - start)) s" >&2
