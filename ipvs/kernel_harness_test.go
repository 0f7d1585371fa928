package ipvs

import (
	"context"
	"errors"
	"net/netip"
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/switchyard/switchyard/dataplane"
	"github.com/switchyard/switchyard/netfilter"
	"github.com/switchyard/switchyard/test/topology"
)

// kernelNode is the backend's kernel boundaries in the node's namespace.
type kernelNode struct {
	topo  *topology.Topology
	ipvs  *countingIPVS
	links Links
	cfg   Config
}

func newKernelNode(t *testing.T, topo *topology.Topology) *kernelNode {
	t.Helper()
	path := topology.NetnsPath(topo.NodeNS())
	h, err := NewKernelIPVS(path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewKernelLinks(path)
	if err != nil {
		t.Fatal(err)
	}
	n := &kernelNode{topo: topo, ipvs: &countingIPVS{IPVS: h}, links: l}
	run := func(ctx context.Context, name string, args ...string) *exec.Cmd {
		return topo.CommandContext(ctx, topo.NodeNS(), name, args...)
	}
	n.cfg = Config{Options: Options{Model: modelConfig(), MasqueradeBit: 14}, IPVS: n.ipvs, Links: l,
		Records: FileRecords{Path: t.TempDir() + "/records"}, Families: []dataplane.Family{dataplane.IPv4, dataplane.IPv6},
		Restorers: map[dataplane.Family]netfilter.Restorer{}, Jumpers: map[dataplane.Family]netfilter.Jumper{}, Sysctl: netfilter.ProcSysctl{}}
	err = n.inNode(func() error {
		for _, f := range n.cfg.Families {
			n.cfg.Restorers[f] = netfilter.NewRestorer(f, netfilter.VariantNFT, run)
			j, err := netfilter.NewJumper(f, netfilter.VariantNFT) // runs its binary in this thread's namespace
			if err != nil {
				return err
			}
			n.cfg.Jumpers[f] = j
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// inNode runs fn on an OS thread switched into the node's namespace, after
// checking it is there. The thread is never unlocked: it ends with its
// goroutine, so nothing else ever runs in the namespace by accident.
func (n *kernelNode) inNode(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- func() error {
			target, err := netns.GetFromPath(topology.NetnsPath(n.topo.NodeNS()))
			if err != nil {
				return err
			}
			defer target.Close()
			if err := netns.Set(target); err != nil {
				return err
			}
			cur, err := netns.Get()
			if err != nil {
				return err
			}
			defer cur.Close()
			if !cur.Equal(target) {
				return errors.New("the thread is not in the node's namespace after setns")
			}
			return fn()
		}()
	}()
	return <-errc
}

// countingIPVS counts the calls that write.
type countingIPVS struct {
	IPVS
	writes []string
}

func (c *countingIPVS) note(s string, err error) error {
	c.writes = append(c.writes, s)
	return err
}

func (c *countingIPVS) AddService(s VirtualService) error {
	return c.note("AddService "+s.String(), c.IPVS.AddService(s))
}
func (c *countingIPVS) UpdateService(s VirtualService) error {
	return c.note("UpdateService "+s.String(), c.IPVS.UpdateService(s))
}
func (c *countingIPVS) DeleteService(k dataplane.FrontendKey) error {
	return c.note("DeleteService "+k.String(), c.IPVS.DeleteService(k))
}
func (c *countingIPVS) AddDestination(k dataplane.FrontendKey, d Destination) error {
	return c.note("AddDestination "+k.String()+" "+d.String(), c.IPVS.AddDestination(k, d))
}
func (c *countingIPVS) UpdateDestination(k dataplane.FrontendKey, d Destination) error {
	return c.note("UpdateDestination "+k.String()+" "+d.String(), c.IPVS.UpdateDestination(k, d))
}
func (c *countingIPVS) DeleteDestination(k dataplane.FrontendKey, ap netip.AddrPort) error {
	return c.note("DeleteDestination "+k.String()+" "+ap.String(), c.IPVS.DeleteDestination(k, ap))
}
