package healthcheck

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

var t0 = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func get(h http.Handler, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

func TestProxyHealth(t *testing.T) {
	const timeout = 60 * time.Second
	tests := []struct {
		name        string
		steps       func(p *ProxyHealth, c *fakeClock)
		healthz     int
		livez       int
		lastUpdated time.Time // reported when unhealthy; healthy reports the current time
		eligible    bool
	}{
		{"fresh", func(*ProxyHealth, *fakeClock) {}, 200, 200, time.Time{}, true},
		{"queued less than timeout ago", func(p *ProxyHealth, c *fakeClock) {
			p.QueuedUpdate()
			c.advance(timeout - time.Second)
		}, 200, 200, time.Time{}, true},
		{"queued exactly timeout ago", func(p *ProxyHealth, c *fakeClock) {
			p.QueuedUpdate()
			c.advance(timeout)
		}, 200, 200, time.Time{}, true},
		{"queued longer than timeout ago", func(p *ProxyHealth, c *fakeClock) {
			p.Updated()
			c.advance(time.Second)
			p.QueuedUpdate()
			c.advance(timeout + time.Second)
		}, 503, 503, t0, true},
		{"later queues do not reset the oldest", func(p *ProxyHealth, c *fakeClock) {
			p.QueuedUpdate()
			c.advance(timeout / 2)
			p.QueuedUpdate()
			c.advance(timeout/2 + time.Second)
		}, 503, 503, time.Time{}, true},
		{"updated after being late", func(p *ProxyHealth, c *fakeClock) {
			p.QueuedUpdate()
			c.advance(2 * timeout)
			p.Updated()
			c.advance(timeout)
		}, 200, 200, time.Time{}, true},
		{"node not eligible", func(p *ProxyHealth, _ *fakeClock) { p.SyncNode(false) }, 503, 200, time.Time{}, false},
		{"node eligible again", func(p *ProxyHealth, _ *fakeClock) {
			p.SyncNode(false)
			p.SyncNode(true)
		}, 200, 200, time.Time{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeClock{t: t0}
			p := NewProxyHealth(timeout, c.now)
			tt.steps(p, c)
			if got, want := p.IsHealthy(), tt.livez == 200; got != want {
				t.Errorf("IsHealthy() = %v, want %v", got, want)
			}
			h := p.Handler()
			for _, e := range []struct {
				path string
				code int
				body func(last, now time.Time) string
			}{
				{"/healthz", tt.healthz, func(last, now time.Time) string {
					return fmt.Sprintf(`{"lastUpdated": %q,"currentTime": %q, "nodeEligible": %v}`, last, now, tt.eligible)
				}},
				{"/livez", tt.livez, func(last, now time.Time) string {
					return fmt.Sprintf(`{"lastUpdated": %q,"currentTime": %q}`, last, now)
				}},
			} {
				rec := get(h, e.path)
				if rec.Code != e.code {
					t.Errorf("%s: status %d, want %d", e.path, rec.Code, e.code)
				}
				last := c.t
				if e.code != 200 {
					last = tt.lastUpdated
				}
				if want := e.body(last, c.t); rec.Body.String() != want {
					t.Errorf("%s: body\n%s\nwant\n%s", e.path, rec.Body, want)
				}
				checkJSONHeaders(t, rec)
			}
		})
	}
}

// TestProxyHealthBody pins the exact text kube-proxy writes, time format included.
func TestProxyHealthBody(t *testing.T) {
	c := &fakeClock{t: t0}
	p := NewProxyHealth(time.Minute, c.now)
	p.SyncNode(false)
	want := `{"lastUpdated": "0001-01-01 00:00:00 +0000 UTC","currentTime": "2024-05-06 07:08:09 +0000 UTC", "nodeEligible": false}`
	if got := get(p.Handler(), "/healthz").Body.String(); got != want {
		t.Errorf("body\n%s\nwant\n%s", got, want)
	}
}

func TestProxyHealthOtherPaths(t *testing.T) {
	h := NewProxyHealth(time.Minute, nil).Handler()
	for _, path := range []string{"/", "/healthz/x", "/readyz", "/metrics"} {
		if rec := get(h, path); rec.Code != http.StatusNotFound {
			t.Errorf("%s: status %d, want 404", path, rec.Code)
		}
	}
}

func checkJSONHeaders(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if got := rec.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type %q", got)
	}
	if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options %q", got)
	}
}
