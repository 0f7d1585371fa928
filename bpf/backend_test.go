package bpf

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard/switchyard/test/topology"
)

// The backend writes real maps through the writer, the hooks use them, and the map
// pressure metric follows what the maps hold.
func TestBackendWritesKernelMaps(t *testing.T) {
	topo := support.Build(t, scenario())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pinDir := filepath.Join(bpffs, topo.Prefix()+"-be")
	reg := prometheus.NewRegistry()
	var b *Backend
	// In the node's namespace: the backend puts its tc programs on the devices of
	// the namespace it starts in.
	err := topology.OnThreadIn(topo.NodeNS(), func() (err error) {
		b, err = NewBackend(Config{PinDir: pinDir, CgroupPath: topo.NodeCgroup(), MaxServices: 64, MaxBackends: 64, Metrics: reg})
		return err
	})
	t.Cleanup(func() {
		if b != nil {
			if err := errors.Join(b.Cleanup(ctx), b.Close()); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		if err := Unpin(pinDir); err != nil {
			t.Errorf("unpin: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	st := stateOf(map[string][]string{svcTCP + "/TCP": {pod1TCP, pod2TCP}, svcReject + "/TCP": {"REJECT"}})
	if err := b.Sync(ctx, st, nil); err != nil {
		t.Fatal(err)
	}
	res, err := topo.Probe(ctx, topo.PodNS(clientPod), "tcp", svcTCP, topology.ProbeOptions{N: 16, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	wantEndpoints(t, "a service the writer programmed", endpoints(t, "writer", res), pod1TCP, pod2TCP)
	// services: 2 service entries, 2 slots, 2 cluster IP address entries, each
	// for the socket and the outside scope = 12 of 64; no connection from outside yet.
	want := `
# HELP switchyard_bpf_map_pressure Fill ratio of a BPF map (entries / max entries)
# TYPE switchyard_bpf_map_pressure gauge
switchyard_bpf_map_pressure{map_name="backends"} 0.03125
switchyard_bpf_map_pressure{map_name="ct_assured"} 0
switchyard_bpf_map_pressure{map_name="services"} 0.1875
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "switchyard_bpf_map_pressure"); err != nil {
		t.Error(err)
	}
}
