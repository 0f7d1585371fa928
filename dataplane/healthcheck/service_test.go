package healthcheck

import (
	"encoding/json"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/switchyard/switchyard/dataplane"
)

// fakeNet hands out listeners that accept nothing and records what is open, so
// the tests never touch the network.
type fakeNet struct {
	mu     sync.Mutex
	fail   map[string]error // address -> listen error
	open   map[string]int   // address -> open listeners
	opened []string
}

func newFakeNet() *fakeNet { return &fakeNet{fail: map[string]error{}, open: map[string]int{}} }

func (f *fakeNet) listen(network, address string) (net.Listener, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if network != "tcp" {
		return nil, errors.New("unexpected network " + network)
	}
	if err := f.fail[address]; err != nil {
		return nil, err
	}
	f.open[address]++
	f.opened = append(f.opened, address)
	return &fakeListener{net: f, addr: address, done: make(chan struct{})}, nil
}

// openAddrs returns the sorted addresses with an open listener.
func (f *fakeNet) openAddrs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for a, n := range f.open {
		for range n {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// takeOpened returns the addresses listened on since the last call.
func (f *fakeNet) takeOpened() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.opened
	f.opened = nil
	slices.Sort(out)
	return out
}

type fakeListener struct {
	net  *fakeNet
	addr string
	once sync.Once
	done chan struct{}
}

func (l *fakeListener) Accept() (net.Conn, error) {
	<-l.done
	return nil, net.ErrClosed
}

func (l *fakeListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.net.mu.Lock()
		defer l.net.mu.Unlock()
		if l.net.open[l.addr]--; l.net.open[l.addr] == 0 {
			delete(l.net.open, l.addr)
		}
	})
	return nil
}

func (l *fakeListener) Addr() net.Addr { return fakeAddr(l.addr) }

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

type healthBody struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

func serve(t *testing.T, h http.Handler) (*httptest.ResponseRecorder, healthBody) {
	t.Helper()
	rec := get(h, "/")
	var b healthBody
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	return rec, b
}

var (
	svcA = dataplane.ServiceName{Namespace: "ns", Name: "a"}
	svcB = dataplane.ServiceName{Namespace: "ns", Name: "b"}
)

func TestServiceHandler(t *testing.T) {
	tests := []struct {
		name      string
		endpoints int64
		healthy   bool
		code      int
	}{
		{"local endpoints", 2, true, 200},
		{"no local endpoints", 0, true, 503},
		{"proxy unhealthy", 3, false, 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int64
			n.Store(tt.endpoints)
			h := &serviceHandler{name: svcA, endpoints: &n, healthy: func() bool { return tt.healthy }}
			rec, b := serve(t, h)
			if rec.Code != tt.code {
				t.Errorf("status %d, want %d", rec.Code, tt.code)
			}
			checkJSONHeaders(t, rec)
			if got, want := rec.Header().Get("X-Load-Balancing-Endpoint-Weight"), strconv.FormatInt(tt.endpoints, 10); got != want {
				t.Errorf("weight %q, want %q", got, want)
			}
			if b.Service.Namespace != "ns" || b.Service.Name != "a" || b.LocalEndpoints != int(tt.endpoints) || b.ServiceProxyHealthy != tt.healthy {
				t.Errorf("body %+v", b)
			}
		})
	}
}

// TestServiceHandlerBody pins kube-proxy's layout for clients that match text.
func TestServiceHandlerBody(t *testing.T) {
	var n atomic.Int64
	n.Store(1)
	rec := get(&serviceHandler{name: svcA, endpoints: &n, healthy: func() bool { return true }}, "/")
	want := "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"a\"\n\t},\n\t\"localEndpoints\": 1,\n\t\"serviceProxyHealthy\": true\n}"
	if rec.Body.String() != want {
		t.Errorf("body\n%s\nwant\n%s", rec.Body, want)
	}
}

func newTestServiceHealth(t *testing.T) (*ServiceHealth, *fakeNet) {
	f := newFakeNet()
	s := NewServiceHealth(f.listen, func() bool { return true })
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		if open := f.openAddrs(); len(open) != 0 {
			t.Errorf("open after Close: %v", open)
		}
	})
	return s, f
}

