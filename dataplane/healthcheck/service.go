package healthcheck

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/switchyard/switchyard/dataplane"
)

// Info is what a service's health check needs. Port 0 means the service has no
// health check; Sync treats it as absent.
type Info struct {
	Port           uint16
	LocalEndpoints int
}

// FromState returns the health checks the desired state asks for: services with a
// health-check node port (LoadBalancer, externalTrafficPolicy Local).
func FromState(st *dataplane.State) map[dataplane.ServiceName]Info {
	out := map[dataplane.ServiceName]Info{}
	if st == nil {
		return out
	}
	for name, svc := range st.Services {
		if svc != nil && svc.HealthCheckNodePort != 0 {
			out[name] = Info{Port: svc.HealthCheckNodePort, LocalEndpoints: svc.LocalEndpoints}
		}
	}
	return out
}

// ErrClosed is returned by Sync after Close.
var ErrClosed = errors.New("service health checks closed")

// ServiceHealth is kube-proxy's ServiceHealthServer: one HTTP server per
// health-check node port, telling the cloud load balancer whether this node has
// local endpoints for the service.
type ServiceHealth struct {
	listen  func(network, address string) (net.Listener, error)
	healthy func() bool

	mu       sync.Mutex
	closed   bool
	addrs    []netip.Addr // sorted and deduplicated, as last listened on
	services map[dataplane.ServiceName]*instance
	// pending failed to open at the last Sync (another process holds the port:
	// kube-proxy, during a handover); Retry tries them again.
	pending map[dataplane.ServiceName]Info
}

// NewServiceHealth returns a ServiceHealth that opens listeners with listen
// (net.Listen in production) and reports proxyHealthy (ProxyHealth.IsHealthy) in
// every answer. nil arguments default to net.Listen and always healthy.
func NewServiceHealth(listen func(network, address string) (net.Listener, error), proxyHealthy func() bool) *ServiceHealth {
	if listen == nil {
		listen = net.Listen
	}
	if proxyHealthy == nil {
		proxyHealthy = func() bool { return true }
	}
	return &ServiceHealth{listen: listen, healthy: proxyHealthy, services: map[dataplane.ServiceName]*instance{},
		pending: map[dataplane.ServiceName]Info{}}
}

// Sync makes the servers match services, listening on each of addrs (all
// addresses when addrs is empty). Failures are returned joined; a service that
// failed to open is retried by Retry and on the next Sync, and does not affect
// the others.
func (s *ServiceHealth) Sync(addrs []netip.Addr, services map[dataplane.ServiceName]Info) error {
	addrs = normalize(addrs)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	addrsChanged := !slices.Equal(addrs, s.addrs)
	s.addrs = addrs

	var errs []error
	// Close first, so a port that moved between services can be reopened.
	for name, inst := range s.services {
		if info := services[name]; info.Port != inst.port || addrsChanged {
			errs = append(errs, inst.close())
			delete(s.services, name)
		}
	}
	names := make([]dataplane.ServiceName, 0, len(services))
	for name, info := range services {
		if info.Port != 0 {
			names = append(names, name)
		}
	}
	// Sorted so the joined errors read the same on every Sync.
	slices.SortFunc(names, func(a, b dataplane.ServiceName) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	clear(s.pending)
	for _, name := range names {
		info := services[name]
		if inst := s.services[name]; inst != nil {
			inst.endpoints.Store(int64(info.LocalEndpoints))
			continue
		}
		inst, err := s.open(name, info)
		if err != nil {
			errs = append(errs, err)
			s.pending[name] = info
			continue
		}
		s.services[name] = inst
	}
	return errors.Join(errs...)
}

// Retry opens again the health checks the last Sync could not open, without
// waiting for the next sync: when kube-proxy leaves during a handover its ports
// are free at once, and a load balancer probing one meanwhile would take this node
// out. It returns the services it opened, and the failures of the others.
func (s *ServiceHealth) Retry() ([]dataplane.ServiceName, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	var opened []dataplane.ServiceName
	var errs []error
	for name, info := range s.pending {
		inst, err := s.open(name, info)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.services[name] = inst
		delete(s.pending, name)
		opened = append(opened, name)
	}
	return opened, errors.Join(errs...)
}

// Pending says whether a health check waits for its port (Retry has work).
func (s *ServiceHealth) Pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) > 0
}

// Close stops every server. Sync fails afterwards.
func (s *ServiceHealth) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for name, inst := range s.services {
		errs = append(errs, inst.close())
		delete(s.services, name)
	}
	return errors.Join(errs...)
}

func normalize(addrs []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.Unmap())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// listenAddrs: without node-port addresses kube-proxy listens on all addresses.
func listenAddrs(addrs []netip.Addr, port uint16) []string {
	if len(addrs) == 0 {
		return []string{":" + strconv.Itoa(int(port))}
	}
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, netip.AddrPortFrom(a, port).String())
	}
	return out
}

// instance is the servers of one service's health check.
type instance struct {
	name      dataplane.ServiceName
	port      uint16
	endpoints atomic.Int64
	servers   []*http.Server
	serving   sync.WaitGroup
}

// open listens on every address or, like kube-proxy, on none: a half-open health
// check would be closed and retried as a whole anyway.
func (s *ServiceHealth) open(name dataplane.ServiceName, info Info) (*instance, error) {
	inst := &instance{name: name, port: info.Port}
	inst.endpoints.Store(int64(info.LocalEndpoints))
	h := &serviceHandler{name: name, endpoints: &inst.endpoints, healthy: s.healthy}
	for _, addr := range listenAddrs(s.addrs, info.Port) {
		l, err := s.listen("tcp", addr)
		if err != nil {
			err = fmt.Errorf("health check for service %s on %s: %w", name, addr, err)
			return nil, errors.Join(err, inst.close())
		}
		// The timeout only guards against clients that never finish their headers.
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		inst.servers = append(inst.servers, srv)
		inst.serving.Go(func() {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				klog.ErrorS(err, "Health check server stopped", "service", name, "address", addr)
			}
		})
	}
	klog.V(2).InfoS("Opened health check", "service", name, "port", info.Port)
	return inst, nil
}

// close stops the servers and waits for them, so the listeners are closed and the
// port free when it returns.
func (inst *instance) close() error {
	var errs []error
	for _, srv := range inst.servers {
		if err := srv.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing health check for service %s: %w", inst.name, err))
		}
	}
	inst.serving.Wait()
	if len(inst.servers) > 0 {
		klog.V(2).InfoS("Closed health check", "service", inst.name, "port", inst.port)
	}
	return errors.Join(errs...)
}

// serviceHandler is kube-proxy's hcHandler.
type serviceHandler struct {
	name      dataplane.ServiceName
	endpoints *atomic.Int64
	healthy   func() bool
}

func (h *serviceHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	count := h.endpoints.Load()
	healthy := h.healthy()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.FormatInt(count, 10))
	if count > 0 && healthy {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintf(w, "{\n\t\"service\": {\n\t\t\"namespace\": %q,\n\t\t\"name\": %q\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": %v\n}",
		h.name.Namespace, h.name.Name, count, healthy)
}
