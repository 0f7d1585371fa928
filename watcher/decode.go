package watcher

import (
	"encoding/json"
	"errors"
	"fmt"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// parser collects the objects of a set of manifests.
type parser struct {
	objs *Objects
	// seen maps "Kind namespace/name" to where it was first found: two objects
	// with one name would silently replace each other.
	seen map[string]location
	// cache holds the documents of the last good parse, next those of this one.
	cache, next docCache
	locs        []location // every object found, in order
}

// docCache maps a document's text to what it decoded into.
type docCache map[string]*parsedDoc

type parsedDoc struct {
	objs Objects
	locs []location // kind, namespace and name of each object, for the duplicate check
}

// reuse takes a document unchanged since the last parse from the cache.
func (p *parser) reuse(y []byte, file string, doc int) bool {
	d, ok := p.cache[string(y)]
	if !ok {
		return false
	}
	for _, l := range d.locs {
		if _, dup := p.seen[l.kind+" "+l.namespace+"/"+l.name]; dup {
			return false // decode it again, which reports the duplicate
		}
	}
	for _, l := range d.locs {
		l.file, l.doc = file, doc
		if err := p.unique(l); err != nil {
			return false
		}
	}
	p.add(&d.objs)
	p.next[string(y)] = d
	return true
}

// decode decodes a document and remembers it for the next parse.
func (p *parser) decode(y, j []byte, loc location) error {
	sub := &parser{objs: &Objects{}, seen: p.seen}
	if err := sub.document(j, loc); err != nil {
		return err
	}
	d := &parsedDoc{objs: *sub.objs, locs: sub.locs}
	p.add(sub.objs)
	if p.next != nil {
		p.next[string(y)] = d
	}
	return nil
}

func (p *parser) add(o *Objects) {
	p.objs.Services = append(p.objs.Services, o.Services...)
	p.objs.EndpointSlices = append(p.objs.EndpointSlices, o.EndpointSlices...)
	p.objs.Nodes = append(p.objs.Nodes, o.Nodes...)
}

func (p *parser) document(j []byte, loc location) error {
	var h header
	if err := json.Unmarshal(j, &h); err != nil {
		return loc.wrap(err)
	}
	if h.APIVersion != "v1" || h.Kind != "List" {
		return p.object(j, loc)
	}
	var l metav1.List
	if err := strictUnmarshal(j, &l); err != nil {
		loc.kind = "List"
		return loc.wrap(err)
	}
	for i, it := range l.Items {
		loc.item = i + 1
		if err := p.object(it.Raw, loc); err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) object(j []byte, loc location) error {
	var h header
	if err := json.Unmarshal(j, &h); err != nil {
		return loc.wrap(err)
	}
	loc.kind, loc.name = h.Kind, h.Metadata.Name
	var err error
	switch h.APIVersion + " " + h.Kind {
	case "v1 Service":
		loc.namespace = namespaceOrDefault(h.Metadata.Namespace)
		err = decodeAs(j, &p.objs.Services, fixService)
	case "discovery.k8s.io/v1 EndpointSlice":
		loc.namespace = namespaceOrDefault(h.Metadata.Namespace)
		err = decodeAs(j, &p.objs.EndpointSlices, fixEndpointSlice)
	case "v1 Node":
		err = decodeAs(j, &p.objs.Nodes, fixNode)
	default:
		loc.namespace = h.Metadata.Namespace // as written: its scope is unknown
		err = fmt.Errorf("unsupported object apiVersion %q kind %q: want v1 Service, discovery.k8s.io/v1 EndpointSlice, v1 Node or v1 List",
			h.APIVersion, h.Kind)
	}
	if err != nil {
		return loc.wrap(err)
	}
	return p.unique(loc)
}

func (p *parser) unique(loc location) error {
	key := loc.kind + " " + loc.namespace + "/" + loc.name
	if first, dup := p.seen[key]; dup {
		return loc.wrap(fmt.Errorf("duplicate of %s", first))
	}
	p.seen[key] = loc
	p.locs = append(p.locs, loc)
	return nil
}

// decodeAs strictly decodes one object, fixes it up and appends it to list.
func decodeAs[T any](j []byte, list *[]*T, fix func(*T) error) error {
	obj := new(T)
	if err := strictUnmarshal(j, obj); err != nil {
		return err
	}
	if err := fix(obj); err != nil {
		return err
	}
	*list = append(*list, obj)
	return nil
}

var errNoName = errors.New("metadata.name is required")

func namespaceOrDefault(ns string) string {
	if ns == "" {
		return metav1.NamespaceDefault
	}
	return ns
}

// fixService validates what the model cannot do without and fills the API server
// defaults it reads, since no API server has seen these objects.
func fixService(svc *v1.Service) error {
	if svc.Name == "" {
		return errNoName
	}
	svc.Namespace = namespaceOrDefault(svc.Namespace)
	if svc.Spec.Type == "" {
		svc.Spec.Type = v1.ServiceTypeClusterIP
	}
	if svc.Spec.SessionAffinity == "" {
		svc.Spec.SessionAffinity = v1.ServiceAffinityNone
	}
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Protocol == "" {
			svc.Spec.Ports[i].Protocol = v1.ProtocolTCP
		}
	}
	return nil
}

func fixEndpointSlice(s *discovery.EndpointSlice) error {
	if s.Name == "" {
		return errNoName
	}
	if s.AddressType == "" {
		return errors.New("addressType is required")
	}
	s.Namespace = namespaceOrDefault(s.Namespace)
	for i := range s.Ports {
		if s.Ports[i].Protocol == nil {
			tcp := v1.ProtocolTCP
			s.Ports[i].Protocol = &tcp
		}
	}
	return nil
}

func fixNode(n *v1.Node) error {
	if n.Name == "" {
		return errNoName
	}
	return nil
}
