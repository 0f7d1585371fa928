package flowrun

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/switchyard/switchyard/test/flow"
	"github.com/switchyard/switchyard/test/topology"
)

// Proxy is a proxy process Launch started in a node.
type Proxy struct {
	// Cmd is nsenter, which execs the proxy: Cmd.Process.Pid is the proxy's.
	Cmd *exec.Cmd
	// Log holds its stdout and stderr until Stop.
	Log string
	// Started is just before the process started.
	Started time.Time
	stop    func() error
}

// Stop ends the proxy and removes what Launch set up for it (log, API server
// bridge, Switchyard's pins).
func (p *Proxy) Stop() error { return p.stop() }

// LogTail is the last n lines of the proxy's log (before Stop).
func (p *Proxy) LogTail(n int) string {
	log, _ := os.ReadFile(p.Log)
	return tail(string(log), n)
}

// Launch starts o.Proxy in topo's node for case c, fed from o.Source (objs are
// written for the file source), without publishing anything and without waiting
// for its first sync: StartProxy does both.
func (o Options) Launch(ctx context.Context, topo *topology.Topology, c flow.Case, objs flow.Objects) (*Proxy, error) {
	if strings.HasPrefix(o.Proxy, "switchyard-") {
		return o.launchSwitchyard(ctx, topo, c, objs)
	}
	return o.launchKubeProxy(ctx, topo, c)
}

// launchAndWait is Launch, then WaitSynced (every family of the node for
// kube-proxy, which has a proxier per family; any sync for Switchyard).
func (o Options) launchAndWait(ctx context.Context, topo *topology.Topology, c flow.Case, objs flow.Objects) (stop func() error, err error) {
	p, err := o.Launch(ctx, topo, c, objs)
	if err != nil {
		return nil, err
	}
	var families []string
	if !strings.HasPrefix(o.Proxy, "switchyard-") {
		families = nodeFamilies(c)
	}
	if err := WaitSynced(ctx, topo, families, p.Cmd); err != nil {
		return nil, errors.Join(fmt.Errorf("%s did not sync: %w\n%s", o.Proxy, err, p.LogTail(30)), p.Stop())
	}
	return p.Stop, nil
}

// Exited reports whether the proxy has ended, without reaping it.
func (p *Proxy) Exited() bool { return exited(p.Cmd) }
