package topology

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// ipLink is the part of `ip -j -d link` output the isolation check needs.
type ipLink struct {
	Name     string `json:"ifname"`
	NetnsID  *int   `json:"link_netnsid"`
	LinkInfo struct {
		Kind string `json:"info_kind"`
	} `json:"linkinfo"`
}

type nsID struct {
	ID   int    `json:"nsid"`
	Name string `json:"name"`
}

// AssertIsolated checks that the topology has no link to the caller's (root) namespace: no link there
// carries the prefix or appeared since Build, none of our namespaces is the caller's, and the peer of
// every cross-namespace link in our namespaces is one of our namespaces.
func (t *Topology) AssertIsolated() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now, err := rootLinkNames(ctx)
	if err != nil {
		return err
	}
	errs := []error{checkRootLinks(t.Prefix(), t.rootLinks, now)}
	self, err := netnsInode("/proc/self/ns/net")
	if err != nil {
		return err
	}
	ours := map[string]bool{}
	for _, ns := range t.Namespaces() {
		ours[ns] = true
	}
	for _, ns := range t.Namespaces() {
		errs = append(errs, t.checkNS(ctx, ns, self, ours))
	}
	return errors.Join(errs...)
}

func (t *Topology) checkNS(ctx context.Context, ns string, self uint64, ours map[string]bool) error {
	ino, err := netnsInode(NetnsPath(ns))
	if err != nil {
		return err
	}
	if ino == self {
		return fmt.Errorf("namespace %s is the caller's own namespace", ns)
	}
	var links []ipLink
	if err := ipJSON(ctx, &links, "-n", ns, "-d", "link"); err != nil {
		return err
	}
	// After the link dump: it is what allocates the ids of peer namespaces.
	var ids []nsID
	if err := ipJSON(ctx, &ids, "-n", ns, "netns", "list-id"); err != nil {
		return err
	}
	return checkPeers(ns, links, ids, ours)
}

// checkPeers fails for a link whose peer lives in a namespace that is not ours; an id without a name
// is an unnamed namespace, such as the root one.
func checkPeers(ns string, links []ipLink, ids []nsID, ours map[string]bool) error {
	names := map[int]string{}
	for _, id := range ids {
		names[id.ID] = id.Name
	}
	var errs []error
	for _, l := range links {
		if l.NetnsID == nil {
			continue
		}
		if peer := names[*l.NetnsID]; !ours[peer] {
			errs = append(errs, fmt.Errorf("%s/%s (%s) has its peer in namespace id %d %q, not one of ours",
				ns, l.Name, l.LinkInfo.Kind, *l.NetnsID, peer))
		}
	}
	return errors.Join(errs...)
}

func checkRootLinks(prefix string, before, now []string) error {
	old := map[string]bool{}
	for _, n := range before {
		old[n] = true
	}
	var bad []string
	for _, n := range now {
		if strings.HasPrefix(n, prefix) || !old[n] {
			bad = append(bad, n)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("links in the root namespace that are ours or new since Build: %s", strings.Join(bad, ", "))
	}
	return nil
}

// rootLinkNames lists the links of the caller's namespace (read only).
func rootLinkNames(ctx context.Context) ([]string, error) {
	var links []ipLink
	if err := ipJSON(ctx, &links, "link"); err != nil {
		return nil, err
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Name)
	}
	sort.Strings(names)
	return names, nil
}

// ipJSON runs `ip -j args...` and decodes its stdout. What a successful ip says on stderr is left
// out: `netns list-id` complains there about any namespace of the machine it could not look up
// (another run's, being deleted), and our own ones cannot be among them while the topology is up;
// were one of ours unnamed for it, checkPeers would fail that peer anyway.
func ipJSON(ctx context.Context, v any, args ...string) error {
	out, stderr, err := runStdout(ctx, "ip", append([]string{"-j"}, args...)...)
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) == "" {
		return nil // older iproute2 prints nothing for an empty list
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("ip -j %s: %w (stderr: %s)", strings.Join(args, " "), err, strings.TrimSpace(stderr))
	}
	return nil
}
