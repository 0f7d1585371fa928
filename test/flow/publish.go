package flow

import (
	"context"
	"errors"
	"fmt"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Publish writes a case's objects to the API server: the Node with its addresses
// (status), the namespaces, the Services (and their load balancer status) and the
// EndpointSlices. No controller runs, so nothing else writes them.
func Publish(ctx context.Context, cs kubernetes.Interface, o Objects) error {
	node, err := cs.CoreV1().Nodes().Create(ctx, o.Node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating node %s: %w", o.Node.Name, err)
	}
	node.Status = o.Node.Status
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting node %s addresses: %w", o.Node.Name, err)
	}
	for _, ns := range o.namespaces() {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating namespace %s: %w", ns, err)
		}
	}
	for _, s := range o.Services {
		created, err := cs.CoreV1().Services(s.Namespace).Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("creating service %s/%s: %w", s.Namespace, s.Name, err)
		}
		if len(s.Status.LoadBalancer.Ingress) > 0 {
			created.Status = s.Status
			if _, err := cs.CoreV1().Services(s.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("setting service %s/%s load balancer status: %w", s.Namespace, s.Name, err)
			}
		}
	}
	for _, s := range o.EndpointSlices {
		if _, err := cs.DiscoveryV1().EndpointSlices(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating endpointslice %s/%s: %w", s.Namespace, s.Name, err)
		}
	}
	return nil
}

// Unpublish deletes what Publish wrote, except namespaces (without a namespace
// controller they would stay Terminating; the next case reuses them).
func Unpublish(ctx context.Context, cs kubernetes.Interface, o Objects) error {
	var errs []error
	ignoreMissing := func(err error) error {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	for _, s := range o.EndpointSlices {
		errs = append(errs, ignoreMissing(cs.DiscoveryV1().EndpointSlices(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{})))
	}
	for _, s := range o.Services {
		errs = append(errs, ignoreMissing(cs.CoreV1().Services(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{})))
	}
	errs = append(errs, ignoreMissing(cs.CoreV1().Nodes().Delete(ctx, o.Node.Name, metav1.DeleteOptions{})))
	return errors.Join(errs...)
}

func (o Objects) namespaces() []string {
	seen := map[string]bool{}
	var out []string
	add := func(ns string) {
		if !seen[ns] {
			seen[ns] = true
			out = append(out, ns)
		}
	}
	for _, s := range o.Services {
		add(s.Namespace)
	}
	for _, s := range o.EndpointSlices {
		add(s.Namespace)
	}
	return out
}