func expect(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: %q, want %q", what, got, want)
	}
}

var nodeAddrs = []netip.Addr{netip.MustParseAddr("fd00::1"), netip.MustParseAddr("10.0.0.1")}

func TestSyncListens(t *testing.T) {
	s, f := newTestServiceHealth(t)
	svcs := map[dataplane.ServiceName]Info{svcA: {Port: 30001, LocalEndpoints: 1}, svcB: {Port: 30002}}
	if err := s.Sync(nodeAddrs, svcs); err != nil {
		t.Fatal(err)
	}
	expect(t, "open", f.openAddrs(), "10.0.0.1:30001", "10.0.0.1:30002", "[fd00::1]:30001", "[fd00::1]:30002")
	f.takeOpened()

	// An unchanged sync, even with addresses reordered or duplicated, opens nothing.
	if err := s.Sync(append(nodeAddrs, nodeAddrs[1], netip.MustParseAddr("::ffff:10.0.0.1")), maps.Clone(svcs)); err != nil {
		t.Fatal(err)
	}
	expect(t, "reopened", f.takeOpened())
}

func TestSyncAllAddresses(t *testing.T) {
	s, f := newTestServiceHealth(t)
	if err := s.Sync(nil, map[dataplane.ServiceName]Info{svcA: {Port: 30001}, svcB: {}}); err != nil {
		t.Fatal(err)
	}
	expect(t, "open", f.openAddrs(), ":30001")
}

