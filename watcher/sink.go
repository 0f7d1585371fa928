// Package watcher feeds the dataplane model: it watches Services, EndpointSlices
// and this node's Node, either from the Kubernetes API or from manifest files, and
// records model problems as Events.
package watcher

import (
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/switchyard/switchyard/dataplane"
)

// Sink receives what a source sees. It is kept narrow so tests can record calls.
type Sink interface {
	UpsertService(*v1.Service)
	DeleteService(*v1.Service)
	UpsertEndpointSlice(*discovery.EndpointSlice)
	DeleteEndpointSlice(*discovery.EndpointSlice)
	// SetNode is called with nil when this node is deleted or absent.
	SetNode(*v1.Node)
	SetSynced(dataplane.Source)
}

var _ Sink = (*dataplane.Tracker)(nil)
