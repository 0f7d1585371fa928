#!/usr/bin/env bash
# Runs the flow files against Switchyard inside Debian kernels under qemu (test/vm), with
# --source=file (no API server in the guest). Each argument is KERNEL:MODE or KERNEL:MODE:smoke;
# smoke runs only the cases in SMOKE, a slice that crosses every part of the dataplane once
# (socket and tc load balancing, REJECT, DROP under Local policies, affinity, IPv6).
# Usage: test/vm/flows.sh 6.1:ipvs 6.1:ebpf:smoke 5.10:iptables
# Every run goes on after a failure; the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
SMOKE='^(clusterip tcp and udp|no endpoints|clientip affinity|external client to a load balancer ip|external ipv6 load balancer|nodeport local policy|load balancer with source ranges)$'
GO=${GO:-go}
CGO_ENABLED=0 "$GO" build -o bin/flowtest-static ./test/cmd/flowtest || exit 1
pkgs=github.com/switchyard/switchyard/test/cmd/echo,github.com/switchyard/switchyard/test/cmd/probe,github.com/switchyard/switchyard/cmd/switchyard
rc=0
for spec in "$@"; do
  IFS=: read -r kernel mode slice <<<"$spec"
  run=()
  [ "$slice" = smoke ] && run=(--run "$SMOKE")
  echo "# kernel $kernel: --proxy=switchyard-$mode ${slice:-all}"
  start=$(date +%s)
  bin/vmrun -kernel "$kernel" -timeout 30m -copy "$PWD/test/flows" -gobuild "$pkgs" \
    bin/flowtest-static --proxy="switchyard-$mode" --source=file "${run[@]}" "$PWD"/test/flows/*.json \
    | grep -Ev '^(PASS|SKIP) '
  status=${PIPESTATUS[0]}
  echo "# kernel $kernel: switchyard-$mode: exit $status in $(( $(date +%s) - start )) s"
  [ "$status" = 0 ] || rc=1
done
exit $rc
