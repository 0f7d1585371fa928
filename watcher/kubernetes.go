package watcher

import (
	"context"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/switchyard/switchyard/dataplane"
)

const (
	labelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	labelHeadless         = v1.IsHeadlessService
)

// proxyLabelSelector is kube-proxy's: objects owned by another proxy and headless
// services' slices never leave the API server.
func proxyLabelSelector() (labels.Selector, error) {
	noProxyName, err := labels.NewRequirement(labelServiceProxyName, selection.DoesNotExist, nil)
	if err != nil {
		return nil, err
	}
	noHeadless, err := labels.NewRequirement(labelHeadless, selection.DoesNotExist, nil)
	if err != nil {
		return nil, err
	}
	return labels.NewSelector().Add(*noProxyName, *noHeadless), nil
}

// RunKubernetes watches Services, EndpointSlices and the Node named nodeName and
// feeds sink until ctx is done. It returns an error only when ctx ends before every
// cache has synced.
func RunKubernetes(ctx context.Context, client kubernetes.Interface, nodeName string, sink Sink, resync time.Duration) error {
	sel, err := proxyLabelSelector()
	if err != nil {
		return err
	}
	proxied := informers.NewSharedInformerFactoryWithOptions(client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sel.String() }))
	thisNode := informers.NewSharedInformerFactoryWithOptions(client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", nodeName).String()
		}))
	defer proxied.Shutdown()
	defer thisNode.Shutdown()

	svcReg, err := proxied.Core().V1().Services().Informer().AddEventHandler(serviceHandler(sink))
	if err != nil {
		return err
	}
	sliceReg, err := proxied.Discovery().V1().EndpointSlices().Informer().AddEventHandler(sliceHandler(sink))
	if err != nil {
		return err
	}
	nh := &nodeHandler{name: nodeName, sink: sink}
	nodeReg, err := thisNode.Core().V1().Nodes().Informer().AddEventHandler(nh.handler())
	if err != nil {
		return err
	}
	proxied.Start(ctx.Done())
	thisNode.Start(ctx.Done())

	// A registration has synced once its handler has seen the initial list, which
	// is what the sink needs before it is told the source is synced.
	for _, s := range []struct {
		src dataplane.Source
		reg cache.ResourceEventHandlerRegistration
	}{{dataplane.SourceServices, svcReg}, {dataplane.SourceEndpointSlices, sliceReg}, {dataplane.SourceNode, nodeReg}} {
		if !cache.WaitForCacheSync(ctx.Done(), s.reg.HasSynced) {
			return fmt.Errorf("%s cache did not sync: %w", s.src, context.Cause(ctx))
		}
		if s.src == dataplane.SourceNode {
			nh.syncedAbsent()
		}
		sink.SetSynced(s.src)
	}
	<-ctx.Done()
	return nil
}

func serviceHandler(sink Sink) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { ifType(obj, sink.UpsertService) },
		UpdateFunc: func(_, obj any) { ifType(obj, sink.UpsertService) },
		DeleteFunc: func(obj any) { ifType(untomb(obj), sink.DeleteService) },
	}
}

func sliceHandler(sink Sink) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { ifType(obj, sink.UpsertEndpointSlice) },
		UpdateFunc: func(_, obj any) { ifType(obj, sink.UpsertEndpointSlice) },
		DeleteFunc: func(obj any) { ifType(untomb(obj), sink.DeleteEndpointSlice) },
	}
}

// nodeHandler forwards this node only: the field selector is a request that a
// server (or a fake) may not honour.
type nodeHandler struct {
	name string
	sink Sink
	// mu orders the handler against syncedAbsent, so a node added right after the
	// initial list is not overwritten by nil.
	mu   sync.Mutex
	seen bool
}

func (h *nodeHandler) handler() cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { ifType(obj, h.set) },
		UpdateFunc: func(_, obj any) { ifType(obj, h.set) },
		DeleteFunc: func(obj any) { ifType(untomb(obj), h.unset) },
	}
}

func (h *nodeHandler) set(n *v1.Node) {
	if n.Name != h.name {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = true
	h.sink.SetNode(n)
}

func (h *nodeHandler) unset(n *v1.Node) {
	if n.Name != h.name {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = true
	h.sink.SetNode(nil)
}

// syncedAbsent tells the sink the node does not exist when the initial list did
// not contain it.
func (h *nodeHandler) syncedAbsent() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.seen {
		h.sink.SetNode(nil)
	}
}

// untomb unwraps the last known state of an object whose deletion the watch missed.
func untomb(obj any) any {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}

func ifType[T any](obj any, f func(T)) {
	o, ok := obj.(T)
	if !ok {
		klog.ErrorS(nil, "Unexpected object type from informer", "type", fmt.Sprintf("%T", obj))
		return
	}
	f(o)
}
