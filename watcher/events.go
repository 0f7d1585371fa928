package watcher

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	evrecord "k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/switchyard/switchyard/dataplane"
)

// NewProblemRecorder returns record, which logs a Service's model problems and
// records each as a Warning Event on the Service, and stop, which shuts the event
// pipeline down.
func NewProblemRecorder(client kubernetes.Interface, nodeName string) (record func(dataplane.ServiceName, []dataplane.Problem), stop func()) {
	b := evrecord.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	rec := b.NewRecorder(scheme.Scheme, v1.EventSource{Component: "switchyard", Host: nodeName})
	return func(n dataplane.ServiceName, ps []dataplane.Problem) { recordProblems(rec, n, ps) }, b.Shutdown
}

// recordProblems emits the events. It refers to the Service by reference because
// the model keeps only its name.
func recordProblems(rec evrecord.EventRecorder, n dataplane.ServiceName, ps []dataplane.Problem) {
	ref := &v1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: n.Namespace, Name: n.Name}
	for _, p := range ps {
		klog.InfoS("Service problem", "service", n.String(), "reason", p.Reason, "message", p.Message)
		// Event, not Eventf: the message is not a format string.
		rec.Event(ref, v1.EventTypeWarning, p.Reason, p.Message)
	}
}
