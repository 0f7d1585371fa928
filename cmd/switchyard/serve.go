package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"
)

// bindRetry is how often a server whose address is taken tries again.
const bindRetry = time.Second

// serve runs an HTTP server on addr until ctx ends. An address another process holds (kube-proxy's
// 10256 and 10249 while Switchyard takes over from it) is tried again every bindRetry rather than
// ending the agent: the dataplane does not need these ports, and the handover must not wait for
// them. Any other listen error ends the agent.
func serve(ctx context.Context, g *errgroup.Group, name, addr string, h http.Handler) {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	g.Go(func() error {
		l, err := listenRetrying(ctx, name, addr, bindRetry)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s server on %s: %w", name, addr, err)
		}
		go func() {
			<-ctx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(shutdown); err != nil {
				klog.ErrorS(err, "Stopping a server", "server", name)
			}
		}()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("%s server on %s: %w", name, addr, err)
		}
		return nil
	})
}

// listenRetrying listens on addr, trying again every retry while the address is in use, until
// ctx ends.
func listenRetrying(ctx context.Context, name, addr string, retry time.Duration) (net.Listener, error) {
	var lc net.ListenConfig
	for waited := false; ; waited = true {
		l, err := lc.Listen(ctx, "tcp", addr)
		if err == nil {
			if waited {
				klog.InfoS("Serving now that the address is free", "server", name, "address", addr)
			}
			return l, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, err
		}
		if !waited {
			klog.InfoS("Address in use, trying again until it is free (kube-proxy still running?)", "server", name, "address", addr)
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}