func TestSyncRemoveAndPortChange(t *testing.T) {
	s, f := newTestServiceHealth(t)
	addrs := nodeAddrs[1:]
	if err := s.Sync(addrs, map[dataplane.ServiceName]Info{svcA: {Port: 30001}, svcB: {Port: 30002}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(addrs, map[dataplane.ServiceName]Info{svcB: {Port: 30002}}); err != nil {
		t.Fatal(err)
	}
	expect(t, "after removing a", f.openAddrs(), "10.0.0.1:30002")

	// b moves to a's old port: closed before reopening, so the port is free.
	f.takeOpened()
	if err := s.Sync(addrs, map[dataplane.ServiceName]Info{svcB: {Port: 30001}}); err != nil {
		t.Fatal(err)
	}
	expect(t, "after moving b", f.openAddrs(), "10.0.0.1:30001")
	expect(t, "opened", f.takeOpened(), "10.0.0.1:30001")
}

func TestSyncAddrsChange(t *testing.T) {
	s, f := newTestServiceHealth(t)
	svcs := map[dataplane.ServiceName]Info{svcA: {Port: 30001}}
	if err := s.Sync(nodeAddrs[1:], svcs); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(nodeAddrs, svcs); err != nil {
		t.Fatal(err)
	}
	expect(t, "open", f.openAddrs(), "10.0.0.1:30001", "[fd00::1]:30001")
	expect(t, "opened", f.takeOpened(), "10.0.0.1:30001", "10.0.0.1:30001", "[fd00::1]:30001")
	if err := s.Sync(nil, svcs); err != nil {
		t.Fatal(err)
	}
	expect(t, "open", f.openAddrs(), ":30001")
}

func TestSyncUpdatesEndpoints(t *testing.T) {
	s, f := newTestServiceHealth(t)
	if err := s.Sync(nil, map[dataplane.ServiceName]Info{svcA: {Port: 30001}}); err != nil {
		t.Fatal(err)
	}
	f.takeOpened()
	h := s.services[svcA].servers[0].Handler
	if rec, _ := serve(t, h); rec.Code != 503 {
		t.Errorf("no endpoints: status %d, want 503", rec.Code)
	}
	if err := s.Sync(nil, map[dataplane.ServiceName]Info{svcA: {Port: 30001, LocalEndpoints: 4}}); err != nil {
		t.Fatal(err)
	}
	expect(t, "reopened", f.takeOpened())
	if rec, b := serve(t, h); rec.Code != 200 || b.LocalEndpoints != 4 {
		t.Errorf("4 endpoints: status %d, body %+v", rec.Code, b)
	}
}

func TestSyncListenError(t *testing.T) {
	s, f := newTestServiceHealth(t)
	f.fail["[fd00::1]:30001"] = errors.New("address already in use")
	svcs := map[dataplane.ServiceName]Info{svcA: {Port: 30001}, svcB: {Port: 30002}}
	err := s.Sync(nodeAddrs, svcs)
	if err == nil {
		t.Fatal("Sync succeeded with a failing listen")
	}
	for _, want := range []string{"ns/a", "[fd00::1]:30001", "address already in use"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "ns/b") {
		t.Errorf("error %q blames ns/b", err)
	}
	// a's listener on the working address is closed too, as in kube-proxy.
	expect(t, "open", f.openAddrs(), "10.0.0.1:30002", "[fd00::1]:30002")

	delete(f.fail, "[fd00::1]:30001")
	if err := s.Sync(nodeAddrs, svcs); err != nil {
		t.Fatal(err)
	}
	expect(t, "open after retry", f.openAddrs(), "10.0.0.1:30001", "10.0.0.1:30002", "[fd00::1]:30001", "[fd00::1]:30002")
}

func TestClose(t *testing.T) {
	f := newFakeNet()
	s := NewServiceHealth(f.listen, nil)
	if err := s.Sync(nodeAddrs, map[dataplane.ServiceName]Info{svcA: {Port: 30001}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	expect(t, "open", f.openAddrs())
	if err := s.Sync(nodeAddrs, map[dataplane.ServiceName]Info{svcA: {Port: 30001}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close: %v, want ErrClosed", err)
	}
	expect(t, "open", f.openAddrs())
}

func TestFromState(t *testing.T) {
	st := dataplane.NewState()
	st.Services[svcA] = &dataplane.ServiceState{Name: svcA, HealthCheckNodePort: 30001, LocalEndpoints: 2}
	st.Services[svcB] = &dataplane.ServiceState{Name: svcB, LocalEndpoints: 5}
	got := FromState(st)
	want := map[dataplane.ServiceName]Info{svcA: {Port: 30001, LocalEndpoints: 2}}
	if !maps.Equal(got, want) {
		t.Errorf("FromState = %v, want %v", got, want)
	}
	if got := FromState(nil); len(got) != 0 {
		t.Errorf("FromState(nil) = %v", got)
	}
}

// A port another process holds (kube-proxy's, during a handover) is opened by Retry as soon as it
// is free, without waiting for a sync; a later Sync without the service forgets it.
func TestRetryOpensWhatSyncCouldNot(t *testing.T) {
	s, f := newTestServiceHealth(t)
	addrs := nodeAddrs[1:]
	f.fail["10.0.0.1:30001"] = syscall.EADDRINUSE
	svcs := map[dataplane.ServiceName]Info{svcA: {Port: 30001}, svcB: {Port: 30002}}
	if err := s.Sync(addrs, svcs); err == nil {
		t.Fatal("Sync with a's port taken: no error")
	}
	if !s.Pending() {
		t.Fatal("nothing pending after a failed open")
	}
	if opened, err := s.Retry(); len(opened) != 0 || err == nil {
		t.Errorf("Retry with the port still taken: opened %v, %v", opened, err)
	}
	delete(f.fail, "10.0.0.1:30001")
	opened, err := s.Retry()
	if err != nil || !slices.Equal(opened, []dataplane.ServiceName{svcA}) || s.Pending() {
		t.Errorf("Retry once the port is free: opened %v, %v, pending %v", opened, err, s.Pending())
	}
	expect(t, "open", f.openAddrs(), "10.0.0.1:30001", "10.0.0.1:30002")

	f.fail["10.0.0.1:30003"] = syscall.EADDRINUSE
	if err := s.Sync(addrs, map[dataplane.ServiceName]Info{svcA: {Port: 30003}}); err == nil {
		t.Fatal("Sync with the new port taken: no error")
	}
	if err := s.Sync(addrs, map[dataplane.ServiceName]Info{}); err != nil || s.Pending() {
		t.Errorf("Sync without the service: %v, pending %v", err, s.Pending())
	}
}
