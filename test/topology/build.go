package topology

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
)

// Build creates the scenario's namespaces, links, routes, cgroups and echo servers. On failure it
// removes whatever it had made before returning the error.
func Build(ctx context.Context, s Scenario) (_ *Topology, err error) {
	if s.Prefix == "" {
		if s.Prefix, err = NewPrefix(); err != nil {
			return nil, err
		}
	}
	p, err := newPlan(s)
	if err != nil {
		return nil, err
	}
	if err := Prerequisites(); err != nil {
		return nil, err
	}
	t := &Topology{Scenario: s, plan: p, cgroups: map[string]*cgroup{}, nsCgroup: map[string]*cgroup{},
		servers: map[string][]*exec.Cmd{}}
	if t.mount, err = cgroupMount(); err != nil {
		return nil, err
	}
	if t.rootLinks, err = rootLinkNames(ctx); err != nil {
		return nil, err
	}
	if err := claimPrefix(s.Prefix); err != nil {
		return nil, err
	}
	register(t)
	defer func() {
		if err != nil {
			err = fmt.Errorf("build topology %s: %w", s.Prefix, err)
			if cerr := t.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("cleanup after the failed build: %w", cerr))
			}
		}
	}()
	for _, step := range []func(context.Context) error{
		t.makeCgroups, t.makeNamespaces, t.wireLan, t.wireNodes, t.wireClients, t.wirePods, t.routeNodes,
		t.startServers,
	} {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *Topology) makeCgroups(context.Context) error {
	roles := []string{roleNode, roleExt}
	if t.plan.hasRemote() {
		roles = append(roles, roleRemote)
	}
	for _, role := range roles {
		cg, err := createCgroup(t.mount, t.name(role))
		if err != nil {
			return err
		}
		t.mu.Lock()
		t.cgroups[role] = cg
		t.mu.Unlock()
	}
	return nil
}

// makeNamespaces creates every namespace with its sysctls set before any interface exists, so the
// "default" values reach every interface created later.
func (t *Topology) makeNamespaces(ctx context.Context) error {
	rp := strconv.Itoa(t.Scenario.RPFilter)
	router := [][2]string{
		{"net.ipv4.ip_forward", "1"}, {"net.ipv6.conf.all.forwarding", "1"},
		{"net.ipv4.conf.all.rp_filter", rp}, {"net.ipv4.conf.default.rp_filter", rp},
	}
	if err := t.addNS(ctx, roleLan, roleExt, nil); err != nil {
		return err
	}
	if err := t.addNS(ctx, roleNode, roleNode, router); err != nil {
		return err
	}
	if t.plan.hasRemote() {
		if err := t.addNS(ctx, roleRemote, roleRemote, router); err != nil {
			return err
		}
	}
	for _, pod := range t.Scenario.Pods {
		cg := roleNode
		if !pod.Local {
			cg = roleRemote
		}
		if err := t.addNS(ctx, "pod-"+pod.Name, cg, nil); err != nil {
			return err
		}
	}
	for i := range t.plan.clients {
		if err := t.addNS(ctx, fmt.Sprintf("%s%d", roleExt, i), roleExt, nil); err != nil {
			return err
		}
	}
	return nil
}

// addNS creates <prefix>-<role> whose processes go in the cgroup of cgRole.
func (t *Topology) addNS(ctx context.Context, role, cgRole string, extra [][2]string) error {
	name := t.name(role)
	if err := addNetns(ctx, name); err != nil {
		return err
	}
	t.mu.Lock()
	t.netns = append(t.netns, name)
	t.nsCgroup[name] = t.cgroups[cgRole]
	t.mu.Unlock()
	// DAD would keep new IPv6 addresses tentative (unusable) for a second or more.
	kv := append([][2]string{{"net.ipv6.conf.all.accept_dad", "0"}, {"net.ipv6.conf.default.accept_dad", "0"}}, extra...)
	if err := setSysctls(ctx, name, kv); err != nil {
		return err
	}
	return ipIn(ctx, name, "link", "set", "lo", "up")
}
