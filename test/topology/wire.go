package topology

import (
	"context"
	"fmt"
	"net/netip"
)

// wireLan creates the outside segment: a bridge that owns the node's default gateway addresses.
func (t *Topology) wireLan(ctx context.Context) error {
	lan, br := t.LanNS(), t.iface(ifBridge)
	cmds := [][]string{{"link", "add", br, "type", "bridge"}, {"link", "set", br, "up"}}
	for _, g := range t.plan.gateways {
		cmds = append(cmds, addrAdd(g, br))
	}
	return ipAll(ctx, lan, cmds...)
}

// plugIntoLan creates a veth whose lan end (lanIf) joins the bridge and whose other end (inside) is
// created directly in ns: no end ever exists in the caller's namespace.
func (t *Topology) plugIntoLan(ctx context.Context, lanIf, ns, inside string) error {
	lan := t.LanNS()
	if err := ipAll(ctx, lan,
		[]string{"link", "add", lanIf, "type", "veth", "peer", "name", inside, "netns", ns},
		[]string{"link", "set", lanIf, "master", t.iface(ifBridge), "up"},
	); err != nil {
		return err
	}
	return ipIn(ctx, ns, "link", "set", inside, "up")
}

// wireNodes plugs both nodes into the lan. The node's default route goes to the gateway; the remote's
// goes via the node, so external traffic to and from remote pods crosses the node both ways.
func (t *Topology) wireNodes(ctx context.Context) error {
	node, up := t.NodeNS(), t.iface(ifNodeUplink)
	if err := t.plugIntoLan(ctx, t.iface("l"+ifNodeUplink), node, up); err != nil {
		return err
	}
	cmds := addrCmds(t.plan.node, up)
	for _, g := range t.plan.gateways {
		cmds = append(cmds, []string{"route", "add", "default", "via", g.Addr().String(), "dev", up})
	}
	if err := ipAll(ctx, node, cmds...); err != nil || !t.plan.hasRemote() {
		return err
	}
	remote, rup := t.name(roleRemote), t.iface(ifRemUplink)
	if err := t.plugIntoLan(ctx, t.iface("l"+ifRemUplink), remote, rup); err != nil {
		return err
	}
	cmds = addrCmds(t.plan.remote, rup)
	for _, v4 := range []bool{true, false} {
		if via := firstOf(t.plan.node, v4); via.IsValid() && firstOf(t.plan.remote, v4).IsValid() {
			cmds = append(cmds, []string{"route", "add", "default", "via", via.Addr().String(), "dev", rup})
		}
	}
	return ipAll(ctx, remote, cmds...)
}

// wireClients plugs each external client into the lan with its address as a host route, on-link
// routes to the node IPs, and a default route via the node (so VIPs of any kind reach the node).
func (t *Topology) wireClients(ctx context.Context) error {
	node, up := t.NodeNS(), t.iface(ifNodeUplink)
	for i, c := range t.plan.clients {
		ns := t.name(fmt.Sprintf("%s%d", roleExt, i))
		if err := t.plugIntoLan(ctx, t.iface(fmt.Sprintf("%s%d", ifClientLan, i)), ns, ifInside); err != nil {
			return err
		}
		cmds := [][]string{addrAdd(host(c), ifInside)}
		for _, n := range t.plan.node {
			if n.Addr().Is4() == c.Is4() {
				cmds = append(cmds, []string{"route", "add", host(n.Addr()).String(), "dev", ifInside})
			}
		}
		gw := firstOf(t.plan.node, c.Is4()).Addr().String()
		cmds = append(cmds, []string{"route", "add", "default", "via", gw, "dev", ifInside})
		if err := ipAll(ctx, ns, cmds...); err != nil {
			return err
		}
		if err := ipIn(ctx, node, "route", "add", host(c).String(), "dev", up); err != nil {
			return err
		}
	}
	return nil
}

// routeNodes makes each node route the other node's pods via that node's IP of the pod's family.
func (t *Topology) routeNodes(ctx context.Context) error {
	if !t.plan.hasRemote() {
		return nil
	}
	for i, pod := range t.Scenario.Pods {
		from, via := t.name(roleRemote), t.plan.node
		if !pod.Local {
			from, via = t.NodeNS(), t.plan.remote
		}
		for _, a := range t.plan.pods[i] {
			gw := firstOf(via, a.Is4())
			if !gw.IsValid() || !firstOf(t.plan.remote, a.Is4()).IsValid() {
				continue // a local pod of a family the remote node lacks: unreachable from there
			}
			if err := ipIn(ctx, from, "route", "add", host(a).String(), "via", gw.Addr().String()); err != nil {
				return err
			}
		}
	}
	return nil
}

func addrCmds(pfxs []netip.Prefix, dev string) [][]string {
	var cmds [][]string
	for _, p := range pfxs {
		cmds = append(cmds, addrAdd(p, dev))
	}
	return cmds
}

// addrAdd skips DAD for IPv6 so the address is usable at once.
func addrAdd(p netip.Prefix, dev string) []string {
	c := []string{"addr", "add", p.String(), "dev", dev}
	if p.Addr().Is6() {
		c = append(c, "nodad")
	}
	return c
}

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }
