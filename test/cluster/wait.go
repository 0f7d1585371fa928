package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/switchyard/switchyard/test/process"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// waitNodes waits until every node registered, sets its spec.podCIDR (no IPAM controller runs: the
// subnets are fixed per node), and waits until it is Ready without the not-ready taint.
func (c *Cluster) waitNodes(ctx context.Context) error {
	cs := c.Client()
	for _, n := range c.nodes {
		patched := false
		last := "not registered"
		err := poll(ctx, 100*time.Millisecond, func() (bool, error) {
			if n.kubelet.exited() {
				return false, n.kubelet.exitError()
			}
			node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			if err != nil {
				last = err.Error()
				return false, nil
			}
			if !patched && node.Spec.PodCIDR == "" {
				patch, _ := json.Marshal(map[string]any{"spec": map[string]any{
					"podCIDR": n.PodCIDR, "podCIDRs": []string{n.PodCIDR}}})
				if _, err := cs.CoreV1().Nodes().Patch(ctx, n.Name, types.StrategicMergePatchType, patch,
					metav1.PatchOptions{}); err != nil {
					return false, fmt.Errorf("setting %s's podCIDR: %w", n.Name, err)
				}
				patched = true
				return false, nil
			}
			last = nodeState(node)
			return last == "Ready", nil
		})
		if err != nil {
			return fmt.Errorf("node %s (%s): %w; last lines of %s:\n%s", n.Name, last, err, n.kubelet.log,
				process.TailFile(n.kubelet.log, 30))
		}
	}
	return nil
}

// nodeState is "Ready" for a Ready node the scheduler may use, else what is missing.
func nodeState(node *v1.Node) string {
	ready := false
	for _, cond := range node.Status.Conditions {
		if cond.Type == v1.NodeReady {
			if cond.Status != v1.ConditionTrue {
				return fmt.Sprintf("Ready=%s: %s", cond.Status, cond.Message)
			}
			ready = true
		}
	}
	if !ready {
		return "no Ready condition yet"
	}
	for _, t := range node.Spec.Taints {
		if t.Key == v1.TaintNodeNotReady || t.Key == v1.TaintNodeUnreachable {
			return "Ready, still tainted " + t.Key
		}
	}
	return "Ready"
}

// waitServiceAccount waits until the ServiceAccount controller created namespace ns's "default"
// ServiceAccount (pods cannot be created in ns before), and the root CA ConfigMap pods mount.
func (c *Cluster) waitServiceAccount(ctx context.Context, ns string) error {
	cs := c.Client()
	last := ""
	err := poll(ctx, 100*time.Millisecond, func() (bool, error) {
		if c.kcm.exited() {
			return false, c.kcm.exitError()
		}
		if _, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err != nil {
			last = err.Error()
			return false, nil
		}
		if _, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err != nil {
			last = err.Error()
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("default ServiceAccount of %s (%s): %w; last lines of %s:\n%s", ns, last, err,
			c.kcm.log, process.TailFile(c.kcm.log, 30))
	}
	return nil
}

// WaitServiceAccount waits until namespace ns has its default ServiceAccount and root CA ConfigMap,
// which pods need: do it after creating a namespace.
func (c *Cluster) WaitServiceAccount(ctx context.Context, ns string) error {
	return c.waitServiceAccount(ctx, ns)
}

// poll calls f every interval until it returns true or an error, or ctx ends.
func poll(ctx context.Context, interval time.Duration, f func() (bool, error)) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, err := f()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
