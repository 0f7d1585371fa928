package e2e

import (
	"context"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// scaleToZeroAndBack: a Service with endpoints answers; scaled to 0 its connections
// are refused (kube-proxy's REJECT), not left to time out; scaled back it answers.
func (e *env) scaleToZeroAndBack(t target, clients ...from) func(context.Context) error {
	return func(ctx context.Context) error {
		steps := []struct {
			replicas int32
			want     string
		}{{1, "ok"}, {0, "refused"}, {1, "ok"}}
		for _, s := range steps {
			if err := e.scale(ctx, t.svc, s.replicas); err != nil {
				return err
			}
			for _, f := range clients {
				if err := e.eventually(ctx, e.gets(f, t, s.want)); err != nil {
					return fmt.Errorf("at %d replicas: %w", s.replicas, err)
				}
			}
		}
		return nil
	}
}

func (e *env) scale(ctx context.Context, name string, replicas int32) error {
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas)
	if _, err := e.cs.AppsV1().Deployments(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return err
	}
	return e.waitDeployment(ctx, name)
}

// eventually retries a check for up to 10 s: a Deployment is available before the
// EndpointSlice controller and the proxies have caught up.
func (e *env) eventually(ctx context.Context, check func(context.Context) error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check(ctx)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// rollingUpdate restarts the echo Deployment (a new ReplicaSet replaces every pod)
// while each client keeps opening connections to its target: none may fail, and
// afterwards only the new pods answer.
func (e *env) rollingUpdate(load map[from]target) func(context.Context) error {
	return func(ctx context.Context) error {
		old, _, err := e.podIPs(ctx, "echo")
		if err != nil {
			return err
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		counts := make([]loadCount, len(load))
		i := 0
		for f, t := range load {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				counts[i] = e.keepConnecting(ctx, f, t, stop)
			}(i)
			i++
		}
		patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"e2e/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
		_, err = e.cs.AppsV1().Deployments(ns).Patch(ctx, "echo", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
		if err == nil {
			err = e.waitDeployment(ctx, "echo")
		}
		if err == nil {
			err = e.waitGone(ctx, old)
		}
		close(stop)
		wg.Wait()
		if err != nil {
			return err
		}
		for _, c := range counts {
			if c.err != nil || c.failed > 0 || c.ok == 0 {
				return fmt.Errorf("during the rollout, %s: %d connections answered, %d failed (%s), error %v", c.what, c.ok, c.failed, c.first, c.err)
			}
		}
		newIPs, _, err := e.podIPs(ctx, "echo")
		if err != nil {
			return err
		}
		for ip := range newIPs {
			if old[ip] {
				return fmt.Errorf("pod IP %s is still there after the rollout", ip)
			}
		}
		for _, c := range counts {
			e.o.Logf("rolling update: %s: %d connections, all answered", c.what, c.ok)
		}
		for f, t := range load {
			if err := e.reachesAllNow(f, t, "echo")(ctx); err != nil {
				return fmt.Errorf("after the rollout: %w", err)
			}
		}
		return nil
	}
}

type loadCount struct {
	what       string
	ok, failed int
	first      string
	err        error
}

// keepConnecting probes t from f in rounds of 10 connections until stop is closed.
func (e *env) keepConnecting(ctx context.Context, f from, t target, stop <-chan struct{}) loadCount {
	c := loadCount{what: fmt.Sprintf("%s -> %s", f, t.svc)}
	for {
		select {
		case <-stop:
			return c
		default:
		}
		rs, _, err := e.connect(ctx, f, t, 10)
		if err != nil {
			c.err = err
			return c
		}
		for _, r := range rs {
			if r.Result == "ok" {
				c.ok++
				continue
			}
			if c.failed == 0 {
				c.first = r.Result + " " + r.Error
			}
			c.failed++
		}
	}
}

// waitGone waits until no pod has one of the IPs (the old pods finished terminating).
func (e *env) waitGone(ctx context.Context, ips map[string]bool) error {
	deadline := time.Now().Add(time.Minute)
	for {
		pods, err := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
		if err != nil {
			return err
		}
		left := 0
		for _, p := range pods.Items {
			if ips[p.Status.PodIP] {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d old pods still there a minute after the rollout", left)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
