# Switchyard. `make demo` and `make test` are the two entry points (see README.md).
GO      ?= go
BIN     := bin/switchyard
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build test unit lint generate demo bench bench-ebpf bench-nodeport bench-iptables soak clean prereqs controlplane flows vmrun vm-kernels vm-test vm-flows vm-flows-ipvs vm-flows-all image images e2e e2e-short e2e-handover e2e-handover-short

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/switchyard

# Every test: no committed binaries, formatting and vet, the unit and integration tests (with the race
# detector), the short end-to-end run on real kubelet nodes, then the flow files against upstream
# kube-proxy in both modes.
test: prereqs controlplane vm-kernels lint unit e2e-short e2e-handover-short flows vm-test vm-flows

# Debian packages the tests use (installed when missing).
prereqs:
	test/prereqs.sh
	test/cluster/prereqs.sh

# The real control plane the tests run against (kube-apiserver, kube-proxy, etcd
# v1.37.2): built once (~6 min cold) into ~/.cache/switchyard/k8s-v1.37.2.
controlplane:
	GO=$(GO) test/k8s/build.sh

# The VM test runner (test/vm): bin/vmrun boots a Debian kernel under qemu with test binaries
# (`go test -exec "$(CURDIR)/bin/vmrun -kernel 6.1" ./pkg/`). vm-kernels installs its packages and
# fetches kernels 5.10, 6.1 and 6.12 once into ~/.cache/switchyard/kernels (nothing is installed).
vmrun:
	CGO_ENABLED=0 $(GO) build -o bin/vmrun ./test/vm/cmd/vmrun

vm-kernels: vmrun
	test/vm/prereqs.sh
	bin/vmrun -fetch all

# The kernel tests of the dataplane packages on each kernel (one boot per package and kernel).
VM_KERNELS ?= 5.10 6.1 6.12
vm-test: vm-kernels
	rc=0; for k in $(VM_KERNELS); do \
		echo "# kernel $$k"; \
		CGO_ENABLED=0 $(GO) test -short -count=1 -p 1 -exec "$(CURDIR)/bin/vmrun -kernel $$k" ./iptables/ ./netfilter/ ./ipvs/ ./bpf/ || rc=1; \
	done; exit $$rc

# The flow files inside the VMs (test/vm/flows.sh): a slice of the flows (SMOKE, one case through
# every part of each dataplane) in IPVS mode on 6.1 (this host has no IPVS), and of the eBPF and
# iptables flows on the kernels furthest from the host's (6.1: clsact instead of TCX, an older
# verifier; 5.10: the iptables fallback). Every IPVS flow took 11 of make test's 57 minutes: make
# vm-flows-ipvs runs them all, make vm-flows-all every flow for every mode and kernel (~45 minutes).
VM_FLOWS ?= 6.1:ipvs:smoke 6.1:ebpf:smoke 5.10:iptables:smoke
vm-flows: vm-kernels
	GO=$(GO) test/vm/flows.sh $(VM_FLOWS)

vm-flows-ipvs: vm-kernels
	GO=$(GO) test/vm/flows.sh 6.1:ipvs

vm-flows-all: vm-kernels
	GO=$(GO) test/vm/flows.sh 5.10:iptables 5.10:ipvs 6.1:ebpf 6.1:iptables 6.1:ipvs 6.12:ebpf 6.12:iptables 6.12:ipvs

# OCI image archives, built without a registry or a container daemon (test/image): the static agent
# with the iptables and nft tools its modes run, from Debian packages fetched once into
# ~/.cache/switchyard/debs. `make image` writes bin/switchyard-image.tar (localhost/switchyard:dev)
# and prints its size next to the kube-proxy image's (built too when `make controlplane` ran);
# `make images` writes all four: switchyard, kube-proxy, test (the test pods) and pause.
image:
	GO=$(GO) $(GO) run ./test/cmd/image -o bin -version $(VERSION) -compare kube-proxy switchyard

images:
	GO=$(GO) $(GO) run ./test/cmd/image -o bin -version $(VERSION) all

# Switchyard installed as operators do (test/e2e): on a two-node cluster of real kubelets
# (test/cluster), the image loaded into the nodes, an overlay of deploy/overlays applied through the
# API server; every check is real connections from a pod, a node and an external client. One cluster
# per overlay (~45 s each); the last line is "N passed, M failed". e2e-short is make test's form.
E2E_IMAGES := switchyard test pause
e2e: prereqs controlplane
	$(GO) run ./test/cmd/image -q -o bin -version $(VERSION) $(E2E_IMAGES)
	$(GO) run ./test/cmd/e2e -proxies ebpf,iptables

