package main

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const triggerAnnotation = "endpoints.kubernetes.io/last-change-trigger-time"

// changeSpec is change k of a run: even ones replace an endpoint of a base
// service's slice, odd ones create a service (its slice, all endpoints on the web
// pod, is written a pause earlier, so the measured write is the Service's).
type changeSpec struct {
	K    int    `json:"k"`
	Kind string `json:"kind"` // "endpoint" or "service"
	// Target is the slice or service written.
	Target string `json:"target"`
	svc    int    // the base service (endpoint changes)
	ip     string // the created service's cluster IP
}

func planChange(k, services int) changeSpec {
	if k%2 == 1 {
		return changeSpec{K: k, Kind: "service", Target: namespace + "/" + createdName(k), ip: createdIP(k)}
	}
	i := (k*7919 + 13) % services // spread over the services
	return changeSpec{K: k, Kind: "endpoint", Target: namespace + "/" + svcName(i), svc: i}
}

// ruleCheck: the nat table's chain, listed alone (iptables -t nat -S CHAIN), has
// a rule containing text.
type ruleCheck struct{ chain, text string }

// checks are what the nat table shows once the change is programmed, in the
// chains of a proxy (prefix KUBE- or SWYD-; Switchyard names its chains as
// kube-proxy does): for a new endpoint, the service's jump to its chain and its
// DNAT; for a new service, its dispatch rule and a jump to an endpoint.
func (ch changeSpec) checks(prefix string) []ruleCheck {
	port := ch.Target + ":http" // kube-proxy's ServicePortName
	svc := prefix + "SVC-" + hash16(port+"tcp")
	if ch.Kind == "service" {
		return []ruleCheck{{prefix + "SERVICES", "-d " + ch.ip + "/32 "}, {svc, "-j " + prefix + "SEP-"}}
	}
	ep := fmt.Sprintf("%s:%d", newEndpointIP(ch.K), podPort)
	sep := prefix + "SEP-" + hash16(port+"tcp"+ep)
	return []ruleCheck{{svc, "-j " + sep}, {sep, "--to-destination " + ep}}
}

// hash16 is kube-proxy's chain name hash (servicePortChainName and
// servicePortEndpointChainName in pkg/proxy/iptables).
func hash16(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(sum[:])[:16]
}

// prepare writes what a change needs before its measured write: a new
// service's EndpointSlice.
func (c *cluster) prepare(ctx context.Context, ch changeSpec) error {
	if ch.Kind != "service" {
		return nil
	}
	var addrs []string
	for j := range c.endpoints {
		addrs = append(addrs, webAddr(j))
	}
	_, err := c.cs.DiscoveryV1().EndpointSlices(namespace).Create(ctx, slice(createdName(ch.K), addrs), metav1.CreateOptions{})
	return err
}

// apply makes the change. at is just before the measured write; write is how
// long the API call took.
func (c *cluster) apply(ctx context.Context, ch changeSpec) (at time.Time, write time.Duration, err error) {
	if ch.Kind == "service" {
		at = time.Now()
		_, err = c.cs.CoreV1().Services(namespace).Create(ctx, service(createdName(ch.K), ch.ip), metav1.CreateOptions{})
		return at, time.Since(at), err
	}
	slices := c.cs.DiscoveryV1().EndpointSlices(namespace)
	sl, err := slices.Get(ctx, svcName(ch.svc)+"-bench", metav1.GetOptions{})
	if err != nil {
		return at, 0, err
	}
	j := (ch.K / 2) % len(sl.Endpoints)
	sl.Endpoints[j].Addresses = []string{newEndpointIP(ch.K)}
	at = time.Now()
	// Both proxies report kubeproxy_network_programming_duration_seconds from here.
	sl.Annotations = map[string]string{triggerAnnotation: at.UTC().Format(time.RFC3339Nano)}
	_, err = slices.Update(ctx, sl, metav1.UpdateOptions{})
	return at, time.Since(at), err
}

// undo reverts changes, so the next proxy starts from the same objects.
func (c *cluster) undo(ctx context.Context, changes []changeSpec) error {
	var errs []error
	for _, ch := range changes {
		if ch.Kind == "service" {
			name := createdName(ch.K)
			errs = append(errs,
				ignoreNotFound(c.cs.CoreV1().Services(namespace).Delete(ctx, name, metav1.DeleteOptions{})),
				ignoreNotFound(c.cs.DiscoveryV1().EndpointSlices(namespace).Delete(ctx, name+"-bench", metav1.DeleteOptions{})))
			continue
		}
		slices := c.cs.DiscoveryV1().EndpointSlices(namespace)
		cur, err := slices.Get(ctx, svcName(ch.svc)+"-bench", metav1.GetOptions{})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		orig := slice(svcName(ch.svc), c.baseAddrs(ch.svc))
		orig.ResourceVersion = cur.ResourceVersion
		_, err = slices.Update(ctx, orig, metav1.UpdateOptions{})
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("undoing the changes: %w", err)
	}
	return nil
}
