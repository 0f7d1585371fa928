package watcher

import (
	"context"
	"errors"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
)

func service(name string, labels map[string]string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: labels},
		Spec:       v1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []v1.ServicePort{{Port: 80}}},
	}
}

func slice(name string, labels map[string]string) *discovery.EndpointSlice {
	return &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name, Labels: labels},
		AddressType: discovery.AddressTypeIPv4,
	}
}

func node(name string) *v1.Node { return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}} }

// runKubernetes runs RunKubernetes until the test ends and returns its result channel.
func runKubernetes(t *testing.T, client *fake.Clientset, sink Sink) (cancel func(), done <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- RunKubernetes(ctx, client, "n1", sink, 0) }()
	t.Cleanup(func() {
		cancel()
		<-ch
	})
	return cancel, ch
}

func TestRunKubernetes(t *testing.T) {
	client := fake.NewClientset(
		service("web", nil),
		service("other", map[string]string{labelServiceProxyName: "other"}),
		slice("web-1", map[string]string{discovery.LabelServiceName: "web"}),
		slice("headless-1", map[string]string{labelHeadless: ""}),
		node("n1"), node("n2"),
	)
	sink := newRecSink()
	runKubernetes(t, client, sink)
	for _, c := range []string{"synced services", "synced endpointslices", "synced node"} {
		sink.waitFor(t, c, 1)
	}
	for call, want := range map[string]int{
		"upsert service default/web": 1, "upsert service default/other": 0,
		"upsert slice default/web-1": 1, "upsert slice default/headless-1": 0,
		"node n1": 1, "node n2": 0, "node <nil>": 0,
	} {
		if got := sink.count(call); got != want {
			t.Errorf("after sync: %q recorded %d times, want %d", call, got, want)
		}
	}

	ctx := context.Background()
	svc := service("web", nil)
	svc.Spec.Ports = append(svc.Spec.Ports, v1.ServicePort{Port: 443})
	must(t, func() error {
		_, err := client.CoreV1().Services("default").Update(ctx, svc, metav1.UpdateOptions{})
		return err
	})
	sink.waitFor(t, "upsert service default/web", 2)
	if got := sink.obj("upsert service default/web").(*v1.Service); len(got.Spec.Ports) != 2 {
		t.Errorf("updated service has %d ports, want 2", len(got.Spec.Ports))
	}
	must(t, func() error { return client.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}) })
	sink.waitFor(t, "delete service default/web", 1)
	must(t, func() error {
		return client.DiscoveryV1().EndpointSlices("default").Delete(ctx, "web-1", metav1.DeleteOptions{})
	})
	sink.waitFor(t, "delete slice default/web-1", 1)
	checkOtherNodeIgnored(t, client)
	sink.waitFor(t, "node n1", 2)
	if n := sink.count("node n2") + sink.count("node <nil>"); n != 0 {
		t.Errorf("another node's changes reached the sink %d times", n)
	}
	must(t, func() error { return client.CoreV1().Nodes().Delete(ctx, "n1", metav1.DeleteOptions{}) })
	sink.waitFor(t, "node <nil>", 1)
	checkSelectors(t, client)
}

// checkOtherNodeIgnored updates and deletes n2, then updates n1: the fake ignores
// field selectors, and events arrive in order, so once n1's update is seen any
// leak of n2 would have been recorded.
func checkOtherNodeIgnored(t *testing.T, client *fake.Clientset) {
	t.Helper()
	ctx := context.Background()
	labelled := func(name string) *v1.Node {
		n := node(name)
		n.Labels = map[string]string{"touched": "yes"}
		return n
	}
	must(t, func() error {
		_, err := client.CoreV1().Nodes().Update(ctx, labelled("n2"), metav1.UpdateOptions{})
		return err
	})
	must(t, func() error { return client.CoreV1().Nodes().Delete(ctx, "n2", metav1.DeleteOptions{}) })
	must(t, func() error {
		_, err := client.CoreV1().Nodes().Update(ctx, labelled("n1"), metav1.UpdateOptions{})
		return err
	})
}

func must(t *testing.T, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatal(err)
	}
}

// checkSelectors checks the informers asked for kube-proxy's label selector and
// this node only.
func checkSelectors(t *testing.T, client *fake.Clientset) {
	t.Helper()
	want := map[string]string{
		"services":       "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name",
		"endpointslices": "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name",
		"nodes":          "metadata.name=n1",
	}
	for _, a := range client.Actions() {
		l, ok := a.(k8stesting.ListActionImpl)
		if !ok {
			continue
		}
		res := l.GetResource().Resource
		got := l.GetListOptions().LabelSelector
		if res == "nodes" {
			got = l.GetListOptions().FieldSelector
		}
		if w, ok := want[res]; ok && got != w {
			t.Errorf("list %s with selector %q, want %q", res, got, w)
		}
		delete(want, res)
	}
	for res := range want {
		t.Errorf("no list of %s", res)
	}
}

func TestRunKubernetesNodeAbsent(t *testing.T) {
	sink := newRecSink()
	runKubernetes(t, fake.NewClientset(node("n2")), sink)
	sink.waitFor(t, "synced node", 1)
	if got := sink.count("node <nil>"); got != 1 {
		t.Errorf("SetNode(nil) called %d times before the node synced, want 1", got)
	}
}

func TestRunKubernetesSyncFails(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("apiserver unavailable")
	})
	sink := newRecSink()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := RunKubernetes(ctx, client, "n1", sink, 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("RunKubernetes = %v, want a sync error wrapping the deadline", err)
	}
	if n := sink.count("synced services"); n != 0 {
		t.Errorf("services reported synced %d times", n)
	}
}

func TestHandlersUnwrapTombstones(t *testing.T) {
	sink := newRecSink()
	tomb := func(obj runtime.Object) cache.DeletedFinalStateUnknown {
		return cache.DeletedFinalStateUnknown{Key: "k", Obj: obj}
	}
	serviceHandler(sink).OnDelete(tomb(service("web", nil)))
	sliceHandler(sink).OnDelete(tomb(slice("web-1", nil)))
	nh := &nodeHandler{name: "n1", sink: sink}
	nh.handler().OnAdd(node("n1"), true)
	nh.handler().OnDelete(tomb(node("n1")))
	nh.handler().OnDelete(tomb(node("n2")))
	wantCalls(t, sink.take(), "delete service default/web", "delete slice default/web-1", "node n1", "node <nil>")
}