e2e-short: prereqs controlplane
	$(GO) run ./test/cmd/image -q -o bin -version $(VERSION) $(E2E_IMAGES)
	$(GO) run ./test/cmd/e2e -proxies ebpf,iptables -short

# The handover from kube-proxy under load (test/e2e.Handover, docs/migrate.md): kube-proxy in
# nftables then iptables mode, taken over by Switchyard (eBPF, iptables), upgraded, rolled back; a
# table per step with each traffic path's requests tried, failed, long-lived connections broken and
# the worst answer, 30 s of load after each step (~4 min per pair). e2e-handover-short is make
# test's form: from nftables to eBPF, 5 s after each step.
e2e-handover: prereqs controlplane
	$(GO) run ./test/cmd/image -q -o bin -version $(VERSION) $(E2E_IMAGES) kube-proxy
	$(GO) run ./test/cmd/e2e -handover kube-proxy-nftables,kube-proxy-iptables -proxies ebpf,iptables -settle 30s

e2e-handover-short: prereqs controlplane
	$(GO) run ./test/cmd/image -q -o bin -version $(VERSION) $(E2E_IMAGES) kube-proxy
	$(GO) run ./test/cmd/e2e -handover kube-proxy-nftables -proxies ebpf -settle 5s

unit:
	$(GO) test -race -count=1 ./...

lint:
	test/check-tree.sh
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfe[lb].go$$')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

# The flow conformance runner against the oracle: upstream kube-proxy.
FLOWS := $(wildcard test/flows/*.json)
flows:
	$(GO) run ./test/cmd/flowtest --proxy=kube-proxy-nftables $(FLOWS)
	$(GO) run ./test/cmd/flowtest --proxy=kube-proxy-iptables $(FLOWS)
	$(GO) run ./test/cmd/flowtest --proxy=switchyard-ebpf --source=file $(FLOWS)
	$(GO) run ./test/cmd/flowtest --proxy=switchyard-ebpf --source=apiserver $(FLOWS)
	$(GO) run ./test/cmd/flowtest --proxy=switchyard-iptables --source=file $(FLOWS)
	$(GO) run ./test/cmd/flowtest --proxy=switchyard-iptables --source=apiserver $(FLOWS)

# Rebuilds the bpf2go output (bpf/sock_bpfel.{go,o}, committed so a build needs
# no clang); installs clang-14 and libbpf-dev when missing.
generate:
	bpf/prereqs.sh
	$(GO) generate ./bpf/

# The dry run (what Switchyard would program for the example manifests), then the
# agent in eBPF mode in a simulated node with live connections (needs root).
demo: build prereqs
	./$(BIN) agent --mode=print --source=file:deploy/examples --hostname-override=node-a \
		--cluster-cidr=10.0.0.0/16 --once
	@echo
	@echo "# Live: the Switchyard agent in eBPF mode in a simulated node (network namespaces); each line is real connections"
	$(GO) run ./test/cmd/flowtest --proxy=switchyard-ebpf --source=file deploy/demo/flows.json

# Model benchmarks at 10,000 services x 10 endpoints.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./dataplane/

# The eBPF agent at 10,000 services x 10 endpoints in a simulated node (root):
# cold start to programmed, one endpoint change to the kernel map, RSS.
bench-ebpf:
	$(GO) run ./test/cmd/bench-ebpf -services 10000 -endpoints 10 -changes 20 -json bench-ebpf.json

# NodePort throughput from an external client in a simulated node (root): straight
# to the pods, through upstream kube-proxy (nftables) and through Switchyard's eBPF
# mode, in one run; requests per second and ratios to the direct path (median of 3).
bench-nodeport: prereqs controlplane
	$(GO) run ./test/cmd/bench-nodeport -targets direct,kube-proxy-nftables,switchyard-ebpf \
		-duration 5s -workers 4 -rounds 3 -json bench-nodeport.json

# Upstream kube-proxy's iptables mode and Switchyard's, one after the other in
# fresh simulated nodes fed by the same API server (root): cold start to the full
# ruleset, change to the rule in the kernel, RSS, at 1,000 and 10,000 services x 10
# endpoints. Slow: ~1 min writing the services, and kube-proxy needs more than
# 10 min at 10,000 (reported as not finished after -cold-timeout, 20 min).
bench-iptables: prereqs controlplane
	$(GO) run ./test/cmd/bench-iptables -services 1000,10000 -endpoints 10 -changes 10 -json bench-iptables.json

# Idle NodePort connections through 5 minutes of new connections churning through a small
# connection tracking map (test/restart's TestIdleConnectionsOutliveChurn, 40 s idle by default; root).
soak: prereqs
	SWITCHYARD_SOAK=5m $(GO) test -count=1 -run TestIdleConnectionsOutliveChurn -v -timeout 20m ./test/restart/

clean:
	rm -rf bin
